# accel/kvm: exit round-trip micro-benchmarks on this host's /dev/kvm (skipped without it).
.PHONY: bench-kvm-exits
bench: bench-kvm-exits
bench-kvm-exits:
	$(GO) test -run '^$$' -bench . -benchtime 20000x ./accel/kvm/
