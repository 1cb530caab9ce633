package snapshot

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gemu/tests/assets"
)

// counterScript counts in a shell variable (guest RAM and registers only) and keeps
// the count on its virtio-blk disk too: each TICK it drops the page cache, reads back
// sector 0 (the count written the tick before, so D= is n-1 whenever the disk and the
// guest agree), then writes n there with fsync.
const counterScript = `loadmods virtio_mmio virtio_pci virtio_blk
i=0;while [ ! -e /dev/vda ]&&[ $i -lt 300 ];do sleep .2;i=$((i+1));done
i=0
while [ $i -lt 100000 ];do echo 3 >/proc/sys/vm/drop_caches;d=$(head -c 8 /dev/vda);echo TICK $i D=$d;printf '%08d' $i|dd of=/dev/vda bs=512 conv=sync,fsync 2>/dev/null;i=$((i+1));sleep .2;done
`

// guestArgs boots arch's guest with the counter on a qcow2 virtio-blk disk: the arm64
// virt board (virtio-mmio), or the PC under TCG (virtio-pci).
func guestArgs(arch, img, sock string, extra ...string) []string {
	board := []string{"-M", "virt", "-cpu", "cortex-a57"}
	console, blk := "ttyAMA0", "virtio-blk-device"
	if arch == "amd64" {
		board = []string{"-accel", "tcg"}
		console, blk = "ttyS0", "virtio-blk-pci"
	}
	return append(append(board, "-m", "256", "-nographic",
		"-kernel", assets.Kernel(arch), "-initrd", assets.Initrd(arch),
		"-append", "console="+console+" "+assets.CmdArg(counterScript),
		"-drive", "file="+img+",if=none,id=d0,format=qcow2", "-device", blk+",drive=d0",
		"-qmp", "unix:"+sock+",server=on,wait=off"), extra...)
}

// checkResumed: the first TICK after a restore follows the saved one (no reboot: no
// TICK 0) and the disk holds what it held at the save (D= is the count before). The
// caller drained the queue before the restore; TICKs the guest printed between that
// and the restore are past the snapshot's and skipped.
func checkResumed(t *testing.T, p *proc, saved tick) tick {
	t.Helper()
	first := p.next(t, time.Minute)
	for i := 0; i < 50 && first.n > saved.n+1; i++ {
		first = p.next(t, time.Minute)
	}
	if first.n != saved.n+1 && first.n != saved.n {
		t.Fatalf("restored guest printed TICK %d first, the snapshot was taken after TICK %d; console:\n%s", first.n, saved.n, p.console())
	}
	if want := fmt.Sprintf("%08d", first.n-1); first.disk != want {
		t.Fatalf("restored guest read %q from its disk at TICK %d, want %q (the snapshot's disk)", first.disk, first.n, want)
	}
	if next := p.next(t, 30*time.Second); next.n != first.n+1 {
		t.Fatalf("restored guest printed TICK %d after %d", next.n, first.n)
	}
	return first
}

func snapshotList(t *testing.T, img string) []struct {
	Name        string `json:"name"`
	VMStateSize int64  `json:"vm-state-size"`
	VMClockSec  int64  `json:"vm-clock-sec"`
} {
	t.Helper()
	var info struct {
		Snapshots []struct {
			Name        string `json:"name"`
			VMStateSize int64  `json:"vm-state-size"`
			VMClockSec  int64  `json:"vm-clock-sec"`
		} `json:"snapshots"`
	}
	if err := json.Unmarshal([]byte(run(t, "qemu-img", "info", "--output=json", "-U", img)), &info); err != nil {
		t.Fatal(err)
	}
	return info.Snapshots
}

func checkClean(t *testing.T, img string) {
	t.Helper()
	if out := run(t, "qemu-img", "check", img); !strings.Contains(out, "No errors were found on the image.") {
		t.Fatalf("qemu-img check: %s", out)
	}
}

// TestSaveLoadVM: savevm while the counter runs, the counter goes on, loadvm brings
// it back to the saved point with the snapshot's disk (no reboot); the image lists
// the snapshot with its VM state for qemu-img and gemu-img and checks clean; a new
// process started with -loadvm resumes from it; delvm removes it, check still clean.
func TestSaveLoadVM(t *testing.T) { saveLoadVM(t, "arm64") }

// TestSaveLoadVMPC is the same on the PC board under TCG (about 40 s on an idle
// 2-core host since the x86 translator lowers the common forms to IR).
func TestSaveLoadVMPC(t *testing.T) { saveLoadVM(t, "amd64") }

func saveLoadVM(t *testing.T, arch string) {
	needGuest(t, arch)
	need(t)
	bin := binaryFor(t, arch)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "16M")
	sock := filepath.Join(dir, "a.qmp")
	p := start(t, bin, guestArgs(arch, img, sock)...)
	q := dialQMP(t, sock, p)
	boot := 3 * time.Minute
	if arch == "amd64" {
		boot = 30 * time.Minute // a safety net for a hung guest, not an assertion on speed
	}
	for p.next(t, boot).n < 5 {
	}
	// stop first so that the last TICK before the snapshot is known.
	q.ok("stop", nil)
	time.Sleep(300 * time.Millisecond) // the console lines already written reach the reader
	saved := p.drain()
	if out := q.hmp("savevm s1"); out != "" {
		t.Fatalf("savevm: %q", out)
	}
	if st := q.status(); st != "paused" {
		t.Fatalf("status after savevm of a stopped guest: %s", st)
	}
	q.ok("cont", nil)
	// The counter goes on past the snapshot.
	for p.next(t, time.Minute).n < saved.n+4 {
	}
	out := q.hmp("info snapshots")
	row := regexp.MustCompile(`(?m)^--\s+s1\s+(\d[\d.]* [KMG]iB) \d{4}-\d\d-\d\d \d\d:\d\d:\d\d (\d\d:\d\d:\d\d\.\d{3})\s*$`)
	if !strings.HasPrefix(out, "List of snapshots present on all disks:\nID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n") || !row.MatchString(out) {
		t.Fatalf("info snapshots:\n%s", out)
	}
	// A second savevm, of a running guest: STOP then RESUME, and it keeps running.
	before := len(q.events)
	if out := q.hmp("savevm s2"); out != "" {
		t.Fatalf("savevm s2: %q", out)
	}
	if st := q.status(); st != "running" {
		t.Fatalf("status after savevm of a running guest: %s", st)
	}
	var evs []string
	for _, e := range q.events[before:] {
		evs = append(evs, e.Event)
	}
	if strings.Join(evs, ",") != "STOP,RESUME" {
		t.Fatalf("events of savevm of a running guest: %v", evs)
	}
	p.drain()
	p.next(t, time.Minute)

	p.drain()
	if out := q.hmp("loadvm s1"); out != "" {
		t.Fatalf("loadvm: %q", out)
	}
	checkResumed(t, p, saved)
	if st := q.status(); st != "running" {
		t.Fatalf("status after loadvm: %s", st)
	}
	if strings.Count(p.console(), "Booting Linux") > 1 {
		t.Fatalf("the guest booted again:\n%s", p.console())
	}
	// A missing tag: QEMU's error, and the guest stays stopped (restore-vm) as QEMU 7.2's.
	if out := q.hmp("loadvm nope"); out != "Error: Snapshot 'nope' does not exist in one or more devices\n" {
		t.Fatalf("loadvm nope: %q", out)
	}
	if st := q.status(); st != "restore-vm" {
		t.Fatalf("status after a failed loadvm: %s", st)
	}
	// The QMP job on the running guest: STOP, the load, RESUME; the counter is back
	// at the snapshot again.
	q.ok("cont", nil)
	p.next(t, time.Minute)
	p.drain()
	before = len(q.events)
	q.ok("snapshot-load", map[string]any{"job-id": "j1", "tag": "s1", "vmstate": "d0", "devices": []string{"d0"}})
	if st := strings.Join(q.jobStatuses("j1", "concluded"), " "); st != "created running waiting pending concluded" {
		t.Fatalf("snapshot-load job: %s", st)
	}
	checkResumed(t, p, saved)
	evs = nil
	for _, e := range q.events[before:] {
		if e.Event != "JOB_STATUS_CHANGE" {
			evs = append(evs, e.Event)
		}
	}
	if strings.Join(evs, ",") != "STOP,RESUME" {
		t.Fatalf("events of snapshot-load on a running guest: %v", evs)
	}
	q.ok("quit", nil)
	<-p.exited
	p.exited <- nil

	checkClean(t, img)
	l := snapshotList(t, img)
	// VM CLOCK is the guest clock: at TICK 5 the guest has run for more than a second.
	if len(l) != 2 || l[0].Name != "s1" || l[0].VMStateSize == 0 || l[0].VMClockSec < 1 || l[1].Name != "s2" || l[1].VMStateSize == 0 {
		t.Fatalf("qemu-img info: snapshots %+v", l)
	}
	for _, tool := range []string{"qemu-img", filepath.Join(filepath.Dir(bin), "gemu-img")} {
		if _, err := exec.LookPath(tool); err != nil {
			continue
		}
		out := run(t, tool, "snapshot", "-l", "-U", img)
		if !regexp.MustCompile(`(?m)^1\s+s1\s+\d[\d.]* [KMG]iB \d{4}-`).MatchString(out) {
			t.Fatalf("%s snapshot -l:\n%s", tool, out)
		}
	}
	t.Logf("snapshot s1 after TICK %d: VM state %d bytes", saved.n, l[0].VMStateSize)

	// A new process resumes from the snapshot with -loadvm.
	sock2 := filepath.Join(dir, "b.qmp")
	p2 := start(t, bin, guestArgs(arch, img, sock2, "-loadvm", "s1")...)
	q2 := dialQMP(t, sock2, p2)
	checkResumed(t, p2, saved)
	if strings.Contains(p2.console(), "Booting Linux") {
		t.Fatalf("-loadvm booted the guest:\n%s", p2.console())
	}
	for _, tag := range []string{"s1", "s2"} {
		if out := q2.hmp("delvm " + tag); out != "" {
			t.Fatalf("delvm %s: %q", tag, out)
		}
	}
	if out := q2.hmp("info snapshots"); out != "There is no snapshot available.\n" {
		t.Fatalf("info snapshots after delvm: %q", out)
	}
	q2.ok("quit", nil)
	<-p2.exited
	p2.exited <- nil
	checkClean(t, img)
	if l := snapshotList(t, img); len(l) != 0 {
		t.Fatalf("snapshots after delvm: %+v", l)
	}
}
