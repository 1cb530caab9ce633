# virtio-net: gemu vs QEMU 7.2 (slirp user networking, and tap inside unshare -n where it
# works), TCP bulk both ways and small HTTP requests, arm64 under TCG; see tests/netbench.
.PHONY: bench-net
bench: bench-net
bench-net: build assets
	$(GO) run ./tests/netbench $(BENCH_NET_FLAGS)
