package pc

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gemu/hw/memory"
)

// Offsets below are written out from Documentation/arch/x86/boot.rst and
// arch/x86/include/uapi/asm/bootparam.h rather than taken from the loader's constants,
// so a wrong constant in the loader fails these tests.

func newRAM(t *testing.T, size uint64) (*memory.RAM, Layout) {
	t.Helper()
	l, err := NewLayout(size)
	if err != nil {
		t.Fatal(err)
	}
	ram := memory.New()
	if _, err := ram.Add("low", 0, l.LowSize); err != nil {
		t.Fatal(err)
	}
	if l.HighSize > 0 {
		if _, err := ram.Add("high", HighRAMBase, l.HighSize); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { ram.Close() })
	return ram, l
}

// synthBzImage builds a minimal bzImage-shaped file: boot sector, setup header of the
// given protocol version, setupSects of setup, and a payload.
func synthBzImage(version uint16, setupSects byte, xlf uint16, payload []byte) []byte {
	sects := int(setupSects)
	if sects == 0 {
		sects = 4
	}
	f := make([]byte, (sects+1)*512+len(payload))
	le := binary.LittleEndian
	f[0x1f1] = setupSects
	le.PutUint32(f[0x1f4:], uint32(len(payload)/16))
	le.PutUint16(f[0x1fe:], 0xaa55)
	f[0x200] = 0xeb
	f[0x201] = 0x6a // header ends at 0x26c
	copy(f[0x202:], "HdrS")
	le.PutUint16(f[0x206:], version)
	f[0x211] = 0x01 // LOADED_HIGH
	le.PutUint32(f[0x214:], 0x100000)
	le.PutUint32(f[0x22c:], 0x37ffffff)
	le.PutUint32(f[0x230:], 0x200000)
	f[0x234] = 1
	le.PutUint16(f[0x236:], xlf)
	le.PutUint32(f[0x238:], 2047)
	le.PutUint64(f[0x258:], 0x1000000)
	le.PutUint32(f[0x260:], 0x400000)
	copy(f[(sects+1)*512:], payload)
	return f
}

func image(b []byte) KernelImage { return SizedReaderAt{bytes.NewReader(b), int64(len(b))} }

func debianKernel(t *testing.T) []byte {
	t.Helper()
	dir := os.Getenv("GEMU_ASSETS")
	if dir == "" {
		dir = "../../tests/assets/cache"
	}
	b, err := os.ReadFile(filepath.Join(dir, "amd64", "vmlinuz"))
	if err != nil {
		t.Skipf("Debian amd64 kernel not available (run make assets): %v", err)
	}
	return b
}

func u32(ram *memory.RAM, a uint64) uint32 { v, _ := ram.Read32(a); return v }
func u64(ram *memory.RAM, a uint64) uint64 { v, _ := ram.Read64(a); return v }

func TestLoadDebianKernel64(t *testing.T) {
	k := debianKernel(t)
	le := binary.LittleEndian
	ram, l := newRAM(t, 512<<20)
	initrd := bytes.Repeat([]byte("initrd!!"), 300000) // 2.4 MB, not page-sized
	cmd := "console=ttyS0 panic=-1"
	b, err := LoadLinux(ram, l, LinuxConfig{Kernel: image(k), Initrd: image(initrd), Cmdline: cmd, RSDP: 0xe0000})
	if err != nil {
		t.Fatal(err)
	}
	version := le.Uint16(k[0x206:])
	if version < 0x020f || le.Uint16(k[0x236:])&1 == 0 {
		t.Fatalf("Debian kernel: protocol %#x xloadflags %#x, expected a 64-bit capable 2.15+ kernel", version, le.Uint16(k[0x236:]))
	}
	if !b.Long {
		t.Fatal("64-bit entry not chosen")
	}
	setup := (int(k[0x1f1]) + 1) * 512
	pref := le.Uint64(k[0x258:])
	if b.KernelAddr != pref {
		t.Errorf("kernel at %#x, want its pref_address %#x (relocatable, room available)", b.KernelAddr, pref)
	}
	got, _ := ram.Slice(b.KernelAddr, uint64(len(k)-setup))
	if !bytes.Equal(got, k[setup:]) {
		t.Fatal("protected-mode kernel not copied verbatim at the load address")
	}
	if b.State.Regs.RIP != b.KernelAddr+0x200 {
		t.Errorf("RIP %#x, want load+0x200", b.State.Regs.RIP)
	}

	zp := uint64(b.State.Regs.RSI)
	zpb, _ := ram.Slice(zp, 4096)
	// The setup header is carried over (version, syssize, init_size) ...
	if le.Uint16(zpb[0x206:]) != version || string(zpb[0x202:0x206]) != "HdrS" || le.Uint32(zpb[0x260:]) != le.Uint32(k[0x260:]) {
		t.Error("setup header not copied into the zero page")
	}
	// ... and the loader's fields are set.
	if zpb[0x210] != 0xff {
		t.Errorf("type_of_loader %#x", zpb[0x210])
	}
	if zpb[0x211]&0x81 != 0x81 {
		t.Errorf("loadflags %#x lack LOADED_HIGH|CAN_USE_HEAP", zpb[0x211])
	}
	if le.Uint16(zpb[0x1fa:]) != 0xffff {
		t.Errorf("vid_mode %#x", le.Uint16(zpb[0x1fa:]))
	}
	if le.Uint16(zpb[0x224:]) == 0 {
		t.Error("heap_end_ptr not set")
	}
	if le.Uint64(zpb[0x070:]) != 0xe0000 {
		t.Error("acpi_rsdp_addr not set")
	}
	cl := uint64(le.Uint32(zpb[0x228:]))
	clb, _ := ram.Slice(cl, uint64(len(cmd)+1))
	if string(clb) != cmd+"\x00" {
		t.Errorf("command line at %#x is %q", cl, clb)
	}
	ia, is := uint64(le.Uint32(zpb[0x218:])), uint64(le.Uint32(zpb[0x21c:]))
	if is != uint64(len(initrd)) || ia%4096 != 0 {
		t.Fatalf("initrd at %#x size %d", ia, is)
	}
	maxAddr := uint64(le.Uint32(k[0x22c:]))
	if ia+is-1 > maxAddr || ia+is > l.LowSize {
		t.Errorf("initrd [%#x,%#x) beyond initrd_addr_max %#x or RAM", ia, ia+is, maxAddr)
	}
	if ia < b.KernelAddr+uint64(le.Uint32(k[0x260:])) {
		t.Errorf("initrd at %#x overlaps the kernel's init_size area", ia)
	}
	if l.LowSize-(ia+is) >= 4096 && maxAddr+1 > l.LowSize {
		t.Errorf("initrd not placed as high as possible: ends %#x, RAM ends %#x", ia+is, l.LowSize)
	}
	if got, _ := ram.Slice(ia, is); !bytes.Equal(got, initrd) {
		t.Fatal("initrd contents differ")
	}

	// e820 in the zero page: usable RAM must cover the kernel and initrd, not the BIOS
	// area where the RSDP lives, and total exactly the guest RAM.
	n := int(zpb[0x1e8])
	var usable uint64
	covered := func(a, e uint64) bool {
		for i := 0; i < n; i++ {
			o := 0x2d0 + 20*i
			addr, size, typ := le.Uint64(zpb[o:]), le.Uint64(zpb[o+8:]), le.Uint32(zpb[o+16:])
			if typ == 1 && addr <= a && e <= addr+size {
				return true
			}
		}
		return false
	}
	for i := 0; i < n; i++ {
		o := 0x2d0 + 20*i
		if le.Uint32(zpb[o+16:]) == 1 {
			usable += le.Uint64(zpb[o+8:])
		}
	}
	if !covered(b.KernelAddr, ia+is) || covered(0xe0000, 0xe0010) || covered(0x9fc00, 0xa0000) {
		t.Error("e820 usable ranges wrong around kernel/initrd/BIOS area")
	}
	if usable != l.MemSize-(0x100000-0x9fc00) {
		t.Errorf("e820 usable %#x, want RAM minus the 0x9fc00-0x100000 hole", usable)
	}

	// Long-mode state: paging with an identity map of the first 4 GiB, GDT with the
	// boot selectors.
	s := b.State.SRegs
	if s.EFER&(1<<8) == 0 || s.EFER&(1<<10) == 0 || s.CR0&(1|1<<31) != 1|1<<31 || s.CR4&(1<<5) == 0 {
		t.Fatalf("not long mode: EFER %#x CR0 %#x CR4 %#x", s.EFER, s.CR0, s.CR4)
	}
	if s.CS.Selector != 0x10 || !s.CS.L || s.DS.Selector != 0x18 || s.SS.Selector != 0x18 {
		t.Fatalf("segments CS %+v DS %+v", s.CS, s.DS)
	}
	if b.State.Regs.RFLAGS&(1<<9) != 0 {
		t.Error("interrupts enabled at entry")
	}
	for _, va := range []uint64{0, zp, b.KernelAddr + 0x200, ia, 0xfee00000, 0xffffffff} {
		if pa, ok := walk(ram, s.CR3, va); !ok || pa != va {
			t.Errorf("va %#x maps to %#x (%v)", va, pa, ok)
		}
	}
	gdt := s.GDT.Base
	cs := u64(ram, gdt+0x10)
	ds := u64(ram, gdt+0x18)
	if cs>>40&0xff != 0x9b || cs>>53&1 != 1 || cs>>54&1 != 0 {
		t.Errorf("GDT __BOOT_CS %#x is not present 64-bit execute/read code", cs)
	}
	if ds>>40&0xff != 0x93 || ds&0xffff != 0xffff || ds>>55&1 != 1 {
		t.Errorf("GDT __BOOT_DS %#x is not flat read/write data", ds)
	}
}

// walk translates va through 4-level page tables rooted at cr3.
func walk(ram *memory.RAM, cr3, va uint64) (uint64, bool) {
	table := cr3 &^ 0xfff
	for level := 3; level >= 0; level-- {
		idx := (va >> (12 + 9*uint(level))) & 511
		e := u64(ram, table+8*idx)
		if e&1 == 0 {
			return 0, false
		}
		if level > 0 && level < 3 && e&0x80 != 0 {
			size := uint64(1) << (12 + 9*uint(level))
			return e&^0xfff&^(size-1)&(1<<52-1) | va&(size-1), true
		}
		table = e &^ 0xfff & (1<<52 - 1)
	}
	return table | va&0xfff, true
}

func TestLoad32BitEntry(t *testing.T) {
	payload := bytes.Repeat([]byte{0x90}, 4096)
	k := synthBzImage(0x0206, 0, 0, payload) // 2.06: no xloadflags, no pref_address
	ram, l := newRAM(t, 64<<20)
	b, err := LoadLinux(ram, l, LinuxConfig{Kernel: image(k), Cmdline: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Long || b.KernelAddr != 0x100000 || b.State.Regs.RIP != 0x100000 {
		t.Fatalf("long=%v at %#x rip %#x", b.Long, b.KernelAddr, b.State.Regs.RIP)
	}
	if got, _ := ram.Slice(0x100000, 4096); !bytes.Equal(got, payload) {
		t.Fatal("payload not loaded after 5 setup sectors (setup_sects 0 means 4)")
	}
	s := b.State.SRegs
	if s.CR0&1 == 0 || s.CR0&(1<<31) != 0 || s.EFER != 0 || s.CS.L || !s.CS.DB || s.CS.Selector != 0x10 {
		t.Fatalf("not flat 32-bit protected mode: CR0 %#x EFER %#x CS %+v", s.CR0, s.EFER, s.CS)
	}
	if b.State.Regs.RSI != zeroPageAddr || b.State.Regs.RBX|b.State.Regs.RDI|b.State.Regs.RBP != 0 {
		t.Fatal("ESI must be the zero page and EBX/EDI/EBP zero")
	}
	if u32(ram, zeroPageAddr+0x214) != 0x100000 {
		t.Error("code32_start not the load address")
	}
}

func TestLoadRejects(t *testing.T) {
	ok := synthBzImage(0x020f, 1, 1, make([]byte, 8192))
	mod := func(f func(b []byte)) []byte { b := append([]byte(nil), ok...); f(b); return b }
	arm := make([]byte, 4096)
	copy(arm[0x38:], "ARM\x64")
	cases := []struct {
		name, want string
		k          []byte
		mem        uint64
		cmd        string
		initrd     int
	}{
		{"elf", "ELF", append([]byte("\x7fELF\x02\x01\x01"), make([]byte, 4096)...), 64 << 20, "", 0},
		{"arm64", "arm64 Image", arm, 64 << 20, "", 0},
		{"random", "HdrS", bytes.Repeat([]byte{0x5a, 0x17, 0x99}, 2000), 64 << 20, "", 0},
		{"short", "too short", []byte("HdrS"), 64 << 20, "", 0},
		{"empty", "too short", nil, 64 << 20, "", 0},
		{"old", "too old", mod(func(b []byte) { b[0x206] = 0x04 }), 64 << 20, "", 0},
		{"zimage", "zImage", mod(func(b []byte) { b[0x211] = 0 }), 64 << 20, "", 0},
		{"bootflag", "boot flag", mod(func(b []byte) { b[0x1fe] = 0 }), 64 << 20, "", 0},
		{"truncated", "truncated", ok[:len(ok)-4096], 64 << 20, "", 0},
		{"setup beyond file", "setup sectors", mod(func(b []byte) { b[0x1f1] = 200 }), 64 << 20, "", 0},
		{"no room", "not enough memory", mod(func(b []byte) { binary.LittleEndian.PutUint32(b[0x260:], 64<<20) }), 16 << 20, "", 0},
		{"cmdline", "command line", ok, 64 << 20, strings.Repeat("a", 2048), 0},
		{"initrd", "does not fit", ok, 16 << 20, "", 14 << 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ram, l := newRAM(t, c.mem)
			cfg := LinuxConfig{Kernel: image(c.k), Cmdline: c.cmd}
			if c.initrd > 0 {
				cfg.Initrd = image(make([]byte, c.initrd))
			}
			_, err := LoadLinux(ram, l, cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line containing %q", err, c.want)
			}
		})
	}
}

func TestLayoutE820(t *testing.T) {
	if _, err := NewLayout(0); err == nil {
		t.Error("0 bytes accepted")
	}
	for _, mem := range []uint64{128 << 20, LowRAMTop, 4 << 30, 8 << 30} {
		l, err := NewLayout(mem)
		if err != nil {
			t.Fatal(err)
		}
		if l.LowSize+l.HighSize != mem || l.LowSize > LowRAMTop {
			t.Fatalf("%d MiB split %#x + %#x", mem>>20, l.LowSize, l.HighSize)
		}
		m := l.E820()
		var ram uint64
		for i, e := range m {
			if i > 0 && m[i-1].Addr+m[i-1].Size > e.Addr {
				t.Fatalf("%d MiB: e820 entries overlap or unsorted: %+v", mem>>20, m)
			}
			if e.Type == E820RAM {
				ram += e.Size
				// Usable RAM never reaches into the PCI hole or the interrupt controllers.
				if e.Addr < HighRAMBase && e.Addr+e.Size > LowRAMTop {
					t.Fatalf("RAM entry %+v in the PCI hole", e)
				}
			}
		}
		if ram != mem-(0x100000-0x9fc00) {
			t.Errorf("%d MiB: e820 reports %#x usable", mem>>20, ram)
		}
		if mem > LowRAMTop && (m[len(m)-1].Addr != HighRAMBase || m[len(m)-1].Size != mem-LowRAMTop) {
			t.Errorf("%d MiB: high RAM entry %+v", mem>>20, m[len(m)-1])
		}
	}
}
