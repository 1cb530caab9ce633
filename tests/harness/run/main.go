// Command run is `make run`: it boots the default guest (Debian's amd64 kernel with the
// busybox initramfs, -m 512 -smp 2) to an interactive shell with gemu-system-x86_64: on
// KVM where /dev/kvm is hardware-backed, else (no KVM, or an emulated kvm_pvm that cannot
// boot Linux) under gemu's own x86-64 translator, -accel tcg, directly on this host.
// Quit with Ctrl-A x (gemu's escape), or `poweroff` in the guest.
package main

import (
	"fmt"
	"os"
	"os/exec"

	"gemu/accel/kvm"
	"gemu/tests/assets"
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
	accelName := "kvm"
	if kvm.Available() != nil || kvm.Emulated() {
		// No hardware KVM (or only the emulated kvm_pvm kind, which cannot boot Linux):
		// gemu's own x86-64 translator, directly on this host.
		accelName = "tcg"
		fmt.Fprintln(os.Stderr, "make run: no hardware KVM here (emulated kvm_pvm or none): booting under gemu's TCG translator (-accel tcg). Ctrl-A x quits; `poweroff` in the guest too.")
	}
	cmd := exec.Command(gemu, "-accel", accelName, "-m", "512", "-smp", "2",
		"-kernel", assets.Kernel("amd64"), "-initrd", assets.Initrd("amd64"),
		"-append", "console=ttyS0 quiet", "-nographic")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd.Run()
}
