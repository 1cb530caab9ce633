package qdev

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"gemu/block/backend"
	"gemu/hw/bus"
	"gemu/hw/pci"
	"gemu/hw/virtio"
	"gemu/hw/virtio/blk"
	virtiopci "gemu/hw/virtio/pci"
	"gemu/hw/virtio/virtiotest"
)

// props is a Props from "k=v,k=v" (no escaping: the tests do not need it).
type props struct {
	keys []string
	vals map[string]string
}

func p(spec string) *props {
	ps := &props{vals: map[string]string{}}
	for _, kv := range strings.Split(spec, ",") {
		k, v, _ := strings.Cut(kv, "=")
		ps.keys = append(ps.keys, k)
		ps.vals[k] = v
	}
	return ps
}

func (ps *props) Get(k string) (string, bool) { v, ok := ps.vals[k]; return v, ok }
func (ps *props) Keys() []string              { return ps.keys }

func TestParseDrive(t *testing.T) {
	d, err := ParseDrive(p("file=/x.qcow2,if=virtio,format=qcow2,cache=none,readonly=on,serial=abc,werror=stop,discard=unmap,detect-zeroes=unmap,file.locking=off"), 0, "ide", false)
	if err != nil {
		t.Fatal(err)
	}
	o := d.Opts
	if d.ID != "virtio0" || d.If != "virtio" || d.Serial != "abc" || o.File != "/x.qcow2" || o.Format != "qcow2" ||
		o.Cache != "none" || !o.ReadOnly || o.WError != "stop" || o.Discard != "unmap" || o.DetectZeroes != "unmap" || o.Locking != "off" || o.Snapshot {
		t.Fatalf("parsed %+v", d)
	}
	if d, err := ParseDrive(p("file=x,if=none,id=d7"), 3, "virtio", true); err != nil || d.ID != "d7" || !d.Opts.Snapshot {
		t.Fatalf("id and -snapshot: %+v, %v", d, err)
	}
	if d, _ := ParseDrive(p("file=x,cache.direct=on"), 0, "virtio", false); d.Opts.Cache != "none" {
		t.Fatalf("cache.direct=on gives cache %q, want none", d.Opts.Cache)
	}
	for spec, want := range map[string]string{
		"file=x":                          "no IDE controller", // pc's default interface
		"file=x,if=scsi":                  "no SCSI controller",
		"file=x,if=virtio,bogus=1":        "Invalid parameter 'bogus'",
		"if=virtio":                       "without file=",
		"file=x,if=virtio,format=vdx":     "Unknown driver 'vdx'",
		"file=x,if=virtio,cache=fast":     "invalid cache option",
		"file=x,if=virtio,readonly=maybe": "expects 'on' or 'off'",
		"file=x,if=virtio,media=cdrom":    "only media=disk",
		"file=x,if=virtio,rerror=enospc":  "not supported for rerror",
	} {
		if _, err := ParseDrive(p(spec), 0, "ide", false); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", spec, err, want)
		}
	}
}

func TestParseBlockdevs(t *testing.T) {
	ds, err := ParseBlockdevs([]Props{
		p("driver=file,node-name=f0,filename=/a.qcow2,locking=off"),
		p("driver=qcow2,node-name=q0,file=f0,read-only=on"),
		p("driver=raw,node-name=r0,file.driver=file,file.filename=/b.raw,cache.direct=on"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 {
		t.Fatalf("top nodes %v, want q0 and r0 (f0 is q0's file)", ds)
	}
	if q := ds["q0"]; q == nil || q.Opts.File != "/a.qcow2" || q.Opts.Format != "qcow2" || !q.Opts.ReadOnly || q.Opts.Locking != "off" {
		t.Fatalf("q0 = %+v", ds["q0"])
	}
	if r := ds["r0"]; r == nil || r.Opts.File != "/b.raw" || r.Opts.Format != "raw" || r.Opts.Cache != "none" {
		t.Fatalf("r0 = %+v", ds["r0"])
	}
	for _, c := range []struct {
		specs []string
		want  string
	}{
		{[]string{"driver=qcow2,node-name=q,file=nope"}, "node-name='nope'"},
		{[]string{"driver=file,filename=/a"}, "node-name is required"},
		{[]string{"driver=nbd,node-name=n"}, "Unknown driver 'nbd'"},
		{[]string{"driver=file,node-name=a,filename=/a", "driver=file,node-name=a,filename=/b"}, "Duplicate"},
		{[]string{"driver=qcow2,node-name=q,file.driver=http,file.filename=x"}, "not supported"},
		{[]string{"driver=qcow2,node-name=q,file.driver=file,file.filename=x,backing=other"}, "backing"},
	} {
		var ps []Props
		for _, s := range c.specs {
			ps = append(ps, p(s))
		}
		if _, err := ParseBlockdevs(ps); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.specs, err, c.want)
		}
	}
}

// fakeBoard has a real PCI bus and a count of virtio-mmio attachments.
type fakeBoard struct {
	mem  *virtiotest.Mem
	bus  *pci.Bus
	mmio []virtio.Device
}

func (b *fakeBoard) Memory() virtio.Memory     { return b.mem }
func (b *fakeBoard) PCI() *pci.Bus             { return b.bus }
func (b *fakeBoard) Express() bool             { return false }
func (b *fakeBoard) FirstPCISlot() int         { return 2 }
func (b *fakeBoard) PCIHooks() virtiopci.Hooks { return virtiopci.Hooks{} }
func (b *fakeBoard) VirtioMMIO(d virtio.Device) error {
	if len(b.mmio) >= 2 {
		return errors.New("no free virtio-mmio transport")
	}
	b.mmio = append(b.mmio, d)
	return nil
}

func TestEnvAdd(t *testing.T) {
	mem := virtiotest.NewMem(0x4000_0000, 1<<20)
	defer mem.Close()
	b := &fakeBoard{mem: mem, bus: pci.NewBus(pci.BusConfig{MMIO: bus.New()})}
	img := filepath.Join(t.TempDir(), "d.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	be, err := backend.Open(backend.Options{File: img, Format: "raw"})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	e := NewEnv(b, map[string]*backend.Backend{"d0": be}, nil)
	for _, spec := range []string{
		"driver=virtio-blk-pci,drive=d0,serial=s1",
		"driver=virtio-rng-pci,addr=0x9",
		"driver=virtio-rng-device",
		"driver=virtio-serial-device,id=vs",
		"driver=virtconsole",
	} {
		if err := e.Add(p(spec)); err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
	}
	if err := e.Finish(); err != nil {
		t.Fatal(err)
	}
	// Slots: the first free from 2, then the one addr= asked for.
	if f := b.bus.Function(2, 0); f == nil {
		t.Fatal("virtio-blk-pci not at slot 2")
	}
	if f := b.bus.Function(9, 0); f == nil {
		t.Fatal("virtio-rng-pci not at slot 9 (addr=0x9)")
	}
	if len(b.mmio) != 2 || b.mmio[0].DeviceID() != 4 || b.mmio[1].DeviceID() != 3 {
		t.Fatalf("virtio-mmio devices %v, want rng then serial", b.mmio)
	}
	if !e.Attached("d0") {
		t.Fatal("d0 not recorded as attached")
	}
	for spec, want := range map[string]string{
		"driver=virtio-blk-pci,drive=d0":              "already in use",
		"driver=virtio-blk-pci,drive=nope":            "can't find value 'nope'",
		"driver=virtio-blk-pci":                       "drive property not set",
		"driver=virtio-rng-pci,colour=red":            "Property 'virtio-rng-pci.colour' not found",
		"driver=virtio-gpu-pci":                       "not a valid device model name",
		"driver=virtio-rng-pci,addr=0x9":              "not available",
		"driver=virtio-rng-pci,addr=0x40":             "doesn't take value",
		"driver=virtio-rng-device":                    "no free virtio-mmio",
		"driver=virtconsole,chardev=missing":          "can't find value 'missing'",
		"driver=virtio-rng-pci,disable-modern=on":     "modern-only",
		"driver=virtio-blk-pci,drive=d0,queue-size=3": "power of 2",
	} {
		if err := e.Add(p(spec)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", spec, err, want)
		}
	}
	if h := Help(); !strings.Contains(h, `name "virtio-blk-pci", bus PCI`) || !strings.Contains(h, `name "virtconsole"`) {
		t.Errorf("-device help:\n%s", h)
	}
	if h, err := PropHelp("virtio-blk-pci"); err != nil || !strings.Contains(h, "  drive\n") || !strings.Contains(h, "  serial\n") {
		t.Errorf("-device virtio-blk-pci,help: %q %v", h, err)
	}
}

// werror=stop: a failed write pauses through StopOnError and is retried once resumed;
// if the device resets first (ctx ends) it is reported; werror=report never stops.
func TestErrorPolicyStop(t *testing.T) {
	img := filepath.Join(t.TempDir(), "d.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		werror  string
		resumed bool
		want    blk.ErrorAction
		stops   int
	}{
		{"stop", true, blk.ErrorRetry, 1},
		{"stop", false, blk.ErrorReport, 1},
		{"report", true, blk.ErrorReport, 0},
		{"ignore", true, blk.ErrorIgnore, 0},
	} {
		be, err := backend.Open(backend.Options{File: img, Format: "raw", WError: c.werror})
		if err != nil {
			t.Fatal(err)
		}
		e := NewEnv(nil, map[string]*backend.Backend{"d0": be}, nil)
		stops := 0
		e.StopOnError = func(ctx context.Context, drive string, write bool, err error) bool {
			stops++
			if drive != "d0" || !write || !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("StopOnError(%q, %v, %v)", drive, write, err)
			}
			return c.resumed
		}
		got := e.errorPolicy("d0", be)(context.Background(), blk.Request{Type: blk.TOut}, syscall.ENOSPC)
		be.Close()
		if got != c.want || stops != c.stops {
			t.Errorf("werror=%s resumed=%v: action %v after %d stops, want %v after %d", c.werror, c.resumed, got, stops, c.want, c.stops)
		}
	}
}

// rng= names an -object rng-* of this process, kept in the Env, not a global.
func TestRNGObject(t *testing.T) {
	mem := virtiotest.NewMem(0x4000_0000, 1<<20)
	defer mem.Close()
	b := &fakeBoard{mem: mem, bus: pci.NewBus(pci.BusConfig{MMIO: bus.New()})}
	e := NewEnv(b, nil, nil)
	if err := e.Add(p("driver=virtio-rng-pci,rng=r0")); err == nil || !strings.Contains(err.Error(), "can't find value 'r0'") {
		t.Fatalf("unknown rng object: %v", err)
	}
	e.RNGObjects = map[string]bool{"r0": true}
	if err := e.Add(p("driver=virtio-rng-pci,rng=r0")); err != nil {
		t.Fatal(err)
	}
}
