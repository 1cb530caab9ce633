package block

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A probed raw image refuses a guest write that would make it probe as a format qemu-img
// knows (here QED), and a file that already does is refused rather than opened raw.
func TestProbeUnsupportedBlock0(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(img, make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	old := Warn
	Warn = func(string) {}
	defer func() { Warn = old }()
	d, err := Open(img, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt([]byte("QED\x00"), 0); err == nil {
		t.Errorf("write of a QED magic to block 0 of a probed raw image succeeded")
	}
	d.Close()
	if err := os.WriteFile(img, append([]byte("QED\x00"), make([]byte, 8188)...), 0o644); err != nil {
		t.Fatal(err)
	}
	var ue *UnsupportedFormatError
	if _, err := Open(img, OpenOptions{ReadOnly: true}); !errors.As(err, &ue) || ue.Format != "qed" {
		t.Errorf("probing a QED image: %v", err)
	}
	d, err = Open(img, OpenOptions{ReadOnly: true, Format: "raw"})
	if err != nil {
		t.Fatalf("-f raw: %v", err)
	}
	d.Close()
}

// tailFormatFixture registers a stand-in "vpc" so the trailer rules apply in this
// package's tests (the real driver lives in block/vpc, which block must not import).
type tailFormatFixture struct{ rawFormat }

func (tailFormatFixture) Name() string { return "vpc" }

// A probed raw image refuses a guest write that would put a fixed VHD footer in its
// last 512 bytes (it would then probe as vpc), once vpc is implemented.
func TestProbeTailWrite(t *testing.T) {
	if _, err := Lookup("vpc"); err != nil {
		Register(tailFormatFixture{})
	}
	img := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(img, make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	old := Warn
	Warn = func(string) {}
	defer func() { Warn = old }()
	d, err := Open(img, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	foot := make([]byte, 512)
	copy(foot, "conectix")
	bg.PutUint32(foot[60:], 2)
	if _, err := d.WriteAt(foot, 8192-512); err == nil {
		t.Errorf("write of a fixed VHD footer to the end of a probed raw image succeeded")
	}
	if _, err := d.WriteAt(foot[:8], 8192-512); err != nil {
		t.Errorf("a cookie alone (no fixed disk type) was refused: %v", err)
	}
	if _, err := d.WriteAt(make([]byte, 1024), 8192-1024); err != nil {
		t.Errorf("plain write to the end: %v", err)
	}
}
