# aarch64 virt board: gemu-system-aarch64 vs qemu-system-aarch64 (TCG) boot and CPU-bound
# benchmark on Debian's arm64 kernel (see tests/virt/bench).
.PHONY: bench-tcg-arm
bench: bench-tcg-arm
bench-tcg-arm: build assets
	$(GO) run ./tests/virt/bench $(BENCH_TCG_ARM_FLAGS)
