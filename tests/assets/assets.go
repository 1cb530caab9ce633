// Package assets locates the guest assets `make assets` builds (Debian kernels, busybox
// initramfs images) for tests and benchmarks, and encodes command scripts for the test
// guests' /init.
//
// Layout under $GEMU_ASSETS (default tests/assets/cache in the repository):
//
//	ARCH/vmlinuz    Debian's kernel (amd64: bzImage; arm64: Image)
//	ARCH/initrd.gz  busybox initramfs with virtio modules; /init from package initramfs
//	ARCH/busybox    the static busybox it holds
//	ARCH/kver       kernel release
//	ARCH/root/lib/modules/KVER  the kernel's module tree
package assets

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"gemu/tests/assets/initramfs"
)

// Dir returns the asset directory for arch ("amd64" or "arm64").
func Dir(arch string) string {
	if d := os.Getenv("GEMU_ASSETS"); d != "" {
		return filepath.Join(d, arch)
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "cache", arch)
}

// Kernel and Initrd return the paths of arch's kernel and test initramfs.
func Kernel(arch string) string { return filepath.Join(Dir(arch), "vmlinuz") }
func Initrd(arch string) string { return filepath.Join(Dir(arch), "initrd.gz") }

// KernelRelease returns the release of arch's kernel (e.g. 6.1.0-56-amd64).
func KernelRelease(arch string) (string, error) {
	b, err := os.ReadFile(filepath.Join(Dir(arch), "kver"))
	return strings.TrimSpace(string(b)), err
}

// Missing returns a reason to skip when arch's assets are not built, or "".
func Missing(arch string) string {
	for _, p := range []string{Kernel(arch), Initrd(arch)} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Sprintf("guest assets missing (%v): run `make assets`", err)
		}
	}
	return ""
}

// Marker is the line prefix the test guests' /init prints once userspace runs.
const Marker = initramfs.Marker

// CmdArg returns the kernel command-line argument that makes /init run script (a shell
// script, lines separated by newlines) instead of an interactive shell, print
// "GEMU-CMD-EXIT <status>", and power off.
func CmdArg(script string) string {
	return initramfs.CmdParam + "=" + base64.StdEncoding.EncodeToString([]byte(script))
}
