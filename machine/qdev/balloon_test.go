package qdev

import (
	"strings"
	"sync"
	"testing"

	"gemu/hw/bus"
	"gemu/hw/memory"
	"gemu/hw/pci"
	"gemu/hw/virtio"
	"gemu/hw/virtio/balloon"
)

// ramBoard is a fakeBoard whose memory is hw/memory's RAM (the balloon counts its
// slots).
type ramBoard struct {
	fakeBoard
	ram *memory.RAM
}

func (b *ramBoard) Memory() virtio.Memory { return b.ram }

func TestBalloon(t *testing.T) {
	ram := memory.New()
	defer ram.Close()
	if _, err := ram.Add("ram", 0x4000_0000, 8<<20); err != nil {
		t.Fatal(err)
	}
	b := &ramBoard{fakeBoard: fakeBoard{bus: pci.NewBus(pci.BusConfig{MMIO: bus.New()})}, ram: ram}
	e := NewEnv(b, nil, nil)
	for spec, want := range map[string]string{
		"driver=virtio-balloon-pci,free-page-hint=on":               "free-page-hint=on is not supported",
		"driver=virtio-balloon-pci,iothread=io0":                    "iothread is not supported",
		"driver=virtio-balloon-pci,deflate-on-oom=maybe":            "deflate-on-oom",
		"driver=virtio-balloon-pci,guest-stats-polling-interval=-1": "guest-stats-polling-interval",
		"driver=virtio-balloon-device,colour=red":                   "Property 'virtio-balloon-device.colour' not found",
	} {
		if err := e.Add(p(spec)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", spec, err, want)
		}
	}
	if err := e.Add(p("driver=virtio-balloon-pci,deflate-on-oom=on,free-page-reporting=on,guest-stats-polling-interval=2")); err != nil {
		t.Fatal(err)
	}
	d := BalloonDevice()
	if d == nil || b.bus.Function(2, 0) == nil || d.RAMSize() != 8<<20 {
		t.Fatal("balloon not plugged")
	}
	if f := d.Features(); f&(1<<balloon.FDeflateOnOOM|1<<balloon.FReporting|1<<balloon.FPagePoison|1<<balloon.FStatsVQ) != 1<<balloon.FDeflateOnOOM|1<<balloon.FReporting|1<<balloon.FPagePoison|1<<balloon.FStatsVQ {
		t.Fatalf("features %#x", f)
	}
	if d.StatsInterval().Seconds() != 2 {
		t.Fatalf("polling interval %v", d.StatsInterval())
	}
	if err := e.Add(p("driver=virtio-balloon-device")); err == nil || !strings.Contains(err.Error(), "Only one balloon device is supported") {
		t.Fatalf("second balloon: %v", err)
	}
	var mu sync.Mutex
	var got []uint64
	WatchBalloon(func(a uint64) { mu.Lock(); got = append(got, a); mu.Unlock() })
	if err := Balloon(6 << 20); err != nil || d.Target() != 6<<20 {
		t.Fatalf("balloon: %v, target %d", err, d.Target())
	}
	d.WriteConfig(4, []byte{0, 2, 0, 0}) // the driver gave 512 pages (2 MiB)
	mu.Lock()
	if len(got) != 1 || got[0] != 6<<20 {
		t.Fatalf("changes %v", got)
	}
	mu.Unlock()
	// The next machine (after a reset) gets the target; its device is the process's.
	e2 := NewEnv(b, nil, nil)
	if err := e2.Add(p("driver=virtio-balloon-device")); err != nil {
		t.Fatal(err)
	}
	if d2 := BalloonDevice(); d2 == d || d2.Target() != 6<<20 || d2.Features()&(1<<balloon.FReporting) != 0 {
		t.Fatal("rebuilt machine's balloon")
	}
}
