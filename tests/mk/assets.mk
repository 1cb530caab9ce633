# Guest assets: Debian's kernels and busybox, and the test initramfs images.
.PHONY: assets
assets: $(ASSETS)/amd64/initrd.gz $(ASSETS)/arm64/initrd.gz

$(ASSETS)/%/initrd.gz: tests/assets/fetch.sh $(wildcard tests/assets/initramfs/*.go tests/assets/mkinitrd/*.go)
	bash tests/assets/fetch.sh $* $(ASSETS)
