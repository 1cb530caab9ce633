# gemu build, tests, assets and benchmarks.
# Fragments in tests/mk/*.mk add targets per area (assets, harness, benchmarks).
GO      ?= go
BIN     := $(CURDIR)/bin
# Downloaded guest assets (Debian kernels, busybox) and built initramfs images. Git-ignored.
ASSETS  ?= $(CURDIR)/tests/assets/cache
export GEMU_ASSETS := $(ASSETS)
export GEMU_BIN := $(BIN)

.PHONY: all build test unit run bench vet fmt-check
all: build

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./cmd/...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

# All tests: unit, interop with qemu-img, bare-metal KVM guests, Linux boots (assets are fetched first).
test: deps build vet fmt-check assets fuzz
	$(GO) test -timeout 80m -count=1 ./...

# Side-by-side benchmarks against QEMU and qemu-img; fragments add their targets.
bench:

# Quick unit tests only (no guest boots, no oracle downloads).
unit:
	$(GO) test -short -count=1 ./...

-include tests/mk/*.mk
