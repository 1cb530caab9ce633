package main

import (
	"errors"
	"fmt"

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
	return common(boolf("add"), boolf("remove"), boolf("clear"), boolf("enable"), boolf("disable"),
		multi("merge"), str("g", "granularity"), str("b", "source-file"), str("F", "source-format"))
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
