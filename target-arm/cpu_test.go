package arm

import (
	"testing"
	"time"

	"gemu/hw/memory"
)

// A guest's shared translation cache is registered per guest RAM; closing the last
// vCPU must drop it, or every guest reboot (new RAM, new vCPUs) leaks one cache.
func TestCloseDropsSystem(t *testing.T) {
	ram := memory.New()
	defer ram.Close()
	if _, err := ram.Add("ram", 0x4000_0000, 1<<20); err != nil {
		t.Fatal(err)
	}
	registered := func() bool {
		systemsMu.Lock()
		defer systemsMu.Unlock()
		return systems[ram] != nil
	}
	a, b := New(Config{ID: 0, RAM: ram}), New(Config{ID: 1, RAM: ram})
	if a.eng != b.eng || !registered() {
		t.Fatal("vCPUs of one guest do not share one registered system")
	}
	a.Close()
	if !registered() {
		t.Fatal("system dropped while a vCPU still uses it")
	}
	b.Close()
	if registered() {
		t.Fatal("system still registered after the last vCPU closed")
	}
	c := New(Config{ID: 0, RAM: ram})
	defer c.Close()
	if c.eng == a.eng {
		t.Fatal("a vCPU created after the guest closed reuses the dropped cache")
	}
}

// A board that creates the guest's Engine and passes it in Config owns it: the vCPUs
// translate into it (not into a per-RAM engine of their own), and closing them leaves
// it and its blocks to the board, which closes it.
func TestConfigEngine(t *testing.T) {
	const base = 0x4000_0000
	ram := memory.New()
	defer ram.Close()
	if _, err := ram.Add("ram", base, 1<<20); err != nil {
		t.Fatal(err)
	}
	for i, w := range []uint32{0xd2800020, 0xd4000002, 0x14000000} { // movz x0, #1; hvc #0; b .
		if err := ram.Write32(base+4*uint64(i), w); err != nil {
			t.Fatal(err)
		}
	}
	eng := NewEngine(ram)
	stop := make(chan struct{})
	var x0 uint64
	a := New(Config{ID: 0, RAM: ram, Engine: eng, HVC: func(c *CPU) {
		if x0 == 0 {
			x0 = c.X(0)
			close(stop)
		}
	}})
	b := New(Config{ID: 1, RAM: ram, Engine: eng})
	systemsMu.Lock()
	registered := systems[ram] != nil
	systemsMu.Unlock()
	if a.eng != eng || b.eng != eng || registered || eng.VCPUs() != 2 {
		t.Fatalf("vCPUs given an engine use %p, %p (want %p; per-RAM engine registered: %v; engine has %d vCPUs, want 2)",
			a.eng, b.eng, eng, registered, eng.VCPUs())
	}
	a.Reset(base, 0)
	done := make(chan error, 1)
	go func() { done <- a.Run(stop) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		close(stop)
		<-done
		t.Fatal("the guest did not reach its HVC")
	}
	if x0 != 1 {
		t.Errorf("X0 at the HVC = %d, want 1", x0)
	}
	a.Close()
	b.Close()
	if eng.VCPUs() != 0 || eng.Cache().Len() == 0 {
		t.Errorf("after closing the vCPUs the engine has %d vCPUs and %d blocks; want 0 and the guest's blocks kept",
			eng.VCPUs(), eng.Cache().Len())
	}
	eng.Close()
	if eng.Cache().Len() != 0 || ram.IsCode(base) {
		t.Error("closing the engine kept its blocks or the page's code flag")
	}
}
