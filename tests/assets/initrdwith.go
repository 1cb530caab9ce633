package assets

import (
	"fmt"
	"os"
	"path/filepath"

	"gemu/tests/assets/initramfs"
)

// InitrdWith writes to dst an initramfs like arch's test image but holding the named
// kernel modules (and their dependencies) from the kernel's module tree, for tests of
// devices whose drivers the standard image leaves out (qemu_fw_cfg, gpio_keys).
func InitrdWith(arch, dst string, mods ...string) error {
	kver, err := KernelRelease(arch)
	if err != nil {
		return err
	}
	bb := filepath.Join(Dir(arch), "busybox")
	moddir := filepath.Join(Dir(arch), "root", "lib", "modules", kver)
	for _, p := range []string{bb, moddir} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("guest assets missing (%v): run `make assets`", err)
		}
	}
	im := initramfs.New()
	im.AddBusybox(bb)
	if err := im.AddModules(moddir, kver, mods...); err != nil {
		return err
	}
	return im.WriteFile(dst)
}
