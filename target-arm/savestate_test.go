package arm

import (
	"bytes"
	"encoding/binary"
	"math/rand"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"gemu/hw/bus"
	"gemu/hw/memory"
	"gemu/hw/vmstate"
)

// fill sets every integer leaf of the struct at v to a random value (booleans true).
func fill(t *testing.T, r *rand.Rand, v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			fill(t, r, v.Field(i))
		}
	case reflect.Array:
		for i := 0; i < v.Len(); i++ {
			fill(t, r, v.Index(i))
		}
	case reflect.Bool:
		reflect.NewAt(v.Type(), unsafe.Pointer(v.UnsafeAddr())).Elem().SetBool(true)
	case reflect.Uint64, reflect.Uint32, reflect.Uint16, reflect.Uint8:
		reflect.NewAt(v.Type(), unsafe.Pointer(v.UnsafeAddr())).Elem().SetUint(r.Uint64() | 1)
	case reflect.Int64, reflect.Int32, reflect.Int:
		reflect.NewAt(v.Type(), unsafe.Pointer(v.UnsafeAddr())).Elem().SetInt(int64(r.Uint32() | 1))
	case reflect.Pointer:
	default:
		t.Fatalf("field of kind %s: teach the test (and savestate.go) about it", v.Kind())
	}
}

// TestCPUStateRoundTrip: every register field of State and sysRegs (all of them, by
// reflection, so registers added later are covered), PSTATE, the timers and the power
// state survive SaveState → LoadState into another vCPU; a wrong name or version, and
// corrupt data, are refused and leave the vCPU unchanged.
func TestCPUStateRoundTrip(t *testing.T) {
	ram := memory.New()
	defer ram.Close()
	if _, err := ram.Add("ram", 0x4000_0000, 1<<20); err != nil {
		t.Fatal(err)
	}
	a := New(Config{ID: 0, RAM: ram})
	defer a.Close()
	b := New(Config{ID: 1, RAM: ram})
	defer b.Close()
	r := rand.New(rand.NewSource(1))
	fill(t, r, reflect.ValueOf(&a.State).Elem())
	fill(t, r, reflect.ValueOf(&a.sr).Elem())
	a.el, a.spsel, a.daif = 0, 0, pstateI|pstateF
	a.timers[0].ctl, a.timers[0].cval, a.timers[0].level = 1, 12345, true
	a.timers[1].ctl, a.timers[1].cval = 3, 777
	a.on.Store(true)
	s, err := a.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.LoadState(s); err != nil {
		t.Fatal(err)
	}
	if a.State != b.State || a.sr != b.sr || a.el != b.el || a.spsel != b.spsel || a.daif != b.daif || !b.on.Load() {
		t.Fatal("state differs after the round trip")
	}
	for i := range a.timers {
		if a.timers[i].ctl != b.timers[i].ctl || a.timers[i].cval != b.timers[i].cval || a.timers[i].level != b.timers[i].level {
			t.Fatalf("timer %d differs", i)
		}
	}
	if b.sp != &b.SP_EL0 || b.flags != b.tbFlags() {
		t.Fatal("derived mode state not recomputed")
	}
	s2, _ := b.SaveState()
	if !bytes.Equal(s.Data, s2.Data) {
		t.Fatal("saving the restored vCPU gives other bytes")
	}
	before := b.State
	for _, bad := range []struct {
		name string
		ver  int
		data []byte
	}{{"gic", 1, s.Data}, {"cpu", 99, s.Data}, {"cpu", 1, s.Data[:len(s.Data)-3]}, {"cpu", 1, append([]byte{5, 0, 'b', 'o', 'g', 'u', 's', 1, 0, 0, 0}, make([]byte, 8)...)}} {
		if err := b.LoadState(stateOf(bad.name, bad.ver, bad.data)); err == nil {
			t.Fatalf("bad state %q v%d (%d bytes) accepted", bad.name, bad.ver, len(bad.data))
		}
	}
	// An EL the vCPU does not model is refused.
	var bad cpuSave
	vmstate.DecodeFields(s.Data, &bad)
	bad.EL = 3
	d, _ := vmstate.EncodeFields(nil, &bad)
	if err := b.LoadState(stateOf("cpu", 1, d)); err == nil {
		t.Fatal("EL3 accepted")
	}
	if b.State != before {
		t.Fatal("a refused state changed the vCPU")
	}
}

// TestCPUStatePANUAO: PSTATE.PAN and UAO survive a round trip on -cpu max, with the
// data and unprivileged MMU indices recomputed (EL1 with PAN, and UAO giving LDTR/STTR
// that index too); a model without PAN refuses a state with PAN set.
func TestCPUStatePANUAO(t *testing.T) {
	ram := memory.New()
	defer ram.Close()
	if _, err := ram.Add("ram", 0x4000_0000, 1<<20); err != nil {
		t.Fatal(err)
	}
	maxModel, _ := LookupModel("max")
	a := New(Config{ID: 0, RAM: ram, Model: maxModel})
	defer a.Close()
	b := New(Config{ID: 1, RAM: ram, Model: maxModel})
	defer b.Close()
	a57 := New(Config{ID: 2, RAM: ram})
	defer a57.Close()
	a.el, a.spsel, a.pan, a.uao = 1, 1, 1, 1
	s, err := a.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.LoadState(s); err != nil {
		t.Fatal(err)
	}
	if b.pan != 1 || b.uao != 1 || b.midx != mmuEL1PAN || b.uidx != mmuEL1PAN || b.mmu != &b.tlb[mmuEL1PAN] || b.utlb != &b.tlb[mmuEL1PAN] {
		t.Fatalf("after the round trip: PAN %d UAO %d, MMU indices %d/%d", b.pan, b.uao, b.midx, b.uidx)
	}
	if b.pstate()&(pstatePAN|pstateUAO) != pstatePAN|pstateUAO {
		t.Fatalf("PSTATE %#x lacks PAN/UAO", b.pstate())
	}
	if err := a57.LoadState(s); err == nil {
		t.Fatal("cortex-a57 accepted a state with PSTATE.PAN set")
	}
}

// TestCPUSaveRestoreRuns: a vCPU counting in a loop is parked and saved; a new vCPU
// on a copy of its RAM restores the state and goes on counting from the saved count,
// not from zero.
func TestCPUSaveRestoreRuns(t *testing.T) {
	const base = 0x4000_0000
	mk := func() *memory.RAM {
		ram := memory.New()
		if _, err := ram.Add("ram", base, 1<<20); err != nil {
			t.Fatal(err)
		}
		return ram
	}
	ram := mk()
	defer ram.Close()
	code := make([]byte, 0, 12)
	for _, w := range []uint32{0x91000421, 0xf9000041, 0x17fffffe} { // add x1,x1,#1; str x1,[x2]; b .-8
		code = binary.LittleEndian.AppendUint32(code, w)
	}
	ram.WriteAt(code, base)
	count := func(r *memory.RAM) uint64 {
		v, _ := r.Read64(base + 0x1000)
		return v
	}
	run := func(c *CPU, r *memory.RAM, above uint64) (stop func()) {
		st := make(chan struct{})
		done := make(chan error, 1)
		go func() { done <- c.Run(st) }()
		deadline := time.Now().Add(time.Minute)
		for count(r) <= above {
			if time.Now().After(deadline) {
				t.Fatalf("vCPU did not count past %d", above)
			}
			time.Sleep(time.Millisecond)
		}
		return func() {
			c.Park()
			if !c.WaitParked(10 * time.Second) {
				t.Fatal("vCPU did not park")
			}
			close(st)
			<-done
		}
	}
	a := New(Config{ID: 0, RAM: ram})
	defer a.Close()
	a.Reset(base, 0)
	a.SetX(2, base+0x1000)
	run(a, ram, 1000)()
	saved := count(ram)
	s, err := a.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	ram2 := mk()
	defer ram2.Close()
	buf := make([]byte, 1<<20)
	ram.ReadAt(buf, base)
	ram2.WriteAt(buf, base)
	b := New(Config{ID: 0, RAM: ram2})
	defer b.Close()
	if err := b.LoadState(s); err != nil {
		t.Fatal(err)
	}
	if b.X(1) != saved {
		t.Fatalf("restored X1 = %d, saved count %d", b.X(1), saved)
	}
	run(b, ram2, saved+1000)()
	if n := count(ram2); n <= saved+1000 {
		t.Fatalf("restored vCPU counted to %d from %d", n, saved)
	}
}

func stateOf(name string, ver int, d []byte) bus.State {
	return bus.State{Name: name, Version: ver, Data: d}
}
