package runloop

import (
	"fmt"
	"sort"

	"gemu/block"
	"gemu/cmd/internal/qemuopts"
	"gemu/cmd/internal/sysdev"
	"gemu/machine/monitor"
)

// Blocks describes the process's drives for query-block and info block. attached
// reports whether the current guest's devices took a drive (nil: none did).
func Blocks(w *sysdev.Wiring, c *qemuopts.Common, attached func(id string) bool) func() []monitor.Block {
	return func() []monitor.Block {
		drives := w.DrivesNow()
		ids := make([]string, 0, len(drives))
		for id := range drives {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		var out []monitor.Block
		for n, id := range ids {
			be := drives[id]
			d := be.Driver()
			in := &monitor.Inserted{File: d.Filename(), NodeName: fmt.Sprintf("#block%d", 100+n), Format: d.Format(),
				ReadOnly: be.ReadOnly(), VirtualSize: be.Size(), Writeback: be.WriteCache()}
			if s, ok := d.(block.ActualSizer); ok {
				if v, err := s.ActualSize(); err == nil {
					in.ActualSize = v
				}
			}
			for depth, cur := 0, d; depth < 64; depth++ {
				b, ok := cur.(block.Backed)
				if !ok || b.Backing() == nil {
					break
				}
				cur = b.Backing()
				if depth == 0 {
					in.BackingFile = cur.Filename()
				}
				in.BackingDepth = depth + 1
			}
			blk := monitor.Block{Device: id, Inserted: in}
			if owned, dev := w.HotNode(id); owned || dev != "" {
				// blockdev-add'ed (QEMU lists the node with no device name) or
				// taken by a device_add'ed device.
				if owned {
					blk.Device, in.NodeName = "", id
				}
				if dev != "" {
					blk.QDev = "/machine/peripheral/" + dev + "/virtio-backend"
				}
			} else if attached != nil && attached(id) {
				blk.QDev = qdevPath(c, id)
			}
			out = append(out, blk)
		}
		return out
	}
}

// qdevPath names the device that took drive id as QEMU's QOM paths do.
func qdevPath(c *qemuopts.Common, id string) string {
	anon := 0
	for _, d := range c.Devices {
		did, hasID := d.Get("id")
		if drv, _ := d.Get("drive"); drv == id {
			if hasID && did != "" {
				return "/machine/peripheral/" + did + "/virtio-backend"
			}
			return fmt.Sprintf("/machine/peripheral-anon/device[%d]/virtio-backend", anon)
		}
		if !hasID || did == "" {
			anon++
		}
	}
	return fmt.Sprintf("/machine/peripheral-anon/device[%d]/virtio-backend", anon)
}
