package initramfs

import (
	"slices"
	"testing"
)

// TestLoadOrder: busybox modprobe loads a modules.dep line's dependencies from the last
// to the first, so each module must be listed before everything it depends on. Debian
// amd64's virtio_pci line (virtio needs virtio_ring) failed with "unknown symbol" when
// the list was in discovery order.
func TestLoadOrder(t *testing.T) {
	deps := map[string][]string{
		"virtio_pci":  {"virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio"},
		"virtio":      {"virtio_ring"},
		"virtio_blk":  {"virtio", "virtio_ring"},
		"ext4":        {"jbd2", "mbcache", "crc16"},
		"jbd2":        nil,
		"virtio_ring": nil,
		"a":           {"b", "c"},
		"b":           {"d"},
		"c":           {"b", "d"},
		"d":           nil,
	}
	for n := range deps {
		order := loadOrder(deps, n)
		idx := map[string]int{}
		for i, m := range order {
			idx[m] = i
		}
		// Every transitive dependency is listed once, and never before a module that
		// needs it.
		var check func(m string)
		seen := map[string]bool{}
		check = func(m string) {
			for _, d := range deps[m] {
				di, ok := idx["kernel/"+d+".ko"]
				if !ok {
					t.Errorf("%s: dependency %s of %s missing from %v", n, d, m, order)
					continue
				}
				if mi, ok := idx["kernel/"+m+".ko"]; ok && mi > di {
					t.Errorf("%s: %s listed after its dependency %s: %v", n, m, d, order)
				}
				if !seen[d] {
					seen[d] = true
					check(d)
				}
			}
		}
		check(n)
		if len(order) != len(seen) {
			t.Errorf("%s: %v lists %d modules, want the %d dependencies", n, order, len(order), len(seen))
		}
		if slices.Contains(order, "kernel/"+n+".ko") {
			t.Errorf("%s lists itself: %v", n, order)
		}
	}
}
