// Package testbin builds gemu's commands as static binaries for tests, benchmarks and
// the KVM-in-TCG harness (whose outer guest has no C library, hence CGO_ENABLED=0).
// It owns only that build step.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"testing"
)

// Build compiles package pkg (e.g. "gemu/cmd/gemu-system-x86_64") into dir as a static
// binary named after the package's last element and returns its path.
func Build(dir, pkg string) (string, error) {
	out := filepath.Join(dir, path.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %v\n%s", pkg, err, b)
	}
	return out, nil
}

// MustBuild is Build into the test's temporary directory, failing the test on error.
func MustBuild(t testing.TB, pkg string) string {
	t.Helper()
	p, err := Build(t.TempDir(), pkg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Command returns the path of gemu's command name (e.g. "gemu-system-x86_64"): the one
// in $GEMU_BIN when it is there (make test builds them first), else a fresh MustBuild.
func Command(t testing.TB, name string) string {
	t.Helper()
	if d := os.Getenv("GEMU_BIN"); d != "" {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return MustBuild(t, "gemu/cmd/"+name)
}
