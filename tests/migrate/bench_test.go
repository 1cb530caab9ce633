package migrate

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp/raw"
)

// TestBenchMigrate is `make bench-migrate` (GEMU_BENCH_MIGRATE=1): for gemu and
// qemu-system-aarch64 7.2 alternately, on the same 512 MiB guest (the counter, mostly
// idle memory), the time to save to a file (migrate until completed), the stream
// size, and the time from starting a new process with the state to the guest running
// (query-status "running"); medians and gemu/QEMU ratios. QEMU 7.2 has no file: URI,
// so both use exec:cat, gemu file: as well for the restore.
func TestBenchMigrate(t *testing.T) {
	if os.Getenv("GEMU_BENCH_MIGRATE") == "" {
		t.Skip("benchmark: run with make bench-migrate")
	}
	needAssets(t)
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Skip("qemu-system-aarch64 not installed")
	}
	runs := 3
	if n, err := strconv.Atoi(os.Getenv("RUNS")); err == nil && n > 0 {
		runs = n
	}
	type result struct {
		save, restore []time.Duration
		size          []int64
	}
	res := map[string]*result{"gemu": {}, "qemu": {}}
	for i := 0; i < runs; i++ {
		for _, emu := range []string{"gemu", "qemu"} {
			bin := binary(t)
			if emu == "qemu" {
				bin = qemu
			}
			dir := t.TempDir()
			src := startBin(t, bin, dir, "src", "512")
			r, _ := dial(t, src)
			for src.tick(t, 5*time.Minute) < 3 {
			}
			state := filepath.Join(dir, "vm.state")
			t0 := time.Now()
			if err := r.Migrate("exec:cat > "+state, nil, nil, nil); err != nil {
				t.Fatalf("%s migrate: %v", emu, err)
			}
			info := waitMigration(t, r)
			save := time.Since(t0)
			if *info.Status != raw.MigrationStatusCompleted {
				t.Fatalf("%s: migration %v", emu, *info.Status)
			}
			last := src.drain()
			src.cmd.Process.Kill()
			fi, err := os.Stat(state)
			if err != nil {
				t.Fatal(err)
			}
			uri := "exec:cat " + state
			if emu == "gemu" {
				uri = "file:" + state
			}
			t1 := time.Now()
			dst := startBin(t, bin, dir, "dst", "512", "-incoming", uri)
			dr, _ := dial(t, dst)
			for {
				st, err := dr.QueryStatus()
				if err != nil {
					t.Fatal(err)
				}
				if st.Status == raw.RunStateRunning {
					break
				}
				if time.Since(t1) > 2*time.Minute {
					t.Fatalf("%s: restore not running after 2 minutes (%v)", emu, st.Status)
				}
				time.Sleep(2 * time.Millisecond)
			}
			restore := time.Since(t1)
			checkContinues(t, dst, last)
			dst.cmd.Process.Kill()
			rr := res[emu]
			rr.save, rr.restore, rr.size = append(rr.save, save), append(rr.restore, restore), append(rr.size, fi.Size())
			t.Logf("run %d %s: save %v, stream %d bytes, restore to running %v", i+1, emu, save, fi.Size(), restore)
		}
	}
	med := func(d []time.Duration) time.Duration {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	medSize := func(d []int64) int64 {
		s := append([]int64(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	g, q := res["gemu"], res["qemu"]
	fmt.Printf("bench-migrate, 512 MiB arm64 guest (idle memory), %d runs each, medians:\n", runs)
	fmt.Printf("  save to file:        gemu %v, qemu %v, gemu/qemu %.2f\n", med(g.save), med(q.save), float64(med(g.save))/float64(med(q.save)))
	fmt.Printf("  stream size:         gemu %d, qemu %d, gemu/qemu %.2f\n", medSize(g.size), medSize(q.size), float64(medSize(g.size))/float64(medSize(q.size)))
	fmt.Printf("  restore to running:  gemu %v, qemu %v, gemu/qemu %.2f\n", med(g.restore), med(q.restore), float64(med(g.restore))/float64(med(q.restore)))
}
