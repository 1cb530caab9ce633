# qcow2 driver micro-benchmarks (cluster compression and decompression throughput).
.PHONY: bench-qcow2
bench-qcow2:
	$(GO) test ./qcow2 -run '^$$' -bench . -benchtime 2000x

bench: bench-qcow2
