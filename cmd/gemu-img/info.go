package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"gemu/block"
)

// imageInfo gathers what qemu-img info prints for one layer.
type imageInfo struct {
	filename   string
	format     string
	virtual    int64
	actual     int64
	info       block.ImageInfo
	hasCluster bool
	// noDirty: the format reports no dirty flag (an Infoer without HasDirtyFlag), as
	// qemu-img omits it for formats without bdrv_get_info (parallels).
	noDirty bool
}

func collectInfo(d block.Driver) (*imageInfo, error) {
	ii := &imageInfo{filename: d.Filename(), format: d.Format(), virtual: d.Size(), actual: -1}
	if as, ok := d.(block.ActualSizer); ok {
		if n, err := as.ActualSize(); err == nil {
			ii.actual = n
		}
	} else if n, err := block.FileSize(d.Filename()); err == nil {
		ii.actual = n
	}
	if inf, ok := d.(block.Infoer); ok {
		p, err := inf.Info()
		if err != nil {
			return nil, err
		}
		if p != nil {
			ii.info = *p
			ii.noDirty = !p.HasDirtyFlag
		}
	}
	if ii.info.Snapshots == nil {
		if s, ok := d.(block.Snapshotter); ok {
			if l, err := s.Snapshots(); err == nil {
				ii.info.Snapshots = l
			}
		}
	}
	return ii, nil
}

func (ii *imageInfo) json() *ordKV {
	o := obj()
	o.set("virtual-size", ii.virtual)
	o.set("filename", ii.filename)
	o.set("format", ii.format)
	if ii.actual >= 0 {
		o.set("actual-size", ii.actual)
	}
	in := ii.info
	if in.ClusterSize > 0 {
		o.set("cluster-size", in.ClusterSize)
	}
	if in.Encrypted {
		o.set("encrypted", true)
	}
	if !ii.noDirty {
		o.set("dirty-flag", in.DirtyFlag)
	}
	if in.BackingFilename != "" {
		o.set("backing-filename", in.BackingFilename)
		full := in.FullBackingFilename
		if full == "" {
			full = in.BackingFilename
		}
		o.set("full-backing-filename", full)
		if in.BackingFilenameFormat != "" {
			o.set("backing-filename-format", in.BackingFilenameFormat)
		}
	}
	if len(in.Snapshots) > 0 {
		var l []any
		for _, s := range in.Snapshots {
			so := obj().set("id", s.ID).set("name", s.Name).set("vm-state-size", s.VMStateSize).
				set("date-sec", s.DateSec).set("date-nsec", s.DateNsec).
				set("vm-clock-sec", s.VMClockNsec/1e9).set("vm-clock-nsec", s.VMClockNsec%1e9)
			if s.ICount >= 0 {
				so.set("icount", s.ICount)
			}
			l = append(l, so)
		}
		o.set("snapshots", l)
	}
	if in.FormatSpecific != nil {
		o.set("format-specific", in.FormatSpecific)
	}
	return o
}

func (ii *imageInfo) human(buf *bytes.Buffer) {
	in := ii.info
	fmt.Fprintf(buf, "image: %s\nfile format: %s\nvirtual size: %s (%d bytes)\n",
		ii.filename, ii.format, block.SizeToStr(ii.virtual), ii.virtual)
	if ii.actual >= 0 {
		fmt.Fprintf(buf, "disk size: %s\n", block.SizeToStr(ii.actual))
	} else {
		fmt.Fprintf(buf, "disk size: unavailable\n")
	}
	if in.Encrypted {
		fmt.Fprintf(buf, "encrypted: yes\n")
	}
	if in.ClusterSize > 0 {
		fmt.Fprintf(buf, "cluster_size: %d\n", in.ClusterSize)
	}
	if in.DirtyFlag {
		fmt.Fprintf(buf, "cleanly shut down: no\n")
	}
	if in.BackingFilename != "" {
		fmt.Fprintf(buf, "backing file: %s", in.BackingFilename)
		if in.FullBackingFilename != "" && in.FullBackingFilename != in.BackingFilename {
			fmt.Fprintf(buf, " (actual path: %s)", in.FullBackingFilename)
		}
		fmt.Fprintf(buf, "\n")
		if in.BackingFilenameFormat != "" {
			fmt.Fprintf(buf, "backing file format: %s\n", in.BackingFilenameFormat)
		}
	}
	if len(in.Snapshots) > 0 {
		fmt.Fprintf(buf, "Snapshot list:\n")
		snapshotTable(buf, in.Snapshots)
	}
	if fs, ok := in.FormatSpecific["data"]; ok {
		fmt.Fprintf(buf, "Format specific information:\n")
		humanDump(buf, fs, 4)
	}
}

// snapshotTable prints qemu's snapshot list header and rows (bdrv_snapshot_dump).
func snapshotTable(buf *bytes.Buffer, l []block.SnapshotInfo) {
	fmt.Fprintf(buf, "%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT")
	for _, s := range l {
		date := time.Unix(s.DateSec, 0).Format("2006-01-02 15:04:05")
		ns := s.VMClockNsec
		clock := fmt.Sprintf("%02d:%02d:%02d.%03d", ns/3600e9, ns/60e9%60, ns/1e9%60, ns/1e6%1000)
		ic := ""
		if s.ICount >= 0 {
			ic = fmt.Sprint(s.ICount)
		}
		fmt.Fprintf(buf, "%-9s %-16s %8s%20s%13s%11s\n", s.ID, s.Name, block.SizeToStr(s.VMStateSize), date, clock, ic)
	}
}

func cmdInfo(c *cli.Context) error {
	if err := checkNoImageOpts(c); err != nil {
		return err
	}
	name, err := onePositional(c)
	if err != nil {
		return err
	}
	asJSON, err := outputFormat(c)
	if err != nil {
		return err
	}
	chain := c.Bool("backing-chain")
	format := c.String("f")
	var infos []*imageInfo
	seen := map[string]bool{}
	for name != "" {
		abs, _ := filepath.Abs(name)
		if fi, err := os.Stat(name); err == nil {
			abs = statKey(fi, abs)
		}
		if seen[abs] {
			return fail("Backing file '%s' creates an infinite loop.", name)
		}
		seen[abs] = true
		if len(infos) >= block.MaxChainDepth {
			return fail("Backing chain of '%s' is too deep", c.Args().First())
		}
		d, err := openImage(name, format, true, true)
		if err != nil {
			return err
		}
		ii, err := collectInfo(d)
		d.Close()
		if err != nil {
			return fail("%s", err)
		}
		infos = append(infos, ii)
		if !chain {
			break
		}
		name = ii.info.FullBackingFilename
		if name == "" {
			name = ii.info.BackingFilename
		}
		if name != "" {
			if _, err := block.ResolveBacking(ii.filename, ii.info.BackingFilename); err != nil {
				return fail("%s", err)
			}
		}
		format = ii.info.BackingFilenameFormat
	}
	var buf bytes.Buffer
	if asJSON {
		if chain {
			var l []any
			for _, ii := range infos {
				l = append(l, ii.json())
			}
			buf.WriteString(jsonString(l))
		} else {
			buf.WriteString(jsonString(infos[0].json()))
		}
	} else {
		for i, ii := range infos {
			if i > 0 {
				buf.WriteString("\n")
			}
			ii.human(&buf)
		}
	}
	stdout.Write(buf.Bytes())
	return nil
}
