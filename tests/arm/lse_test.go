package armtest

import (
	"context"
	"fmt"
	"math/rand"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Differential tests of the ARMv8.1 LSE atomics and ARMv8.3 LDAPR against
// qemu-aarch64 -cpu max: every operation in every size and acquire/release variant
// runs over boundary and random values, at every aligned offset within a word (the
// byte and halfword forms go through a containing-word compare-and-swap in gemu).
// Each execution stores the register results and leaves the memory result in the
// scratch buffer, which the harness compares.

// lseValues returns n (memory, operand) pairs: boundary values of every size, mixed
// with random ones, with random upper bits in the operand register.
func lseValues(rng *rand.Rand, n int) [][2]uint64 {
	edges := []uint64{0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff, 0x7fffffff, 0x80000000,
		0xffffffff, 0x7fffffffffffffff, 0x8000000000000000, ^uint64(0)}
	pick := func() uint64 {
		if rng.Intn(2) == 0 {
			return edges[rng.Intn(len(edges))]
		}
		return rng.Uint64()
	}
	v := make([][2]uint64, n)
	for i := range v {
		v[i] = [2]uint64{pick(), pick()}
	}
	return v
}

// lseSizes: mnemonic suffix, register prefix, store mnemonic, bytes.
var lseSizes = []struct {
	suf, reg, st string
	bytes        int
}{{"b", "w", "strb", 1}, {"h", "w", "strh", 2}, {"", "w", "str", 4}, {"", "x", "str", 8}}

var lseOrders = []string{"", "a", "l", "al"}

// lseSlot emits the address of slot i (16 bytes: memory operand at an offset aligned
// to the access size within the first 8 bytes, register result at +8) into x10, and
// the register result address into x11.
func lseSlot(b *strings.Builder, i, bytes int) {
	off := (i * bytes) % 8
	fmt.Fprintf(b, "\tadrp x9, scratch\n\tadd x9, x9, :lo12:scratch\n")
	fmt.Fprintf(b, "\tadd x11, x9, #%d\n\tadd x10, x9, #%d\n", 16*i+8, 16*i+off)
}

func lseLoad(b *strings.Builder, reg string, v uint64) { fmt.Fprintf(b, "\tldr %s, =%#x\n", reg, v) }

func TestLSEAtomicMemOps(t *testing.T) {
	rng := rand.New(rand.NewSource(81))
	for _, op := range []string{"add", "clr", "eor", "set", "smax", "smin", "umax", "umin", "swp"} {
		t.Run(op, func(t *testing.T) {
			var b strings.Builder
			slot := 0
			for _, sz := range lseSizes {
				for _, ord := range lseOrders {
					mn := "ld" + op + ord + sz.suf
					if op == "swp" {
						mn = "swp" + ord + sz.suf
					}
					for _, v := range lseValues(rng, 3) {
						lseSlot(&b, slot, sz.bytes)
						lseLoad(&b, "x2", v[0])
						fmt.Fprintf(&b, "\t%s %s2, [x10]\n", sz.st, sz.reg)
						lseLoad(&b, "x1", v[1])
						lseLoad(&b, "x3", rng.Uint64())
						fmt.Fprintf(&b, "\t%s %s1, %s3, [x10]\n\tstr x3, [x11]\n", mn, sz.reg, sz.reg)
						slot++
					}
					if op != "swp" && (ord == "" || ord == "l") { // ST<op> aliases (Rt = ZR)
						lseSlot(&b, slot, sz.bytes)
						fmt.Fprintf(&b, "\tstr x9, [x11]\n\tmov x1, #0x5a\n\tst%s%s%s %s1, [x10]\n", op, ord, sz.suf, sz.reg)
						slot++
					}
				}
			}
			CheckCPU(t, "max", "armv8.1-a+crc+crypto", b.String())
		})
	}
}

func TestLSECompareAndSwap(t *testing.T) {
	rng := rand.New(rand.NewSource(82))
	var b strings.Builder
	slot := 0
	for _, sz := range lseSizes {
		for _, ord := range lseOrders {
			for k, v := range lseValues(rng, 4) {
				cmp := v[0] // even k: the compare succeeds (upper register bits random)
				if k%2 == 1 {
					cmp = rng.Uint64()
				} else if sz.bytes < 8 {
					cmp = v[0]&(1<<(8*sz.bytes)-1) | rng.Uint64()<<(8*sz.bytes)
				}
				lseSlot(&b, slot, sz.bytes)
				lseLoad(&b, "x2", v[0])
				fmt.Fprintf(&b, "\t%s %s2, [x10]\n", sz.st, sz.reg)
				lseLoad(&b, "x1", cmp)
				lseLoad(&b, "x2", v[1])
				fmt.Fprintf(&b, "\tcas%s%s %s1, %s2, [x10]\n\tstr x1, [x11]\n", ord, sz.suf, sz.reg, sz.reg)
				slot++
			}
		}
	}
	// CASP: 32-bit pairs in an 8-byte slot, 64-bit pairs in a 16-byte one (Rs:Rs+1
	// receive the old value; x12 records them).
	for _, wide := range []bool{false, true} {
		for _, ord := range lseOrders {
			for k := 0; k < 4; k++ {
				m0, m1, n0, n1 := rng.Uint64(), rng.Uint64(), rng.Uint64(), rng.Uint64()
				c0, c1 := m0, m1
				switch k {
				case 1:
					c0 ^= 1 << uint(rng.Intn(32))
				case 3:
					c1 ^= 1 << uint(rng.Intn(32))
				}
				fmt.Fprintf(&b, "\tadrp x9, scratch\n\tadd x9, x9, :lo12:scratch\n\tadd x10, x9, #%d\n", 16*slot)
				r := "x"
				if !wide {
					r = "w"
				}
				lseLoad(&b, "x2", m0)
				lseLoad(&b, "x3", m1)
				if wide {
					b.WriteString("\tstp x2, x3, [x10]\n")
				} else {
					b.WriteString("\tstp w2, w3, [x10]\n")
				}
				lseLoad(&b, "x4", c0)
				lseLoad(&b, "x5", c1)
				lseLoad(&b, "x6", n0)
				lseLoad(&b, "x7", n1)
				fmt.Fprintf(&b, "\tcasp%s %s4, %s5, %s6, %s7, [x10]\n", ord, r, r, r, r)
				if wide {
					fmt.Fprintf(&b, "\tadd x12, x9, #%d\n\tstp x4, x5, [x12]\n", 16*(slot+1))
					slot += 2
				} else {
					b.WriteString("\tstp x4, x5, [x10, #8]\n") // overwrites nothing the CASP wrote; 16 bytes: slot 8..24
					slot += 2
				}
			}
		}
	}
	if slot*16 > ScratchSize {
		t.Fatalf("test uses %d slots", slot)
	}
	CheckCPU(t, "max", "armv8.1-a+crc+crypto", b.String())
}

func TestLDAPR(t *testing.T) {
	var b strings.Builder
	for i, sz := range []string{"b", "h", "", "x"} {
		r, suf := "w", sz
		if sz == "x" {
			r, suf = "x", ""
		}
		fmt.Fprintf(&b, "\tadrp x9, scratch\n\tadd x9, x9, :lo12:scratch\n\tadd x10, x9, #%d\n", 8*(i+1)*(i+1))
		fmt.Fprintf(&b, "\tmov x%d, #-1\n\tldapr%s %s%d, [x10]\n", 20+i, suf, r, 20+i)
	}
	CheckCPU(t, "max", "armv8.3-a+crc+crypto", b.String())
}

// TestLSEUndefinedOnCortexA57: the A57 (ARMv8.0) has no LSE, so LDADD is UNDEFINED
// there on gemu (EC 0) as under qemu-aarch64 -cpu cortex-a57 (SIGILL).
func TestLSEUndefinedOnCortexA57(t *testing.T) {
	bin := buildMarch(t, t.TempDir(), "\tadrp x9, scratch\n\tadd x9, x9, :lo12:scratch\n\tldadd x1, x2, [x9]\n", "armv8.1-a")
	q, err := exec.LookPath("qemu-aarch64")
	if err != nil {
		t.Skip("qemu-aarch64 not installed (apt-get install qemu-user)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, q, "-cpu", "cortex-a57", bin).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Illegal instruction") {
		t.Fatalf("qemu-aarch64 -cpu cortex-a57 ran LDADD: err %v, output %q", err, out)
	}
	_, gerr := runGemu(bin, 30*time.Second)
	if gerr == nil || !strings.Contains(gerr.Error(), "(EC 0x0)") {
		t.Fatalf("gemu cortex-a57 ran LDADD: %v", gerr)
	}
}

// TestRNDR: on -cpu max, RNDR and RNDRRS (by their encodings, s3_3_c2_c4_{0,1}) read at
// EL0 give values and NZCV as qemu-aarch64 -cpu max's: the flags are observed in the
// same block (after setting them to 1111 first) and the values only through
// "differs from the next read" and "is non-zero", as they are random.
func TestRNDR(t *testing.T) {
	CheckCPU(t, "max", "armv8-a", `
	mov x9, #0xf0000000
	msr nzcv, x9
	mrs x0, s3_3_c2_c4_0
	cset x10, eq
	mrs x1, s3_3_c2_c4_0
	mrs x9, nzcv
	mrs x2, s3_3_c2_c4_1
	cset x11, ne
	cmp x0, x1
	cset x3, ne
	cmp x2, #0
	cset x4, ne
	mov x0, #0
	mov x1, #0
	mov x2, #0
	msr nzcv, x9
`)
}
