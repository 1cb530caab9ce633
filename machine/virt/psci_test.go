package virt

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gemu/hw/fdt"
)

func call(m *Machine, fn uint32, args ...uint64) int64 {
	c := m.cpus[0]
	c.SetX(0, uint64(fn))
	for i, a := range args {
		c.SetX(i+1, a)
	}
	m.hvc(c)
	return int64(c.X(0))
}

// TestPSCICalls checks each function's return value (PSCI 1.0, DEN0022D) without running
// the vCPUs.
func TestPSCICalls(t *testing.T) {
	m, err := New(Config{RAMSize: 64 << 20, SMP: 2, GICVersion: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer m.ram.Close()
	checks := []struct {
		name string
		fn   uint32
		args []uint64
		want int64
	}{
		{"VERSION", psciVersion, nil, 1 << 16},
		{"AFFINITY_INFO off", psciAffinityInfo64, []uint64{1, 0}, affinityOff},
		{"CPU_ON", psciCPUOn64, []uint64{1, RAMBase, 7}, psciSuccess},
		{"CPU_ON again", psciCPUOn64, []uint64{1, RAMBase, 7}, psciAlreadyOn},
		{"CPU_ON bad mpidr", psciCPUOn64, []uint64{2, RAMBase, 7}, psciInvalidParams},
		{"CPU_ON aff1", psciCPUOn64, []uint64{0x100, RAMBase, 7}, psciInvalidParams},
		{"AFFINITY_INFO on", psciAffinityInfo32, []uint64{1, 0}, affinityOn},
		{"AFFINITY_INFO level 1", psciAffinityInfo64, []uint64{1, 1}, psciInvalidParams},
		{"MIGRATE_INFO_TYPE", psciMigrateInfoType, nil, psciTOSNotPresent},
		{"FEATURES CPU_ON", psciFeatures, []uint64{psciCPUOn64}, 0},
		{"FEATURES SYSTEM_RESET", psciFeatures, []uint64{psciSystemReset}, 0},
		{"FEATURES SMCCC_VERSION", psciFeatures, []uint64{0x80000000}, psciNotSupported},
		{"SMCCC_VERSION", 0x80000000, nil, psciNotSupported},
		{"MIGRATE", 0xc4000005, nil, psciNotSupported},
	}
	for _, c := range checks {
		if got := call(m, c.fn, c.args...); got != c.want {
			t.Errorf("%s: got %d, want %d", c.name, got, c.want)
		}
	}
	call(m, psciSystemOff)
	select {
	case <-m.done:
		if m.exit != ExitPowerOff {
			t.Fatalf("exit %v", m.exit)
		}
	default:
		t.Fatal("SYSTEM_OFF did not end the machine")
	}
}

// psciGuest is a tiny arm64 "Image" (assembled with aarch64-linux-gnu-as): CPU 0 calls
// CPU_ON(1, secondary, 0x1234), checks 0 then ALREADY_ON for a second call, and waits;
// CPU 1 checks x0 == 0x1234 and calls SYSTEM_OFF. Any mismatch calls SYSTEM_RESET.
var psciGuest = []uint32{
	0x14000010, 0, 0, 0, 0x00010000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x644d5241, 0,
	0x52800060, 0x72b88000, 0xd2800021, 0x100001a2, 0xd2824683, 0xd4000002, 0xaa0003e4,
	0x52800060, 0x72b88000, 0xd2800021, 0xd4000002, 0xb100101f, 0x54000161, 0xb5000144,
	0xd503205f, 0x17ffffff, 0xd2824685, 0xeb05001f, 0x540000a1, 0x52800100, 0x72b08000,
	0xd4000002, 0x14000000, 0x52800120, 0x72b08000, 0xd4000002, 0x14000000,
}

// TestPSCIBootSecondary runs the guest above on both GIC versions: CPU_ON must start
// CPU 1 at the entry point with x0 = context id, and SYSTEM_OFF must end Run.
func TestPSCIBootSecondary(t *testing.T) {
	img := make([]byte, 4*len(psciGuest))
	for i, w := range psciGuest {
		binary.LittleEndian.PutUint32(img[4*i:], w)
	}
	k := filepath.Join(t.TempDir(), "Image")
	if err := os.WriteFile(k, img, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, gic := range []int{2, 3} {
		m, err := New(Config{RAMSize: 64 << 20, SMP: 2, GICVersion: gic, Kernel: k})
		if err != nil {
			t.Fatal(err)
		}
		type res struct {
			e   Exit
			err error
		}
		ch := make(chan res, 1)
		go func() { e, err := m.Run(); ch <- res{e, err} }()
		select {
		case r := <-ch:
			if r.err != nil || r.e != ExitPowerOff {
				t.Fatalf("gic %d: exit %v err %v (ExitReset means a PSCI check failed in the guest)", gic, r.e, r.err)
			}
		case <-time.After(60 * time.Second):
			m.Stop()
			t.Fatalf("gic %d: guest did not power off", gic)
		}
	}
}

// TestUserDTB: -dtb keeps the user's tree and adds the boot parameters to /chosen.
func TestUserDTB(t *testing.T) {
	dir := t.TempDir()
	img := make([]byte, 4*len(psciGuest))
	for i, w := range psciGuest {
		binary.LittleEndian.PutUint32(img[4*i:], w)
	}
	root := fdt.NewRoot()
	root.SetString("model", "user board")
	root.Child("soc").SetU32("x", 7)
	files := map[string][]byte{"Image": img, "initrd": make([]byte, 5000), "user.dtb": (&fdt.Blob{Root: root}).Marshal()}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, err := New(Config{RAMSize: 64 << 20, SMP: 1, GICVersion: 2, Kernel: filepath.Join(dir, "Image"),
		Initrd: filepath.Join(dir, "initrd"), Append: "console=ttyAMA0", DTB: filepath.Join(dir, "user.dtb")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.ram.Close()
	b, err := fdt.Parse(m.DTB())
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := b.Root.Prop("model"); string(v) != "user board\x00" || b.Root.Path("soc") == nil {
		t.Fatal("user tree not kept")
	}
	ch := b.Root.Path("chosen")
	args, _ := ch.Prop("bootargs")
	s, _ := ch.Prop("linux,initrd-start")
	e, _ := ch.Prop("linux,initrd-end")
	if string(args) != "console=ttyAMA0\x00" || len(s) != 8 || len(e) != 8 ||
		binary.BigEndian.Uint64(e)-binary.BigEndian.Uint64(s) != 5000 {
		t.Fatalf("chosen: %q %x %x", args, s, e)
	}
	// The blob in guest RAM at x0 is the same tree.
	inRAM := make([]byte, len(m.DTB()))
	if err := m.ram.ReadAt(inRAM, m.dtbAddr); err != nil || string(inRAM) != string(m.DTB()) {
		t.Fatal("DTB not at the address passed in x0")
	}
	if m.cpus[0].X(0) != m.dtbAddr || m.dtbAddr%8 != 0 {
		t.Fatalf("x0 = %#x, DTB at %#x", m.cpus[0].X(0), m.dtbAddr)
	}
}
