package virt

import (
	"encoding/binary"
	"testing"
	"time"

	"gemu/hw/bus"
)

// TestRTCBaseCarried: a guest's LR write moves RTCBase, which a new board starts from.
func TestRTCBaseCarried(t *testing.T) {
	m, err := New(Config{RAMSize: 64 << 20, SMP: 1, GICVersion: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	target := uint32(time.Now().Unix() - 86400)
	m.mmio.Write(bus.CPUAccess(0), RTCBase+0x8, binary.LittleEndian.AppendUint32(nil, target))
	base := m.RTCBase()
	if d := base + 86400*time.Second; d.Abs() > 2*time.Second {
		t.Fatalf("base after a guest load of yesterday: %v", base)
	}
	n, err := New(Config{RAMSize: 64 << 20, SMP: 1, GICVersion: 2, RTCBase: base})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	var b [4]byte
	n.mmio.Read(bus.CPUAccess(0), RTCBase, b[:])
	if got := binary.LittleEndian.Uint32(b[:]); got < target || got > target+2 {
		t.Fatalf("new board's RTC %d, want %d", got, target)
	}
}

// TestPowerButtonLine: PowerButton drives PL061 line 3 high, then lets it go.
func TestPowerButtonLine(t *testing.T) {
	m, err := New(Config{RAMSize: 64 << 20, SMP: 1, GICVersion: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	line3 := func() byte {
		var b [4]byte
		m.mmio.Read(bus.CPUAccess(0), GPIOBase+(1<<PowerButtonLine)<<2, b[:])
		return b[0]
	}
	if line3() != 0 {
		t.Fatal("line 3 high before a press")
	}
	m.PowerButton()
	if line3() != 1<<PowerButtonLine {
		t.Fatal("press did not raise line 3")
	}
	deadline := time.Now().Add(2 * time.Second)
	for line3() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("button never released")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
