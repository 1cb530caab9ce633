package vpc

import (
	"testing"

	"gemu/block/internal/fmttest"
)

// Views of data qemu-io wrote match ReadAt, for dynamic and fixed images.
func TestView(t *testing.T) {
	io := []string{"write -P 0x11 0 3M", "write -P 0x22 5M 1M", "write -z 7M 1M", "write -P 0x33 9M 2M"}
	for _, opts := range []string{"", "subformat=fixed"} {
		t.Run(opts, func(t *testing.T) { fmttest.CheckViews(t, "vpc", opts, "12M", 1<<20, io...) })
	}
}
