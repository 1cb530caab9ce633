package snapshot

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSavevmTimes measures savevm and loadvm of the same counting guest (256 MiB,
// idle but for the counter) on gemu and on QEMU 7.2 under TCG, and logs the times,
// their ratios and the VM state sizes. A measurement, not an assertion: run it with
// GEMU_BENCH_SNAPSHOT=1.
func TestSavevmTimes(t *testing.T) {
	if os.Getenv("GEMU_BENCH_SNAPSHOT") == "" {
		t.Skip("a measurement: set GEMU_BENCH_SNAPSHOT=1")
	}
	needGuest(t, "arm64")
	need(t, "qemu-system-aarch64")
	type result struct {
		save, load time.Duration
		size       int64
	}
	measure := func(bin string) result {
		dir := t.TempDir()
		img := filepath.Join(dir, "disk.qcow2")
		run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "16M")
		sock := filepath.Join(dir, "m.qmp")
		p := start(t, bin, guestArgs("arm64", img, sock)...)
		q := dialQMP(t, sock, p)
		for p.next(t, 5*time.Minute).n < 5 {
		}
		var r result
		t0 := time.Now()
		if out := q.hmp("savevm s1"); out != "" {
			t.Fatalf("%s savevm: %q", bin, out)
		}
		r.save = time.Since(t0)
		p.next(t, time.Minute)
		t0 = time.Now()
		if out := q.hmp("loadvm s1"); out != "" {
			t.Fatalf("%s loadvm: %q", bin, out)
		}
		r.load = time.Since(t0)
		q.ok("quit", nil)
		<-p.exited
		p.exited <- nil
		r.size = snapshotList(t, img)[0].VMStateSize
		return r
	}
	const rounds = 3 // alternating, medians
	var g, q []result
	for i := 0; i < rounds; i++ {
		g = append(g, measure(binary(t)))
		q = append(q, measure("qemu-system-aarch64"))
	}
	med := func(rs []result, f func(result) time.Duration) time.Duration {
		v := make([]time.Duration, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		for i := range v {
			for j := i + 1; j < len(v); j++ {
				if v[j] < v[i] {
					v[i], v[j] = v[j], v[i]
				}
			}
		}
		return v[len(v)/2]
	}
	save := func(r result) time.Duration { return r.save }
	load := func(r result) time.Duration { return r.load }
	la, _ := os.ReadFile("/proc/loadavg")
	t.Logf("savevm: gemu %v, QEMU %v (gemu/QEMU %.2f); loadvm: gemu %v, QEMU %v (%.2f); VM state gemu %d bytes, QEMU %d; load average %s",
		med(g, save), med(q, save), float64(med(g, save))/float64(med(q, save)),
		med(g, load), med(q, load), float64(med(g, load))/float64(med(q, load)), g[0].size, q[0].size, la)
}
