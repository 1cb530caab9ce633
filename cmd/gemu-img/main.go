// Command gemu-img is a drop-in for qemu-img 7.2: the command table, qemu-img's
// option syntax (options may follow operands), messages and exit codes. Image work is
// done by package block and the format drivers it registers; this command must not
// know any format's internals.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"gemu/block"
	_ "gemu/block/parallels"
	_ "gemu/block/qcow1"
	_ "gemu/block/qed"
	_ "gemu/block/vdi"
	_ "gemu/block/vhdx"
	_ "gemu/block/vmdk"
	_ "gemu/block/vpc"
	"gemu/cmd/internal/cpuprof"
	_ "gemu/qcow2"
)

const version = "7.2.0"

// exitError carries the exit status and the message to print (empty: print nothing).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func fail(format string, a ...any) error {
	return &exitError{code: 1, msg: fmt.Sprintf(format, a...)}
}

// usageError is an option-parsing error: qemu-img adds a hint line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

var (
	stdout io.Writer = os.Stdout
	stderr io.Writer = os.Stderr
)

func main() {
	stop := cpuprof.Start()
	code := run(os.Args[1:])
	stop()
	os.Exit(code)
}

// run executes one gemu-img invocation and returns its exit status.
func run(args []string) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "gemu-img: internal error: %v\n", r)
			code = 1
		}
	}()
	block.Warn = func(msg string) { fmt.Fprintln(stderr, msg) }
	err := dispatch(args)
	if err == nil {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "gemu-img: %s\nTry 'gemu-img --help' for more information\n", ue.msg)
		return 1
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintf(stderr, "gemu-img: %s\n", ee.msg)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "gemu-img: %s\n", oneLine(err.Error()))
	return 1
}

func oneLine(s string) string {
	s = strings.TrimRight(s, "\n")
	// A lock conflict keeps qemu-img's hint on its own line.
	hint := ""
	if i := strings.LastIndex(s, "\nIs another process using the image ["); i >= 0 {
		s, hint = s[:i], s[i:]
	}
	return strings.ReplaceAll(s, "\n", " ") + hint
}

// forceShare is -U/--force-share of the running command: read-only opens share every
// permission (qemu-img's force-share=on).
var forceShare bool

func dispatch(args []string) error {
	if len(args) == 0 {
		return &usageError{"Not enough arguments"}
	}
	switch args[0] {
	case "-h", "--help", "help":
		printHelp(stdout)
		return nil
	case "-V", "--version":
		fmt.Fprintf(stdout, "gemu-img version %s (gemu)\nCopyright (c) the gemu authors; command-line compatible with qemu-img\n", version)
		return nil
	}
	if strings.HasPrefix(args[0], "-") {
		return &usageError{fmt.Sprintf("unrecognized option '%s'", args[0])}
	}
	app := newApp()
	cmd := app.Command(args[0])
	if cmd == nil {
		return &usageError{fmt.Sprintf("Command not found: %s", args[0])}
	}
	rest := args[1:]
	for _, a := range rest {
		if a == "-h" || a == "--help" {
			printHelp(stdout)
			return nil
		}
	}
	var tail []string
	if cmd.Name == "resize" && len(rest) > 0 {
		// qemu-img resize takes the size last even when it looks like an option (-1G).
		tail = rest[len(rest)-1:]
		rest = rest[:len(rest)-1]
	}
	flags, pos, err := reorder(rest, cmd.Flags)
	if err != nil {
		return err
	}
	pos = append(pos, tail...)
	orderedFlags = flags
	argv := append([]string{"gemu-img", cmd.Name}, flags...)
	argv = append(argv, "--")
	argv = append(argv, pos...)
	return app.Run(argv)
}

// reorder implements getopt-style parsing over a command's flag table: options may come
// after operands, short options may be clustered (-pc) or carry their value attached
// (-fqcow2), long options take --name=value or --name value. It returns the options in
// urfave/cli form followed by the operands.
func reorder(args []string, defs []cli.Flag) (flags, pos []string, err error) {
	takesValue := map[string]bool{}
	for _, f := range defs {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			return flags, pos, nil
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			tv, ok := takesValue[name]
			if !ok || len(name) < 2 {
				return nil, nil, &usageError{fmt.Sprintf("unrecognized option '--%s'", name)}
			}
			switch {
			case tv && !hasVal:
				if i+1 >= len(args) {
					return nil, nil, &usageError{fmt.Sprintf("missing argument for option '--%s'", name)}
				}
				flags = append(flags, "--"+name, args[i+1])
				i++
			case tv:
				flags = append(flags, "--"+name, val)
			case hasVal:
				return nil, nil, &usageError{fmt.Sprintf("option '--%s' doesn't allow an argument", name)}
			default:
				flags = append(flags, "--"+name)
			}
		case strings.HasPrefix(a, "-") && len(a) > 1:
			for j := 1; j < len(a); j++ {
				c := a[j : j+1]
				tv, ok := takesValue[c]
				if !ok {
					return nil, nil, &usageError{fmt.Sprintf("unrecognized option '%s'", a)}
				}
				if !tv {
					flags = append(flags, "-"+c)
					continue
				}
				val := a[j+1:]
				if val == "" {
					if i+1 >= len(args) {
						return nil, nil, &usageError{fmt.Sprintf("missing argument for option '-%s'", c)}
					}
					val = args[i+1]
					i++
				}
				flags = append(flags, "-"+c, val)
				break
			}
		default:
			pos = append(pos, a)
		}
	}
	return flags, pos, nil
}

func newApp() *cli.App {
	app := &cli.App{
		Name:                      "gemu-img",
		HideHelp:                  true,
		HideHelpCommand:           true,
		HideVersion:               true,
		DisableSliceFlagSeparator: true,
		Writer:                    stdout,
		ErrWriter:                 stderr,
		ExitErrHandler:            func(*cli.Context, error) {},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return &usageError{err.Error()}
		},
		Commands: commands(),
	}
	for _, c := range app.Commands {
		c.HideHelp = true
		c.OnUsageError = app.OnUsageError
		act := c.Action
		c.Action = func(ctx *cli.Context) error {
			forceShare = ctx.Bool("U")
			defer func() { forceShare = false }()
			return act(ctx)
		}
	}
	return app
}

func str(name string, aliases ...string) cli.Flag {
	return &cli.StringFlag{Name: name, Aliases: aliases}
}

func boolf(name string, aliases ...string) cli.Flag {
	return &cli.BoolFlag{Name: name, Aliases: aliases}
}

func multi(name string) cli.Flag { return &cli.StringSliceFlag{Name: name} }

// common flags accepted (and where meaningless, ignored) by most commands, as qemu-img does.
func common(extra ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{str("f"), boolf("q"), boolf("U", "force-share"), multi("object"), boolf("image-opts")}, extra...)
}

func commands() []*cli.Command {
	return []*cli.Command{
		{Name: "amend", Action: cmdAmend, Flags: common(multi("o"), boolf("p"), str("t"), boolf("force"))},
		{Name: "bitmap", Action: cmdBitmap, Flags: bitmapFlags()},
		{Name: "bench", Action: cmdBench, Flags: common(str("c"), str("d"), boolf("n"), str("i"), str("o"), str("s"), str("S"), str("t"), boolf("w"), str("pattern"), str("flush-interval"), boolf("no-drain"))},
		{Name: "check", Action: cmdCheck, Flags: common(str("r"), str("output"), str("T"))},
		{Name: "commit", Action: cmdCommit, Flags: common(str("b"), boolf("d"), boolf("p"), str("t"), str("r"))},
		{Name: "compare", Action: cmdCompare, Flags: common(str("F"), boolf("s"), boolf("p"), str("T"))},
		{Name: "convert", Action: cmdConvert, Flags: common(str("O"), multi("o"), boolf("c"), boolf("p"), str("S"), str("m"), boolf("W"), boolf("n"), str("B"), str("F"), str("t"), str("T"), boolf("C"), str("r"), str("l"), boolf("target-is-zero"), boolf("salvage"), str("target-image-opts"), boolf("bitmaps"), boolf("skip-broken-bitmaps"))},
		{Name: "create", Action: cmdCreate, Flags: common(multi("o"), str("b"), str("F"), boolf("u"))},
		{Name: "dd", Action: cmdDD, Flags: common(str("O"))},
		{Name: "info", Action: cmdInfo, Flags: common(str("output"), boolf("backing-chain"))},
		{Name: "map", Action: cmdMap, Flags: common(str("output"), str("start-offset"), str("max-length"))},
		{Name: "measure", Action: cmdMeasure, Flags: common(str("output"), str("O"), multi("o"), str("size"), str("l"))},
		{Name: "rebase", Action: cmdRebase, Flags: common(str("b"), str("F"), boolf("u"), boolf("p"), str("t"), str("T"))},
		{Name: "resize", Action: cmdResize, Flags: common(boolf("shrink"), str("preallocation"))},
		{Name: "snapshot", Action: cmdSnapshot, Flags: common(boolf("l"), str("a"), str("c"), str("d"))},
	}
}

func printHelp(w io.Writer) {
	fmt.Fprintf(w, `gemu-img version %s (gemu), a qemu-img 7.2 compatible disk image utility
usage: gemu-img [standard options] command [command options]

Command syntax:
  amend [-f fmt] [-p] [-q] -o options filename
  bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b source_file [-F source_fmt]] [-g granularity] [--object objectdef] [--image-opts | -f fmt] filename bitmap
  bench [-c count] [-d depth] [-f fmt] [--flush-interval=N] [-o offset] [--pattern=N] [-q] [-s size] [-S step] [-w] filename
  check [-f fmt] [--output=ofmt] [-r [leaks | all]] [-q] filename
  commit [-f fmt] [-b base] [-d] [-p] [-q] filename
  compare [-f fmt] [-F fmt] [-p] [-q] [-s] filename1 filename2
  convert [-c] [-p] [-q] [-n] [-f fmt] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-S sparse_size] [-m num_coroutines] [-W] [--target-is-zero] filename [filename2 [...]] output_filename
  create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]
  dd [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] [skip=blocks] if=input of=output
  info [-f fmt] [--output=ofmt] [--backing-chain] filename
  map [-f fmt] [--output=ofmt] [--start-offset=offset] [--max-length=len] filename
  measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [-f fmt] filename]
  snapshot [-q] [-l | -a snapshot | -c snapshot | -d snapshot] [-f fmt] filename
  rebase [-f fmt] [-p] [-q] [-u] [-F backing_fmt] -b backing_file filename
  resize [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size

Supported formats: %s
`, version, strings.Join(block.Formats(), " "))
}

// parseOptions parses qemu's "-o key=val,key2=val2" syntax (",," is a literal comma)
// from every -o given.
func parseOptions(list []string) (map[string]string, error) {
	m := map[string]string{}
	for _, s := range list {
		for _, p := range splitOpts(s) {
			if p == "" {
				continue
			}
			k, v, ok := strings.Cut(p, "=")
			if p == "help" || p == "?" {
				return nil, errors.New("Option help is not supported; see the qemu-img documentation for the format's options")
			}
			if !ok {
				// qemu treats a bare key as key=on
				v = "on"
			}
			m[k] = v
		}
	}
	return m, nil
}

func sortedKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// outputFormat validates --output.
func outputFormat(c *cli.Context) (bool, error) {
	switch c.String("output") {
	case "", "human":
		return false, nil
	case "json":
		return true, nil
	}
	return false, fail("--output must be used with human or json as argument.")
}

// openImage opens an image for a command, wrapping errors as qemu-img does.
func openImage(name, format string, readOnly, noBacking bool) (block.Driver, error) {
	if name == "" {
		return nil, fail("Expecting one image file name")
	}
	d, err := block.Open(name, block.OpenOptions{Format: format, ReadOnly: readOnly, NoBacking: noBacking, ForceShare: forceShare})
	if err != nil {
		return nil, fail("Could not open '%s': %s", name, oneLine(err.Error()))
	}
	return d, nil
}

func checkNoImageOpts(c *cli.Context) error {
	if c.Bool("image-opts") || c.String("target-image-opts") != "" {
		return fail("--image-opts is not supported")
	}
	if len(c.StringSlice("object")) > 0 {
		return fail("--object is not supported")
	}
	return nil
}

// progress returns a -p progress printer qemu-img style, or nil.
func progress(enabled bool) (func(done, total int64), func()) {
	if !enabled {
		return nil, func() {}
	}
	last := -1.0
	print := func(p float64) {
		fmt.Fprintf(stdout, "    (%3.2f/100%%)\r", p)
		if f, ok := stdout.(*os.File); ok {
			f.Sync()
		}
	}
	print(0)
	last = 0
	return func(done, total int64) {
			if total <= 0 {
				return
			}
			p := float64(done) * 100 / float64(total)
			if p-last >= 1 || (p == 100 && last != 100) {
				last = p
				print(p)
			}
		}, func() {
			print(100)
			fmt.Fprint(stdout, "\n")
		}
}

func qprintf(c *cli.Context, format string, a ...any) {
	if !c.Bool("q") {
		fmt.Fprintf(stdout, format, a...)
	}
}

func onePositional(c *cli.Context) (string, error) {
	switch c.NArg() {
	case 0:
		return "", fail("Expecting one image file name")
	case 1:
		return c.Args().First(), nil
	}
	return "", fail("Expecting one image file name")
}
