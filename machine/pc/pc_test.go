package pc

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"gemu/accel"
	"gemu/accel/kvm"
)

type capture struct {
	mu  sync.Mutex
	out bytes.Buffer
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}
func (c *capture) SetReceiver(func(byte)) {}
func (c *capture) Close() error           { return nil }

// guestImage wraps 64-bit code as a bzImage whose 64-bit entry (+0x200) runs it.
func guestImage(code []byte) []byte {
	payload := make([]byte, 0x200+len(code)+16)
	copy(payload[0x200:], code)
	return synthBzImage(0x020f, 1, 1, payload)
}

var (
	comOut   = []byte{0x66, 0xba, 0xf8, 0x03} // mov dx, 0x3f8
	putc     = func(c byte) []byte { return []byte{0xb0, c, 0xee} }
	haltLoop = []byte{0xf4, 0xeb, 0xfd}
)

func runGuest(t *testing.T, code []byte, cpus int) (accel.ExitReason, string, *Machine) {
	t.Helper()
	if err := kvm.Available(); err != nil {
		t.Skipf("no usable KVM: %v", err)
	}
	vm, err := kvm.New(accel.Config{CPUs: cpus})
	if err != nil {
		t.Fatal(err)
	}
	k := guestImage(code)
	con := &capture{}
	m, err := New(vm, Config{MemSize: 64 << 20, CPUs: cpus, Kernel: image(k), Cmdline: "console=ttyS0", Serial: con})
	if err != nil {
		t.Fatal(err)
	}
	hung := false
	t.Cleanup(func() {
		if !hung { // closing under a running vCPU is not allowed; leak it instead
			vm.Close()
			m.Close()
		}
	})
	// A guest that never reaches its exit is stopped; a Run that still does not return
	// fails the test instead of hanging the suite.
	stop := time.AfterFunc(30*time.Second, func() { vm.Stop(accel.Stopped) })
	defer stop.Stop()
	type result struct {
		r   accel.ExitReason
		err error
	}
	done := make(chan result, 1)
	go func() { r, err := m.Run(); done <- result{r, err} }()
	var res result
	select {
	case res = <-done:
	case <-time.After(90 * time.Second):
		hung = true
		t.Fatalf("Run did not return after Stop (console %q)", con.out.String())
	}
	if res.err != nil {
		t.Fatalf("run: %v (console %q)", res.err, con.out.String())
	}
	r := res.r
	return r, con.out.String(), m
}

// TestBootThroughLoaderAndDevices boots a tiny 64-bit "kernel" through the bzImage
// loader's long-mode entry; it prints through COM1, checks the PCI host bridge through
// 0xCF8/0xCFC and the zero page it was handed in RSI, and powers off through the ACPI
// PM1a control register, as Linux does.
func TestBootThroughLoaderAndDevices(t *testing.T) {
	var code []byte
	code = append(code, comOut...)
	code = append(code, putc('O')...)
	code = append(code, putc('K')...)
	code = append(code,
		0x66, 0xba, 0xf8, 0x0c, // mov dx, 0xcf8
		0xb8, 0x00, 0x00, 0x00, 0x80, // mov eax, 0x80000000 (00:00.0 reg 0)
		0xef,                   // out dx, eax
		0x66, 0xba, 0xfc, 0x0c, // mov dx, 0xcfc
		0xed, // in eax, dx
	)
	code = append(code, comOut...)
	code = append(code, 0x3d, 0x86, 0x80, 0x37, 0x12, // cmp eax, 0x12378086
		0xb0, 'P', 0x74, 0x02, 0xb0, 'p', 0xee, // mov al,'P'; je +2; mov al,'p'; out
		0x80, 0xbe, 0x10, 0x02, 0x00, 0x00, 0xff, // cmp byte [rsi+0x210], 0xff (type_of_loader)
		0xb0, 'Z', 0x74, 0x02, 0xb0, 'z', 0xee,
	)
	code = append(code, putc('\n')...)
	code = append(code,
		0x66, 0xba, 0x04, 0x06, // mov dx, 0x604 (PM1a_CNT)
		0x66, 0xb8, 0x01, 0x34, // mov ax, SLP_TYP=5 | SLP_EN | SCI_EN
		0x66, 0xef, // out dx, ax
	)
	code = append(code, haltLoop...)
	r, out, _ := runGuest(t, code, 2)
	if out != "OKPZ\n" {
		t.Errorf("console %q, want \"OKPZ\\n\"", out)
	}
	if r != accel.PowerOff {
		t.Errorf("exit %v, want power off", r)
	}
}

func TestResetPorts(t *testing.T) {
	for _, c := range []struct {
		name string
		code []byte
	}{
		{"cf9", []byte{0x66, 0xba, 0xf9, 0x0c, 0xb0, 0x06, 0xee}}, // mov dx,0xcf9; mov al,6; out dx,al
		{"i8042", []byte{0xb0, 0xfe, 0xe6, 0x64}},                 // mov al,0xfe; out 0x64,al
		{"port92", []byte{0xb0, 0x01, 0xe6, 0x92}},                // mov al,1; out 0x92,al
	} {
		t.Run(c.name, func(t *testing.T) {
			r, _, _ := runGuest(t, append(c.code, haltLoop...), 1)
			if r != accel.Reset {
				t.Fatalf("exit %v, want reset", r)
			}
		})
	}
}
