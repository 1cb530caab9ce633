package memory

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"unsafe"
)

func TestSlotsAndDMA(t *testing.T) {
	r := New()
	defer r.Close()
	if _, err := r.Add("low", 0, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Add("high", 1<<20, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Add("overlap", 1<<19, 1<<20); !errors.Is(err, ErrOverlap) {
		t.Fatalf("overlap: got %v", err)
	}
	if _, err := r.Add("odd", 4<<20, 100); err == nil {
		t.Fatal("odd size accepted")
	}
	// A write spanning the two slots lands in both.
	msg := []byte("spans two slots")
	gpa := uint64(1<<20 - 5)
	if err := r.WriteAt(msg, gpa); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if err := r.ReadAt(got, gpa); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read back %q, %v", got, err)
	}
	if _, ok := r.Slice(gpa, uint64(len(msg))); ok {
		t.Fatal("Slice across slots must fail")
	}
	if s, ok := r.Slice(0x1000, 16); !ok || len(s) != 16 {
		t.Fatal("Slice inside a slot failed")
	}
	if err := r.ReadAt(got, 2<<20); !errors.Is(err, ErrNotRAM) {
		t.Fatalf("read past RAM: %v", err)
	}
	if err := r.Write64(0x100, 0x1122334455667788); err != nil {
		t.Fatal(err)
	}
	if v, _ := r.Read32(0x104); v != 0x11223344 {
		t.Fatalf("Read32 = %#x", v)
	}
}

// A slot of 2 MiB or more starts at the same offset within a 2 MiB host page as its
// guest physical base, so the host can back it with huge pages that KVM maps whole.
func TestSlotHugePageAligned(t *testing.T) {
	r := New()
	defer r.Close()
	for _, gpa := range []uint64{0, 1 << 32, 0x10001000} {
		s, err := r.Add(fmt.Sprintf("ram@%#x", gpa), gpa, 4<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Mem) != 4<<20 {
			t.Fatalf("slot at %#x is %d bytes", gpa, len(s.Mem))
		}
		host := uint64(uintptr(unsafe.Pointer(&s.Mem[0])))
		if host%hugeAlign != gpa%hugeAlign {
			t.Errorf("slot at GPA %#x mapped at host %#x: offsets within 2 MiB differ", gpa, host)
		}
		s.Mem[len(s.Mem)-1] = 1 // the whole slot is writable
	}
}
