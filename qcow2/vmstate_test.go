package qcow2

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gemu/block"
)

// TestVMStateArea writes a VM state past the disk, snapshots it and checks the image
// against qemu-img: check is clean, snapshot -l lists the state's size, and after
// qemu-img applies the snapshot the area reads back the same bytes; deleting the
// snapshot leaves check clean too.
func TestVMStateArea(t *testing.T) {
	needQemu(t)
	for _, opts := range []map[string]string{nil, {"cluster_size": "4096"}, {"extended_l2": "on"}, {"cluster_size": "512", "compat": "0.10"}} {
		t.Run(fmt.Sprint(opts), func(t *testing.T) { vmStateArea(t, opts) })
	}
}

func vmStateArea(t *testing.T, opts map[string]string) {
	p := filepath.Join(t.TempDir(), "v.qcow2")
	d := create(t, p, 3<<20+4096, opts, "", "")
	img := d.(*Image)
	m := &model{t: t, d: d, ref: make([]byte, 3<<20+4096)}
	m.write(0, 100<<10, 1)
	// Not a multiple of the cluster size: the tail is padded.
	state := make([]byte, 3<<20+777)
	rand.New(rand.NewSource(1)).Read(state)
	const unit = 1 << 20
	for pos := 0; pos < len(state); pos += unit {
		if _, err := img.WriteVMState(state[pos:min(pos+unit, len(state))], int64(pos)); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.SaveVMSnapshot("s1", uint64(len(state)), 1234567890); err != nil {
		t.Fatal(err)
	}
	// The active table no longer holds the area.
	buf := make([]byte, 4096)
	if _, err := img.ReadVMState(buf, 0); err != nil || !bytes.Equal(buf, make([]byte, 4096)) {
		t.Fatalf("the active VM state area is not empty after the snapshot (err %v)", err)
	}
	m.write(4096, 8192, 2) // the disk goes on after the snapshot
	m.verify(p)
	d.Close()
	qemuCheckClean(t, p)
	var info struct {
		Snapshots []struct {
			Name        string `json:"name"`
			VMStateSize int64  `json:"vm-state-size"`
			VMClockSec  int64  `json:"vm-clock-sec"`
		} `json:"snapshots"`
	}
	if err := json.Unmarshal(run(t, "qemu-img", "info", "--output=json", p), &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Snapshots) != 1 || info.Snapshots[0].VMStateSize != int64(len(state)) || info.Snapshots[0].VMClockSec != 1 {
		t.Fatalf("qemu-img info snapshots: %+v", info.Snapshots)
	}
	run(t, "qemu-img", "snapshot", "-a", "s1", p)
	qemuCheckClean(t, p)
	d2, err := block.Open(p, block.OpenOptions{Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(d2.(*Image).VMStateReader(int64(len(state))))
	if err != nil || !bytes.Equal(got, state) {
		t.Fatalf("VM state after qemu-img snapshot -a differs (err %v, %d bytes)", err, len(got))
	}
	if err := d2.(block.Snapshotter).DeleteSnapshot("s1"); err != nil {
		t.Fatal(err)
	}
	if err := d2.(*Image).DropVMState(); err != nil {
		t.Fatal(err)
	}
	d2.Close()
	qemuCheckClean(t, p)
	if out := run(t, "qemu-img", "check", p); !strings.Contains(string(out), "No errors") {
		t.Fatalf("qemu-img check: %s", out)
	}
}

// TestVMStateFromQEMU reads the VM state QEMU's savevm wrote: after applying the
// snapshot the area starts with QEMU's stream magic "QEVM", at the offset QEMU chose.
func TestVMStateFromQEMU(t *testing.T) {
	needQemu(t)
	if _, err := exec.LookPath("qemu-system-aarch64"); err != nil {
		t.Skip("qemu-system-aarch64 not installed")
	}
	p := filepath.Join(t.TempDir(), "q.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "5M")
	cmd := exec.Command("qemu-system-aarch64", "-M", "virt", "-display", "none", "-serial", "none", "-monitor", "stdio",
		"-drive", "file="+p+",format=qcow2,if=none,id=d0", "-device", "virtio-blk-device,drive=d0")
	cmd.Stdin = strings.NewReader("savevm q1\nquit\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("qemu: %v\n%s", err, out)
	}
	d, err := block.Open(p, block.OpenOptions{Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	img := d.(*Image)
	l, _ := img.Snapshots()
	if len(l) != 1 || l[0].VMStateSize == 0 {
		t.Fatalf("snapshots: %+v", l)
	}
	if err := img.ApplySnapshot("q1"); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(img.VMStateReader(l[0].VMStateSize))
	if err != nil || int64(len(got)) != l[0].VMStateSize || string(got[:4]) != "QEVM" {
		t.Fatalf("QEMU's VM state: %d bytes, %q, err %v", len(got), got[:min(4, len(got))], err)
	}
}
