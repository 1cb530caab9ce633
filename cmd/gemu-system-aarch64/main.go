// Command gemu-system-aarch64 emulates QEMU's aarch64 `virt` board with a Cortex-A57
// class vCPU under TCG. It accepts the subset of qemu-system-aarch64's command line
// that boots a Linux kernel directly; see usage. Parsing and wiring only: the board is
// machine/virt, see ARCHITECTURE.md.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"gemu/cmd/internal/cpuprof"
	"gemu/hw/chardev"
	"gemu/machine/virt"
	arm "gemu/target-arm"
)

const prog = "gemu-system-aarch64"

const version = "gemu-system-aarch64 version 0.1 (qemu-system-aarch64 7.2 compatible command line)"

const usage = `usage: gemu-system-aarch64 [options]

  -M, -machine virt[,gic-version=2|3|max|host][,dumpdtb=FILE]
                         the board (only virt); GIC version (default 2)
  -cpu cortex-a57        CPU model (cortex-a53 and max run as a Cortex-A57)
  -m SIZE                RAM size, MiB unless suffixed K/M/G (default 128M)
  -smp N                 number of CPUs (default 1)
  -kernel FILE           arm64 Linux Image (or gzip-compressed Image)
  -initrd FILE           initial ramdisk
  -append STRING         kernel command line
  -dtb FILE              use this device tree instead of the generated one
  -nographic             no display; serial console on stdio (the default here)
  -serial stdio|file:PATH|null
                         where the PL011 console goes (default stdio)
  -no-reboot             exit instead of rebooting when the guest resets
  -accel tcg             accelerator (only tcg: KVM cannot run arm64 guests on this host)
  -d in_asm,exec,int     trace translated code, executed blocks, exceptions
  -D FILE                write -d traces to FILE instead of stderr
  -display none, -monitor none
                         accepted for compatibility
  -h, -help              this help
  -version               version
On the stdio console, Ctrl-A x quits and Ctrl-A h lists the escapes.
GEMU_CPUPROFILE=FILE in the environment writes a Go CPU profile of the run.
`

type options struct {
	cfg       virt.Config
	serial    string
	noReboot  bool
	dumpDTB   string
	traceSpec string
	traceFile string
}

func main() {
	// The translator allocates a block's IR, closures and tables and keeps the blocks
	// for good: with Go's default GOGC=100 the collector took ~8% of a boot. 200
	// halves that for ~20 MiB more peak RSS (still below qemu-system-aarch64's). An
	// explicit GOGC in the environment wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(200)
	}
	stop := cpuprof.Start()
	code, err := run(os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
	}
	os.Exit(code)
}

func run(args []string) (int, error) {
	o, done, err := parse(args)
	if err != nil || done {
		return exitFor(err), err
	}
	if o.traceSpec != "" {
		f, err := arm.ParseTraceFlags(o.traceSpec)
		if err != nil {
			return 1, fmt.Errorf("-d: %w", err)
		}
		o.cfg.TraceFlags = f
		o.cfg.Trace = os.Stderr
		if o.traceFile != "" {
			lf, err := os.Create(o.traceFile)
			if err != nil {
				return 1, fmt.Errorf("-D: %w", err)
			}
			defer lf.Close()
			o.cfg.Trace = lf
		}
	}
	if err := o.cfg.Validate(); err != nil {
		return 1, err
	}
	if o.dumpDTB != "" {
		m, err := virt.New(o.cfg)
		if err != nil {
			return 1, err
		}
		if err := os.WriteFile(o.dumpDTB, m.DTB(), 0o644); err != nil {
			return 1, err
		}
		return 0, nil
	}
	if o.cfg.Kernel == "" {
		return 1, errors.New("no -kernel given: the virt board has no firmware to boot")
	}

	// quit stops whichever machine runs now (a reboot replaces it).
	var (
		curMu    sync.Mutex
		cur      *virt.Machine
		quitting bool
	)
	quit := func() {
		curMu.Lock()
		defer curMu.Unlock()
		quitting = true
		if cur != nil {
			cur.Stop()
		}
	}
	be, err := chardev.Open(o.serial, chardev.Options{OnQuit: quit})
	if err != nil {
		return 1, err
	}
	defer be.Close()
	o.cfg.Serial = be

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		be.Close()
		fmt.Fprintf(os.Stderr, "%s: terminating on signal %d\n", prog, s.(syscall.Signal))
		quit()
	}()

	for {
		m, err := virt.New(o.cfg)
		if err != nil {
			return 1, err
		}
		curMu.Lock()
		cur = m
		if quitting {
			m.Stop()
		}
		curMu.Unlock()
		exit, err := m.Run()
		if err != nil {
			return 1, err
		}
		if exit != virt.ExitReset || o.noReboot {
			return 0, nil
		}
	}
}

func exitFor(err error) int {
	if err != nil {
		return 1
	}
	return 0
}

// parse reads QEMU-style options (one or two leading dashes). done reports that the
// request was fully handled (-h, -version).
func parse(args []string) (o options, done bool, err error) {
	o.cfg = virt.Config{RAMSize: 128 << 20, SMP: 1, GICVersion: 2}
	o.serial = "stdio"
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return o, false, fmt.Errorf("unexpected argument %q (options start with -)", a)
		}
		name := strings.TrimLeft(a, "-")
		val := func() (string, error) {
			if i+1 >= len(args) {
				return "", fmt.Errorf("option -%s needs an argument", name)
			}
			i++
			return args[i], nil
		}
		var v string
		switch name {
		case "h", "help":
			fmt.Print(usage)
			return o, true, nil
		case "version":
			fmt.Println(version)
			return o, true, nil
		case "nographic", "no-reboot", "enable-kvm", "S":
		case "M", "machine", "cpu", "m", "smp", "kernel", "initrd", "append", "dtb", "serial", "accel", "d", "D", "display", "monitor":
			if v, err = val(); err != nil {
				return o, false, err
			}
		default:
			return o, false, fmt.Errorf("unknown option %q (see -help)", a)
		}
		switch name {
		case "nographic":
		case "no-reboot":
			o.noReboot = true
		case "enable-kvm":
			return o, false, errKVM
		case "S":
			return o, false, errors.New("-S (start paused) is not supported: there is no monitor")
		case "M", "machine":
			err = o.machine(v)
		case "cpu":
			switch v {
			case "cortex-a57", "cortex-a53", "max":
			default:
				err = fmt.Errorf("unsupported -cpu %q (supported: cortex-a57, cortex-a53, max)", v)
			}
		case "m":
			o.cfg.RAMSize, err = parseSize(v)
		case "smp":
			o.cfg.SMP, err = parseSMP(v)
		case "kernel":
			o.cfg.Kernel = v
		case "initrd":
			o.cfg.Initrd = v
		case "append":
			o.cfg.Append = v
		case "dtb":
			o.cfg.DTB = v
		case "serial":
			o.serial = v
		case "accel":
			switch strings.SplitN(v, ",", 2)[0] {
			case "tcg":
			case "kvm":
				err = errKVM
			default:
				err = fmt.Errorf("unsupported -accel %q (only tcg)", v)
			}
		case "d":
			o.traceSpec = v
		case "D":
			o.traceFile = v
		case "display", "monitor":
			if v != "none" {
				err = fmt.Errorf("-%s %s is not supported (only none)", name, v)
			}
		}
		if err != nil {
			return o, false, err
		}
	}
	return o, false, nil
}

var errKVM = errors.New("KVM cannot run aarch64 guests on this x86-64 host; use -accel tcg")

// machine parses -M virt[,gic-version=N][,dumpdtb=FILE].
func (o *options) machine(v string) error {
	parts := strings.Split(v, ",")
	for i, p := range parts {
		k, val, hasVal := strings.Cut(p, "=")
		if i == 0 && !hasVal {
			k, val = "type", k
		}
		switch k {
		case "type":
			if val != "virt" && val != "virt-7.2" {
				return fmt.Errorf("unsupported machine %q (only virt)", val)
			}
		case "gic-version":
			switch val {
			case "2":
				o.cfg.GICVersion = 2
			case "3", "max", "host":
				o.cfg.GICVersion = 3
			default:
				return fmt.Errorf("unsupported gic-version %q (2, 3, max or host)", val)
			}
		case "dumpdtb":
			o.dumpDTB = val
		case "accel":
			if val != "tcg" {
				return errKVM
			}
		default:
			return fmt.Errorf("unsupported machine property %q", k)
		}
	}
	return nil
}

// parseSize reads a QEMU -m value: a number of MiB, or with a K/M/G/T suffix; "size=" may prefix it.
func parseSize(s string) (uint64, error) {
	s = strings.TrimPrefix(s, "size=")
	mul := uint64(1 << 20)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mul = 1 << 10
		case 'm', 'M':
			mul = 1 << 20
		case 'g', 'G':
			mul = 1 << 30
		case 't', 'T':
			mul = 1 << 40
		}
		if s[n-1] > '9' {
			s = s[:n-1]
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > (1<<62)/mul {
		return 0, fmt.Errorf("invalid -m size %q", s)
	}
	if n == 0 {
		return 0, errors.New("invalid RAM size 0")
	}
	return n * mul, nil
}

// parseSMP reads "-smp N" or "-smp cpus=N[,...]".
func parseSMP(s string) (int, error) {
	for _, p := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			v, k = k, "cpus"
		}
		if k != "cpus" {
			continue // sockets/cores/threads: topology is flat here
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return 0, fmt.Errorf("invalid -smp %q: need a CPU count of at least 1", s)
		}
		return n, nil
	}
	return 0, fmt.Errorf("invalid -smp %q", s)
}
