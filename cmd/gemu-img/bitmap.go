package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"gemu/block"
)

// bitmap: qemu-img 7.2's `bitmap` subcommand. The operations run in the order given on
// the command line against the image's persistent dirty bitmaps; what succeeded before
// a failing operation is still stored when the image is closed, as qemu-img does.

// orderedFlags is the current command's options in command-line order (dispatch sets
// it): the bitmap actions are applied in that order.
var orderedFlags []string

type bitmapAction struct {
	op  string // add, remove, clear, enable, disable, merge
	src string // merge source bitmap
}

func bitmapFlags() []cli.Flag {
	// qemu-img bitmap takes neither -q nor -U.
	return []cli.Flag{str("f"), multi("object"), boolf("image-opts"),
		boolf("add"), boolf("remove"), boolf("clear"), boolf("enable"), boolf("disable"),
		multi("merge"), str("g", "granularity"), str("b", "source-file"), str("F", "source-format")}
}

func cmdBitmap(c *cli.Context) error {
	if err := checkNoImageOpts(c); err != nil {
		return err
	}
	var acts []bitmapAction
	add, merge := false, false
	for i := 0; i < len(orderedFlags); i++ {
		switch f := orderedFlags[i]; f {
		case "--add", "--remove", "--clear", "--enable", "--disable":
			acts = append(acts, bitmapAction{op: f[2:]})
			add = add || f == "--add"
		case "--merge":
			if i+1 < len(orderedFlags) {
				acts = append(acts, bitmapAction{op: "merge", src: orderedFlags[i+1]})
				i++
			}
			merge = true
		}
	}
	var gran int64
	if g := c.String("g"); c.IsSet("g") {
		n, err := block.ParseSize(g, 1)
		if err != nil || n < 0 {
			return fail("Invalid granularity specified. You may use k, M, G, T, P or E suffixes for " +
				"kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
		}
		gran = n
	}
	srcFile, srcFmt := c.String("b"), c.String("F")
	switch {
	case len(acts) == 0:
		return fail("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge")
	case gran != 0 && !add:
		return fail("granularity only supported with --add")
	case srcFmt != "" && srcFile == "":
		return fail("-F only supported with -b")
	case srcFile != "" && !merge:
		return fail("Merge bitmap source file only supported with --merge")
	case c.NArg() != 2:
		return fail("Expecting filename and bitmap name")
	}
	filename, name := c.Args().Get(0), c.Args().Get(1)
	// No backing chain: bitmaps are changed without reference to the image's contents.
	d, err := openImage(filename, c.String("f"), false, true)
	if err != nil {
		return err
	}
	var src block.Driver
	if srcFile != "" {
		if src, err = openImage(srcFile, srcFmt, true, true); err != nil {
			d.Close()
			return err
		}
	}
	err = applyBitmapActions(d, src, name, acts, gran)
	if src != nil {
		src.Close()
	}
	if cerr := d.Close(); err == nil && cerr != nil {
		err = fail("%s", oneLine(cerr.Error()))
	}
	return err
}

func applyBitmapActions(d, src block.Driver, name string, acts []bitmapAction, gran int64) error {
	bm, ok := d.(block.Bitmapper)
	for _, a := range acts {
		var err error
		switch {
		case !ok && a.op == "add":
			err = fmt.Errorf("Can't store persistent bitmaps to %s: Operation not supported", d.Filename())
		case !ok:
			err = fmt.Errorf("Dirty bitmap '%s' not found", name)
		case a.op == "add":
			err = bm.AddBitmap(name, gran, false)
		case a.op == "remove":
			err = bm.RemoveBitmap(name)
		case a.op == "clear":
			err = bm.ClearBitmap(name)
		case a.op == "enable":
			err = bm.EnableBitmap(name, true)
		case a.op == "disable":
			err = bm.EnableBitmap(name, false)
		case a.op == "merge":
			s := src
			if s != nil {
				if _, ok := s.(block.Bitmapper); !ok {
					err = fmt.Errorf("Dirty bitmap '%s' not found", a.src)
					break
				}
			}
			err = bm.MergeBitmap(name, s, a.src)
		}
		if err != nil {
			if errors.Is(err, block.ErrReadOnly) {
				err = errors.New("Image is read-only")
			}
			return fail("Operation %s on bitmap %s failed: %s", a.op, name, oneLine(err.Error()))
		}
	}
	return nil
}

// loadSnapshot applies qemu-img's -l to a source opened read-only: "snapshot.id=ID",
// "snapshot.name=NAME" (both may be given; the last of each key counts), or a bare
// ID-or-name (tried as an ID first).
func loadSnapshot(d block.Driver, param string) error {
	var id, name string
	hasID, hasName, byEither := false, false, false
	if strings.HasPrefix(param, "snapshot.") {
		for _, kv := range splitOpts(param) {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "snapshot.id":
				id, hasID = v, true
			case "snapshot.name":
				name, hasName = v, true
			default:
				return fail("Invalid parameter '%s'\ngemu-img: Failed in parsing snapshot param '%s'", k, param)
			}
		}
	} else {
		id, name, byEither = param, param, true
	}
	sl, ok := d.(block.SnapshotLoader)
	if !ok {
		return fail("Failed to load snapshot: Block format '%s' used by device '' does not support temporarily loading internal snapshots", d.Format())
	}
	var err error
	switch {
	case byEither:
		if err = sl.LoadSnapshot(id, ""); err != nil {
			err = sl.LoadSnapshot("", name)
		}
	case (hasID && id == "") || (hasName && name == ""):
		err = errors.New("Can't find snapshot") // an empty value matches nothing
	default:
		err = sl.LoadSnapshot(id, name)
	}
	if err != nil {
		return fail("Failed to load snapshot: %s", oneLine(err.Error()))
	}
	return nil
}

// splitOpts splits QEMU's key=val,key=val syntax (",," is a literal comma).
func splitOpts(s string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	return append(parts, cur.String())
}

// checkConvertBitmaps applies qemu-img convert's --bitmaps rules before the target is
// created.
func checkConvertBitmaps(c *cli.Context, srcs []block.Driver, outFmt string) error {
	bitmaps, skip := c.Bool("bitmaps"), c.Bool("skip-broken-bitmaps")
	if skip && !bitmaps {
		return fail("Use of --skip-broken-bitmaps requires --bitmaps")
	}
	if !bitmaps {
		return nil
	}
	if len(srcs) > 1 {
		return fail("Copying bitmaps only possible with single source")
	}
	bm, ok := srcs[0].(block.Bitmapper)
	if !ok || !bm.SupportsBitmaps() {
		return fail("Source lacks bitmap support")
	}
	// QEMU walks a node's bitmaps newest first: the last in the directory first.
	l := bm.Bitmaps()
	for i := len(l) - 1; i >= 0; i-- {
		if b := l[i]; b.InUse && !skip {
			return fail("Cannot copy inconsistent bitmap '%s'\nTry --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it", b.Name)
		}
	}
	return nil
}

// copyBitmaps is qemu-img's convert_copy_bitmaps: each consistent source bitmap is
// created in the target (same name, granularity and enabled state) and filled.
func copyBitmaps(src, dst block.Driver, skipBroken bool) error {
	sb := src.(block.Bitmapper)
	db, ok := dst.(block.Bitmapper)
	if !ok || !db.SupportsBitmaps() {
		return fmt.Errorf("Format driver '%s' does not support bitmaps", dst.Format())
	}
	// Warnings in QEMU's order (newest first); the bitmaps are created oldest first,
	// which is the directory order QEMU's copy ends up with.
	l := sb.Bitmaps()
	for i := len(l) - 1; i >= 0; i-- {
		if l[i].InUse && skipBroken {
			fmt.Fprintf(stderr, "gemu-img: warning: Skipping inconsistent bitmap '%s'\n", l[i].Name)
		}
	}
	for _, b := range l {
		if b.InUse {
			continue
		}
		if err := db.AddBitmap(b.Name, b.Granularity, !b.Auto); err != nil {
			return fmt.Errorf("Failed to create bitmap %s: %v", b.Name, err)
		}
		if err := db.MergeBitmap(b.Name, src, b.Name); err != nil {
			db.RemoveBitmap(b.Name)
			return fmt.Errorf("Failed to populate bitmap %s: %v", b.Name, err)
		}
	}
	return nil
}
