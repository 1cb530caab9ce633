package initramfs

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// AddModules adds the named kernel modules and everything they depend on (read from
// each module's .modinfo "depends=" field) under /lib/modules/KVER/, with a modules.dep
// so that busybox modprobe loads them in order. moddir is an extracted
// lib/modules/KVER directory from Debian's linux-image package.
func (im *Image) AddModules(moddir, kver string, names ...string) error {
	index := map[string]string{} // module name (dashes as underscores) → path
	err := filepath.WalkDir(moddir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".ko") {
			index[modName(filepath.Base(p))] = p
		}
		return err
	})
	if err != nil {
		return err
	}
	deps := map[string][]string{}
	var visit func(n string) error
	visit = func(n string) error {
		n = modName(n)
		if _, done := deps[n]; done {
			return nil
		}
		p, ok := index[n]
		if !ok {
			return fmt.Errorf("initramfs: module %s not found in %s", n, moddir)
		}
		d, err := moduleDepends(p)
		if err != nil {
			return err
		}
		deps[n] = d
		for _, x := range d {
			if err := visit(x); err != nil {
				return err
			}
		}
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return err
		}
	}
	base := "lib/modules/" + kver + "/"
	rel := func(n string) string { return "kernel/" + n + ".ko" }
	var dep strings.Builder
	all := make([]string, 0, len(deps))
	for n := range deps {
		all = append(all, n)
	}
	sort.Strings(all)
	for _, n := range all {
		im.AddFile(base+rel(n), index[n], 0o644)
		fmt.Fprintf(&dep, "%s: %s\n", rel(n), strings.Join(loadOrder(deps, n), " "))
	}
	im.AddBytes(base+"modules.dep", []byte(dep.String()), 0o644)
	return nil
}

// loadOrder returns n's transitive dependencies as modules.dep lists them: modprobe
// loads them from the last to the first, so every module comes before the modules it
// depends on (the reverse of a depth-first post-order). virtio_pci needs virtio,
// which needs virtio_ring: virtio_ring must be loaded first, so it is listed last.
func loadOrder(deps map[string][]string, n string) []string {
	var post []string
	seen := map[string]bool{n: true}
	var walk func(string)
	walk = func(m string) {
		for _, d := range deps[m] {
			d = modName(d)
			if !seen[d] {
				seen[d] = true
				walk(d)
				post = append(post, "kernel/"+d+".ko")
			}
		}
	}
	walk(n)
	slices.Reverse(post)
	return post
}

func modName(s string) string {
	return strings.ReplaceAll(strings.TrimSuffix(s, ".ko"), "-", "_")
}

// moduleDepends reads the depends= entry of a module's .modinfo section.
func moduleDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %s: %w", path, err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, nil
	}
	data, err := s.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}
