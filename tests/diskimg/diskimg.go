// Package diskimg makes disk-image fixtures for gemu's whole-system tests with the host's
// own tools, the oracles (qemu-img, mkfs.ext4, debugfs, e2fsck), and reads back what a
// guest left in an image: `qemu-img check`, files through debugfs, raw bytes after
// `qemu-img convert -O raw`.
//
// It owns only fixture building and read-back; it knows nothing of gemu's block layer
// (a test must not check gemu's output with gemu's own code) and starts no guest.
package diskimg

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Tools are the host programs the fixtures need.
var Tools = []string{"qemu-img", "mkfs.ext4", "debugfs", "e2fsck"}

// Missing returns why the fixtures cannot be built here, or "".
func Missing() string {
	for _, tool := range Tools {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not installed (apt-get install qemu-utils e2fsprogs)"
		}
	}
	return ""
}

// Need skips the test when a tool is missing.
func Need(t testing.TB) {
	t.Helper()
	if m := Missing(); m != "" {
		t.Skip(m)
	}
}

// Pseudo returns n bytes of deterministic pseudo-random data for seed (ChaCha8).
func Pseudo(seed uint64, n int) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

// Repeat returns the first n bytes of line repeated: what `yes LINE | head -c N` prints
// (line without its newline).
func Repeat(line string, n int) []byte {
	l := line + "\n"
	return []byte(strings.Repeat(l, n/len(l)+1)[:n])
}

// SHA256 returns the hex SHA-256 of b, as sha256sum prints it.
func SHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// FileSHA256 hashes a host file.
func FileSHA256(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return SHA256(b)
}

func run(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// Ext4 makes a raw ext4 image of sizeMiB at path holding files (name → content, in
// the root directory) with `mkfs.ext4 -d`. Inode tables and the journal are
// initialised at mkfs time, so a guest's rw mount has no lazy-init writes of its own.
func Ext4(t testing.TB, path string, sizeMiB int, files map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
		"-d", dir, path, fmt.Sprintf("%dM", sizeMiB))
}

// Convert runs `qemu-img convert -f srcFmt -O dstFmt src dst`.
func Convert(t testing.TB, src, srcFmt, dst, dstFmt string) {
	t.Helper()
	run(t, "qemu-img", "convert", "-f", srcFmt, "-O", dstFmt, src, dst)
}

// Create runs `qemu-img create -f format path size`.
func Create(t testing.TB, path, format string, size int64) {
	t.Helper()
	run(t, "qemu-img", "create", "-q", "-f", format, path, fmt.Sprint(size))
}

// Overlay creates a qcow2 image at top backed by base (of baseFmt).
func Overlay(t testing.TB, base, baseFmt, top string) {
	t.Helper()
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", baseFmt, top)
}

// WriteRaw writes a raw image holding data (its virtual size is len(data)).
func WriteRaw(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// CheckResult is `qemu-img check --output=json`'s verdict.
type CheckResult struct {
	CheckErrors int `json:"check-errors"`
	Corruptions int `json:"corruptions"`
	Leaks       int `json:"leaks"`
	// Exit is qemu-img's status: 0 clean, 2 corruptions, 3 leaks only, 1 check failed.
	Exit int    `json:"-"`
	Text string `json:"-"`
}

// Clean reports an image with no errors, corruptions or leaks.
func (c CheckResult) Clean() bool {
	return c.Exit == 0 && c.CheckErrors == 0 && c.Corruptions == 0 && c.Leaks == 0
}

// Consistent reports an image with no errors or corruptions (leaked clusters, which a
// crash may leave, allowed).
func (c CheckResult) Consistent() bool {
	return (c.Exit == 0 || c.Exit == 3) && c.CheckErrors == 0 && c.Corruptions == 0
}

// Check runs `qemu-img check` on a qcow2 or vmdk image.
func Check(t testing.TB, path, format string) CheckResult {
	t.Helper()
	out, err := exec.Command("qemu-img", "check", "--output=json", "-f", format, path).Output()
	var r CheckResult
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.Exit = ee.ExitCode()
	case err != nil:
		t.Fatalf("qemu-img check %s: %v", path, err)
	}
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		t.Fatalf("qemu-img check %s (exit %d): %v\n%s", path, r.Exit, jerr, out)
	}
	human, _ := exec.Command("qemu-img", "check", "-f", format, path).CombinedOutput()
	r.Text = string(human)
	return r
}

// ToRaw converts an image to raw in a temporary file and returns its path (path
// itself when format is raw).
func ToRaw(t testing.TB, path, format string) string {
	t.Helper()
	if format == "raw" {
		return path
	}
	raw := filepath.Join(t.TempDir(), filepath.Base(path)+".raw")
	Convert(t, path, format, raw, "raw")
	return raw
}

// ReadRaw returns the image's guest-visible bytes.
func ReadRaw(t testing.TB, path, format string) []byte {
	t.Helper()
	b, err := os.ReadFile(ToRaw(t, path, format))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Ext4Cat returns a file's content from an ext4 filesystem image through debugfs.
func Ext4Cat(t testing.TB, path, format, file string) []byte {
	t.Helper()
	raw := ToRaw(t, path, format)
	cmd := exec.Command("debugfs", "-R", "cat "+file, raw)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("debugfs cat %s in %s: %v\n%s", file, path, err, stderr.Bytes())
	}
	// debugfs reports a missing file on stderr and exits 0.
	if strings.Contains(stderr.String(), "File not found") {
		t.Fatalf("debugfs: %s not in %s: %s", file, path, stderr.Bytes())
	}
	return out
}

// Fsck runs `e2fsck -fn` on an ext4 image and returns its output and whether the
// filesystem is clean.
func Fsck(t testing.TB, path, format string) (string, bool) {
	t.Helper()
	out, err := exec.Command("e2fsck", "-fn", ToRaw(t, path, format)).CombinedOutput()
	return string(out), err == nil
}
