package x86

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gemu/hw/bus"
	"gemu/hw/memory"
)

// System-level tests as BIOS images: 64 KiB of code that starts at the reset vector and
// writes its findings to port 0xe9, run as -bios on qemu-system-x86_64 -accel tcg (the
// debug console) and on a gemu vCPU from RESET, until the image writes its last word.

// biosImage is a 64 KiB image with code at offset 0 and the reset-vector bytes at 0xfff0.
func biosImage(code, reset []byte) []byte {
	img := make([]byte, 0x10000)
	copy(img, code)
	copy(img[0xfff0:], reset)
	return img
}

// biosDone is the word ("DONE") an image writes last.
var biosDone = []byte("DONE")

// qemuBIOS runs img on qemu-system-x86_64 -accel tcg -cpu cpu and returns what it wrote
// to port 0xe9, up to and including "DONE". It skips the test without QEMU.
func qemuBIOS(t *testing.T, img []byte, cpu string) []byte {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed: no oracle")
	}
	dir := t.TempDir()
	bios, out := filepath.Join(dir, "bios.bin"), filepath.Join(dir, "qemu.out")
	if err := os.WriteFile(bios, img, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-cpu", cpu, "-accel", "tcg", "-bios", bios, "-display", "none",
		"-nodefaults", "-no-reboot", "-debugcon", "file:"+out)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for {
		got, _ := os.ReadFile(out)
		if bytes.HasSuffix(got, biosDone) {
			return got
		}
		if ctx.Err() != nil {
			t.Fatalf("QEMU -cpu %s did not finish: wrote %s", cpu, biosWords(got))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// gemuBIOS runs img on a gemu vCPU of model m from RESET, with 512 KiB of RAM at 0, and
// returns what it wrote to port 0xe9, up to and including "DONE".
func gemuBIOS(t *testing.T, img []byte, m *Model) []byte {
	t.Helper()
	ram := memory.New()
	defer ram.Close()
	for _, base := range []uint64{0xf0000, 0xffff0000} {
		if _, err := ram.Add("bios", base, 0x10000); err != nil {
			t.Fatal(err)
		}
		if err := ram.WriteAt(img, base); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ram.Add("low", 0, 0x80000); err != nil {
		t.Fatal(err)
	}
	io := bus.New()
	port := &port0xE9{out: make(chan byte, 1<<16)}
	if err := io.Insert(port, "debugcon", 0xe9, 1); err != nil {
		t.Fatal(err)
	}
	eng := NewEngine(ram)
	defer eng.Close()
	c := New(Config{RAM: ram, Engine: eng, IO: io, Model: m})
	defer c.Close()
	c.Reset()
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- c.Run(stop) }()
	var got []byte
	deadline := time.After(30 * time.Second)
	for !bytes.HasSuffix(got, biosDone) {
		select {
		case b := <-port.out:
			got = append(got, b)
		case err := <-done:
			t.Fatalf("gemu stopped (%v) at RIP %#x after writing %s", err, c.RIP, biosWords(got))
		case <-deadline:
			close(stop)
			<-done
			t.Fatalf("gemu did not finish (RIP %#x): wrote %s", c.RIP, biosWords(got))
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return got
}

// biosWords shows an image's output as its steps: "T<n>:" for a tag word (0x54 in the
// top byte), "EXC!" for a fault report, the other words in hex.
func biosWords(b []byte) string {
	var s strings.Builder
	for len(b) >= 4 {
		w := binary.LittleEndian.Uint32(b)
		b = b[4:]
		switch {
		case w>>24 == 0x54:
			fmt.Fprintf(&s, "\nT%d:", w&0xffff)
		case w == 0x21435845:
			s.WriteString(" EXC!")
		case w == 0x454e4f44:
			s.WriteString(" DONE")
		default:
			fmt.Fprintf(&s, " %#x", w)
		}
	}
	return s.String()
}
