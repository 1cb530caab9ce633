# KVM-in-TCG harness: benchmarks and the interactive default guest.
.PHONY: bench-kvm run
bench: bench-kvm
bench-kvm: assets
	$(GO) run ./tests/harness/benchkvm

# make run: boot the default guest (Debian's kernel + busybox) to an interactive shell.
# Directly on KVM where /dev/kvm is hardware-backed, else inside the KVM-in-TCG harness.
run: assets
	$(GO) run ./tests/harness/run
