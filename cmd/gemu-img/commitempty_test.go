package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func mapNoOffsets(t *testing.T, s string) []any {
	t.Helper()
	var out []any
	for _, e := range jsonOf(t, s).([]any) {
		m := e.(map[string]any)
		delete(m, "offset")
		if n := len(out); n > 0 {
			p := out[n-1].(map[string]any)
			same := true
			for _, k := range []string{"depth", "present", "zero", "data"} {
				same = same && p[k] == m[k]
			}
			if same && p["start"].(float64)+p["length"].(float64) == m["start"].(float64) {
				p["length"] = p["length"].(float64) + m["length"].(float64)
				continue
			}
		}
		out = append(out, m)
	}
	return out
}

// TestCommitEmptiesTopAsQemu commits the same chain with both tools: the top image
// ends up as qemu-img leaves it (emptied: same map, same file size, the same bytes
// where QEMU rebuilds it from scratch; untouched with -d), and the base holds the
// same contents.
func TestCommitEmptiesTopAsQemu(t *testing.T) {
	needQemu(t)
	needFormat(t, "qcow2")
	cases := []struct {
		name      string
		topOpts   string
		args      []string
		snapshot  bool
		sameBytes bool // QEMU's make_completely_empty: byte-identical result
	}{
		{"default", "", nil, false, true},
		{"lazy_refcounts", "lazy_refcounts=on", nil, false, true},
		{"4k_clusters", "cluster_size=4096", nil, false, true},
		{"snapshot_in_top", "", nil, true, false},
		{"keep_-d", "", []string{"-d"}, false, true},
		{"quiet_-q", "", []string{"-q"}, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var dirs [2]string
			var out [2]result
			for i, tool := range []func(*testing.T, string, ...string) result{gemu, qemu} {
				d := t.TempDir()
				dirs[i] = d
				ok(t, qemu(t, d, "create", "-q", "-f", "qcow2", "base.qcow2", "16M"), "create base")
				qemuIO(t, d, "base.qcow2", "qcow2", "write -P 1 0 4M", "write -P 9 14M 1M")
				args := []string{"create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2"}
				if c.topOpts != "" {
					args = append(args, "-o", c.topOpts)
				}
				ok(t, qemu(t, d, append(args, "top.qcow2")...), "create top")
				qemuIO(t, d, "top.qcow2", "qcow2", "write -P 2 1M 3M", "write -P 3 10M 1M", "write -z 12M 64k", "write -P 4 15M 4k")
				if c.snapshot {
					ok(t, qemu(t, d, "snapshot", "-c", "s", "top.qcow2"), "snapshot")
				}
				out[i] = tool(t, d, append(append([]string{"commit"}, c.args...), "top.qcow2")...)
			}
			if out[0].code != out[1].code || out[0].stdout != out[1].stdout {
				t.Fatalf("commit: gemu-img exit %d %q %s, qemu-img exit %d %q %s", out[0].code, out[0].stdout, out[0].stderr, out[1].code, out[1].stdout, out[1].stderr)
			}
			g, q := dirs[0], dirs[1]
			// Layers and extents equal; host offsets inside base are left out: they
			// follow the order block.Commit's writer allocates base clusters in.
			for _, img := range []string{"top.qcow2", "base.qcow2"} {
				gm := mapNoOffsets(t, ok(t, qemu(t, g, "map", "--output=json", img), "map").stdout)
				qm := mapNoOffsets(t, ok(t, qemu(t, q, "map", "--output=json", img), "map").stdout)
				if !reflect.DeepEqual(gm, qm) {
					t.Errorf("map of %s after commit:\ngemu-img's %v\nqemu-img's %v", img, gm, qm)
				}
			}
			if gv, qv := view(t, g, "base.qcow2"), view(t, q, "base.qcow2"); string(gv) != string(qv) {
				t.Error("base contents differ from qemu-img's commit")
			}
			gs, _ := os.Stat(filepath.Join(g, "top.qcow2"))
			qs, _ := os.Stat(filepath.Join(q, "top.qcow2"))
			if c.sameBytes && gs.Size() != qs.Size() {
				t.Errorf("top file size %d, qemu-img's %d", gs.Size(), qs.Size())
			}
			if c.sameBytes {
				sameBytes(t, filepath.Join(g, "top.qcow2"), filepath.Join(q, "top.qcow2"))
			}
			qemuCheckClean(t, g, "top.qcow2")
			qemuCheckClean(t, g, "base.qcow2")
		})
	}
}
