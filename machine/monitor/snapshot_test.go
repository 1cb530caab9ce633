package monitor

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

// snapFake is a Machine with snapshots: it records the requests and lists disks.
type snapFake struct {
	*fake
	reqs  []string
	disks []SnapshotDisk
	err   error
}

func (f *snapFake) note(op string, r SnapshotRequest) error {
	f.reqs = append(f.reqs, op+" "+r.Tag)
	if r.Devices != nil || r.VMState != "" || r.Overwrite != (op == "save" || op == "load" || op == "delete") {
		f.reqs = append(f.reqs, "unexpected HMP request fields")
	}
	return f.err
}
func (f *snapFake) SaveSnapshot(r SnapshotRequest) error   { return f.note("save", r) }
func (f *snapFake) LoadSnapshot(r SnapshotRequest) error   { return f.note("load", r) }
func (f *snapFake) DeleteSnapshot(r SnapshotRequest) error { return f.note("delete", r) }
func (f *snapFake) SnapshotDisks() ([]SnapshotDisk, error) { return f.disks, f.err }

// TestHMPSnapshot checks the HMP side without a guest: argument handling, the name of
// an unnamed savevm, errors, and info snapshots' tables (whose layout tests/snapshot
// compares with QEMU 7.2's).
func TestHMPSnapshot(t *testing.T) {
	f := &snapFake{fake: &fake{status: Running}}
	s := NewServer(f, Options{})
	hmp := func(line string) string { return strings.ReplaceAll(s.hmp(line, nil), "\r\n", "\n") }
	for line, want := range map[string]string{
		"loadvm":         "loadvm: string expected\nTry \"help loadvm\" for more information\n",
		"delvm a b":      "delvm: extraneous characters at the end of line\nTry \"help delvm\" for more information\n",
		"savevm x":       "",
		"loadvm x":       "",
		"delvm x":        "",
		"info snapshots": "There is no snapshot available.\n",
	} {
		if got := hmp(line); got != want {
			t.Errorf("%s: %q, want %q", line, got, want)
		}
	}
	f.reqs = nil
	hmp("savevm")
	if len(f.reqs) != 1 || !regexp.MustCompile(`^save vm-\d{14}$`).MatchString(f.reqs[0]) {
		t.Fatalf("unnamed savevm: %q", f.reqs)
	}
	day := time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local)
	f.disks = []SnapshotDisk{
		{"d0", []DiskSnapshot{{ID: "1", Name: "both", VMStateSize: 919 << 10, Date: day, VMClock: 3723*time.Second + 45*time.Millisecond, ICount: -1},
			{ID: "2", Name: "d0only", Date: day, ICount: -1}}},
		{"d1", []DiskSnapshot{{ID: "7", Name: "both", Date: day, ICount: -1}, {ID: "8", Name: "d1only", Date: day, ICount: 0}}},
	}
	want := "List of snapshots present on all disks:\n" +
		"ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n" +
		"--        both              919 KiB 2026-01-02 03:04:05 01:02:03.045           \n" +
		"List of partial (non-loadable) snapshots on 'd0':\n" +
		"ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n" +
		"2         d0only                0 B 2026-01-02 03:04:05 00:00:00.000           \n" +
		"List of partial (non-loadable) snapshots on 'd1':\n" +
		"ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n" +
		"8         d1only                0 B 2026-01-02 03:04:05 00:00:00.000          0\n"
	if got := hmp("info snapshots"); got != want {
		t.Fatalf("info snapshots:\n%s\nwant:\n%s", got, want)
	}
	f.err = errors.New("no block device can store vmstate for snapshot")
	if got := hmp("savevm y"); got != "Error: no block device can store vmstate for snapshot\n" {
		t.Fatalf("savevm error: %q", got)
	}
	if got := hmp("info snapshots"); got != "no block device can store vmstate for snapshot\n" {
		t.Fatalf("info snapshots error: %q", got)
	}
	for v, want := range map[int64]string{0: "0 B", 1000: "0.977 KiB", 919 << 10: "919 KiB", 57 << 20: "57 MiB", 1536 << 20: "1.5 GiB"} {
		if got := sizeToStr(v); got != want {
			t.Errorf("sizeToStr(%d) = %q, want %q", v, got, want)
		}
	}
}
