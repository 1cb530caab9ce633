package snapshot

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"gemu/tests/assets"
)

// jobScript drives the snapshot jobs over QMP and returns a transcript: each job's
// JOB_STATUS_CHANGE statuses, the errors of refused commands, query-jobs, and the
// image's snapshots as qemu-img lists them (names and whether they hold a VM state).
func jobScript(t *testing.T, bin string, dir string, extra []string) []string {
	img := filepath.Join(dir, "j.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "16M")
	sock := filepath.Join(dir, "j.qmp")
	args := append([]string{"-M", "virt", "-S", "-display", "none", "-serial", "null",
		"-blockdev", "driver=file,filename=" + img + ",node-name=f0", "-blockdev", "driver=qcow2,file=f0,node-name=d0",
		"-device", "virtio-blk-device,drive=d0", "-qmp", "unix:" + sock + ",server=on,wait=off"}, extra...)
	p := start(t, bin, args...)
	q := dialQMP(t, sock, p)
	var out []string
	job := func(cmd, id string, args map[string]any) {
		args["job-id"] = id
		if _, e := q.call(cmd, args); e != "" {
			out = append(out, fmt.Sprintf("%s %s: error %s", cmd, id, e))
			return
		}
		out = append(out, fmt.Sprintf("%s %s: %s", cmd, id, strings.Join(q.jobStatuses(id, "concluded"), " ")))
	}
	save := func(id, tag, vm string, devs ...string) {
		job("snapshot-save", id, map[string]any{"tag": tag, "vmstate": vm, "devices": append([]string{}, devs...)})
	}
	save("j1", "s1", "d0", "d0")
	save("j2", "s1", "d0", "d0") // exists
	job("snapshot-load", "j3", map[string]any{"tag": "nope", "vmstate": "d0", "devices": []string{"d0"}})
	save("j4", "s2", "dx", "d0")
	save("j5", "s2", "d0")
	save("j6", "s2", "d0", "zz")
	save("j2", "s3", "d0", "d0")                                                       // job id in use
	job("snapshot-save", "j9", map[string]any{"tag": "s2", "devices": []string{"d0"}}) // no vmstate
	job("snapshot-load", "j7", map[string]any{"tag": "s1", "vmstate": "d0", "devices": []string{"d0"}})
	out = append(out, "status "+q.status())
	save("j10", "s4", "d0", "d0")
	job("snapshot-delete", "j8", map[string]any{"tag": "s1", "devices": []string{"d0"}})
	job("snapshot-delete", "j11", map[string]any{"tag": "s1", "devices": []string{"d0"}}) // gone: nothing to do
	if _, e := q.call("job-dismiss", map[string]string{"id": "zz"}); e != "" {
		out = append(out, "job-dismiss zz: "+e)
	}
	q.ok("job-dismiss", map[string]string{"id": "j1"})
	out = append(out, "job-dismiss j1: "+strings.Join(q.jobStatuses("j1", "null"), " "))
	var jobs []map[string]any
	json.Unmarshal(q.ok("query-jobs", nil), &jobs)
	for _, j := range jobs {
		out = append(out, fmt.Sprintf("query-jobs %v %v %v %v/%v %v", j["id"], j["type"], j["status"], j["current-progress"], j["total-progress"], j["error"]))
	}
	q.ok("quit", nil)
	<-p.exited
	p.exited <- nil
	for _, s := range snapshotList(t, img) {
		out = append(out, fmt.Sprintf("snapshot %s vm-state %v", s.Name, s.VMStateSize > 0))
	}
	checkClean(t, img)
	return out
}

// TestSnapshotJobsLikeQEMU runs the same QMP script of snapshot-save, -load and
// -delete jobs on QEMU 7.2 and gemu: the same job status sequences, errors,
// query-jobs list and resulting snapshots.
func TestSnapshotJobsLikeQEMU(t *testing.T) {
	need(t, "qemu-system-aarch64")
	if why := assets.Missing("arm64"); why != "" {
		t.Skip(why)
	}
	want := jobScript(t, "qemu-system-aarch64", t.TempDir(), nil)
	got := jobScript(t, binary(t), t.TempDir(), []string{"-kernel", assets.Kernel("arm64")})
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("gemu:\n%s\n\nQEMU 7.2:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	t.Logf("transcript:\n%s", strings.Join(got, "\n"))
}
