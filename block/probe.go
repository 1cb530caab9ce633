package block

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
)

// Formats qemu-img knows and gemu does not implement. Probing recognises them by the
// rules of QEMU's block/*.c probe functions so that such an image is never opened as
// raw (a guest could then read and rewrite its metadata); `-f raw` still opens it raw.

// knownFormat is one format recognised but not implemented.
type knownFormat struct {
	name string
	// head looks at the first bytes of the file (up to ProbeSize).
	head func(b []byte, filename string) bool
	// tail, if set, looks at the last 512 bytes of the file (nil when shorter).
	tail func(t []byte) bool
}

var (
	le = binary.LittleEndian
	bg = binary.BigEndian
)

var knownFormats = []knownFormat{
	// qcow v1: "QFI\xfb", version 1 (qcow_probe); qcow2 takes versions 2 and 3.
	{name: "qcow", head: func(b []byte, _ string) bool {
		return len(b) >= 8 && bg.Uint32(b) == 0x514649fb && bg.Uint32(b[4:]) == 1
	}},
	// QED: "QED\0" (bdrv_qed_probe).
	{name: "qed", head: func(b []byte, _ string) bool {
		return len(b) >= 4 && string(b[:4]) == "QED\x00"
	}},
	// VDI: signature 0xbeda107f at offset 64, after the "<<< ... >>>" text (vdi_probe).
	{name: "vdi", head: func(b []byte, _ string) bool {
		return len(b) >= 68 && le.Uint32(b[64:]) == 0xbeda107f
	}},
	// VPC/VHD: "conectix" at 0 (vpc_probe); a fixed disk has the footer only in its
	// last 512 bytes, which QEMU probes as raw. gemu opens it as vpc when the vpc
	// driver is registered (tailFormat), and refuses it otherwise.
	{name: "vpc", head: func(b []byte, _ string) bool {
		return len(b) >= 8 && string(b[:8]) == "conectix"
	}, tail: func(t []byte) bool {
		return string(t[:8]) == "conectix"
	}},
	// VHDX: "vhdxfile" (vhdx_probe).
	{name: "vhdx", head: func(b []byte, _ string) bool {
		return len(b) >= 8 && string(b[:8]) == "vhdxfile"
	}},
	// Parallels: one of two magics and version 2 (parallels_probe).
	{name: "parallels", head: func(b []byte, _ string) bool {
		if len(b) < 64 {
			return false
		}
		m := string(b[:16])
		return (m == "WithoutFreeSpace" || m == "WithouFreSpacExt") && le.Uint32(b[16:]) == 2
	}},
	// DMG: QEMU's dmg_probe picks a file by its ".dmg" name (score 2, above raw); the
	// "koly" trailer in the last 512 bytes identifies one whatever its name.
	{name: "dmg", head: func(_ []byte, filename string) bool {
		return len(filename) > 4 && strings.HasSuffix(filename, ".dmg")
	}, tail: func(t []byte) bool {
		return string(t[:4]) == "koly"
	}},
	// cloop: the V2.0 shell-script header (cloop_probe).
	{name: "cloop", head: func(b []byte, _ string) bool {
		return bytes.HasPrefix(b, []byte("#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"))
	}},
	// bochs: magic, type "Redolog", subtype "Growing", version 1 or 2 (bochs_probe).
	{name: "bochs", head: func(b []byte, _ string) bool {
		if len(b) < 512 {
			return false
		}
		cstr := func(f []byte) string {
			if i := bytes.IndexByte(f, 0); i >= 0 {
				f = f[:i]
			}
			return string(f)
		}
		v := le.Uint32(b[64:])
		return cstr(b[:32]) == "Bochs Virtual HD Image" && cstr(b[32:48]) == "Redolog" &&
			cstr(b[48:64]) == "Growing" && (v == 0x00020000 || v == 0x00010000)
	}},
	// LUKS: "LUKS\xba\xbe" and a version (qcrypto_block_luks_has_format; QEMU 7.2 opens
	// version 1, later QEMU version 2 too).
	{name: "luks", head: func(b []byte, _ string) bool {
		return len(b) >= 8 && string(b[:6]) == "LUKS\xba\xbe" && (bg.Uint16(b[6:]) == 1 || bg.Uint16(b[6:]) == 2)
	}},
}

// knownUnsupported names the unimplemented format head (and tail, the file's last 512
// bytes or nil) belong to, or "".
func knownUnsupported(head, tail []byte, filename string) string {
	for _, k := range knownFormats {
		if _, err := Lookup(k.name); err == nil {
			continue // implemented after all: the registry decides
		}
		if k.head(head, filename) || (k.tail != nil && len(tail) >= 512 && k.tail(tail)) {
			return k.name
		}
	}
	return ""
}

// tailFormats are implemented formats recognised by the last 512 bytes of a file
// alone, when nothing claims its head: a fixed VHD is data then a "conectix" footer.
// QEMU's probe takes such a file as raw, which would let a guest rewrite the footer
// and hand the next opener a different disk; gemu opens it as the VHD it is
// (`-f raw` still opens it raw).
var tailFormats = []struct {
	name string
	tail func(t []byte) bool
}{
	{"vpc", func(t []byte) bool { return string(t[:8]) == "conectix" && bg.Uint32(t[60:]) == 2 }},
}

// tailFormat returns the registered format whose trailer tail (the file's last 512
// bytes, or nil) is, or nil.
func tailFormat(tail []byte) Format {
	if len(tail) < 512 {
		return nil
	}
	for _, t := range tailFormats {
		if f, err := Lookup(t.name); err == nil && t.tail(tail) {
			return f
		}
	}
	return nil
}

// UnsupportedFormatError is returned by Open when probing finds (or the caller names) a
// format qemu-img knows and gemu does not implement.
type UnsupportedFormatError struct {
	Format string
	Named  bool // asked for by name (-f), not found by probing
}

func (e *UnsupportedFormatError) Error() string {
	if e.Named {
		return fmt.Sprintf("Image format '%s' is not supported by gemu", e.Format)
	}
	return fmt.Sprintf("Image format '%s' is not supported by gemu (use -f raw, or format=raw on a drive, to open it as raw)", e.Format)
}
