package virt

import (
	"encoding/binary"
	"gemu/hw/bus"
	"strings"
	"testing"
)

// TestEmptyVirtioSlots: each slot answers like QEMU's unused virtio-mmio transports, so
// Linux's virtio_mmio driver probes all 32 and binds nothing.
func TestEmptyVirtioSlots(t *testing.T) {
	var d emptyVirtio
	rd := func(off uint64) uint32 {
		var b [4]byte
		d.Read(bus.Host, off, b[:])
		return binary.LittleEndian.Uint32(b[:])
	}
	if rd(0) != 0x74726976 || rd(4) != 2 || rd(8) != 0 {
		t.Fatalf("magic %#x version %d device %d", rd(0), rd(4), rd(8))
	}
	d.Write(bus.Host, 0x70, []byte{1, 0, 0, 0}) // status writes are ignored
	if rd(0x70) != 0 {
		t.Fatal("status not zero")
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
