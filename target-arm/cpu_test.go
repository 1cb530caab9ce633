package arm

import (
	"testing"

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
