package vmdk

import (
	"os"
	"path/filepath"
	"testing"
)

// addSeeds seeds a fuzz target with the hostile corpus and two valid images.
func addSeeds(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(hostileDir, "*"))
	if len(files) == 0 {
		f.Fatal("no hostile corpus to seed from")
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(sparseBase(f))
	f.Add(streamBase(f))
}

// FuzzOpen: header, footer and descriptor parsing never panic and fail with an
// error or produce a consistent image.
func FuzzOpen(f *testing.F) {
	addSeeds(f)
	f.Add([]byte(hdesc + "RW 8 ZERO\nRDONLY 16 ZERO\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := parseDescriptor(b); err == nil && len(b) > maxDescBytes {
			t.Fatal("oversized descriptor accepted")
		}
		if len(b) >= sectorSize {
			if h, err := parseHeader(b); err == nil && h.validate() == nil && h.gdEntries() > maxGDEntries {
				t.Fatal("validate accepted an oversized grain directory")
			}
		}
		p := filepath.Join(t.TempDir(), "f.vmdk")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := vmdkFormat{}.Open(p, openRO)
		if err != nil {
			return
		}
		if d.Size() < 0 {
			t.Fatalf("negative size %d", d.Size())
		}
		d.Close()
	})
}

// FuzzRead: reading and mapping an accepted image never panics and stays bounded.
func FuzzRead(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), "f.vmdk")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		exercise(p)
	})
}
