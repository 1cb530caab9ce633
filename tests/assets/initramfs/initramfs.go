// Package initramfs builds the gzip-compressed newc cpio images gemu's test guests boot
// with: Debian's static busybox, an /init script, kernel modules and any extra files
// (the KVM-in-TCG harness adds a static gemu binary and an inner guest).
//
// It owns only image assembly; what runs inside is the Init script below. It uses
// u-root's pkg/cpio for the newc records so that the format details (alignment,
// trailer, inode numbering) come from a maintained implementation.
package initramfs

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// Marker is printed by /init once userspace runs; tests wait for it.
const Marker = "GEMU-INIT-OK"

// CmdParam is the kernel command-line parameter carrying a base64-encoded shell script
// that /init runs instead of the interactive shell, then powers off. base64 keeps the
// script free of spaces and quotes the kernel would split on.
const CmdParam = "gemu.cmd64"

// CmdFile is a script in the image itself that /init runs like a gemu.cmd64= script;
// it is for scripts too long for the kernel command line (2 KiB on x86).
const CmdFile = "gemu-cmd.sh"

// Init is the /init script. It mounts the pseudo filesystems, prints the marker line with
// the CPU count, then either runs the script from gemu.cmd64= (printing its exit status)
// or from /gemu-cmd.sh, or an interactive shell on the console, and powers off either way;
// poweroff, reboot and halt typed at the shell (which signal PID 1) do what they say.
const Init = `#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp /dev/pts && mount -t devpts devpts /dev/pts
echo "` + Marker + ` arch=$(uname -m) cpus=$(grep -c ^processor /proc/cpuinfo)"
# loadmods NAME...: modprobe each module (and its dependencies) shipped in the image.
loadmods() { for m in "$@"; do modprobe $m || echo "GEMU-MODPROBE-FAIL $m"; done; }
# busybox poweroff/reboot/halt without -f signal PID 1 (USR2, TERM, USR1): act on them.
trap 'poweroff -f' USR2
trap 'reboot -f' TERM
trap 'halt -f' USR1
cmd=$(sed -n 's/.*` + CmdParam + `=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -n "$cmd" ] && echo "$cmd" | base64 -d > /tmp/cmd.sh
[ -f /` + CmdFile + ` ] && cp /` + CmdFile + ` /tmp/cmd.sh
if [ -f /tmp/cmd.sh ]; then
	. /tmp/cmd.sh
	echo "GEMU-CMD-EXIT $?"
else
	echo "gemu test guest: busybox shell; 'poweroff' or exit to stop"
	# In the background so that wait, unlike a foreground command, returns to run a trap.
	setsid cttyhack sh &
	wait $!
fi
poweroff -f
`

// Image is the content of an initramfs: destination path → file.
type Image struct {
	files map[string]file
}

type file struct {
	data    []byte
	src     string // read from the host at Write time when data is nil
	mode    uint64
	symlink string
}

// New returns an image holding /init and the standard directories.
func New() *Image {
	im := &Image{files: map[string]file{}}
	im.AddBytes("init", []byte(Init), 0o755)
	for _, d := range []string{"proc", "sys", "dev", "tmp", "bin", "sbin", "usr/bin", "usr/sbin", "root", "etc"} {
		im.files[d] = file{mode: cpio.S_IFDIR | 0o755}
	}
	return im
}

// AddBytes adds a regular file with the given contents.
func (im *Image) AddBytes(dst string, data []byte, perm uint64) {
	im.files[clean(dst)] = file{data: data, mode: cpio.S_IFREG | perm}
}

// AddFile adds a host file, read when the image is written.
func (im *Image) AddFile(dst, src string, perm uint64) {
	im.files[clean(dst)] = file{src: src, mode: cpio.S_IFREG | perm}
}

// AddSymlink adds a symbolic link.
func (im *Image) AddSymlink(dst, target string) {
	im.files[clean(dst)] = file{symlink: target}
}

// AddBusybox adds a static busybox binary as /bin/busybox with /bin/sh pointing at it.
func (im *Image) AddBusybox(src string) {
	im.AddFile("bin/busybox", src, 0o755)
	im.AddSymlink("bin/sh", "busybox")
}

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

// Write writes the gzip-compressed newc archive. Records are sorted by path so the
// output is reproducible; parent directories are created as needed.
func (im *Image) Write(w io.Writer) error {
	names := make([]string, 0, len(im.files))
	for n := range im.files {
		names = append(names, n)
	}
	sort.Strings(names)
	var recs []cpio.Record
	for _, n := range names {
		f := im.files[n]
		switch {
		case f.symlink != "":
			recs = append(recs, cpio.Symlink(n, f.symlink))
		case f.mode&cpio.S_IFMT == cpio.S_IFDIR:
			recs = append(recs, cpio.Directory(n, f.mode&0o7777))
		default:
			data := f.data
			if data == nil {
				b, err := os.ReadFile(f.src)
				if err != nil {
					return fmt.Errorf("initramfs: %s: %w", n, err)
				}
				data = b
			}
			recs = append(recs, cpio.StaticRecord(data, cpio.Info{Name: n, Mode: f.mode, NLink: 1}))
		}
	}
	cpio.MakeAllReproducible(recs)
	zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	cw := cpio.Newc.Writer(zw)
	if err := cpio.WriteRecordsAndDirs(cw, recs); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := cpio.WriteTrailer(cw); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return zw.Close()
}

// WriteFile writes the image to path atomically.
func (im *Image) WriteFile(p string) error {
	var buf bytes.Buffer
	if err := im.Write(&buf); err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
