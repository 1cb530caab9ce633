package qcow2

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/klauspost/compress/flate"
)

// TestLooksRandom checks the early-abort probe on the kinds of cluster it must judge:
// random and already-compressed data are skipped; anything with structure an encoder
// can use is left to the encoder.
func TestLooksRandom(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	random := func(n int) []byte { b := make([]byte, n); r.Read(b); return b }
	var text strings.Builder
	for i := 0; text.Len() < 1<<20; i++ {
		fmt.Fprintf(&text, "line %d: the quick brown fox jumps over the lazy dog\n", i)
	}
	// Compressed data: deflate of text that does not repeat much (random hex lines).
	var hex strings.Builder
	for hex.Len() < 1<<20 {
		fmt.Fprintf(&hex, "%x %d\n", r.Int63(), r.Intn(1000))
	}
	var deflated bytes.Buffer
	w, _ := flate.NewWriter(&deflated, 6)
	w.Write([]byte(hex.String()))
	w.Close()
	if deflated.Len() < 65536 {
		t.Fatalf("deflate output only %d bytes", deflated.Len())
	}

	withRun := random(65536)
	clear(withRun[30000:32048]) // 2 KiB of zeroes inside random bytes
	repeated := bytes.Repeat(random(4096), 16)
	halfText := append(random(32768), text.String()[:32768]...)
	b64 := []byte(base64.StdEncoding.EncodeToString(random(49152)))

	for _, c := range []struct {
		name string
		p    []byte
		want bool
	}{
		{"random 64K", random(65536), true},
		{"random 2M", random(2 << 20), true},
		{"deflate output", deflated.Bytes()[:65536], true},
		{"text", []byte(text.String()[:65536]), false},
		{"zeroes", make([]byte, 65536), false},
		{"random + 2K zero run", withRun, false},
		{"4K random block x16", repeated, false},
		{"half random half text", halfText, false},
		{"base64 of random", b64, false},
		{"small cluster", random(4096), false},
	} {
		if got := looksRandom(c.p); got != c.want {
			t.Errorf("%s: looksRandom = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestLooksRandomForgoesLittle bounds what the probe can cost: over clusters of random
// bytes carrying sparse structure (short repeats and runs at unaligned places), every
// cluster the probe skips is one that zstd and deflate shrink by under 1% at best, so
// storing it raw loses almost nothing.
func TestLooksRandomForgoesLittle(t *testing.T) {
	r := rand.New(rand.NewSource(11))
	skipped := 0
	for i := 0; i < 300; i++ {
		p := make([]byte, 65536)
		r.Read(p)
		for k := r.Intn(8); k > 0; k-- {
			n := 8 + r.Intn(120)
			src, dst := r.Intn(len(p)-n), r.Intn(len(p)-n)
			if r.Intn(2) == 0 {
				copy(p[dst:dst+n], p[src:src+n])
			} else {
				clear(p[dst : dst+n])
			}
		}
		if !looksRandom(p) {
			continue
		}
		skipped++
		for name, f := range map[string]func([]byte, int) ([]byte, error){"zstd": zstdCluster, "deflate": deflateCluster} {
			out, err := f(p, len(p)-1)
			if err != nil {
				t.Fatal(err)
			}
			if out != nil && len(out) < len(p)*99/100 {
				t.Errorf("cluster %d: probe skipped it but %s shrinks it to %d bytes", i, name, len(out))
			}
		}
	}
	if skipped < 100 {
		t.Errorf("probe skipped only %d of 300 near-random clusters", skipped)
	}
}

func BenchmarkLooksRandom(b *testing.B) {
	p := make([]byte, 65536)
	rand.New(rand.NewSource(1)).Read(p)
	b.SetBytes(int64(len(p)))
	for i := 0; i < b.N; i++ {
		if !looksRandom(p) {
			b.Fatal("random judged compressible")
		}
	}
}

func BenchmarkLooksRandomText(b *testing.B) {
	var text strings.Builder
	for i := 0; text.Len() < 65536; i++ {
		fmt.Fprintf(&text, "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor %08d\n", i)
	}
	p := []byte(text.String()[:65536])
	b.SetBytes(int64(len(p)))
	for i := 0; i < b.N; i++ {
		if looksRandom(p) {
			b.Fatal("text judged random")
		}
	}
}
