package virt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gemu/hw/virtio"
	"gemu/hw/virtio/rng"
	"gemu/hw/vmstate"
)

// counterKernel is a raw binary that counts in x1 and stores the count 4 KiB past
// its start: adr x2, .+0x1000; 1: add x1, x1, #1; str x1, [x2]; b 1b.
func counterKernel(t *testing.T) string {
	var b []byte
	for _, w := range []uint32{0x10008002, 0x91000421, 0xf9000041, 0x17fffffe} {
		b = binary.LittleEndian.AppendUint32(b, w)
	}
	p := filepath.Join(t.TempDir(), "counter.bin")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type running struct {
	m    *Machine
	done chan error
}

func start(t *testing.T, cfg Config, paused bool) *running {
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if paused {
		if err := m.Pause(); err != nil {
			t.Fatal(err)
		}
	}
	r := &running{m: m, done: make(chan error, 1)}
	go func() { _, err := m.Run(); r.done <- err }()
	return r
}

func (r *running) count(t *testing.T) uint64 {
	var b [8]byte
	if err := r.m.ReadPhys(r.m.entry+0x1000, b[:]); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint64(b[:])
}

func (r *running) waitAbove(t *testing.T, n uint64) {
	deadline := time.Now().Add(time.Minute)
	for r.count(t) <= n {
		if time.Now().After(deadline) {
			t.Fatalf("guest did not count past %d", n)
		}
		time.Sleep(time.Millisecond)
	}
}

func (r *running) stop(t *testing.T) {
	r.m.Stop()
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
}

// TestSaveLoadCounter: a guest counting in RAM and a register is paused and saved; a
// new board of the same configuration loads the stream and, resumed, counts on from
// the saved value (no restart from 0), with its clock where the saved one stood. A
// board with other -m refuses the stream naming the difference; a board with a device
// gemu cannot migrate yet refuses to save.
func TestSaveLoadCounter(t *testing.T) {
	cfg := Config{RAMSize: 64 << 20, SMP: 2, GICVersion: 3, Kernel: counterKernel(t)}
	a := start(t, cfg, false)
	a.waitAbove(t, 100000)
	if err := a.m.Pause(); err != nil {
		t.Fatal(err)
	}
	saved := a.count(t)
	clock := a.m.engine.GuestTime()
	var buf bytes.Buffer
	st, err := a.m.Save(&buf)
	if err != nil {
		t.Fatal(err)
	}
	a.stop(t)
	if st.Bytes != uint64(buf.Len()) || st.Pages == 0 || st.ZeroPages < 16000 || buf.Len() > 64<<10 {
		t.Fatalf("stream of %d bytes for a 64 MiB guest, stats %+v", buf.Len(), st)
	}

	b := start(t, cfg, true)
	defer b.stop(t)
	time.Sleep(20 * time.Millisecond)
	if _, err := b.m.Load(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if n := b.count(t); n != saved {
		t.Fatalf("restored RAM holds count %d, saved %d", n, saved)
	}
	if c := b.m.engine.GuestTime(); c != clock {
		t.Fatalf("restored guest clock %v, saved %v", c, clock)
	}
	b.m.Resume()
	b.waitAbove(t, saved+100000)
	if err := b.m.Pause(); err != nil {
		t.Fatal(err)
	}
	if x := b.m.cpus[0].X(1); x <= saved {
		t.Fatalf("restored vCPU's x1 = %d, saved count %d", x, saved)
	}

	other := cfg
	other.RAMSize = 128 << 20
	c := start(t, other, true)
	defer c.stop(t)
	_, err = c.m.Load(bytes.NewReader(buf.Bytes()))
	if !errors.Is(err, vmstate.ErrConfig) || !strings.Contains(err.Error(), "ram=64M, this one ram=128M") {
		t.Fatalf("restore into -m 128: %v", err)
	}

	d := start(t, cfg, true)
	defer d.stop(t)
	if err := d.m.VirtioMMIO(rng.New()); err != nil {
		t.Fatal(err)
	}
	var withRng bytes.Buffer
	if _, err := d.m.Save(&withRng); err != nil {
		t.Fatalf("save with a virtio-rng: %v", err)
	}
	if _, err := b.m.Load(bytes.NewReader(withRng.Bytes())); !errors.Is(err, vmstate.ErrConfig) ||
		!strings.Contains(err.Error(), "the saved machine has virtio-mmio@") || !strings.Contains(err.Error(), "=virtio-device-4, this one has no virtio-mmio@") {
		t.Fatalf("restore of a board with a virtio-rng into one without: %v", err)
	}
	d2 := start(t, cfg, true)
	defer d2.stop(t)
	if err := d2.m.VirtioMMIO(rng.New()); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.m.Load(bytes.NewReader(withRng.Bytes())); err != nil {
		t.Fatalf("restore with a virtio-rng: %v", err)
	}
	if err := d2.m.VirtioMMIO(plainDevice{}); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.m.Save(&bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "virtio device type 127) does not support migration") {
		t.Fatalf("save with a virtio device without state: %v", err)
	}
	// Truncated streams are one-line errors.
	for _, n := range []int{0, 10, buf.Len() / 2, buf.Len() - 1} {
		e := start(t, cfg, true)
		if _, err := e.m.Load(bytes.NewReader(buf.Bytes()[:n])); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("stream cut at %d: %v", n, err)
		}
		e.stop(t)
	}
}

// plainDevice is a virtio device without state support.
type plainDevice struct{}

func (plainDevice) DeviceID() uint16                 { return 127 }
func (plainDevice) Features() uint64                 { return 0 }
func (plainDevice) QueueMax() []uint16               { return []uint16{8} }
func (plainDevice) ReadConfig(uint64, []byte)        {}
func (plainDevice) WriteConfig(uint64, []byte)       {}
func (plainDevice) Activate(virtio.Activation) error { return nil }
func (plainDevice) Reset()                           {}
