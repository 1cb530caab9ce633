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

// The FP/AdvSIMD extensions of -cpu max (RDM, DotProd, SHA512, SHA3, SM3, SM4, FP16) through the whole
// translator (target-arm's own tests check each instruction's semantics against
// qemu-aarch64 through the decoder): a snippet fills v1-v7 with boundary and random
// values and runs every class into v16-v31, under gemu and qemu-aarch64 -cpu max; and
// on the Cortex-A57 (ARMv8.0) each is UNDEFINED on both.

const isaExtMarch = "armv8.2-a+crypto+rdma+dotprod+sha3+sm4+fp16"

var isaExtInsns = []string{
	"sqrdmlah v16.8h, v1.8h, v2.8h", "sqrdmlsh v17.4s, v3.4s, v4.4s", "sqrdmlah h18, h5, h6",
	"sqrdmlah v19.4s, v1.4s, v7.s[3]", "sqrdmlsh v20.8h, v2.8h, v3.h[6]", "sqrdmlsh s21, s4, v5.s[1]",
	"sdot v22.4s, v1.16b, v2.16b", "udot v23.2s, v3.8b, v4.8b", "sdot v24.4s, v5.16b, v6.4b[2]",
	"sha512h q25, q1, v2.2d", "sha512h2 q26, q3, v4.2d", "sha512su0 v27.2d, v5.2d", "sha512su1 v28.2d, v6.2d, v7.2d",
	"eor3 v29.16b, v1.16b, v2.16b, v3.16b", "bcax v30.16b, v4.16b, v5.16b, v6.16b", "rax1 v31.2d, v7.2d, v1.2d",
	"xar v16.2d, v2.2d, v3.2d, #17", "sm3ss1 v17.4s, v1.4s, v2.4s, v3.4s", "sm3tt1b v18.4s, v4.4s, v5.s[2]",
	"sm3tt2a v19.4s, v6.4s, v7.s[1]", "sm3partw1 v20.4s, v1.4s, v2.4s", "sm3partw2 v21.4s, v3.4s, v4.4s",
	"sm4e v22.4s, v5.4s", "sm4ekey v23.4s, v6.4s, v7.4s",
	"fadd v24.8h, v1.8h, v2.8h", "fmla v25.4h, v3.4h, v4.h[5]", "fmadd h26, h5, h6, h7", "fsqrt v27.8h, v1.8h",
	"fcvtzs w12, h2", "scvtf h28, x9", "fmaxnmv h29, v3.8h", "frecpe v30.8h, v4.8h", "fcmgt v31.8h, v5.8h, #0.0",
}

func isaExtSnippet(rng *rand.Rand) string {
	edges := []uint64{0x8000800080008000, 0x7fff7fff7fff7fff, 0x8000000080000000, 0x7fffffff7fffffff,
		0x80007fff0001ffff, 0x7f80ff017f80ff01, ^uint64(0), 0}
	pick := func() uint64 {
		if rng.Intn(2) == 0 {
			return edges[rng.Intn(len(edges))]
		}
		return rng.Uint64()
	}
	var b strings.Builder
	for i := 1; i <= 7; i++ {
		fmt.Fprintf(&b, "\tldr x9, =%#x\n\tldr x10, =%#x\n\tfmov d%d, x9\n\tmov v%d.d[1], x10\n", pick(), pick(), i, i)
	}
	for i := 16; i < 32; i++ {
		fmt.Fprintf(&b, "\tldr x9, =%#x\n\tdup v%d.2d, x9\n", pick(), i)
	}
	for _, in := range isaExtInsns {
		fmt.Fprintf(&b, "\t%s\n", in)
	}
	b.WriteString("\tmrs x11, fpsr\n") // QC from the saturating RDM forms, FP16 exceptions
	// FZ16: the same FP16 operations flushing denormals (FPCR.FZ16, bit 19).
	b.WriteString("\tmov x9, #(1 << 19)\n\tmsr fpcr, x9\n\tmsr fpsr, xzr\n\tfmul v20.8h, v1.8h, v2.8h\n\tfadd h21, h3, h4\n\tmrs x13, fpsr\n\tmrs x14, fpcr\n")
	return b.String()
}

func TestISAExtensionsMax(t *testing.T) {
	rng := rand.New(rand.NewSource(91))
	for i := 0; i < 4; i++ {
		CheckCPU(t, "max", isaExtMarch, isaExtSnippet(rng))
	}
}

func TestISAExtensionsUndefinedOnCortexA57(t *testing.T) {
	q, err := exec.LookPath("qemu-aarch64")
	if err != nil {
		t.Skip("qemu-aarch64 not installed (apt-get install qemu-user)")
	}
	for _, in := range isaExtInsns {
		bin := buildMarch(t, t.TempDir(), "\t"+in+"\n", isaExtMarch)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		out, err := exec.CommandContext(ctx, q, "-cpu", "cortex-a57", bin).CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), "Illegal instruction") {
			t.Errorf("qemu-aarch64 -cpu cortex-a57 ran %s: err %v, output %q", in, err, out)
		}
		if _, gerr := runGemu(bin, 30*time.Second); gerr == nil || !strings.Contains(gerr.Error(), "(EC 0x0)") {
			t.Errorf("gemu cortex-a57 ran %s: %v", in, gerr)
		}
	}
}
