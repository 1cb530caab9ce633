# gemu-img benchmark against qemu-img (not part of `make test`).
.PHONY: bench-img
bench: bench-img

bench-img: build
	$(GO) run ./tests/img/bench -gemu $(BIN)/gemu-img -runs $${BENCH_RUNS:-3}
