package virt

import (
	"encoding/binary"
	"gemu/hw/bus"
	"gemu/hw/virtio/rng"
	"strings"
	"testing"
)

// TestVirtioSlots: unused slots answer like QEMU's unused virtio-mmio transports
// (magic, version 2, device 0), so Linux's virtio_mmio probes all 32 and binds nothing;
// attached devices take the slots from the top, as on QEMU.
func TestVirtioSlots(t *testing.T) {
	m, err := New(Config{RAMSize: 128 << 20, SMP: 1, GICVersion: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.release()
	rd := func(slot int, off uint64) uint32 {
		var b [4]byte
		m.mmio.Read(bus.CPUAccess(0), VirtioBase+uint64(slot)*VirtioStride+off, b[:])
		return binary.LittleEndian.Uint32(b[:])
	}
	if rd(0, 0) != 0x74726976 || rd(0, 4) != 2 || rd(0, 8) != 0 || rd(0, 0xc) != 0x554d4551 {
		t.Fatalf("empty slot: magic %#x version %d device %d vendor %#x", rd(0, 0), rd(0, 4), rd(0, 8), rd(0, 0xc))
	}
	for i := range 2 {
		if err := m.VirtioMMIO(rng.New()); err != nil {
			t.Fatal(err)
		}
		if id := rd(VirtioSlots-1-i, 8); id != 4 {
			t.Fatalf("device %d: slot %d reports device %d, want 4 (entropy)", i, VirtioSlots-1-i, id)
		}
	}
	if rd(0, 8) != 0 {
		t.Fatal("slot 0 taken before the higher slots")
	}
}

func TestConfigValidate(t *testing.T) {
	bad := map[string]Config{
		"RAM size 0":          {SMP: 1, GICVersion: 2},
		"multiple of 2 MiB":   {RAMSize: 3 << 19, SMP: 1, GICVersion: 2},
		"exceeds":             {RAMSize: 256 << 30, SMP: 1, GICVersion: 2},
		"number of CPUs":      {RAMSize: 1 << 30, SMP: 0, GICVersion: 2},
		"GICv2 supports":      {RAMSize: 1 << 30, SMP: 9, GICVersion: 2},
		"at most 16":          {RAMSize: 1 << 30, SMP: 17, GICVersion: 3},
		"invalid GIC version": {RAMSize: 1 << 30, SMP: 1, GICVersion: 4},
	}
	for want, c := range bad {
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want %q", c, err, want)
		}
	}
	ok := Config{RAMSize: 1 << 30, SMP: 16, GICVersion: 3}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}
