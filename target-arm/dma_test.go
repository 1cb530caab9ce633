package arm

import (
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"gemu/hw/memory"
	"gemu/tcg"
)

// TestDMAWriteInvalidatesCode runs a loop whose first block sets X0 and calls HVC; the
// HVC handler, playing a device, rewrites that block's first instruction by DMA (first
// RAM.WriteAt, then a write through a Slice followed by RAM.Written) without any IC
// maintenance. The block is already translated, in the jump cache and chained from
// the loop's branch, so only memory's code-write notification can make the vCPU run
// the new instruction: X0 must read 1, then 2, then 3.
func TestDMAWriteInvalidatesCode(t *testing.T) {
	const base = 0x4000_0000
	movz := func(imm uint32) uint32 { return 0xd2800000 | imm<<5 } // movz x0, #imm
	ram := memory.New()
	defer ram.Close()
	if _, err := ram.Add("ram", base, 1<<20); err != nil {
		t.Fatal(err)
	}
	prog := []uint32{
		movz(1),
		0xd4000002, // hvc #0
		0x17fffffe, // b base
	}
	for i, w := range prog {
		if err := ram.Write32(base+4*uint64(i), w); err != nil {
			t.Fatal(err)
		}
	}
	ram.ClearDirty(base, 1<<20)

	stop := make(chan struct{})
	var once sync.Once
	halt := func() { once.Do(func() { close(stop) }) }
	var seen []uint64
	var dirtyAfterWriteAt, dirtyAfterWritten []uint64
	var codeBefore bool
	hvc := func(c *CPU) {
		if len(seen) == 3 {
			return // the loop runs on until Run notices stop
		}
		seen = append(seen, c.X(0))
		switch len(seen) {
		case 1:
			codeBefore = ram.IsCode(base)
			if err := ram.Write32(base, movz(2)); err != nil {
				t.Error(err)
			}
			dirtyAfterWriteAt = ram.TakeDirty(base, 1<<20)
		case 2:
			b, ok := ram.Slice(base, 4)
			if !ok {
				t.Error("Slice of RAM failed")
				halt()
				return
			}
			binary.LittleEndian.PutUint32(b, movz(3))
			ram.Written(base, 4)
			dirtyAfterWritten = ram.DirtyPages(base, 1<<20)
		case 3:
			halt()
		}
	}
	cpu := New(Config{ID: 0, RAM: ram, HVC: hvc})
	defer cpu.Close()
	cpu.Start(base, 0)
	done := make(chan error, 1)
	go func() { done <- cpu.Run(stop) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		halt()
		<-done
		t.Fatalf("guest did not reach the third HVC; X0 at each HVC: %v", seen)
	}
	if !codeBefore {
		t.Error("the executed page is not marked as holding code")
	}
	if len(seen) != 3 || seen[0] != 1 || seen[1] != 2 || seen[2] != 3 {
		t.Errorf("X0 at each HVC = %v, want [1 2 3] (%s backend): a DMA write did not invalidate the translated block",
			seen, tcg.SelectedBackend())
	}
	if len(dirtyAfterWriteAt) != 1 || dirtyAfterWriteAt[0] != base {
		t.Errorf("dirty pages after WriteAt = %#x, want [%#x]", dirtyAfterWriteAt, base)
	}
	if len(dirtyAfterWritten) != 1 || dirtyAfterWritten[0] != base {
		t.Errorf("dirty pages after Written = %#x, want [%#x] (TakeDirty cleared the first)", dirtyAfterWritten, base)
	}
}
