// Package harness runs gemu under real KVM on machines whose own /dev/kvm cannot boot
// Linux (such as this project's CI, whose KVM is an emulated kvm_pvm): an outer
// `qemu-system-x86_64 -accel tcg -cpu max` guest runs Debian's kernel, loads kvm_amd (the
// emulated CPU has SVM with nested paging), and runs a script from its initramfs that
// starts gemu-system-x86_64 (or QEMU, for side-by-side benchmarks) on the now real
// /dev/kvm. The outer guest's console is the test's output.
//
// It owns the outer guest only; the inner guest is whatever the script starts.
package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"gemu/tests/assets"
	"gemu/tests/assets/initramfs"
)

// OuterQEMU is the oracle emulator the harness runs in.
const OuterQEMU = "qemu-system-x86_64"

// Inner paths of the standard files inside the outer guest.
const (
	InnerKernel = "/inner/vmlinuz"
	InnerInitrd = "/inner/initrd.gz"
	InnerGemu   = "/gemu-system-x86_64"
)

// Options describe one harness run.
type Options struct {
	// Script runs in the outer guest after kvm_amd is loaded (a /bin/sh script).
	Script string
	// Files are extra files for the outer initramfs: destination → host path.
	Files map[string]string
	// Gemu, if set, is the host path of a static gemu-system-x86_64 copied to InnerGemu.
	Gemu string
	// QEMU bundles the host's qemu-system-x86_64 with its libraries and firmware.
	QEMU bool
	// Stdin/Stdout connect the outer console (interactive use); Stdout also receives a
	// copy of the output when capturing.
	Stdin  io.Reader
	Stdout io.Writer
	// Timeout bounds the run (0: none).
	Timeout time.Duration
	// OuterMem and OuterCPUs size the outer guest (defaults 2048 MiB, 2).
	OuterMem  int
	OuterCPUs int
}

// Missing returns why the harness cannot run here, or "".
func Missing() string {
	if _, err := exec.LookPath(OuterQEMU); err != nil {
		return OuterQEMU + " not installed (apt-get install qemu-system-x86)"
	}
	return assets.Missing("amd64")
}

// Run boots the outer guest and returns its console output.
func Run(ctx context.Context, o Options) (string, error) {
	if m := Missing(); m != "" {
		return "", errors.New(m)
	}
	dir, err := os.MkdirTemp("", "gemu-harness-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	kver, err := assets.KernelRelease("amd64")
	if err != nil {
		return "", err
	}
	adir := assets.Dir("amd64")
	im := initramfs.New()
	im.AddBusybox(filepath.Join(adir, "busybox"))
	if err := im.AddModules(filepath.Join(adir, "root/lib/modules", kver), kver, "kvm_amd"); err != nil {
		return "", err
	}
	im.AddFile(InnerKernel, assets.Kernel("amd64"), 0o644)
	im.AddFile(InnerInitrd, assets.Initrd("amd64"), 0o644)
	if o.Gemu != "" {
		im.AddFile(InnerGemu, o.Gemu, 0o755)
	}
	for dst, src := range o.Files {
		im.AddFile(dst, src, 0o755)
	}
	if o.QEMU {
		if err := addQEMU(im); err != nil {
			return "", err
		}
	}
	// The script goes in the image, not on the command line: the x86 boot protocol
	// limits the command line to 2 KiB, and a longer one hangs the outer boot.
	im.AddBytes(initramfs.CmdFile, []byte("loadmods kvm_amd\n[ -c /dev/kvm ] || echo 'GEMU-HARNESS: no /dev/kvm in the outer guest'\n"+o.Script), 0o755)
	outer := filepath.Join(dir, "outer.gz")
	if err := im.WriteFile(outer); err != nil {
		return "", err
	}
	mem, cpus := o.OuterMem, o.OuterCPUs
	if mem == 0 {
		mem = 2048
	}
	if cpus == 0 {
		cpus = 2
	}
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	args := []string{"-accel", "tcg", "-cpu", "max", "-m", fmt.Sprint(mem), "-smp", fmt.Sprint(cpus),
		"-kernel", assets.Kernel("amd64"), "-initrd", outer,
		"-append", "console=ttyS0 " + kernelVerbosity() + " panic=-1",
		"-nographic", "-no-reboot"}
	if o.Stdin != nil {
		// Interactive: move the outer QEMU's escape key to Ctrl-T so Ctrl-A reaches the
		// inner VMM (Ctrl-A x quits gemu, and the outer guest then powers off).
		args = append(args, "-echr", "0x14")
	}
	cmd := exec.CommandContext(ctx, OuterQEMU, args...)
	var out strings.Builder
	if o.Stdin != nil {
		cmd.Stdin = o.Stdin
	}
	w := io.Writer(&out)
	switch {
	case o.Stdin != nil && o.Stdout != nil:
		w = o.Stdout // interactive: the outer QEMU talks to the terminal itself
	case o.Stdout != nil:
		w = io.MultiWriter(&out, o.Stdout)
	}
	cmd.Stdout, cmd.Stderr = w, w
	err = cmd.Run()
	if ctx.Err() != nil {
		return out.String(), fmt.Errorf("harness: outer guest timed out: %w", ctx.Err())
	}
	if err != nil {
		return out.String(), fmt.Errorf("harness: %s: %w", OuterQEMU, err)
	}
	return out.String(), nil
}

// addQEMU copies the host's qemu-system-x86_64, the shared libraries ldd lists and the
// x86 firmware it loads into the outer image at the same paths.
func addQEMU(im *initramfs.Image) error {
	bin, err := exec.LookPath(OuterQEMU)
	if err != nil {
		return err
	}
	im.AddFile("usr/bin/qemu-system-x86_64", bin, 0o755)
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return fmt.Errorf("harness: ldd %s: %w", bin, err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		for _, f := range strings.Fields(sc.Text()) {
			if strings.HasPrefix(f, "/") {
				im.AddFile(f, f, 0o755)
			}
		}
	}
	for _, glob := range []string{"/usr/share/seabios/*.bin", "/usr/share/qemu/kvmvapic.bin",
		"/usr/share/qemu/linuxboot*.bin", "/usr/share/qemu/bios-256k.bin"} {
		m, _ := filepath.Glob(glob)
		for _, f := range m {
			im.AddFile(f, f, 0o644)
		}
	}
	return nil
}

// InnerArgs is the common inner-guest command line for gemu or QEMU: Debian's kernel and
// the busybox initramfs, the given memory and CPUs, and /init running script (or an
// interactive shell when script is empty).
func InnerArgs(memMiB, cpus int, script string) string {
	appendArg := "console=ttyS0 quiet panic=-1"
	if script != "" {
		appendArg += " " + assets.CmdArg(script)
	}
	return fmt.Sprintf("-m %d -smp %d -kernel %s -initrd %s -append '%s'",
		memMiB, cpus, InnerKernel, InnerInitrd, appendArg)
}

// kernelVerbosity keeps the outer kernel quiet unless GEMU_HARNESS_DEBUG is set, for
// debugging a harness that hangs before its guest prints anything.
func kernelVerbosity() string {
	if os.Getenv("GEMU_HARNESS_DEBUG") != "" {
		return "earlyprintk=ttyS0"
	}
	return "quiet"
}
