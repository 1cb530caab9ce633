package block

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLockRawWriters(t *testing.T) {
	img := filepath.Join(t.TempDir(), "r.raw")
	if err := os.WriteFile(img, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	// A guest-disk writer refuses other writers; readers that share writes may come.
	a, err := Open(img, OpenOptions{Format: "raw", Unshare: PermWrite})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, err = Open(img, OpenOptions{Format: "raw"})
	var le *LockError
	if !errors.As(err, &le) || le.Error() != "Failed to get \"write\" lock\nIs another process using the image ["+img+"]?" {
		t.Fatalf("second writer: %v", err)
	}
	r, err := Open(img, OpenOptions{Format: "raw", ReadOnly: true})
	if err != nil {
		t.Fatalf("reader sharing writes: %v", err)
	}
	r.Close()
	// A reader that refuses writers is refused while one writes.
	if _, err := Open(img, OpenOptions{Format: "raw", ReadOnly: true, Unshare: PermWrite}); !errors.As(err, &le) || le.Msg != `Failed to get shared "write" lock` {
		t.Fatalf("reader refusing writes: %v", err)
	}
	if _, err := Open(img, OpenOptions{Format: "raw", ReadOnly: true, Unshare: PermWrite, ForceShare: true}); err != nil {
		t.Fatalf("force-share reader: %v", err)
	}
	if _, err := Open(img, OpenOptions{Format: "raw", ForceShare: true}); err == nil || err.Error() != "force-share=on can only be used with read-only images" {
		t.Fatalf("force-share writer: %v", err)
	}
	n, err := Open(img, OpenOptions{Format: "raw", NoLock: true})
	if err != nil {
		t.Fatalf("locking=off writer: %v", err)
	}
	n.Close()
	a.Close()
	b, err := Open(img, OpenOptions{Format: "raw", Unshare: PermWrite})
	if err != nil {
		t.Fatalf("writer after the first closed: %v", err)
	}
	b.Close()
}
