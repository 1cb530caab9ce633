package main

import (
	"bytes"
	"errors"
	"sync"

	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"gemu/block"
)

const invalidSize = "Invalid image size specified. You may use k, M, G, T, P or E suffixes for " +
	"kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes."

func parseImageSize(s string) (int64, error) {
	v, err := block.ParseSize(s, 1)
	if err != nil || v < 0 {
		return 0, fail(invalidSize)
	}
	return v, nil
}

func cmdCreate(c *cli.Context) error {
	if err := checkNoImageOpts(c); err != nil {
		return err
	}
	fmtName := c.String("f")
	if fmtName == "" {
		fmtName = "raw"
	}
	if wantsOptionsHelp(c.StringSlice("o")) {
		return printOptionsHelp(c.App.Writer, fmtName)
	}
	opts, err := parseOptions(c.StringSlice("o"))
	if err != nil {
		return fail("%s", err)
	}
	backing, backingFmt := c.String("b"), c.String("F")
	if v, ok := opts["backing_file"]; ok {
		backing = v
		delete(opts, "backing_file")
	}
	if v, ok := opts["backing_fmt"]; ok {
		backingFmt = v
		delete(opts, "backing_fmt")
	}
	args := c.Args().Slice()
	if len(args) < 1 {
		return fail("Expecting image file name")
	}
	if len(args) > 2 {
		return fail("Unexpected argument: %s", args[2])
	}
	filename := args[0]
	size := int64(-1)
	if len(args) == 2 {
		if size, err = parseImageSize(args[1]); err != nil {
			return err
		}
	}
	if v, ok := opts["size"]; ok {
		if size, err = parseImageSize(v); err != nil {
			return err
		}
		delete(opts, "size")
	}
	f, err := block.Lookup(fmtName)
	if err != nil {
		return fail("%s", err)
	}
	if backing != "" && backingFmt == "" {
		// qemu-img 7.2 no longer probes backing files at create time.
		return fail("%s: Backing file specified without backing format", filename)
	}
	if backing != "" && !c.Bool("u") {
		path, err := block.ResolveBacking(filename, backing)
		if err != nil {
			return fail("%s: %s", filename, err)
		}
		// As qemu-img: the backing file is only measured, so it may be in use (force-share).
		bd, err := block.Open(path, block.OpenOptions{Format: backingFmt, ReadOnly: true, ForceShare: true})
		if err != nil {
			return fail("%s: Could not open backing image: %s", filename, oneLine(err.Error()))
		}
		if size < 0 {
			size = bd.Size()
		}
		bd.Close()
	}
	if size < 0 {
		return fail("%s: Image creation needs a size parameter", filename)
	}
	qprintf(c, "Formatting '%s', fmt=%s%s\n", filename, fmtName, formatLine(fmtName, size, backing, backingFmt, opts))
	co := block.CreateOptions{Size: size, Options: opts, Backing: backing, BackingFormat: backingFmt}
	if err := f.Create(filename, co); err != nil {
		return fail("%s: %s", filename, oneLine(err.Error()))
	}
	return nil
}

// createOrder is qemu-img create's "Formatting" line per format: option names in the
// order qemu prints them, with the defaults it prints when unset ("" = only if set).
// "size", "backing_file" and "backing_fmt" stand for the create parameters.
var createOrder = map[string][][2]string{
	"qcow2": {{"cluster_size", "65536"}, {"extended_l2", "off"}, {"preallocation", ""}, {"compression_type", "zlib"},
		{"size", ""}, {"compat", ""}, {"backing_file", ""}, {"backing_fmt", ""}, {"data_file", ""},
		{"data_file_raw", ""}, {"lazy_refcounts", "off"}, {"refcount_bits", "16"}},
	"vmdk": {{"size", ""}, {"adapter_type", ""}, {"compat6", "off"}, {"hwversion", "undefined"},
		{"toolsversion", ""}, {"subformat", ""}, {"zeroed_grain", ""}},
	"raw": {{"size", ""}, {"preallocation", ""}},
}

// formatLine renders the option summary of qemu-img create's "Formatting" line.
func formatLine(fmtName string, size int64, backing, backingFmt string, opts map[string]string) string {
	var b strings.Builder
	left := map[string]string{}
	for k, v := range opts {
		left[k] = v
	}
	left["size"] = strconv.FormatInt(size, 10)
	if backing != "" {
		left["backing_file"] = backing
	}
	if backingFmt != "" {
		left["backing_fmt"] = backingFmt
	}
	order, ok := createOrder[fmtName]
	if !ok {
		order = [][2]string{{"size", ""}, {"backing_file", ""}, {"backing_fmt", ""}}
	}
	for _, kv := range order {
		v, set := left[kv[0]]
		if !set {
			v = kv[1]
		} else if kv[0] == "cluster_size" {
			// qemu prints size-typed options as plain byte counts.
			if n, err := block.ParseSize(v, 1); err == nil {
				v = strconv.FormatInt(n, 10)
			}
		}
		delete(left, kv[0])
		if v != "" {
			fmt.Fprintf(&b, " %s=%s", kv[0], v)
		}
	}
	for _, k := range sortedKeys(left) {
		fmt.Fprintf(&b, " %s=%s", k, left[k])
	}
	return b.String()
}

func cmdConvert(c *cli.Context) error {
	if err := checkNoImageOpts(c); err != nil {
		return err
	}
	args := c.Args().Slice()
	if len(args) < 2 {
		return fail("Expecting image file name")
	}
	srcNames, target := args[:len(args)-1], args[len(args)-1]
	outFmt := c.String("O")
	if outFmt == "" {
		outFmt = "raw"
	}
	f, err := block.Lookup(outFmt)
	if err != nil {
		return fail("%s", err)
	}
	if wantsOptionsHelp(c.StringSlice("o")) {
		return printOptionsHelp(c.App.Writer, outFmt)
	}
	opts, err := parseOptions(c.StringSlice("o"))
	if err != nil {
		return fail("%s", err)
	}
	// -W is accepted and needs nothing: see block.Convert on write order.
	co := block.ConvertOptions{Compress: c.Bool("c"), Sparse: 4096, Workers: 8}
	if s := c.String("S"); s != "" {
		v, err := block.ParseSize(s, 1)
		if err != nil || v%512 != 0 || v > 16<<20 {
			return fail("Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. Select 0 to disable sparse detection (fully allocates output).")
		}
		co.Sparse = v
	}
	if s := c.String("m"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > 16 {
			return fail("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16")
		}
		co.Workers = v
	}
	switch t := c.String("t"); t {
	case "", "unsafe":
		co.NoFlush = true
	case "writeback", "none", "writethrough", "directsync":
	default:
		return fail("Invalid cache option: %s", t)
	}
	noCreate := c.Bool("n")
	if c.Bool("target-is-zero") {
		if !noCreate {
			return fail("--target-is-zero requires use of -n flag")
		}
		co.TargetIsZero = true
	}
	backing, backingFmt := c.String("B"), c.String("F")
	if v, ok := opts["backing_file"]; ok {
		backing = v
		delete(opts, "backing_file")
	}
	if v, ok := opts["backing_fmt"]; ok {
		backingFmt = v
		delete(opts, "backing_fmt")
	}
	if backing != "" && backingFmt == "" {
		return fail("Use of backing file requires explicit backing format")
	}
	if backing != "" && noCreate {
		return fail("Specifying backing image makes no sense when not creating an image")
	}
	if co.Compress && outFmt == "raw" {
		return fail("Compression not supported for this file format")
	}
	var srcs []block.Driver
	defer func() {
		for _, s := range srcs {
			s.Close()
		}
	}()
	for _, n := range srcNames {
		d, err := openImage(n, c.String("f"), true, false)
		if err != nil {
			return err
		}
		srcs = append(srcs, d)
	}
	if c.IsSet("l") {
		if len(srcs) > 1 && !strings.HasPrefix(c.String("l"), "snapshot.") {
			return fail("No support for concatenating multiple snapshot")
		}
		if err := loadSnapshot(srcs[0], c.String("l")); err != nil {
			return err
		}
	}
	if err := checkConvertBitmaps(c, srcs, outFmt); err != nil {
		return err
	}
	src := srcs[0]
	if len(srcs) > 1 {
		src = block.Concat(srcs)
	}
	if !noCreate {
		// An existing target is overwritten, as by qemu-img: Create truncates it.
		cr := block.CreateOptions{Size: src.Size(), Options: opts, Backing: backing, BackingFormat: backingFmt}
		if err := f.Create(target, cr); err != nil {
			return fail("%s: %s", target, oneLine(err.Error()))
		}
		co.TargetIsZero = true
		co.TargetHasBacking = backing != ""
	} else if len(opts) > 0 {
		return fail("-o options make no sense with -n")
	}
	dst, err := block.Open(target, block.OpenOptions{Format: outFmt})
	if err != nil {
		return fail("Could not open '%s': %s", target, oneLine(err.Error()))
	}
	if u, ok := dst.(block.UnsafeCacher); ok && co.NoFlush {
		u.SetUnsafe(true)
	}
	prog, end := progress(c.Bool("p") && !c.Bool("q"))
	co.Progress = prog
	err = block.Convert(src, dst, co)
	if err == nil && c.Bool("bitmaps") {
		err = copyBitmaps(srcs[0], dst, c.Bool("skip-broken-bitmaps"))
	}
	cerr := dst.Close()
	if err != nil {
		return fail("%s", oneLine(err.Error()))
	}
	if cerr != nil {
		return fail("%s", oneLine(cerr.Error()))
	}
	end()
	return nil
}

func cmdCheck(c *cli.Context) error {
	if err := checkNoImageOpts(c); err != nil {
		return err
	}
	name, err := onePositional(c)
	if err != nil {
		return &usageError{err.Error()} // qemu-img adds its --help hint here
	}
	asJSON, err := outputFormat(c)
	if err != nil {
		return err
	}
	mode := block.RepairNone
	switch c.String("r") {
	case "":
	case "leaks":
		mode = block.RepairLeaks
	case "all":
		mode = block.RepairAll
	default:
		return &usageError{fmt.Sprintf("Unknown option value for -r (expecting 'leaks' or 'all'): %s", c.String("r"))}
	}
	// qemu-img check opens the backing chain too (a missing backing file fails it).
	// A repair opens like QEMU's BDRV_O_CHECK where the driver offers it (qcow2: an
	// image marked corrupt can be repaired); other drivers are reopened read-write.
	if mode != block.RepairNone {
		// qemu-img opens an image to repair read-write from the start, so an image
		// another process holds is refused with the "write" lock message before any
		// check runs (a read-only first open would say "shared write").
		if forceShare {
			return fail("Could not open '%s': force-share=on can only be used with read-only images", name)
		}
		// Only the top file's locks are probed (OpenImageFile takes and drops them): a
		// driver-level read-write open could change the image before the check.
		f, err := block.OpenImageFile(name, block.OpenOptions{}, block.RoleImage)
		var le *block.LockError
		if errors.As(err, &le) {
			return fail("Could not open '%s': %s", name, oneLine(err.Error()))
		}
		if err == nil {
			f.Close()
		}
	}
	d, err := openImage(name, c.String("f"), true, false)
	if err != nil {
		return err
	}
	if mode != block.RepairNone {
		if r, ok := d.(interface{ OpenForRepair() error }); ok {
			if err := r.OpenForRepair(); err != nil {
				d.Close()
				return fail("Could not open '%s': %s", name, oneLine(err.Error()))
			}
		} else if _, ok := d.(block.Checker); ok {
			d.Close()
			if d, err = openImage(name, c.String("f"), false, false); err != nil {
				return err
			}
		}
	}
	closeD := closer(d)
	defer closeD()
	ck, ok := d.(block.Checker)
	if !ok {
		return &exitError{code: 63, msg: "This image format does not support checks"}
	}
	// Like qemu-img: the driver's findings go to stderr as they are made (also when
	// the check then fails), the summary to stdout only for a check that ran to the
	// end, and check errors make it "Check failed" with exit 1.
	printMessages := func(res *block.CheckResult) {
		if res != nil {
			for _, m := range res.Messages {
				fmt.Fprintln(stderr, m)
			}
		}
	}
	res, err := ck.Check(mode)
	printMessages(res)
	if errors.Is(err, block.ErrUnsupported) {
		// QEMU's -ENOTSUP, e.g. a repair of a vmdk or vdi image.
		return &exitError{code: 63, msg: "This image format does not support checks"}
	}
	if err != nil {
		return fail("Check failed: %s", oneLine(err.Error()))
	}
	var buf bytes.Buffer
	if mode != block.RepairNone && (res.LeaksFixed > 0 || res.CorruptionsFixed > 0) {
		leaksFixed, corrFixed := res.LeaksFixed, res.CorruptionsFixed
		if !asJSON && !c.Bool("q") {
			fmt.Fprintf(&buf, "The following inconsistencies were found and repaired:\n\n"+
				"    %d leaked clusters\n    %d corruptions\n\nDouble checking the fixed image now...\n",
				leaksFixed, corrFixed)
		}
		res, err = ck.Check(block.RepairNone)
		printMessages(res)
		if err != nil {
			stdout.Write(buf.Bytes())
			return fail("Check failed: %s", oneLine(err.Error()))
		}
		res.LeaksFixed, res.CorruptionsFixed = leaksFixed, corrFixed
	}
	if res.Filename == "" {
		res.Filename = name
	}
	if res.Format == "" {
		res.Format = d.Format()
	}
	if asJSON {
		o := obj().set("filename", res.Filename).set("format", res.Format).set("check-errors", res.CheckErrors)
		for _, kv := range []struct {
			k string
			v int64
		}{{"image-end-offset", res.ImageEndOffset}, {"total-clusters", res.TotalClusters},
			{"allocated-clusters", res.AllocatedClusters}, {"fragmented-clusters", res.FragmentedClusters},
			{"compressed-clusters", res.CompressedClusters}, {"corruptions", res.Corruptions},
			{"leaks", res.Leaks}, {"corruptions-fixed", res.CorruptionsFixed}, {"leaks-fixed", res.LeaksFixed}} {
			if kv.v != 0 {
				o.set(kv.k, kv.v)
			}
		}
		buf.WriteString(jsonString(o))
	} else if !c.Bool("q") {
		if res.Corruptions == 0 && res.Leaks == 0 && res.CheckErrors == 0 {
			buf.WriteString("No errors were found on the image.\n")
		} else {
			if res.Corruptions > 0 {
				fmt.Fprintf(&buf, "\n%d errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n", res.Corruptions)
			}
			if res.Leaks > 0 {
				fmt.Fprintf(&buf, "\n%d leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n", res.Leaks)
			}
			if res.CheckErrors > 0 {
				fmt.Fprintf(&buf, "\n%d internal errors have occurred during the check.\n", res.CheckErrors)
			}
		}
		if res.TotalClusters != 0 && res.AllocatedClusters != 0 {
			t := float64(res.TotalClusters)
			a := float64(res.AllocatedClusters)
			fmt.Fprintf(&buf, "%d/%d = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
				res.AllocatedClusters, res.TotalClusters, a*100/t,
				float64(res.FragmentedClusters)*100/a, float64(res.CompressedClusters)*100/a)
		}
		if res.ImageEndOffset > 0 {
			fmt.Fprintf(&buf, "Image end offset: %d\n", res.ImageEndOffset)
		}
	}
	stdout.Write(buf.Bytes())
	if err := closeD(); err != nil && mode != block.RepairNone {
		return fail("Could not write the repaired image: %s", oneLine(err.Error()))
	}
	switch {
	case res.CheckErrors > 0:
		return fail("Check failed")
	case res.Corruptions > 0:
		return &exitError{code: 2}
	case res.Leaks > 0:
		return &exitError{code: 3}
	}
	return nil
}

// cmdCompare exits as qemu-img compare: 0 identical, 1 different, 2 an image could not
// be opened (or compared), 1 with a usage hint for bad arguments.
func cmdCompare(c *cli.Context) error {
	if err := checkNoImageOpts(c); err != nil {
		return &exitError{code: 2, msg: err.Error()}
	}
	if c.NArg() != 2 {
		return &usageError{"Expecting two image file names"}
	}
	showProgress := c.Bool("p") && !c.Bool("q")
	// qemu-img ends the progress line with the result: no final 100% line after a
	// mismatch, the newline after the message (also after an error).
	endProgress := func() {
		if showProgress {
			fmt.Fprint(stdout, "\n")
		}
	}
	fa, fb := c.String("f"), c.String("F")
	a, err := openImage(c.Args().Get(0), fa, true, false)
	if err != nil {
		endProgress()
		return &exitError{code: 2, msg: err.Error()}
	}
	defer a.Close()
	b, err := openImage(c.Args().Get(1), fb, true, false)
	if err != nil {
		endProgress()
		return &exitError{code: 2, msg: err.Error()}
	}
	defer b.Close()
	prog, _ := progress(showProgress)
	res, err := block.Compare(a, b, c.Bool("s"), prog)
	if err != nil {
		endProgress()
		return &exitError{code: 2, msg: oneLine(err.Error())}
	}
	// qemu-img warns about the sizes only once the common part compared equal.
	if res.SizeWarning {
		var at int64
		if res.Identical || !strings.HasPrefix(res.Message, "Content mismatch at offset ") ||
			func() bool { _, e := fmt.Sscanf(res.Message, "Content mismatch at offset %d!", &at); return e != nil }() ||
			at >= min(a.Size(), b.Size()) {
			qprintf(c, "Warning: Image size mismatch!\n")
		}
	}
	qprintf(c, "%s\n", res.Message)
	endProgress()
	if !res.Identical {
		return &exitError{code: 1}
	}
	return nil
}

func cmdResize(c *cli.Context) error {
	if err := checkNoImageOpts(c); err != nil {
		return err
	}
	if c.NArg() != 2 {
		return fail("Expecting image file name and size")
	}
	name, sz := c.Args().Get(0), c.Args().Get(1)
	rel := 0
	switch {
	case strings.HasPrefix(sz, "+"):
		rel, sz = 1, sz[1:]
	case strings.HasPrefix(sz, "-"):
		rel, sz = -1, sz[1:]
	}
	n, err := block.ParseSize(sz, 1)
	if err != nil {
		return fail(invalidSize)
	}
	prealloc := c.String("preallocation")
	switch prealloc {
	case "", "off", "metadata", "falloc", "full":
	default:
		return fail("Invalid preallocation mode: '%s'", prealloc)
	}
	d, err := openImage(name, c.String("f"), false, false)
	if err != nil {
		return err
	}
	closeD := closer(d)
	defer closeD()
	cur := d.Size()
	newSize := n
	if rel != 0 {
		newSize = cur + int64(rel)*n
	}
	if newSize < 0 {
		return fail("New image size must be positive")
	}
	if newSize < cur && !c.Bool("shrink") {
		return fail("Use the --shrink option to perform a shrink operation.")
	}
	if err := d.Resize(newSize, block.ResizeOptions{Shrink: c.Bool("shrink"), Preallocation: prealloc}); err != nil {
		return fail("%s", oneLine(err.Error()))
	}
	if err := d.Flush(); err != nil {
		return fail("%s", err)
	}
	if err := closeD(); err != nil {
		return fail("%s", err)
	}
	qprintf(c, "Image resized.\n")
	return nil
}

func hex0(v int64) string {
	if v == 0 {
		return "0"
	}
	return fmt.Sprintf("0x%x", v)
}

func cmdMap(c *cli.Context) error {
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
	start, length := int64(0), int64(-1)
	if s := c.String("start-offset"); s != "" {
		if start, err = block.ParseSize(s, 1); err != nil {
			return fail("Invalid start offset specified")
		}
	}
	if s := c.String("max-length"); s != "" {
		if length, err = block.ParseSize(s, 1); err != nil {
			return fail("Invalid length specified")
		}
	}
	d, err := openImage(name, c.String("f"), true, false)
	if err != nil {
		return err
	}
	defer d.Close()
	if length < 0 {
		length = d.Size()
	}
	ents, err := block.Map(d, start, length)
	if err != nil {
		return fail("%s", oneLine(err.Error()))
	}
	if len(ents) == 0 {
		// qemu-img reports an empty range as one zero-length entry.
		ents = []block.MapEntry{{Start: start, Offset: -1}}
	}
	var buf bytes.Buffer
	if asJSON {
		buf.WriteString("[")
		for i, e := range ents {
			if i > 0 {
				buf.WriteString(",\n")
			}
			fmt.Fprintf(&buf, `{ "start": %d, "length": %d, "depth": %d, "present": %t, "zero": %t, "data": %t`,
				e.Start, e.Length, e.Depth, e.Present, e.Zero, e.Data)
			if e.Offset >= 0 {
				fmt.Fprintf(&buf, `, "offset": %d`, e.Offset)
			}
			buf.WriteString("}")
		}
		buf.WriteString("]\n")
	} else {
		fmt.Fprintf(&buf, "%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File")
		for _, e := range ents {
			if e.Data && e.Offset < 0 {
				// Compressed (or otherwise unmappable) data has no host offset to show.
				stdout.Write(buf.Bytes())
				return fail("File contains external, encrypted or compressed clusters.")
			}
			if e.Data && !e.Zero {
				fmt.Fprintf(&buf, "%-16s%-16s%-16s%s\n", hex0(e.Start), hex0(e.Length), hex0(e.Offset), e.File)
			}
		}
	}
	stdout.Write(buf.Bytes())
	return nil
}

func cmdMeasure(c *cli.Context) error {
	if err := checkNoImageOpts(c); err != nil {
		return err
	}
	asJSON, err := outputFormat(c)
	if err != nil {
		return err
	}
	outFmt := c.String("O")
	if outFmt == "" {
		outFmt = "raw"
	}
	f, err := block.Lookup(outFmt)
	if err != nil {
		return fail("%s", err)
	}
	opts, err := parseOptions(c.StringSlice("o"))
	if err != nil {
		return fail("%s", err)
	}
	sizeStr := c.String("size")
	if sizeStr != "" && c.NArg() > 0 {
		return fail("--size N cannot be used together with a filename.")
	}
	if c.NArg() == 0 && (c.String("f") != "" || c.IsSet("l")) {
		return fail("--image-opts, -f, and -l require a filename argument.")
	}
	if sizeStr == "" && c.NArg() == 0 {
		return fail("Either --size N or one filename must be specified.")
	}
	if c.NArg() > 1 {
		return fail("At most one filename argument is allowed.")
	}
	var src block.Driver
	size := int64(0)
	if sizeStr != "" {
		if size, err = block.ParseSize(sizeStr, 1); err != nil || size < 0 {
			return fail(invalidSize)
		}
	} else {
		if src, err = openImage(c.Args().First(), c.String("f"), true, false); err != nil {
			return err
		}
		defer src.Close()
		size = src.Size()
		if c.IsSet("l") {
			if err := loadSnapshot(src, c.String("l")); err != nil {
				return err
			}
		}
	}
	m, ok := f.(block.Measurer)
	if !ok {
		return fail("Block driver '%s' does not support size measurement", outFmt)
	}
	req, full, err := m.Measure(size, opts, src)
	if err != nil {
		return fail("%s", oneLine(err.Error()))
	}
	// qemu-img reports bitmaps only when the source and the target can keep them.
	var bmSize int64
	bitmaps := false
	if bm, ok := f.(block.BitmapMeasurer); ok && src != nil {
		if bmSize, bitmaps, err = bm.MeasureBitmaps(src, size, opts); err != nil {
			return fail("%s", oneLine(err.Error()))
		}
	}
	if asJSON {
		o := obj().set("required", req).set("fully-allocated", full)
		if bitmaps {
			o.set("bitmaps", bmSize)
		}
		stdout.Write([]byte(jsonString(o)))
	} else {
		fmt.Fprintf(stdout, "required size: %d\nfully allocated size: %d\n", req, full)
		if bitmaps {
			fmt.Fprintf(stdout, "bitmaps size: %d\n", bmSize)
		}
	}
	return nil
}

func cmdSnapshot(c *cli.Context) error {
	if err := checkNoImageOpts(c); err != nil {
		return err
	}
	name, err := onePositional(c)
	if err != nil {
		return err
	}
	var action, snap string
	n := 0
	if c.Bool("l") {
		action, n = "l", n+1
	}
	for _, k := range []string{"a", "c", "d"} {
		if v := c.String(k); c.IsSet(k) {
			action, snap, n = k, v, n+1
		}
	}
	if n != 1 {
		return &usageError{"Cannot mix '-l', '-a', '-c', '-d'"}
	}
	d, err := openImage(name, c.String("f"), action == "l", true)
	if err != nil {
		return err
	}
	closeD := closer(d)
	defer closeD()
	s, ok := d.(block.Snapshotter)
	what := map[string]string{"a": "apply", "c": "create", "d": "delete"}[action]
	if !ok {
		if action == "l" {
			return nil
		}
		return fail("Could not %s snapshot '%s': Operation not supported", what, snap)
	}
	switch action {
	case "l":
		l, err := s.Snapshots()
		if err != nil {
			return fail("%s", err)
		}
		if len(l) == 0 {
			return nil
		}
		var buf bytes.Buffer
		buf.WriteString("Snapshot list:\n")
		snapshotTable(&buf, l)
		stdout.Write(buf.Bytes())
		return nil
	case "c":
		err = s.CreateSnapshot(snap)
	case "a":
		err = s.ApplySnapshot(snap)
	case "d":
		err = s.DeleteSnapshot(snap)
	}
	if err != nil {
		return fail("Could not %s snapshot '%s': %s", what, snap, oneLine(err.Error()))
	}
	if err := closeD(); err != nil {
		return fail("%s", err)
	}
	return nil
}

// crashHook returns the AfterWrite hook used by the crash-safety tests: with
// GEMU_IMG_TEST_KILL_AFTER_WRITES=N set, the process SIGKILLs itself after N writes.
func crashHook() func() {
	n, err := strconv.Atoi(os.Getenv("GEMU_IMG_TEST_KILL_AFTER_WRITES"))
	if err != nil || n < 0 {
		return nil
	}
	count := 0
	return func() {
		count++
		if count >= n {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			time.Sleep(time.Second)
		}
	}
}

func cmdRebase(c *cli.Context) error {
	if err := checkNoImageOpts(c); err != nil {
		return err
	}
	name, err := onePositional(c)
	if err != nil {
		return err
	}
	if !c.IsSet("b") {
		return fail("Must specify backing file (-b) or use '-b \"\"' to remove it")
	}
	newName, newFmt := c.String("b"), c.String("F")
	if newName != "" && newFmt == "" {
		return fail("Could not change the backing file to '%s': backing format must be specified", newName)
	}
	unsafe := c.Bool("u")
	top, err := openImage(name, c.String("f"), false, unsafe)
	if err != nil {
		return err
	}
	closeTop := closer(top)
	defer closeTop()
	if unsafe {
		bs, ok := top.(block.BackingSetter)
		if !ok {
			return fail("Could not change the backing file to '%s': Operation not supported", newName)
		}
		if err := bs.SetBacking(newName, newFmt); err != nil {
			return fail("Could not change the backing file to '%s': %s", newName, oneLine(err.Error()))
		}
		if err := closeTop(); err != nil {
			return fail("%s", err)
		}
		return nil
	}
	var nb block.Driver
	if newName != "" {
		path, err := block.ResolveBacking(name, newName)
		if err != nil {
			return fail("%s", err)
		}
		nb, err = block.Open(path, block.OpenOptions{Format: newFmt, ReadOnly: true})
		if err != nil {
			return fail("Could not open new backing file '%s': %s", path, oneLine(err.Error()))
		}
		defer nb.Close()
	}
	prog, end := progress(c.Bool("p") && !c.Bool("q"))
	err = block.Rebase(top, nb, newName, newFmt, block.RebaseOptions{AfterWrite: crashHook(), Progress: prog})
	if err != nil {
		return fail("%s", oneLine(err.Error()))
	}
	if err := closeTop(); err != nil {
		return fail("%s", err)
	}
	end()
	return nil
}

func sameFile(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

func cmdCommit(c *cli.Context) error {
	if err := checkNoImageOpts(c); err != nil {
		return err
	}
	name, err := onePositional(c)
	if err != nil {
		return &usageError{err.Error()} // qemu-img adds its --help hint here
	}
	top, err := openImage(name, c.String("f"), false, false)
	if err != nil {
		return err
	}
	closeTop := closer(top)
	defer closeTop()
	// Find the base layer: the immediate backing file, or the one named by -b.
	depth := 0
	var base block.Driver
	for l := top; ; depth++ {
		b, ok := l.(block.Backed)
		var next block.Driver
		if ok {
			next = b.Backing()
		}
		if next == nil {
			break
		}
		l = next
		if !c.IsSet("b") || sameFile(next.Filename(), c.String("b")) {
			base, depth = next, depth+1
			break
		}
	}
	if base == nil {
		if c.IsSet("b") {
			return fail("Did not find '%s' in the backing chain of '%s'", c.String("b"), name)
		}
		return fail("Image does not have a backing file")
	}
	// A second, writable handle on the base, with its own backing chain: a write of part
	// of a base cluster must copy the rest from the base's backing file.
	// NoLock: the chain above already holds the base locked (read-only, other writers
	// refused); a second lock on it from this process would conflict with that one.
	bw, err := block.Open(base.Filename(), block.OpenOptions{Format: base.Format(), NoLock: true})
	if err != nil {
		return fail("Could not open '%s': %s", base.Filename(), oneLine(err.Error()))
	}
	prog, end := progress(c.Bool("p") && !c.Bool("q"))
	err = block.Commit(top, depth, bw, block.CommitOptions{
		Drop: c.Bool("d") || c.IsSet("b"), AfterWrite: crashHook(), Progress: prog})
	cerr := bw.Close()
	if err != nil {
		return fail("%s", oneLine(err.Error()))
	}
	if cerr != nil {
		return fail("%s", cerr)
	}
	if err := closeTop(); err != nil {
		return fail("%s", err)
	}
	end()
	qprintf(c, "Image committed.\n")
	return nil
}

func cmdAmend(c *cli.Context) error {
	if err := checkNoImageOpts(c); err != nil {
		return err
	}
	if len(c.StringSlice("o")) == 0 {
		return &usageError{"Must specify options (-o)"}
	}
	name, err := onePositional(c)
	if err != nil {
		return err
	}
	opts, err := parseOptions(c.StringSlice("o"))
	if err != nil {
		return fail("%s", err)
	}
	// qemu-img amend opens the backing chain too (a missing backing file fails it).
	d, err := openImage(name, c.String("f"), false, false)
	if err != nil {
		return err
	}
	closeD := closer(d)
	defer closeD()
	a, ok := d.(block.Amender)
	if !ok {
		return fail("Format driver '%s' does not support option amendment", d.Format())
	}
	if err := a.Amend(opts); err != nil {
		// As qemu-img 7.2: the driver's message alone, with its hint lines if any.
		return fail("%s", strings.TrimRight(err.Error(), "\n"))
	}
	if err := closeD(); err != nil {
		return fail("%s", err)
	}
	return nil
}

func cmdDD(c *cli.Context) error {
	if err := checkNoImageOpts(c); err != nil {
		return err
	}
	var in, out string
	bs, count, skip := int64(512), int64(-1), int64(0)
	for _, a := range c.Args().Slice() {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return fail("unrecognized operand %s", a)
		}
		var err error
		switch k {
		case "if":
			in = v
		case "of":
			out = v
		case "bs":
			bs, err = block.ParseSize(v, 1)
			if err != nil || bs <= 0 || bs > 1<<30 {
				return fail("invalid number: '%s'", v)
			}
		case "count":
			count, err = block.ParseSize(v, 1)
			if err != nil {
				return fail("invalid number: '%s'", v)
			}
		case "skip":
			skip, err = block.ParseSize(v, 1)
			if err != nil {
				return fail("invalid number: '%s'", v)
			}
		default:
			return fail("unrecognized operand %s", a)
		}
	}
	if in == "" {
		return fail("Must specify both input and output files")
	}
	if out == "" {
		return fail("Must specify both input and output files")
	}
	src, err := openImage(in, c.String("f"), true, false)
	if err != nil {
		return err
	}
	defer src.Close()
	outFmt := c.String("O")
	if outFmt == "" {
		outFmt = "raw"
	}
	f, err := block.Lookup(outFmt)
	if err != nil {
		return fail("%s", err)
	}
	start, end, err := block.DDRange(src.Size(), bs, count, skip)
	if err != nil {
		return fail("%s", err)
	}
	size := end - start
	if err := f.Create(out, block.CreateOptions{Size: size, Options: map[string]string{}}); err != nil {
		return fail("%s: error while creating output image: %s", out, oneLine(err.Error()))
	}
	dst, err := block.Open(out, block.OpenOptions{Format: outFmt})
	if err != nil {
		return fail("Could not open '%s': %s", out, oneLine(err.Error()))
	}
	err = block.DD(src, dst, bs, count, skip)
	cerr := dst.Close()
	if err != nil {
		return fail("%s", oneLine(err.Error()))
	}
	if cerr != nil {
		return fail("%s", cerr)
	}
	return nil
}

func cmdBench(c *cli.Context) error {
	if err := checkNoImageOpts(c); err != nil {
		return err
	}
	name, err := onePositional(c)
	if err != nil {
		return err
	}
	o := block.BenchOptions{Count: 75000, Depth: 64, BufSize: 4096, Write: c.Bool("w")}
	num := func(flag, what string, dst *int) error {
		if s := c.String(flag); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v <= 0 {
				return fail("Invalid %s specified", what)
			}
			*dst = v
		}
		return nil
	}
	size := func(flag, what string, dst *int64) error {
		if s := c.String(flag); s != "" {
			v, err := block.ParseSize(s, 1)
			if err != nil || v < 0 || v > 1<<30 {
				return fail("Invalid %s specified", what)
			}
			*dst = v
		}
		return nil
	}
	for _, e := range []error{num("c", "request count", &o.Count), num("d", "queue depth", &o.Depth),
		num("flush-interval", "flush interval", &o.FlushInterval), size("s", "buffer size", &o.BufSize),
		size("o", "offset", &o.Offset), size("S", "step size", &o.Step)} {
		if e != nil {
			return e
		}
	}
	if s := c.String("pattern"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 || v > 255 {
			return fail("Invalid pattern byte specified")
		}
		o.Pattern = byte(v)
	}
	if o.FlushInterval > 0 && !o.Write {
		return fail("--flush-interval is only available in write tests")
	}
	d, err := openImage(name, c.String("f"), !o.Write, false)
	if err != nil {
		return err
	}
	defer d.Close()
	step := o.Step
	if step == 0 {
		step = o.BufSize
	}
	kind := "read"
	if o.Write {
		kind = "write"
	}
	qprintf(c, "Sending %d %s requests, %d bytes each, %d in parallel (starting at offset %d, step size %d)\n",
		o.Count, kind, o.BufSize, o.Depth, o.Offset, step)
	t0 := time.Now()
	if err := block.Bench(d, o); err != nil {
		return fail("%s", oneLine(err.Error()))
	}
	qprintf(c, "Run completed in %3.3f seconds.\n", time.Since(t0).Seconds())
	return nil
}

// closer returns a function closing d once: commands defer it for early returns and
// call it explicitly to report the error; a second Close must not reach the driver.
func closer(d block.Driver) func() error {
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() { err = d.Close() })
		return err
	}
}
