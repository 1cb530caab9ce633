# Short fuzzing runs of the guest-facing parsers (virtqueues, virtio-blk requests, PCI
# config space), part of `make test`: each target gets FUZZTIME of new inputs beyond
# its seed corpus, which plain `go test` already runs. Longer: make fuzz FUZZTIME=10m.
FUZZTIME ?= 8s
FUZZ_TARGETS := ./hw/virtio:FuzzQueue ./hw/virtio/blk:FuzzBlkRequest ./hw/pci:FuzzConfig
.PHONY: fuzz
fuzz:
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
	  echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s -parallel 2 $$pkg >/tmp/gemu-fuzz.log 2>&1 || { cat /tmp/gemu-fuzz.log; exit 1; }; \
	done
