package qdev

import (
	"errors"
	"fmt"
	"strings"

	"gemu/block/backend"
)

// Drive is one parsed -drive.
type Drive struct {
	ID     string
	If     string // virtio or none
	Serial string
	Opts   backend.Options
}

var driveKeys = map[string]bool{
	"file": true, "if": true, "format": true, "id": true, "media": true, "cache": true, "aio": true,
	"discard": true, "detect-zeroes": true, "readonly": true, "read-only": true, "snapshot": true, "serial": true,
	"werror": true, "rerror": true, "index": true, "bus": true, "unit": true, "file.locking": true, "locking": true,
	"cache.direct": true, "cache.no-flush": true, "copy-on-read": true, "auto-read-only": true, "node-name": true,
}

// ParseDrive reads a -drive option set. n numbers drives without id= (QEMU names them
// if-index: virtio0, virtio1, ... or none0). defIf is the board's default interface
// (QEMU: virtio on virt, ide on pc).
func ParseDrive(p Props, n int, defIf string, globalSnapshot bool) (*Drive, error) {
	for _, k := range p.Keys() {
		if !driveKeys[k] {
			return nil, fmt.Errorf("-drive: Invalid parameter '%s'", k)
		}
	}
	d := &Drive{}
	get := func(k string) string { v, _ := p.Get(k); return v }
	d.Opts.File = get("file")
	if d.Opts.File == "" {
		return nil, errors.New("-drive: a drive without file= (an empty removable drive) is not supported")
	}
	d.If = get("if")
	if d.If == "" {
		d.If = defIf
	}
	switch d.If {
	case "virtio", "none":
	case "ide", "scsi", "sd", "mtd", "floppy", "pflash", "xen":
		return nil, fmt.Errorf("-drive if=%s: gemu has no %s controller on this machine; use if=virtio (or if=none with -device virtio-blk-pci,drive=ID)", d.If, strings.ToUpper(d.If))
	default:
		return nil, fmt.Errorf("-drive: unsupported bus type '%s'", d.If)
	}
	if m := get("media"); m != "" && m != "disk" {
		return nil, fmt.Errorf("-drive media=%s: only media=disk is supported", m)
	}
	d.ID = get("id")
	if d.ID == "" {
		d.ID = fmt.Sprintf("%s%d", d.If, n)
	}
	d.Serial = get("serial")
	d.Opts.Format = get("format")
	switch d.Opts.Format {
	case "", "raw", "qcow2", "vmdk":
	default:
		return nil, fmt.Errorf("-drive format=%s: Unknown driver '%s'", d.Opts.Format, d.Opts.Format)
	}
	var err error
	ro := false
	for _, k := range []string{"readonly", "read-only"} {
		if v, ok := p.Get(k); ok {
			if ro, err = onOff(k, v); err != nil {
				return nil, err
			}
		}
	}
	d.Opts.ReadOnly = ro
	d.Opts.Snapshot = globalSnapshot
	if v, ok := p.Get("snapshot"); ok {
		if d.Opts.Snapshot, err = onOff("snapshot", v); err != nil {
			return nil, err
		}
	}
	d.Opts.Cache = get("cache")
	switch d.Opts.Cache {
	case "", "writeback", "none", "writethrough", "directsync", "unsafe":
	default:
		return nil, fmt.Errorf("-drive cache=%s: invalid cache option", d.Opts.Cache)
	}
	// cache.direct / cache.no-flush are the two halves of cache= (QEMU's table).
	if v, ok := p.Get("cache.direct"); ok {
		on, err := onOff("cache.direct", v)
		if err != nil {
			return nil, err
		}
		if on {
			d.Opts.Cache = "none"
		}
	}
	if v, ok := p.Get("cache.no-flush"); ok {
		on, err := onOff("cache.no-flush", v)
		if err != nil {
			return nil, err
		}
		if on {
			d.Opts.Cache = "unsafe"
		}
	}
	switch a := get("aio"); a {
	case "", "threads", "native", "io_uring":
	default:
		return nil, fmt.Errorf("-drive aio=%s: invalid aio option", a)
	}
	d.Opts.Discard = get("discard")
	switch d.Opts.Discard {
	case "", "ignore", "off", "unmap", "on":
	default:
		return nil, fmt.Errorf("-drive discard=%s: Invalid discard option", d.Opts.Discard)
	}
	d.Opts.DetectZeroes = get("detect-zeroes")
	switch d.Opts.DetectZeroes {
	case "", "off", "on", "unmap":
	default:
		return nil, fmt.Errorf("-drive detect-zeroes=%s: Parameter 'detect-zeroes' does not accept value '%s'", d.Opts.DetectZeroes, d.Opts.DetectZeroes)
	}
	d.Opts.WError, d.Opts.RError = get("werror"), get("rerror")
	for k, v := range map[string]string{"werror": d.Opts.WError, "rerror": d.Opts.RError} {
		switch v {
		case "", "report", "ignore", "stop":
		case "enospc":
			if k == "rerror" {
				return nil, errors.New("-drive rerror=enospc: enospc is not supported for rerror")
			}
		default:
			return nil, fmt.Errorf("-drive %s=%s: '%s' invalid %s option", k, v, v, k)
		}
	}
	for _, k := range []string{"file.locking", "locking"} {
		if v, ok := p.Get(k); ok {
			switch v {
			case "on", "off", "auto":
				d.Opts.Locking = v
			default:
				return nil, fmt.Errorf("-drive %s=%s: Parameter 'locking' does not accept value '%s'", k, v, v)
			}
		}
	}
	return d, nil
}

func onOff(k, v string) (bool, error) {
	switch v {
	case "on", "yes", "true", "y":
		return true, nil
	case "off", "no", "false", "n":
		return false, nil
	}
	return false, fmt.Errorf("Parameter '%s' expects 'on' or 'off'", k)
}

// Blockdev is one -blockdev node graph reduced to what a drive needs.
type blockdevNode struct {
	driver, nodeName, filename, fileRef string
	readOnly, direct, noFlush           bool
	locking                             string
	backing                             string
	hasBacking                          bool
}

// ParseBlockdevs resolves -blockdev options (driver=file|raw|qcow2|vmdk, node-name,
// file=NODE or nested file.driver/file.filename, read-only, cache.direct,
// cache.no-flush, file.locking / locking) into drives keyed by the top nodes'
// node-names: the nodes no other node references as its file.
func ParseBlockdevs(ps []Props) (map[string]*Drive, error) {
	nodes := map[string]*blockdevNode{}
	var order []string
	for _, p := range ps {
		n := &blockdevNode{}
		get := func(k string) string { v, _ := p.Get(k); return v }
		for _, k := range p.Keys() {
			switch k {
			case "driver", "node-name", "filename", "file", "read-only", "cache.direct", "cache.no-flush",
				"locking", "file.driver", "file.filename", "file.locking", "file.aio", "aio", "discard", "detect-zeroes",
				"backing", "auto-read-only", "file.node-name", "file.cache.direct", "file.cache.no-flush":
			default:
				return nil, fmt.Errorf("-blockdev: Invalid parameter '%s'", k)
			}
		}
		n.driver, n.nodeName = get("driver"), get("node-name")
		if n.nodeName == "" {
			return nil, errors.New("-blockdev: node-name is required (gemu has no auto-generated node names)")
		}
		if nodes[n.nodeName] != nil {
			return nil, fmt.Errorf("-blockdev: Duplicate nodes with node-name='%s'", n.nodeName)
		}
		var err error
		if v, ok := p.Get("read-only"); ok {
			if n.readOnly, err = onOff("read-only", v); err != nil {
				return nil, err
			}
		}
		for _, k := range []string{"cache.direct", "file.cache.direct"} {
			if v, ok := p.Get(k); ok {
				if n.direct, err = onOff(k, v); err != nil {
					return nil, err
				}
			}
		}
		for _, k := range []string{"cache.no-flush", "file.cache.no-flush"} {
			if v, ok := p.Get(k); ok {
				if n.noFlush, err = onOff(k, v); err != nil {
					return nil, err
				}
			}
		}
		n.locking = get("locking")
		if v := get("file.locking"); v != "" {
			n.locking = v
		}
		if v, ok := p.Get("backing"); ok {
			n.backing, n.hasBacking = v, true
		}
		switch n.driver {
		case "file", "host_device":
			n.filename = get("filename")
			if n.filename == "" {
				return nil, fmt.Errorf("-blockdev driver=file: Parameter 'filename' is missing")
			}
		case "raw", "qcow2", "vmdk":
			if fd := get("file.driver"); fd != "" {
				if fd != "file" && fd != "host_device" {
					return nil, fmt.Errorf("-blockdev: protocol driver '%s' is not supported (only file)", fd)
				}
				n.filename = get("file.filename")
				if n.filename == "" {
					return nil, errors.New("-blockdev: file.filename is missing")
				}
			} else {
				n.fileRef = get("file")
				if n.fileRef == "" {
					return nil, fmt.Errorf("-blockdev driver=%s: Parameter 'file' is missing", n.driver)
				}
			}
		case "":
			return nil, errors.New("-blockdev: Parameter 'driver' is missing")
		default:
			return nil, fmt.Errorf("-blockdev: Unknown driver '%s'", n.driver)
		}
		nodes[n.nodeName] = n
		order = append(order, n.nodeName)
	}
	referenced := map[string]bool{}
	for _, n := range nodes {
		if n.fileRef != "" {
			if nodes[n.fileRef] == nil {
				return nil, fmt.Errorf("-blockdev %s: Cannot find device='' nor node-name='%s'", n.nodeName, n.fileRef)
			}
			if nodes[n.fileRef].driver != "file" && nodes[n.fileRef].driver != "host_device" {
				return nil, fmt.Errorf("-blockdev %s: file= must name a driver=file node", n.nodeName)
			}
			referenced[n.fileRef] = true
		}
		if n.hasBacking && n.backing != "" && n.backing != "null" {
			return nil, fmt.Errorf("-blockdev %s: backing='%s': explicit backing nodes are not supported: omit backing= and the image's own backing file is opened", n.nodeName, n.backing)
		}
		if n.hasBacking && (n.backing == "" || n.backing == "null") {
			return nil, fmt.Errorf("-blockdev %s: backing=null (no backing file) is not supported yet", n.nodeName)
		}
	}
	out := map[string]*Drive{}
	for _, name := range order {
		n := nodes[name]
		if referenced[name] {
			continue
		}
		d := &Drive{ID: name, If: "none"}
		file := n
		if n.fileRef != "" {
			file = nodes[n.fileRef]
		}
		d.Opts.File = file.filename
		switch n.driver {
		case "file", "host_device":
			d.Opts.Format = "raw"
		default:
			d.Opts.Format = n.driver
		}
		d.Opts.ReadOnly = n.readOnly || file.readOnly
		if n.direct || file.direct {
			d.Opts.Cache = "none"
		}
		if n.noFlush || file.noFlush {
			d.Opts.Cache = "unsafe"
		}
		d.Opts.Locking = file.locking
		if n.locking != "" {
			d.Opts.Locking = n.locking
		}
		out[name] = d
	}
	return out, nil
}
