package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gemu/accel/kvm"
	"gemu/machine/pc"
)

// The multiboot test kernel (testdata/multiboot) prints what the loader handed over —
// registers, the information structure, each module's addresses, checksum and command
// line, the memory map — on COM1 and powers off. It is built with the host's gcc -m32,
// as an ELF file and, with the a.out kludge header (flag bit 16), as a flat binary.

// buildMultiboot builds the test kernels into dir: k.elf and k.aout.
func buildMultiboot(t *testing.T, dir string) {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not installed: cannot build the multiboot test kernel")
	}
	objcopy, err := exec.LookPath("objcopy")
	if err != nil {
		t.Skip("objcopy not installed: cannot build the a.out-kludge test kernel")
	}
	src, _ := filepath.Abs("testdata/multiboot")
	flags := []string{"-m32", "-ffreestanding", "-fno-pic", "-fno-stack-protector",
		"-fno-asynchronous-unwind-tables", "-nostdlib", "-static", "-O2", "-Wl,-n",
		"-Wl,-z,noexecstack", "-Wl,--no-warn-rwx-segments", "-Wl,--build-id=none",
		"-T", filepath.Join(src, "kernel.ld")}
	in := []string{filepath.Join(src, "entry.S"), filepath.Join(src, "kernel.c")}
	run := func(name string, args ...string) {
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Skipf("cannot build the multiboot test kernel (%s): %v\n%s", name, err, out)
		}
	}
	run(gcc, append(append(flags, "-o", "k.elf"), in...)...)
	run(gcc, append(append(flags, "-DAOUT", "-o", "ka.elf"), in...)...)
	run(objcopy, "-O", "binary", "ka.elf", "k.aout")
}

// runIn runs prog with args in dir and returns its exit status, stdout and stderr.
func runIn(t *testing.T, dir, prog string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(prog, args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not finish: stdout %q stderr %q", filepath.Base(prog), out.String(), errb.String())
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// TestMultibootAgainstQEMU boots the test kernels with two modules (one with arguments,
// one whose name has a comma: ",," on the command line) under qemu-system-x86_64 -accel
// tcg and gemu -accel tcg, and compares everything the kernel prints but the memory
// map, which is each firmware's own: QEMU's SeaBIOS reserves more. gemu's map is
// checked against its e820 table, and mem_upper against that map. Where /dev/kvm works,
// gemu -accel kvm must print what gemu -accel tcg prints.
func TestMultibootAgainstQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed: no oracle")
	}
	dir := t.TempDir()
	buildMultiboot(t, dir)
	os.WriteFile(filepath.Join(dir, "m1"), []byte("hello module\n"), 0o644)
	m2 := make([]byte, 5000)
	rand.New(rand.NewSource(1)).Read(m2)
	os.WriteFile(filepath.Join(dir, "m2,x"), m2, 0o644)
	const mem = 32
	mods := "m1 arg1 arg2,m2,,x"
	l, err := pc.NewLayout(mem << 20)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"k.elf", "k.aout"} {
		t.Run(k, func(t *testing.T) {
			args := []string{"-m", fmt.Sprint(mem), "-kernel", k, "-append", "a b=c", "-initrd", mods}
			code, qout, qerr := runIn(t, dir, qemu, append([]string{"-machine", "pc", "-accel", "tcg", "-nodefaults",
				"-display", "none", "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=1"}, args...)...)
			if code != 1 || !strings.Contains(qout, "END\n") {
				t.Fatalf("QEMU: exit %d (want 1 from isa-debug-exit), stdout %q, stderr %q", code, qout, qerr)
			}
			code, gout, gerr := runIn(t, dir, binPath, append([]string{"-accel", "tcg", "-nographic"}, args...)...)
			if code != 0 || !strings.Contains(gout, "END\n") {
				t.Fatalf("gemu: exit %d, stdout %q, stderr %q", code, gout, gerr)
			}
			if kvm.Available() == nil { // the same boot state on KVM gives the same report
				code, kout, kerr := runIn(t, dir, binPath, append([]string{"-accel", "kvm", "-nographic"}, args...)...)
				if code != 0 || kout != gout {
					t.Errorf("gemu -accel kvm: exit %d, stderr %q, report\n%s\nwant (tcg)\n%s", code, kerr, kout, gout)
				}
			}
			q, qmap, _ := splitMultibootReport(t, qout)
			g, gmap, upper := splitMultibootReport(t, gout)
			if q != g {
				t.Errorf("gemu and QEMU differ:\n--- gemu\n%s--- QEMU\n%s", g, q)
			}
			for _, want := range []string{"magic=2badb002 mbi=00009500", "flags=0000024f", "mods_count=00000002",
				`cmdline="` + k + ` a b=c"`, `cmdline="m1 arg1 arg2"`, `cmdline="m2,x"`, "bss=00000000", "cs=00000008 ds=00000010"} {
				if !strings.Contains(g, want) {
					t.Errorf("gemu's report lacks %q:\n%s", want, g)
				}
			}
			var want strings.Builder
			for _, e := range l.E820() {
				fmt.Fprintf(&want, "mmap size=00000014 base=%08x %08x len=%08x %08x type=%08x \n",
					e.Addr>>32, uint32(e.Addr), e.Size>>32, uint32(e.Size), e.Type)
			}
			if gmap != want.String() {
				t.Errorf("gemu's multiboot memory map:\n%swant (its e820 table):\n%s", gmap, want.String())
			}
			if upper != fmt.Sprint((l.LowSize-1<<20)>>10) {
				t.Errorf("gemu's mem_upper = %s KiB, want %d (RAM from 1 MiB to %#x)", upper, (l.LowSize-1<<20)>>10, l.LowSize)
			}
			if !strings.Contains(qmap, "type=00000001") {
				t.Errorf("QEMU's memory map has no RAM: %q", qmap)
			}
		})
	}
}

// splitMultibootReport splits the kernel's report into what both loaders must agree
// on, the memory-map lines and mem_upper.
func splitMultibootReport(t *testing.T, out string) (common, mmap, memUpper string) {
	t.Helper()
	start := strings.Index(out, "MBTEST\n")
	end := strings.Index(out, "END\n")
	if start < 0 || end < start {
		t.Fatalf("no report in %q", out)
	}
	var c, m strings.Builder
	for _, line := range strings.SplitAfter(out[start:end], "\n") {
		switch {
		case strings.HasPrefix(line, "mmap "):
			m.WriteString(line)
		case strings.HasPrefix(line, "mmap_addr="):
			c.WriteString(line[:strings.Index(line, " mmap_length")] + "\n")
		case strings.HasPrefix(line, "mem_lower="):
			i := strings.Index(line, " mem_upper=")
			c.WriteString(line[:i] + "\n")
			memUpper = strings.TrimSpace(line[i+len(" mem_upper="):])
		default:
			c.WriteString(line)
		}
	}
	return c.String(), m.String(), memUpper
}

// TestMultibootBadInput gives the CLI broken multiboot kernels and other wrong kernel
// files: each is one line on stderr and exit status 1, where QEMU also refuses the
// same file (it exits 1 for each; its words differ).
func TestMultibootBadInput(t *testing.T) {
	dir := t.TempDir()
	buildMultiboot(t, dir)
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	le := binary.LittleEndian
	patch := func(name, base string, f func(b []byte, hdr int)) string {
		b := read(base)
		hdr := bytes.Index(b, le.AppendUint32(nil, 0x1badb002))
		if hdr < 0 {
			t.Fatalf("%s has no multiboot header", base)
		}
		f(b, hdr)
		os.WriteFile(filepath.Join(dir, name), b, 0o644)
		return name
	}
	badSum := patch("badsum.aout", "k.aout", func(b []byte, h int) { b[h+8] ^= 1 })
	badSumELF := patch("badsum.elf", "k.elf", func(b []byte, h int) { b[h+8] ^= 1 })
	elf64 := patch("k64.elf", "k.elf", func(b []byte, h int) { le.PutUint16(b[18:], 62) }) // EM_X86_64
	badLoad := patch("badload.aout", "k.aout", func(b []byte, h int) { le.PutUint32(b[h+16:], le.Uint32(b[h+12:])+0x1000) })
	tooBig := patch("big.aout", "k.aout", func(b []byte, h int) { le.PutUint32(b[h+24:], 0x7f00000) }) // bss to 127 MiB
	bz := guestImage(haltLoop)
	os.WriteFile(filepath.Join(dir, "trunc.bzImage"), bz[:len(bz)-100], 0o644)
	arm := make([]byte, 1<<16)
	copy(arm[0x38:], "ARM\x64")
	os.WriteFile(filepath.Join(dir, "Image"), arm, 0o644)

	cases := []struct {
		name, kernel, initrd, want string
		qemuRefuses                bool // QEMU exits 1 with a message too
	}{
		{"bad checksum", badSum, "", "bad multiboot header at offset 0x0: the checksum does not add up", true},
		{"bad checksum elf", badSumELF, "", "bad multiboot header at offset 0x", true},
		{"x86-64 elf", elf64, "", "cannot load an x86-64 ELF kernel", true},
		{"header_addr below load_addr", badLoad, "", "header_addr 0x100000 is below load_addr 0x101000", true},
		{"missing module", "k.elf", "m1,nope arg", "-initrd: multiboot module 'nope': cannot open", true},
		// QEMU loads a kernel (and the information after it) past the end of RAM and
		// runs it; gemu refuses.
		{"kernel beyond RAM", tooBig, "", "does not fit in the guest's 32 MiB", false},
		// QEMU 7.2 starts these (the Image as an old zImage, the truncated bzImage as it
		// is) and the guest hangs: measured, 10 s with no output.
		{"truncated bzImage", "trunc.bzImage", "", "truncated bzImage", false},
		{"arm64 Image", "Image", "", "arm64 Image kernel; use gemu-system-aarch64", false},
	}
	os.WriteFile(filepath.Join(dir, "m1"), []byte("x"), 0o644)
	qemu, qerr := exec.LookPath("qemu-system-x86_64")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"-m", "32", "-kernel", c.kernel}
			if c.initrd != "" {
				args = append(args, "-initrd", c.initrd)
			}
			code, _, stderr := runIn(t, dir, binPath, append([]string{"-accel", "tcg", "-nographic"}, args...)...)
			checkOneLineError(t, code, stderr, c.want)
			if qerr != nil || !c.qemuRefuses {
				return
			}
			code, _, qstderr := runIn(t, dir, qemu, append([]string{"-machine", "pc", "-accel", "tcg", "-nodefaults",
				"-display", "none", "-device", "isa-debug-exit,iobase=0xf4,iosize=1"}, args...)...)
			if code != 1 || qstderr == "" {
				t.Errorf("QEMU accepted %s: exit %d, stderr %q", c.kernel, code, qstderr)
			}
		})
	}
}
