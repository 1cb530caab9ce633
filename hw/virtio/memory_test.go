package virtio_test

import (
	"testing"

	"gemu/hw/memory"
	"gemu/hw/virtio"
	"gemu/hw/virtio/virtiotest"
)

// hw/memory's RAM is the Memory the boards pass.
var _ virtio.Memory = (*memory.RAM)(nil)

// A device write through a queue marks the guest page dirty in hw/memory.
func TestRealRAMDirty(t *testing.T) {
	ram := memory.New()
	defer ram.Close()
	if _, err := ram.Add("ram", ramBase, ramSize); err != nil {
		t.Fatal(err)
	}
	slot := ram.Find(ramBase)
	shadow := &virtiotest.Mem{Base: ramBase, B: slot.Mem} // the driver's view of the same bytes
	r := virtiotest.NewRing(shadow, 16, ramBase, 256<<10)
	d := &testDev{max: []uint16{16}}
	tr := virtiotest.Bringup(d, ram, &virtiotest.IRQ{}, 0, r)
	if !tr.Active() {
		t.Fatal(tr.Err())
	}
	_, gpas := r.Add(virtiotest.Buf{Write: 8})
	page := gpas[0] &^ (memory.PageSize - 1)
	ram.ClearDirty(page, memory.PageSize)
	c, err := d.act.Queues[0].Pop()
	if err != nil || c == nil {
		t.Fatal(c, err)
	}
	c.In.WriteAt([]byte("dirty!!!"), 0)
	d.act.Queues[0].Push(c, 8)
	if got := ram.DirtyPages(page, memory.PageSize); len(got) != 1 || got[0] != page {
		t.Fatal("device write did not mark the page dirty")
	}
}
