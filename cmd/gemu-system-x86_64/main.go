// Command gemu-system-x86_64 runs an x86-64 PC guest, QEMU-style: it parses QEMU's
// flags, picks the accelerator, builds machine/pc on it, and maps how the guest ended
// to QEMU's exit behaviour (power off → 0, reset → reboot or, with -no-reboot, 0,
// triple fault → message and 1). It owns no device or format logic.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"gemu/accel"
	"gemu/accel/kvm"
	"gemu/accel/tcg"
	"gemu/cmd/internal/cpuprof"
	"gemu/cmd/internal/daemon"
	"gemu/cmd/internal/runloop"
	"gemu/cmd/internal/sysdev"
	"gemu/hw/chardev"
	"gemu/hw/pci"
	"gemu/hw/vmstate"
	"gemu/machine/monitor"
	"gemu/machine/pc"
	"gemu/machine/qdev"
	x86 "gemu/target-x86"
)

const prog = "gemu-system-x86_64"

func main() {
	avoidHeapHugePages()
	// gemu's live heap is a few hundred KiB, but exits and device callbacks leave small
	// garbage behind, and at the default GOGC the first collection only comes at a 4 MiB
	// heap: measured in the KVM-in-TCG harness, the heap arena reached 4 MiB resident
	// during a boot. At 20% the goal starts near 1 MiB; collecting so small a heap costs
	// next to nothing.
	debug.SetGCPercent(20)
	stop := cpuprof.Start() // GEMU_CPUPROFILE=FILE
	code := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// fail prints the one-line error and returns the exit status.
func fail(stderr io.Writer, format string, a ...any) int {
	fmt.Fprintf(stderr, prog+": "+format+"\n", a...)
	return 1
}

// run is main without os.Exit, so deferred clean-up (the terminal's mode above all)
// always happens.
func run(args []string, stdin, stdout *os.File, stderr io.Writer) int {
	o, err := parseArgs(args)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	if o.help {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if o.version {
		fmt.Fprintln(stdout, version)
		return 0
	}
	if o.list != "" {
		fmt.Fprint(stdout, o.list)
		return 0
	}
	for _, w := range o.warnings {
		fmt.Fprintf(stderr, "%s: warning: %s\n", prog, w)
	}
	if h, ok, err := sysdev.Help(&o.Common); ok { // -device help, -device TYPE,help
		if err != nil {
			return fail(stderr, "%v", err)
		}
		fmt.Fprint(stdout, h)
		return 0
	}
	if o.Daemonize && o.machine != "none" && (o.serial == "" || strings.HasSuffix(o.serial, "stdio")) {
		// QEMU refuses it too: a daemon has no terminal for the console.
		return fail(stderr, "-nographic cannot be used with -daemonize (the serial console is on stdio: use -serial with a file, socket or none)")
	}
	if o.Daemonize {
		if code, parent := daemon.Start(stderr); parent {
			return code
		}
	}
	if o.Pidfile != "" {
		remove, err := daemon.WritePidfile(o.Pidfile)
		if err != nil {
			return fail(stderr, "%v", err)
		}
		defer remove()
	}
	if o.machine == "none" {
		return runNone(o, stderr)
	}
	if o.kernel == "" {
		return fail(stderr, "no -kernel given: gemu boots Linux bzImages and multiboot kernels directly (firmware boot is not supported)")
	}
	if err := checkMemory(o.memSize); err != nil {
		return fail(stderr, "-m %s: %v", o.memArg, err)
	}
	if _, err := pc.NewLayout(o.memSize); err != nil {
		return fail(stderr, "-m %s: %v", o.memArg, err)
	}
	if o.cpus > kvm.MaxCPUs {
		return fail(stderr, "-smp %s: at most %d CPUs are supported", o.SMP, kvm.MaxCPUs)
	}
	kernel, err := openImage(o.kernel)
	if err != nil {
		return fail(stderr, "could not load kernel '%s': %v", o.kernel, err)
	}
	defer kernel.Close()
	mb, err := pc.CheckMultiboot(kernel)
	if err != nil {
		return fail(stderr, "could not load kernel '%s': %v", o.kernel, err)
	}
	var initrd *image
	var modules []pc.Module
	if mb != nil {
		// A multiboot kernel's -initrd is QEMU's module list: "file args,file2,...".
		if o.initrd != "" {
			for _, cl := range pc.SplitModules(o.initrd) {
				f, err := openImage(pc.ModulePath(cl))
				if err != nil {
					return fail(stderr, "-initrd: multiboot module '%s': %v", pc.ModulePath(cl), err)
				}
				defer f.Close()
				modules = append(modules, pc.Module{Cmdline: cl, Image: f})
			}
		}
	} else {
		hdr, err := pc.CheckKernel(kernel)
		if err != nil {
			return fail(stderr, "could not load kernel '%s': %v", o.kernel, err)
		}
		if uint64(len(o.append)) > uint64(hdr.CmdlineSize) {
			return fail(stderr, "-append: the command line is %d bytes; this kernel accepts at most %d", len(o.append), hdr.CmdlineSize)
		}
		if o.initrd != "" {
			initrd, err = openImage(o.initrd)
			if err != nil {
				return fail(stderr, "-initrd %s: %v", o.initrd, err)
			}
			defer initrd.Close()
		}
	}
	acc, accelNote, err := chooseAccel(o.accels)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	var tcgc pc.TCGConfig
	if o.trace != "" {
		if tcgc.TraceFlags, err = x86.ParseTraceFlags(o.trace); err != nil {
			return fail(stderr, "-d %s: %v", o.trace, err)
		}
		tcgc.Trace = stderr
		if o.traceLog != "" {
			lf, err := os.Create(o.traceLog)
			if err != nil {
				return fail(stderr, "-D %s: %v", o.traceLog, err)
			}
			defer lf.Close()
			tcgc.Trace = lf
		}
	}

	var loop *runloop.Loop
	quit := func() { loop.QuitHost("host-ui") }
	monChardevs := runloop.TakeMonitorChardevs(&o.Common)

	// Drives and -chardevs are opened once: they (and the image locks) outlive a reboot.
	wiring, err := sysdev.Open(&o.Common, "ide", chardev.Options{OnQuit: quit, Stdin: stdin, Stdout: stdout})
	if err != nil {
		return fail(stderr, "%v", err)
	}
	defer wiring.Close()
	spec := o.serial
	if spec == "" {
		spec = "stdio"
		if wiring.StdioUsed {
			spec = "null" // a -chardev took stdio (QEMU would refuse the clash)
		}
	}
	if spec == "none" {
		spec = "null"
	}
	be, err := chardev.Open(spec, chardev.Options{OnQuit: quit, Stdin: stdin, Stdout: stdout})
	if err != nil {
		return fail(stderr, "-serial %s: %v", spec, err)
	}
	// Closing the backend restores the terminal; deferred, it also runs while a panic
	// unwinds this goroutine.
	defer be.Close()

	var envMu sync.Mutex
	var env *qdev.Env // the current machine's devices
	attached := func(id string) bool {
		envMu.Lock()
		defer envMu.Unlock()
		return env != nil && env.Attached(id)
	}
	chardevs := []monitor.Chardev{{Label: "serial0", Filename: spec, FrontendOpen: true}}
	for id := range wiring.Chardevs {
		chardevs = append(chardevs, monitor.Chardev{Label: id, Filename: id, FrontendOpen: true})
	}
	loop = runloop.New(runloop.Config{
		Prog: prog, Stderr: stderr, Package: "gemu-0.1",
		StartPaused: o.StartPaused, NoShutdown: o.NoShutdown, NoReboot: o.noReboot, Incoming: o.incoming,
		Info:     machineInfo(o.name, o.UUID, acc.Name() == "kvm"),
		Chardevs: chardevs,
		Blocks:   runloop.Blocks(wiring, &o.Common, attached),
		Hotplug:  wiring,
		Restore:  func() { be.Close() },
		BeforeRun: func() error {
			if o.loadvm != "" {
				if err := loop.LoadVMAtStart(o.loadvm); err != nil {
					return err
				}
			}
			if err := loop.OpenMonitors(&o.Common, monChardevs, spec == "stdio"); err != nil {
				return err
			}
			daemon.Ready()
			return nil
		},
		New: func() (runloop.Guest, error) {
			if accelNote != "" { // said once, when the first machine is built
				fmt.Fprintf(stderr, "%s: %s\n", prog, accelNote)
				accelNote = ""
			}
			var ird pc.KernelImage
			if initrd != nil {
				ird = initrd
			}
			pcc := pc.Config{MemSize: o.memSize, CPUs: o.cpus, Kernel: kernel, Initrd: ird,
				Cmdline: o.append, Serial: be, KernelName: o.kernel, ModuleSpec: o.initrd, Modules: modules}
			var (
				vm  accel.X86VM
				m   *pc.Machine
				err error
			)
			if acc.Name() == "tcg" {
				// The userspace engine's vCPUs and chipset are the board's: it builds the VM.
				m, err = pc.NewTCG(pcc, tcgc)
				if err != nil {
					return nil, fmt.Errorf("-accel tcg: %v", err)
				}
				vm = m.VM
			} else {
				vm, err = acc.NewX86(accel.Config{CPUs: o.cpus})
				if err != nil {
					return nil, fmt.Errorf("-accel %s: %v", acc.Name(), err)
				}
				m, err = pc.New(vm, pcc)
				if err != nil {
					vm.Close()
					return nil, err
				}
			}
			e, err := wiring.Plug(m, func(msg string) { fmt.Fprintf(stderr, "%s: warning: %s\n", prog, msg) })
			if err != nil {
				vm.Close()
				m.Close()
				return nil, err
			}
			e.StopOnError = loop.StopForIOError // werror=stop/rerror=stop pause the guest
			m.OnRelease(e.Reset)
			envMu.Lock()
			env = e
			envMu.Unlock()
			return &pcGuest{vm: vm, m: m}, nil
		},
	})
	loop.SetDrives(wiring.Drives) // savevm, loadvm, delvm
	code, err := loop.Run()
	if err != nil {
		return fail(stderr, "%v", err)
	}
	return code
}

// pcGuest adapts the PC board and its VM to the shared run loop.
type pcGuest struct {
	vm accel.X86VM
	m  *pc.Machine
}

func (g *pcGuest) Run() (runloop.Exit, error) {
	reason, err := g.m.Run()
	switch reason {
	case accel.PowerOff:
		return runloop.PowerOff, nil
	case accel.Reset:
		return runloop.Reset, nil
	case accel.Stopped:
		return runloop.Stopped, nil
	case accel.Shutdown:
		where := ""
		if st, ok := g.vm.(cpuStater); ok {
			where = " at " + st.CPUState(0)
		}
		return runloop.Failed, fmt.Errorf("guest triple fault (CPU shutdown)%s", where)
	}
	if err == nil {
		err = errors.New(reason.String())
	}
	return runloop.Failed, err
}

func (g *pcGuest) Stop()                                { g.vm.Stop(accel.Stopped) }
func (g *pcGuest) Pause() error                         { return g.m.Pause() }
func (g *pcGuest) Resume()                              { g.m.Resume() }
func (g *pcGuest) Reset()                               { g.m.Reset() }
func (g *pcGuest) PowerDown() error                     { return g.m.PowerDown() }
func (g *pcGuest) ReadPhys(addr uint64, p []byte) error { return g.m.ReadPhys(addr, p) }
func (g *pcGuest) PCI() *pci.Bus                        { return g.m.PCIBus }
func (g *pcGuest) Close() {
	g.vm.Close()
	g.m.Close()
}

// SaveVM, LoadVM and RAMSize make the board runloop.Migratable (the board refuses
// under KVM, in one line).
func (g *pcGuest) SaveVM(w io.Writer) (vmstate.Stats, error) { return g.m.Save(w) }
func (g *pcGuest) LoadVM(r io.Reader) (vmstate.Stats, error) { return g.m.Load(r) }
func (g *pcGuest) RAMSize() uint64                           { return g.m.RAMSize() }

// GuestTime and QuiesceDevices serve savevm/loadvm (runloop.GuestClocked, runloop.Quiescer).
func (g *pcGuest) GuestTime() time.Duration        { return g.m.GuestTime() }
func (g *pcGuest) QuiesceDevices() (func(), error) { return g.m.QuiesceDevices() }

// LoadVMFile makes the board runloop.FileLoader (file: restores map RAM lazily).
func (g *pcGuest) LoadVMFile(f *os.File, lazy bool) (vmstate.Stats, error) {
	return g.m.LoadFile(f, lazy)
}

// CPUs reports the vCPUs as QEMU's PC does (one socket, a core each), with the vCPU
// threads' ids where the accelerator has them.
func (g *pcGuest) CPUs() []monitor.CPU {
	var tids []int
	if t, ok := g.vm.(interface{ VCPUThreads() []int }); ok {
		tids = t.VCPUThreads()
	}
	out := make([]monitor.CPU, g.vm.NumCPUs())
	for i := range out {
		tid := os.Getpid()
		if i < len(tids) && tids[i] != 0 {
			tid = tids[i]
		}
		out[i] = monitor.CPU{Index: i, ThreadID: tid, Target: "x86_64", Current: i == 0,
			QOMPath: fmt.Sprintf("/machine/unattached/device[%d]", i),
			Props:   map[string]int{"core-id": i, "thread-id": 0, "socket-id": 0, "die-id": 0}}
	}
	return out
}

// cpuStater is implemented by accelerators that can describe where a vCPU stopped
// (accel/kvm), for the triple-fault message.
type cpuStater interface{ CPUState(cpu int) string }

// chooseAccel picks the accelerator. With no -accel, hardware KVM is preferred; on an
// emulated KVM (kvm_pvm, about a microsecond per guest instruction) or with no usable
// KVM, TCG (gemu's own translator) runs the guest, and note says why.
func chooseAccel(names []string) (acc accel.Accelerator, note string, err error) {
	if len(names) == 0 {
		err := kvm.Accel.Available()
		switch {
		case err != nil:
			return tcg.Accel, fmt.Sprintf("KVM is not usable (%v): using TCG", err), nil
		case kvm.Emulated():
			return tcg.Accel, "KVM here is emulated (kvm_pvm), slower than TCG: using TCG (-accel kvm forces KVM)", nil
		}
		return kvm.Accel, "", nil
	}
	var errs []string
	for _, n := range names {
		switch n {
		case "kvm":
			if err := kvm.Accel.Available(); err != nil {
				errs = append(errs, fmt.Sprintf("-accel kvm: %v", err))
				continue
			}
			return kvm.Accel, "", nil
		case "tcg":
			return tcg.Accel, "", nil
		default:
			errs = append(errs, fmt.Sprintf("-accel %s: unknown accelerator (use kvm or tcg)", n))
		}
	}
	return nil, "", errors.New(errs[0])
}

// image is an open kernel or initrd file.
type image struct {
	*os.File
	size int64
}

func (i *image) Size() int64 { return i.size }

func openImage(path string) (*image, error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("cannot open: %v", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("not a regular file")
	}
	return &image{File: f, size: st.Size()}, nil
}

// checkMemory refuses a guest bigger than the host's RAM and swap together: such a
// guest could only run until it touches its memory.
func checkMemory(size uint64) error {
	if size == 0 {
		return fmt.Errorf("memory size must be positive")
	}
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return nil
	}
	host := (uint64(si.Totalram) + uint64(si.Totalswap)) * uint64(si.Unit)
	if size > host {
		return fmt.Errorf("%d MiB is more than the host's %d MiB of RAM and swap", size>>20, host>>20)
	}
	return nil
}
