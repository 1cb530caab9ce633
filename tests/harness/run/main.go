// Command run is `make run`: it boots the default guest (Debian's amd64 kernel with the
// busybox initramfs, -m 512 -smp 2) to an interactive shell with gemu-system-x86_64. On a
// host whose /dev/kvm is hardware-backed gemu runs directly; where the host's KVM is an
// emulated one that cannot boot Linux (kvm_pvm), gemu runs inside the KVM-in-TCG harness.
// Quit with Ctrl-A x (gemu's escape), or `poweroff` in the guest.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"

	"gemu/accel/kvm"
	"gemu/tests/assets"
	"gemu/tests/harness"
	"gemu/tests/testbin"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "make run:", err)
		os.Exit(1)
	}
}

func run() error {
	if m := assets.Missing("amd64"); m != "" {
		return fmt.Errorf("%s", m)
	}
	dir, err := os.MkdirTemp("", "gemu-run-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	gemu, err := testbin.Build(dir, "gemu/cmd/gemu-system-x86_64")
	if err != nil {
		return err
	}
	if kvm.Available() == nil && !kvm.Emulated() {
		cmd := exec.Command(gemu, "-accel", "kvm", "-m", "512", "-smp", "2",
			"-kernel", assets.Kernel("amd64"), "-initrd", assets.Initrd("amd64"),
			"-append", "console=ttyS0 quiet", "-nographic")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		return cmd.Run()
	}
	fmt.Fprintln(os.Stderr, "make run: this host's KVM is emulated (kvm_pvm) or absent; running gemu on real KVM inside the KVM-in-TCG harness (outer QEMU). Ctrl-A x quits gemu; Ctrl-T x kills the outer QEMU.")
	script := harness.InnerGemu + " -accel kvm -nographic " + harness.InnerArgs(512, 2, "") + "\n"
	_, err = harness.Run(context.Background(), harness.Options{
		Script: script, Gemu: gemu, Stdin: os.Stdin, Stdout: os.Stdout,
	})
	return err
}
