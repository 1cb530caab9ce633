package pl031

import (
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"gemu/hw/bus"
)

func rd(r *RTC, off uint64) uint32 {
	var b [4]byte
	r.Read(bus.CPUAccess(0), off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func wr(r *RTC, off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	r.Write(bus.CPUAccess(0), off, b[:])
}

type line struct{ level atomic.Bool }

func (l *line) Set(v bool) { l.level.Store(v) }

func TestCountsHostTime(t *testing.T) {
	r := New(nil)
	got, want := int64(rd(r, RegDR)), time.Now().Unix()
	if got < want-1 || got > want {
		t.Fatalf("DR %d, host time %d", got, want)
	}
	if rd(r, RegCR) != 1 {
		t.Fatal("CR does not read as started")
	}
}

func TestLoadSetsCount(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	r := newRTC(nil, func() time.Time { return now })
	wr(r, RegLR, 12345)
	if v := rd(r, RegDR); v != 12345 {
		t.Fatalf("DR after LR=12345: %d", v)
	}
	now = now.Add(10 * time.Second)
	if v := rd(r, RegDR); v != 12355 {
		t.Fatalf("DR 10 s later: %d", v)
	}
	wr(r, RegDR, 7) // read-only
	if v := rd(r, RegDR); v != 12355 {
		t.Fatalf("DR write changed the count: %d", v)
	}
}

// TestPrimeCellID checks the identification Linux's AMBA bus matches rtc-pl031 by
// (periphid 0x00041031, cellid 0xb105f00d).
func TestPrimeCellID(t *testing.T) {
	r := New(nil)
	var pid, cid uint32
	for i := range 4 {
		pid |= rd(r, 0xfe0+uint64(4*i)) << (8 * i)
		cid |= rd(r, 0xff0+uint64(4*i)) << (8 * i)
	}
	if pid&0x000fffff != 0x00041031 || cid != 0xb105f00d {
		t.Fatalf("periphid %#x cellid %#x", pid, cid)
	}
}

func TestMatchInterrupt(t *testing.T) {
	l := &line{}
	r := New(l)
	wr(r, RegIMSC, 1)
	wr(r, RegMR, rd(r, RegDR)+1)
	deadline := time.Now().Add(3 * time.Second)
	for !l.level.Load() {
		if time.Now().After(deadline) {
			t.Fatal("no match interrupt within 3 s of a match 1 s ahead")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if rd(r, RegRIS) != 1 || rd(r, RegMIS) != 1 {
		t.Fatal("RIS/MIS not set")
	}
	wr(r, RegICR, 1)
	if l.level.Load() || rd(r, RegRIS) != 0 {
		t.Fatal("ICR did not clear the interrupt")
	}
	// A match with the interrupt masked sets RIS but not the line.
	wr(r, RegIMSC, 0)
	wr(r, RegMR, rd(r, RegDR))
	if rd(r, RegRIS) != 1 || rd(r, RegMIS) != 0 || l.level.Load() {
		t.Fatal("masked match")
	}
	wr(r, RegIMSC, 1)
	if !l.level.Load() {
		t.Fatal("unmasking a pending match did not raise the line")
	}
	r.Reset()
	if l.level.Load() {
		t.Fatal("reset left the line high")
	}
}

func TestState(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	r := newRTC(nil, func() time.Time { return now })
	wr(r, RegLR, 99)
	wr(r, RegMR, 50) // far in the (wrapped) future
	wr(r, RegIMSC, 1)
	s, err := r.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	r2 := newRTC(nil, func() time.Time { return now })
	if err := r2.LoadState(s); err != nil {
		t.Fatal(err)
	}
	if rd(r2, RegDR) != 99 || rd(r2, RegMR) != 50 || rd(r2, RegIMSC) != 1 {
		t.Fatal("state did not round-trip")
	}
	s.Version = 2
	if r2.LoadState(s) == nil {
		t.Fatal("unknown version accepted")
	}
	r.Reset()
	r2.Reset()
}

func TestSetBase(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	r := newRTC(nil, func() time.Time { return now })
	r.SetBase(-time.Hour)
	if v := rd(r, RegDR); v != 1_700_000_000-3600 || r.Base() != -time.Hour {
		t.Fatalf("DR with base -1h: %d (base %v)", v, r.Base())
	}
	wr(r, RegLR, 1_700_000_100)
	if r.Base() != 100*time.Second {
		t.Fatalf("base after LR: %v", r.Base())
	}
	r.Reset()
}
