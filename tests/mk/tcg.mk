# TCG core (tcg/, target-arm/): guest MIPS of the A64 engine vs qemu-aarch64 on an
# integer loop (per CPU second, so a loaded machine does not distort the ratio).
.PHONY: bench-tcg-mips
bench: bench-tcg-mips
bench-tcg-mips:
	$(GO) test ./tests/arm -run '^$$' -bench LoopMIPS -benchtime 3x
# The broad TCG benchmark: ~20 CPU-bound guest programs under gemu and QEMU (tests/tcgbench).
.PHONY: bench-tcg
bench: bench-tcg
bench-tcg: build assets
	$(GO) run ./tests/tcgbench $(BENCH_TCG_FLAGS)
# x86-64 under TCG: gemu-system-x86_64 vs qemu-system-x86_64 -accel tcg, boot-to-poweroff
# and a CPU-bound busybox job on Debian's amd64 kernel (see tests/pc/bench).
.PHONY: bench-tcg-x86
bench: bench-tcg-x86
bench-tcg-x86: build assets
	$(GO) run ./tests/pc/bench $(BENCH_TCG_X86_FLAGS)
