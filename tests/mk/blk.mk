# virtio-blk: gemu vs QEMU sequential/random I/O on raw and qcow2 images, arm64 (TCG,
# here) and x86_64 (KVM, inside the KVM-in-TCG harness); see tests/blk/bench.
.PHONY: bench-blk
bench: bench-blk
bench-blk: build assets
	$(GO) run ./tests/blk/bench $(BENCH_BLK_FLAGS)
