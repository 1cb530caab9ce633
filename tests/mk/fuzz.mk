# Short fuzzing runs of the guest-facing parsers (virtqueues, virtio-blk requests, PCI
# config space), part of `make test`: each target gets FUZZTIME of new inputs beyond
# its seed corpus, which plain `go test` already runs. Longer: make fuzz FUZZTIME=10m.
# A run that ends with Go's own "context deadline exceeded" and no failing input written
# is the fuzz coordinator timing out a worker at the very end on a loaded machine, not a
# finding; it is reported and the next target runs. Any failing input fails the target.
FUZZTIME ?= 8s
FUZZ_TARGETS := ./hw/virtio:FuzzQueue ./hw/virtio/blk:FuzzBlkRequest ./hw/pci:FuzzConfig ./hw/virtio/vsock:FuzzTxPacket ./hw/vmstate:FuzzLoad ./hw/virtio:FuzzTransportLoadState
.PHONY: fuzz
fuzz:
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
	  echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
	  if ! $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s -parallel 2 $$pkg >/tmp/gemu-fuzz.log 2>&1; then \
	    if grep -q 'context deadline exceeded' /tmp/gemu-fuzz.log && ! grep -q 'Failing input written' /tmp/gemu-fuzz.log; then \
	      echo "fuzz $$fn: the coordinator's deadline hit a running worker (no failing input): not a finding"; \
	    else cat /tmp/gemu-fuzz.log; exit 1; fi; \
	  fi; \
	done
