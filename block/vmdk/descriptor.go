package vmdk

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// extentKind is the extent type named in a descriptor line.
type extentKind int

const (
	kindFlat extentKind = iota
	kindSparse
	kindZero
)

// extentLine is one parsed "RW 2048 SPARSE "name.vmdk" [offset]" line.
type extentLine struct {
	ReadOnly bool
	Sectors  int64
	Kind     extentKind
	Type     string // as written: FLAT, VMFS, SPARSE, ZERO
	Name     string
	Offset   int64 // sectors, FLAT only
}

// descriptor is the parsed text descriptor (embedded in a sparse extent or a file).
type descriptor struct {
	CID        uint32
	ParentCID  uint32
	CreateType string
	ParentHint string
	Extents    []extentLine
	DDB        map[string]string
}

const maxExtents = 8192

func parseDescriptor(b []byte) (*descriptor, error) {
	if len(b) > maxDescBytes {
		return nil, fmt.Errorf("vmdk: descriptor of %d bytes too large", len(b))
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	d := &descriptor{CID: 0xffffffff, ParentCID: 0xffffffff, DDB: map[string]string{}}
	for _, raw := range strings.Split(string(b), "\n") {
		line := strings.TrimSpace(strings.TrimSuffix(raw, "\r"))
		if line == "" || line[0] == '#' {
			continue
		}
		if ext, ok, err := parseExtentLine(line); err != nil {
			return nil, err
		} else if ok {
			if len(d.Extents) >= maxExtents {
				return nil, fmt.Errorf("vmdk: descriptor lists more than %d extents", maxExtents)
			}
			d.Extents = append(d.Extents, ext)
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		uq := strings.Trim(v, `"`)
		switch {
		case k == "CID":
			c, err := strconv.ParseUint(uq, 16, 32)
			if err != nil {
				return nil, fmt.Errorf("vmdk: invalid CID %q in descriptor", v)
			}
			d.CID = uint32(c)
		case k == "parentCID":
			c, err := strconv.ParseUint(uq, 16, 32)
			if err != nil {
				return nil, fmt.Errorf("vmdk: invalid parentCID %q in descriptor", v)
			}
			d.ParentCID = uint32(c)
		case k == "createType":
			d.CreateType = uq
		case k == "parentFileNameHint":
			d.ParentHint = uq
		case strings.HasPrefix(k, "ddb."):
			d.DDB[k] = uq
		}
	}
	if d.CreateType == "" {
		return nil, fmt.Errorf("vmdk: invalid descriptor: no createType")
	}
	return d, nil
}

// parseExtentLine recognises an extent line; ok is false for other lines.
func parseExtentLine(line string) (e extentLine, ok bool, err error) {
	acc, rest, _ := strings.Cut(line, " ")
	switch acc {
	case "RW":
	case "RDONLY":
		e.ReadOnly = true
	case "NOACCESS":
		return e, false, fmt.Errorf("vmdk: NOACCESS extents are not supported")
	default:
		return e, false, nil
	}
	bad := func() (extentLine, bool, error) {
		if len(line) > 80 {
			line = line[:80] + "..."
		}
		return e, false, fmt.Errorf("vmdk: invalid extent line: %q", line)
	}
	rest = strings.TrimLeft(rest, " \t")
	secStr, rest, _ := strings.Cut(rest, " ")
	n, perr := strconv.ParseInt(secStr, 10, 64)
	if perr != nil || n <= 0 || n > 1<<53 {
		return bad()
	}
	e.Sectors = n
	rest = strings.TrimLeft(rest, " \t")
	e.Type, rest, _ = strings.Cut(rest, " ")
	switch e.Type {
	case "FLAT", "VMFS":
		e.Kind = kindFlat
	case "SPARSE", "VMFSSPARSE":
		e.Kind = kindSparse
	case "ZERO":
		e.Kind = kindZero
		return e, true, nil
	case "SESPARSE", "VMFSRDM", "VMFSRAW":
		return e, false, fmt.Errorf("vmdk: %s extents are not supported", e.Type)
	default:
		return bad()
	}
	rest = strings.TrimLeft(rest, " \t")
	if len(rest) < 2 || rest[0] != '"' {
		return bad()
	}
	end := strings.IndexByte(rest[1:], '"')
	if end < 0 {
		return bad()
	}
	e.Name = rest[1 : 1+end]
	rest = strings.TrimSpace(rest[2+end:])
	if rest != "" {
		if e.Kind != kindFlat {
			return bad()
		}
		off, perr := strconv.ParseInt(rest, 10, 64)
		if perr != nil || off < 0 || off > 1<<53 {
			return bad()
		}
		e.Offset = off
	} else if e.Type == "FLAT" {
		return bad()
	}
	return e, true, nil
}

// confinedPath resolves an extent file name relative to the descriptor's folder and
// refuses anything that could reach outside it: absolute paths, "..", protocol or
// json: prefixes, symlinks whose target leaves the folder, and non-regular files.
func confinedPath(dir, name string) (string, error) {
	switch {
	case name == "":
		return "", fmt.Errorf("vmdk: empty extent file name")
	case filepath.IsAbs(name):
		return "", fmt.Errorf("vmdk: extent path %q is absolute; only files next to the descriptor are allowed", name)
	case strings.ContainsAny(name, ":\x00\\"):
		return "", fmt.Errorf("vmdk: extent path %q contains a forbidden character", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("vmdk: extent path %q leaves the descriptor's folder", name)
		}
	}
	p := filepath.Join(dir, name)
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("vmdk: %v", err)
	}
	realDir, err := filepath.EvalSymlinks(absDir)
	if err != nil {
		return "", fmt.Errorf("vmdk: %v", err)
	}
	realP, err := filepath.EvalSymlinks(filepath.Join(absDir, name))
	if err != nil {
		return "", fmt.Errorf("vmdk: could not open extent '%s': %v", name, unwrapPathErr(err))
	}
	rel, err := filepath.Rel(realDir, realP)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return "", fmt.Errorf("vmdk: extent %q resolves outside the descriptor's folder", name)
	}
	st, err := os.Stat(realP)
	if err != nil {
		return "", fmt.Errorf("vmdk: could not open extent '%s': %v", name, unwrapPathErr(err))
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("vmdk: extent %q is not a regular file", name)
	}
	return p, nil
}

// unwrapPathErr reduces a path error to its errno text, capitalised as strerror
// (and so qemu-img) prints it.
func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		err = pe.Err
	}
	if en, ok := err.(syscall.Errno); ok {
		s := en.Error()
		if s != "" {
			s = strings.ToUpper(s[:1]) + s[1:]
		}
		return errors.New(s)
	}
	return err
}

// geometry returns the CHS values QEMU writes for an adapter type.
func geometry(sectors int64, adapter string) (cyl, heads, secs int64) {
	heads, secs = 16, 63
	if adapter != "ide" {
		heads = 255
	}
	return sectors / (heads * secs), heads, secs
}

// formatDescriptor renders a descriptor in the layout qemu-img writes.
func formatDescriptor(cid, parentCID uint32, createType, parentHint string, extents []extentLine, hw, adapter, tools string, sectors int64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Disk DescriptorFile\nversion=1\nCID=%08x\nparentCID=%08x\ncreateType=\"%s\"\n", cid, parentCID, createType)
	if parentHint != "" {
		fmt.Fprintf(&b, "parentFileNameHint=\"%s\"\n", parentHint)
	} else {
		b.WriteString("\n")
	}
	b.WriteString("# Extent description\n")
	for _, e := range extents {
		acc := "RW"
		if e.ReadOnly {
			acc = "RDONLY"
		}
		if e.Kind == kindFlat {
			fmt.Fprintf(&b, "%s %d %s \"%s\" %d\n", acc, e.Sectors, e.Type, e.Name, e.Offset)
		} else if e.Kind == kindZero {
			fmt.Fprintf(&b, "%s %d ZERO\n", acc, e.Sectors)
		} else {
			fmt.Fprintf(&b, "%s %d %s \"%s\"\n", acc, e.Sectors, e.Type, e.Name)
		}
	}
	cyl, heads, secs := geometry(sectors, adapter)
	fmt.Fprintf(&b, "\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"%s\"\nddb.geometry.cylinders = \"%d\"\nddb.geometry.heads = \"%d\"\nddb.geometry.sectors = \"%d\"\nddb.adapterType = \"%s\"\nddb.toolsVersion = \"%s\"\n", hw, cyl, heads, secs, adapter, tools)
	return b.String()
}
