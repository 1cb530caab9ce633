package pc

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
)

func TestSplitModules(t *testing.T) {
	for in, want := range map[string][]string{
		"a":                  {"a"},
		"a b c,d":            {"a b c", "d"},
		"m1 arg1 arg2,m2,,x": {"m1 arg1 arg2", "m2,x"},
		"a,,,b":              {"a,", "b"},
		"a,":                 {"a", ""},
	} {
		if got := SplitModules(in); !reflect.DeepEqual(got, want) {
			t.Errorf("SplitModules(%q) = %q, want %q", in, got, want)
		}
	}
	if p := ModulePath("/x/y arg=1 two"); p != "/x/y" {
		t.Errorf("ModulePath = %q", p)
	}
}

// aoutKernel is a flat multiboot kernel with the a.out kludge header at offset off:
// loaded at 0x200000 from the file's start, entered at 0x200000+entry.
func aoutKernel(off int, size int, loadEnd, bssEnd uint32) []byte {
	k := make([]byte, size)
	for i := range k {
		k[i] = byte(i*13 + 1)
	}
	le := binary.LittleEndian
	const flags = 1<<16 | 3
	for i, v := range []uint32{multibootMagic, flags, uint32(-(multibootMagic + flags) & 0xffffffff), 0x200000 + uint32(off), 0x200000,
		loadEnd, bssEnd, 0x200000 + 0x40} {
		le.PutUint32(k[off+4*i:], v)
	}
	return k
}

// TestLoadMultibootLayout checks the guest memory the loader builds for an a.out kernel
// against QEMU's layout rules (the CLI test compares with QEMU itself): the kernel with
// its bss, then from the next page the module structures and command lines, then the
// modules on page boundaries; the information structure at 0x9500 and the map at 0x9000.
func TestLoadMultibootLayout(t *testing.T) {
	ram, l := newRAM(t, 64<<20)
	// A kernel of 0x1800 bytes, all loaded (load_end_addr 0), header at 0x800.
	kb := aoutKernel(0x800, 0x1800, 0, 0x203000)
	ram.WriteAt(bytes.Repeat([]byte{0xee}, 0x2000), 0x201800) // the bss must come out zero
	h, err := CheckMultiboot(image(kb))
	if err != nil || h == nil || !h.HasAddress() || h.Offset != 0x800 {
		t.Fatalf("CheckMultiboot = %+v, %v", h, err)
	}
	mods := []Module{{Cmdline: "mod1 x=1", Image: image(bytes.Repeat([]byte("A"), 0x1001))}, {Cmdline: "mod,2", Image: image([]byte("B"))}}
	b, err := LoadMultiboot(ram, l, h, MultibootConfig{Kernel: image(kb), KernelName: "kern", Cmdline: "quiet",
		ModuleSpec: "mod1 x=1,mod,,2", Modules: mods})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 0x3000)
	ram.ReadAt(got, 0x200000)
	if !bytes.Equal(got[:0x1800], kb) || !bytes.Equal(got[0x1800:], make([]byte, 0x1800)) {
		t.Error("kernel image or zeroed bss not where the header says")
	}
	st := b.State
	if st.Regs.RAX != 0x2badb002 || st.Regs.RBX != 0x9500 || st.Regs.RIP != 0x200040 || st.SRegs.CS.Selector != 8 ||
		st.SRegs.CR0&1 == 0 || !st.SRegs.CS.DB || st.SRegs.SS.Selector != 0x10 || st.Regs.RFLAGS&0x600 != 0 {
		t.Errorf("entry state %+v", st)
	}
	mbi := uint64(0x9500)
	const info = 0x203000 // the page after the bss
	if f := u32(ram, mbi); f != 0x24f {
		t.Errorf("flags %#x", f)
	}
	if n, a := u32(ram, mbi+20), u32(ram, mbi+24); n != 2 || a != info {
		t.Errorf("mods_count %d mods_addr %#x", n, a)
	}
	cstr := func(a uint32) string {
		b := make([]byte, 64)
		ram.ReadAt(b, uint64(a))
		s, _, _ := strings.Cut(string(b), "\x00")
		return s
	}
	// Strings: the modules' command lines from info+32, the kernel's after them, the
	// loader's name after room for "kern quiet" and the raw -initrd value.
	wantMods := [][3]uint32{{0x204000, 0x205001, info + 32}, {0x206000, 0x206001, info + 32 + 9}}
	for i, w := range wantMods {
		a := uint64(info + 16*i)
		if s, e, c := u32(ram, a), u32(ram, a+4), u32(ram, a+8); s != w[0] || e != w[1] || c != w[2] {
			t.Errorf("module %d: %#x-%#x cmdline %#x, want %#x", i, s, e, c, w)
		}
	}
	if s := cstr(info + 32); s != "mod1 x=1" {
		t.Errorf("module 0 cmdline %q", s)
	}
	if s := cstr(info + 32 + 9); s != "mod,2" {
		t.Errorf("module 1 cmdline %q", s)
	}
	if c := u32(ram, mbi+16); c != info+32+15 || cstr(c) != "kern quiet" {
		t.Errorf("cmdline at %#x: %q", c, cstr(c))
	}
	if c := u32(ram, mbi+64); c != info+32+uint32(len("kern")+1+len("quiet")+1+len("mod1 x=1,mod,,2")+1) || cstr(c) != "qemu" {
		t.Errorf("boot loader name at %#x: %q", c, cstr(c))
	}
	if b := make([]byte, 1); ram.ReadAt(b, 0x206000) == nil && b[0] != 'B' {
		t.Errorf("module 1 holds %q", b)
	}
	e820 := l.E820()
	if n, a := u32(ram, mbi+44), u32(ram, mbi+48); n != uint32(24*len(e820)) || a != 0x9000 {
		t.Errorf("mmap length %d at %#x", n, a)
	}
	for i, e := range e820 {
		a := uint64(0x9000 + 24*i)
		if u32(ram, a) != 20 || u64(ram, a+4) != e.Addr || u64(ram, a+12) != e.Size || u32(ram, a+20) != e.Type {
			t.Errorf("mmap entry %d differs from %+v", i, e)
		}
	}
	if lo, up := u32(ram, mbi+4), u32(ram, mbi+8); lo != 639 || up != (64<<20-1<<20)>>10 {
		t.Errorf("mem_lower %d mem_upper %d", lo, up)
	}
}

func TestMultibootMemSizes(t *testing.T) {
	// Unordered, with RAM split in two contiguous entries and a hole after them.
	e := []E820Entry{{0x300000, 0x100000, E820RAM}, {0, 0x9fc00, E820RAM}, {0x100000, 0x200000, E820RAM},
		{0x500000, 0x100000, E820RAM}, {0x400000, 0x1000, E820Reserved}}
	if lo, up := multibootMemSizes(e); lo != 639 || up != 3<<10 {
		t.Errorf("mem_lower %d mem_upper %d, want 639 3072", lo, up)
	}
}

func TestCheckMultibootNone(t *testing.T) {
	for name, k := range map[string][]byte{
		"empty":   nil,
		"zeros":   make([]byte, 10000),
		"bzImage": guestImage([]byte{0xf4}),
		// A Linux kernel is Linux even with a multiboot header inside (QEMU checks HdrS first).
		"bzImage with multiboot": append(guestImage([]byte{0xf4}), aoutKernel(0, 64, 0, 0)...),
		// The magic beyond the first 8 KiB does not count.
		"late": append(make([]byte, 8192), aoutKernel(0, 64, 0, 0)...),
	} {
		if h, err := CheckMultiboot(image(k)); h != nil || err != nil {
			t.Errorf("%s: CheckMultiboot = %+v, %v; want none", name, h, err)
		}
	}
	// A bzImage's setup header at 0x202 decides, so put a multiboot kernel's header at
	// 0x1000: found.
	k := make([]byte, 0x2000)
	copy(k[0x1000:], aoutKernel(0, 64, 0, 0))
	if h, err := CheckMultiboot(image(k)); err != nil || h == nil || h.Offset != 0x1000 {
		t.Errorf("header at 0x1000: %+v, %v", h, err)
	}
}

func TestLoadMultibootBad(t *testing.T) {
	ram, l := newRAM(t, 16<<20)
	for name, c := range map[string]struct {
		k    []byte
		want string
	}{
		"load_end below load": {aoutKernel(0, 0x100, 0x100000, 0), "load_end_addr 0x100000 is below load_addr"},
		"bss below end":       {aoutKernel(0, 0x100, 0x200100, 0x200080), "bss_end_addr 0x200080 is below"},
		"short file":          {aoutKernel(0, 0x100, 0x201000, 0), "truncated multiboot kernel"},
		"beyond RAM":          {aoutKernel(0, 0x100, 0, 0x1100000), "does not fit in the guest's 16 MiB"},
	} {
		h, err := CheckMultiboot(image(c.k))
		if err != nil || h == nil {
			t.Fatalf("%s: CheckMultiboot = %v, %v", name, h, err)
		}
		_, err = LoadMultiboot(ram, l, h, MultibootConfig{Kernel: image(c.k)})
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want one line with %q", name, err, c.want)
		}
	}
	// Loading over the loader's own data below 1 MiB is refused.
	k := aoutKernel(0, 0x100, 0, 0)
	binary.LittleEndian.PutUint32(k[12:], 0x9000)
	binary.LittleEndian.PutUint32(k[16:], 0x9000)
	h, _ := CheckMultiboot(image(k))
	if _, err := LoadMultiboot(ram, l, h, MultibootConfig{Kernel: image(k)}); err == nil || !strings.Contains(err.Error(), "overlaps the boot loader's data") {
		t.Errorf("kernel over the information structure: %v", err)
	}
}
