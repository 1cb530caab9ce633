// Command mkinitrd builds a test-guest initramfs (see package initramfs). It is a build
// tool for `make assets` and the test harness, not part of gemu.
//
//	mkinitrd -o initrd.gz -busybox busybox [-moddir lib/modules/KVER -kver KVER -mods a,b] [-file dst=src]...
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"gemu/tests/assets/initramfs"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, " ") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	out := flag.String("o", "", "output initramfs (gzip newc cpio)")
	bb := flag.String("busybox", "", "static busybox binary")
	moddir := flag.String("moddir", "", "extracted lib/modules/KVER directory")
	kver := flag.String("kver", "", "kernel release the modules belong to")
	mods := flag.String("mods", "", "comma-separated modules to include with their dependencies")
	var files multi
	flag.Var(&files, "file", "extra file dst=src (repeatable)")
	flag.Parse()
	if err := run(*out, *bb, *moddir, *kver, *mods, files); err != nil {
		fmt.Fprintln(os.Stderr, "mkinitrd:", err)
		os.Exit(1)
	}
}

func run(out, bb, moddir, kver, mods string, files []string) error {
	if out == "" || bb == "" {
		return fmt.Errorf("-o and -busybox are required")
	}
	im := initramfs.New()
	im.AddBusybox(bb)
	if mods != "" {
		if err := im.AddModules(moddir, kver, strings.Split(mods, ",")...); err != nil {
			return err
		}
	}
	for _, f := range files {
		dst, src, ok := strings.Cut(f, "=")
		if !ok {
			return fmt.Errorf("-file %q: want dst=src", f)
		}
		im.AddFile(dst, src, 0o755)
	}
	return im.WriteFile(out)
}
