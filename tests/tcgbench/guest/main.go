// Command guest is the broad CPU benchmark that runs inside a guest (built static for
// the guest's architecture, put into the test initramfs by tests/tcgbench): each case
// is a small, self-checking CPU-bound program of a kind guests really run — crypto,
// hashing, checksums, big numbers, compression, regular expressions, JSON, sorting,
// floating point, timers, threads, process churn. It prints one line per case:
//
//	BENCH <name> <seconds> <check>
//
// where check is a digest of the case's output, so a case that computed something
// else is seen (the host compares it between emulators). Timing uses the guest's own
// clock, which under both gemu and QEMU follows the host's.
package main

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/big"
	"math/cmplx"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/crypto/chacha20poly1305"
)

// A case prepares its input (untimed) and returns the timed work, which returns a value
// summarising its result (for the check column).
type benchCase struct {
	name string
	prep func() func() uint64
}

// timed wraps work that needs no input.
func timed(f func() uint64) func() func() uint64 { return func() func() uint64 { return f } }

var cases = []benchCase{
	{"aes-gcm", aesGCM},
	{"chacha20", chacha},
	{"sha1", hashCase(func() hashWriter { return sha1.New() })},
	{"sha256", hashCase(func() hashWriter { return sha256.New() })},
	{"sha512", hashCase(func() hashWriter { return sha512.New() })},
	{"crc32", crc},
	{"bignum-rsa", timed(rsaCase)},
	{"bignum-ecdsa", timed(ecdsaCase)},
	{"deflate", deflateCase},
	{"zstd", zstdCase},
	{"gzip-decompress", gunzipCase},
	{"regexp", regexpCase},
	{"json", jsonCase},
	{"sort", sortCase},
	{"matmul", timed(matmul)},
	{"fft", timed(fft)},
	{"timers", timed(timers)},
	{"threads", timed(threads)},
	{"fork-exec", timed(forkExec)},
}

func main() {
	want := map[string]bool{}
	for _, a := range os.Args[1:] {
		want[a] = true
	}
	for _, c := range cases {
		if len(want) > 0 && !want[c.name] {
			continue
		}
		run := c.prep()
		start := time.Now()
		sum := run()
		fmt.Printf("BENCH %s %.4f %016x\n", c.name, time.Since(start).Seconds(), sum)
	}
	fmt.Println("BENCH-DONE")
}

// data is deterministic pseudo-random input of n bytes.
func data(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

// text is compressible, regex-friendly input: words and numbers in lines.
func text(n int) []byte {
	words := []string{"alpha", "beta", "gamma", "delta", "kernel", "virtio", "queue", "block", "emulator", "guest", "host", "page"}
	r := rand.New(rand.NewPCG(7, 11))
	var b bytes.Buffer
	for b.Len() < n {
		fmt.Fprintf(&b, "%s %s id=%d user%d@example.org %d.%d.%d.%d\n", words[r.IntN(len(words))], words[r.IntN(len(words))],
			r.IntN(100000), r.IntN(500), r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(256))
	}
	return b.Bytes()[:n]
}

func digest(b []byte) uint64 {
	s := sha256.Sum256(b)
	return binary.LittleEndian.Uint64(s[:])
}

func aesGCM() func() uint64 {
	key := data(32, 1)
	blk, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(blk)
	msg := data(1<<20, 2)
	nonce := make([]byte, g.NonceSize())
	return func() uint64 {
		var out []byte
		for i := 0; i < 24; i++ {
			nonce[0] = byte(i)
			out = g.Seal(out[:0], nonce, msg, nil)
		}
		return digest(out)
	}
}

func chacha() func() uint64 {
	a, _ := chacha20poly1305.New(data(32, 3))
	msg := data(1<<20, 4)
	nonce := make([]byte, a.NonceSize())
	return func() uint64 {
		var out []byte
		for i := 0; i < 16; i++ {
			nonce[0] = byte(i)
			out = a.Seal(out[:0], nonce, msg, nil)
		}
		return digest(out)
	}
}

type hashWriter interface {
	io.Writer
	Sum([]byte) []byte
}

func hashCase(newHash func() hashWriter) func() func() uint64 {
	return func() func() uint64 {
		msg := data(4<<20, 5)
		return func() uint64 {
			h := newHash()
			for i := 0; i < 4; i++ {
				h.Write(msg)
			}
			return binary.LittleEndian.Uint64(h.Sum(nil))
		}
	}
}

func crc() func() uint64 {
	msg := data(8<<20, 6)
	t := crc32.MakeTable(crc32.Castagnoli)
	return func() uint64 {
		var s uint32
		for i := 0; i < 4; i++ {
			s = crc32.Update(s, crc32.IEEETable, msg)
			s = crc32.Update(s, t, msg)
		}
		return uint64(s)
	}
}

// detRand is a deterministic reader for key generation, so every run does the same work.
type detRand struct{ r *rand.Rand }

func (d detRand) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(d.r.Uint32())
	}
	return len(p), nil
}

func rsaCase() uint64 {
	// Fixed primes would be ideal; a deterministic source makes key generation repeat.
	// Multi-precision multiply/modexp dominate either way.
	p, _ := new(big.Int).SetString("e7f0b5c43b2a8d91c6d0f1d2b8a7e1f3c5d9b0a1e2f3c4d5b6a7980716253443b1a2c3d4e5f60718293a4b5c6d7e8f9", 16)
	q, _ := new(big.Int).SetString("c1d2e3f405162738495a6b7c8d9eafb0c1d2e3f405162738495a6b7c8d9eafb0c1d2e3f4051627384a5b6c7d8e9fa1b3", 16)
	n := new(big.Int).Mul(p, q)
	e := big.NewInt(65537)
	m := new(big.Int).SetBytes(data(96, 8))
	var acc uint64
	x := new(big.Int)
	for i := 0; i < 60; i++ {
		x.Exp(m, n, n) // a full-size exponent: private-key-like work
		m.Add(m, e)
		acc ^= x.Uint64()
	}
	_ = rsa.PublicKey{N: n, E: 65537}
	return acc
}

func ecdsaCase() uint64 {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), detRand{rand.New(rand.NewPCG(9, 9))})
	h := sha256.Sum256([]byte("gemu"))
	var ok uint64
	for i := 0; i < 60; i++ {
		r, s, err := ecdsa.Sign(detRand{rand.New(rand.NewPCG(uint64(i), 1))}, k, h[:])
		if err == nil && ecdsa.Verify(&k.PublicKey, h[:], r, s) {
			ok++
		}
	}
	return ok
}

func deflateCase() func() uint64 {
	in := text(1 << 20)
	return func() uint64 {
		var b bytes.Buffer
		w, _ := flate.NewWriter(&b, flate.DefaultCompression)
		w.Write(in)
		w.Close()
		out, _ := io.ReadAll(flate.NewReader(&b))
		return digest(out) ^ uint64(b.Len())
	}
}

func zstdCase() func() uint64 {
	in := text(2 << 20)
	return func() uint64 {
		enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
		c := enc.EncodeAll(in, nil)
		dec, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
		out, _ := dec.DecodeAll(c, nil)
		return digest(out) ^ uint64(len(c))
	}
}

func gunzipCase() func() uint64 {
	in := text(2 << 20)
	var b bytes.Buffer
	w, _ := gzip.NewWriterLevel(&b, gzip.BestSpeed)
	w.Write(in)
	w.Close()
	return func() uint64 {
		var sum uint64
		for i := 0; i < 2; i++ {
			r, _ := gzip.NewReader(bytes.NewReader(b.Bytes()))
			out, _ := io.ReadAll(r)
			sum += digest(out)
		}
		return sum
	}
}

func regexpCase() func() uint64 {
	in := string(text(256 << 10))
	res := []*regexp.Regexp{
		regexp.MustCompile(`user(\d+)@example\.org`),
		regexp.MustCompile(`\b(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b`),
		regexp.MustCompile(`(?i)KERNEL\s+(virtio|queue)`),
	}
	return func() uint64 {
		var n uint64
		for _, re := range res {
			n = n*31 + uint64(len(re.FindAllStringIndex(in, -1)))
		}
		return n
	}
}

type record struct {
	ID    int               `json:"id"`
	Name  string            `json:"name"`
	Tags  []string          `json:"tags"`
	Score float64           `json:"score"`
	Attrs map[string]string `json:"attrs"`
}

func jsonCase() func() uint64 {
	recs := make([]record, 5000)
	for i := range recs {
		recs[i] = record{ID: i, Name: fmt.Sprintf("guest-%d", i), Tags: []string{"a", "b", strings.Repeat("c", i%7)},
			Score: float64(i) / 7, Attrs: map[string]string{"k": "v", "n": fmt.Sprint(i)}}
	}
	return func() uint64 {
		var sum uint64
		for i := 0; i < 2; i++ {
			b, _ := json.Marshal(recs)
			var back []record
			json.Unmarshal(b, &back)
			sum += digest(b) + uint64(len(back))
		}
		return sum
	}
}

func sortCase() func() uint64 {
	r := rand.New(rand.NewPCG(12, 13))
	v := make([]uint64, 1<<18)
	for i := range v {
		v[i] = r.Uint64()
	}
	s := make([]string, 50000)
	for i := range s {
		s[i] = fmt.Sprintf("%x", r.Uint64())
	}
	return func() uint64 {
		sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
		sort.Strings(s)
		return v[len(v)/2] ^ uint64(len(s[0]))
	}
}

func matmul() uint64 {
	const n = 160
	a, b, c := make([]float64, n*n), make([]float64, n*n), make([]float64, n*n)
	for i := range a {
		a[i], b[i] = float64(i%17)/3, float64(i%13)/5
	}
	for rep := 0; rep < 8; rep++ {
		for i := 0; i < n; i++ {
			for k := 0; k < n; k++ {
				aik := a[i*n+k]
				for j := 0; j < n; j++ {
					c[i*n+j] += aik * b[k*n+j]
				}
			}
		}
	}
	var s float64
	for _, x := range c {
		s += x
	}
	return math.Float64bits(s)
}

func fft() uint64 {
	const n = 1 << 16
	x := make([]complex128, n)
	for i := range x {
		x[i] = complex(math.Sin(float64(i)/9), math.Cos(float64(i)/13))
	}
	for rep := 0; rep < 10; rep++ {
		fftInPlace(x)
	}
	var s float64
	for _, v := range x[:64] {
		s += cmplx.Abs(v)
	}
	return math.Float64bits(s)
}

func fftInPlace(x []complex128) {
	n := len(x)
	for i, j := 1, 0; i < n; i++ {
		bit := n >> 1
		for ; j&bit != 0; bit >>= 1 {
			j ^= bit
		}
		j ^= bit
		if i < j {
			x[i], x[j] = x[j], x[i]
		}
	}
	for size := 2; size <= n; size <<= 1 {
		w := cmplx.Exp(complex(0, -2*math.Pi/float64(size)))
		for start := 0; start < n; start += size {
			wk := complex(1, 0)
			for k := 0; k < size/2; k++ {
				u, t := x[start+k], wk*x[start+k+size/2]
				x[start+k], x[start+k+size/2] = u+t, u-t
				wk *= w
			}
		}
	}
	for i := range x {
		x[i] /= complex(math.Sqrt(float64(n)), 0)
	}
}

// timers: many short sleeps and timeouts, as servers and runtimes do; its time is
// mostly the emulator's wake-up latency.
func timers() uint64 {
	var n uint64
	for i := 0; i < 200; i++ {
		time.Sleep(500 * time.Microsecond)
		n++
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				t := time.NewTimer(time.Millisecond)
				<-t.C
				atomic.AddUint64(&n, 1)
			}
		}()
	}
	wg.Wait()
	return n
}

// threads: goroutines contending on a mutex and on atomics.
func threads() uint64 {
	var mu sync.Mutex
	var counter, atom uint64
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500000; i++ {
				mu.Lock()
				counter++
				mu.Unlock()
				atomic.AddUint64(&atom, 2)
			}
		}()
	}
	wg.Wait()
	ch := make(chan int)
	done := make(chan uint64)
	go func() {
		var s uint64
		for v := range ch {
			s += uint64(v)
		}
		done <- s
	}()
	for i := 0; i < 100000; i++ {
		ch <- i
	}
	close(ch)
	return counter + atom + <-done
}

// forkExec starts many short processes (translation-cache churn on exec).
func forkExec() uint64 {
	var n uint64
	for i := 0; i < 100; i++ {
		if err := exec.Command("/bin/busybox", "true").Run(); err == nil {
			n++
		}
	}
	return n
}
