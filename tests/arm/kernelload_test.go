package armtest

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gemu/tests/testbin"
)

// Kernel loading on the virt board, gemu-system-aarch64 against qemu-system-aarch64:
// the same -kernel file (an ELF with segments at three physical addresses, a raw
// binary, an arm64 Image, a U-Boot uImage) runs under both, and the bare-metal
// program prints where it was entered (its own PC), x0 (the DTB pointer a Linux boot
// gets, 0 otherwise), CurrentEL, the DTB magic at x0, and words it reads at the
// absolute addresses it was linked for (proving the bytes were placed there). The
// transcripts must be equal, and equal to what QEMU's boot rules say.

// loadProgram is the common body; EXTRA is the per-format tail.
const loadProgram = `
	.text
	.global _start
_start:
HEADER
real_start:
	mov x20, x0
	adr x0, _start
	bl puthex
	mov x0, x20
	bl puthex
	mrs x0, CurrentEL
	bl puthex
	cbz x20, 1f
	ldr w0, [x20]
	bl puthex
1:	ldr x1, =marker
	ldr x0, [x1]
	bl puthex
EXTRA
	ldr x1, =0x09000000
	mov w2, #'\n'
	str w2, [x1]
	ldr x0, =0x84000008
	hvc #0
	b .
	.ltorg
	.balign 8
marker:	.quad 0x1122334455667788
`

// imageHeader is an arm64 Image header: code0 branches over it, text_offset 0,
// image_size 64 KiB, the "ARM\x64" magic at 0x38.
const imageHeader = `
	b real_start
	.word 0
	.quad 0
	.quad 0x10000
	.quad 0, 0, 0, 0
	.ascii "ARM\x64"
	.word 0
`

// elfExtra reads a word of a data segment at 0x40400000, of a BSS segment at
// 0x40500000 and the word at RAM base (where QEMU puts the DTB of a non-Linux boot).
const elfExtra = `
	ldr x1, =far_data
	ldr x0, [x1]
	bl puthex
	ldr x1, =far_bss
	ldr x0, [x1]
	bl puthex
	ldr x1, =0x40000000
	ldr w0, [x1]
	bl puthex
	.section .fardata, "aw"
	.balign 8
far_data: .quad 0xcafef00ddeadbeef
	.section .farbss, "aw", %nobits
	.balign 8
far_bss: .skip 64
	.text
`

func buildLoadProgram(t *testing.T, dir, name, header, extra string, link uint64, sections ...string) string {
	t.Helper()
	gcc, err := exec.LookPath("aarch64-linux-gnu-gcc")
	if err != nil {
		t.Skip("aarch64-linux-gnu-gcc not installed (apt-get install gcc-aarch64-linux-gnu)")
	}
	src := strings.NewReplacer("HEADER", header, "EXTRA", extra).Replace(loadProgram) + sysLib
	s := filepath.Join(dir, name+".S")
	bin := filepath.Join(dir, name+".elf")
	if err := os.WriteFile(s, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-static", "-nostdlib", "-no-pie", fmt.Sprintf("-Wl,-Ttext=%#x", link), "-Wl,--build-id=none", "-o", bin, s}
	for _, sec := range sections {
		args = append(args, "-Wl,--section-start="+sec)
	}
	if out, err := exec.Command(gcc, args...).CombinedOutput(); err != nil {
		t.Fatalf("assembling %s: %v\n%s", name, err, out)
	}
	return bin
}

func objcopyBinary(t *testing.T, elfFile string) []byte {
	t.Helper()
	oc, err := exec.LookPath("aarch64-linux-gnu-objcopy")
	if err != nil {
		t.Skip("aarch64-linux-gnu-objcopy not installed")
	}
	out := elfFile + ".bin"
	if msg, err := exec.Command(oc, "-O", "binary", elfFile, out).CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v\n%s", err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// uImage wraps payload in a U-Boot legacy header: Linux, arm64, kernel, uncompressed.
func uImage(payload []byte, load, entry uint32) []byte {
	h := make([]byte, 64)
	be := binary.BigEndian
	be.PutUint32(h[0:], 0x27051956)
	be.PutUint32(h[8:], 0x5f000000) // time
	be.PutUint32(h[12:], uint32(len(payload)))
	be.PutUint32(h[16:], load)
	be.PutUint32(h[20:], entry)
	be.PutUint32(h[24:], crc32.ChecksumIEEE(payload))
	h[28], h[29], h[30], h[31] = 5, 22, 2, 0 // IH_OS_LINUX, IH_ARCH_ARM64, IH_TYPE_KERNEL, IH_COMP_NONE
	copy(h[32:], "gemu load test")
	be.PutUint32(h[4:], crc32.ChecksumIEEE(h))
	return append(h, payload...)
}

// runBoard runs prog (qemu-system-aarch64 or gemu-system-aarch64) on -M virt with kernel.
func runBoard(t *testing.T, prog, kernel string, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, prog, append([]string{"-M", "virt", "-cpu", "cortex-a57", "-m", "128",
		"-display", "none", "-monitor", "none", "-serial", "stdio", "-kernel", kernel}, extra...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s\noutput so far:\n%s", filepath.Base(prog), err, stderr.Bytes(), stdout.Bytes())
	}
	return stdout.String()
}

func TestKernelLoadingAsQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Skip("qemu-system-aarch64 not installed (apt-get install qemu-system-arm)")
	}
	dir := t.TempDir()
	const dtbMagic = "00000000edfe0dd0" // d0 0d fe ed read as a little-endian word
	const mark = "1122334455667788"
	// A Linux boot's DTB with 128 MiB of RAM: initrd start = RAM base + 64 MiB (half
	// of RAM; no kernel reaches that far), DTB at the 2 MiB boundary after the empty
	// initrd; EL1 (CurrentEL 4).
	linux := func(pc string) string {
		return " " + strings.Join([]string{pc, "0000000044000000", "0000000000000004", dtbMagic, mark}, " ") + "\n"
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	elfBin := buildLoadProgram(t, dir, "elf", "", elfExtra, 0x40200000, ".fardata=0x40400000", ".farbss=0x40500000")
	raw := objcopyBinary(t, buildLoadProgram(t, dir, "raw", "", "", 0x40080000))
	img := objcopyBinary(t, buildLoadProgram(t, dir, "image", imageHeader, "", 0x40200000))
	uimg := uImage(objcopyBinary(t, buildLoadProgram(t, dir, "uimage", "", "", 0x40100000)), 0x40100000, 0x40100000)
	gemu := testbin.MustBuild(t, "gemu/cmd/gemu-system-aarch64")
	for _, c := range []struct {
		name, kernel, want string
	}{
		// ELF: entered at e_entry with x0 = 0 (not a Linux boot), segments at their
		// addresses, the DTB at RAM base below the image.
		{"ELF", elfBin, " " + strings.Join([]string{"0000000040200000", "0000000000000000", "0000000000000004", mark,
			"cafef00ddeadbeef", "0000000000000000", dtbMagic}, " ") + "\n"},
		// Raw binary: RAM base + 0x80000.
		{"raw", write("raw.bin", raw), linux("0000000040080000")},
		// arm64 Image with text_offset 0: 2 MiB up (QEMU's boot stub owns the bottom).
		{"Image", write("Image", img), linux("0000000040200000")},
		// uImage: at ih_load, entered at ih_ep.
		{"uImage", write("uImage", uimg), linux("0000000040100000")},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := runBoard(t, qemu, c.kernel)
			g := runBoard(t, gemu, c.kernel)
			if q != c.want {
				t.Errorf("QEMU printed %q, the boot rules say %q", q, c.want)
			}
			if g != q {
				t.Errorf("gemu printed %q, QEMU %q", g, q)
			}
		})
	}
}

// TestELFOutsideRAM: an ELF segment outside RAM is refused with QEMU's wording and exit 1.
func TestELFOutsideRAM(t *testing.T) {
	dir := t.TempDir()
	bin := buildLoadProgram(t, dir, "low", "", "", 0x30000000)
	gemu := testbin.MustBuild(t, "gemu/cmd/gemu-system-aarch64")
	var stderr bytes.Buffer
	cmd := exec.Command(gemu, "-M", "virt", "-m", "128", "-display", "none", "-serial", "null", "-kernel", bin)
	cmd.Stderr = &stderr
	err := cmd.Run()
	want := "gemu-system-aarch64: could not load kernel '" + bin + "': ELF segment at 0x"
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.HasPrefix(stderr.String(), want) || !strings.Contains(stderr.String(), "lies outside RAM (0x40000000-0x48000000)") {
		t.Fatalf("exit %v, stderr %q", err, stderr.String())
	}
}
