// Package runloop is the run loop both system emulators share: it builds a guest
// through the main's factory, runs it, rebuilds it on reset (guest or system_reset),
// maps how it ended to QEMU's behaviour (-no-reboot, -no-shutdown, exit status),
// handles SIGINT/SIGTERM/SIGHUP ("terminating on signal N") and SIGPIPE (ignored: a
// closed stdout must not kill gemu before the terminal is restored), starts stopped
// with -S, and implements machine/monitor's control interface over whichever guest
// runs now, for the QMP and HMP monitors it opens (-qmp, -mon, -monitor).
//
// It must not know a board: a main adapts its board to Guest.
package runloop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"gemu/hw/pci"
	"gemu/machine/monitor"
)

// Exit is why a Guest's Run returned.
type Exit int

const (
	PowerOff Exit = iota + 1 // the guest powered off
	Reset                    // the guest, or Guest.Reset, asked for a reset
	Stopped                  // Guest.Stop
	Failed                   // the guest cannot go on; Run's error says why
)

// Guest is one built board, as a main's factory makes it. Run is called once; the
// other methods may be called from any goroutine while it runs.
type Guest interface {
	Run() (Exit, error)
	// Stop ends Run with Stopped.
	Stop()
	// Pause returns once no vCPU executes guest code; called before Run, the guest
	// starts paused. Resume undoes it.
	Pause() error
	Resume()
	// Reset ends Run with Reset (the host's system_reset).
	Reset()
	// PowerDown presses the guest's power button, or says why there is none.
	PowerDown() error
	ReadPhys(addr uint64, p []byte) error
	CPUs() []monitor.CPU
	PCI() *pci.Bus
	// Close releases the guest after Run.
	Close()
}

// Config is what a main gives the loop.
type Config struct {
	Prog   string
	Stderr io.Writer
	// New builds a guest: at start and after every reset.
	New func() (Guest, error)
	// StartPaused (-S), NoShutdown (-no-shutdown), NoReboot (-no-reboot).
	StartPaused, NoShutdown, NoReboot bool
	Info                              monitor.Info
	// Blocks describes the drives (they outlive reboots); nil for none.
	Blocks func() []monitor.Block
	// Chardevs lists the character devices for query-chardev.
	Chardevs []monitor.Chardev
	// Package is gemu's version string in the QMP greeting.
	Package string
	// Restore, if set, runs before the loop prints its last message (the console
	// backend restores the terminal).
	Restore func()
	// BeforeRun, if set, runs once the first guest is built and before it runs (the
	// monitors open then, so that their first client sees the machine: QEMU's order).
	BeforeRun func() error
	// Incoming is -incoming: a URI the first guest's state is loaded from before it
	// runs (migrate.go), or "defer" to wait for migrate-incoming; "" for none.
	Incoming string
	// Hotplug serves device_add, device_del, netdev_add, blockdev-add and the rest
	// (hotplug.go); nil: the monitors refuse them.
	Hotplug monitor.Hotplugger
}

// Loop runs guests one after the other and is the monitors' Machine.
type Loop struct {
	cfg Config
	srv *monitor.Server

	mu           sync.Mutex
	cur          Guest
	status       monitor.Status
	quitting     bool
	quitReason   string
	shutdownSent bool // the SHUTDOWN event went out already (quit sends it itself)
	hostReset    bool // the current guest's Reset came from the host
	resetReq     bool // system_reset while in the shutdown state
	wake         chan struct{}
	sig          os.Signal
	quitCh       chan struct{} // closed by the first QuitHost (ends a wait=on accept)
	mig          migration     // migrate.go
	snap         snapshots     // snapshot.go
	fatal        error         // a failed incoming migration: the process exits 1
}

// New returns a loop; it runs nothing until Run.
func New(cfg Config) *Loop {
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	l := &Loop{cfg: cfg, status: monitor.Running, wake: make(chan struct{}, 1), quitCh: make(chan struct{})}
	if cfg.StartPaused {
		l.status = monitor.Prelaunch
	}
	if cfg.Incoming != "" {
		l.status = monitor.Inmigrate
	}
	l.srv = monitor.NewServer(l, monitor.Options{Major: 7, Minor: 2, Package: cfg.Package,
		Logf: func(f string, a ...any) { fmt.Fprintf(cfg.Stderr, cfg.Prog+": "+f+"\n", a...) }})
	return l
}

// Server is the loop's monitor server (for the mains' extra endpoints and tests).
func (l *Loop) Server() *monitor.Server { return l.srv }

// QuitHost ends the loop as a host request (Ctrl-A x, a signal): the current guest
// stops and Run returns 0. reason is the SHUTDOWN event's (host-ui, host-signal, ...).
func (l *Loop) QuitHost(reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.quitting {
		l.quitting, l.quitReason = true, reason
		close(l.quitCh)
	}
	if l.cur != nil {
		l.cur.Stop()
	}
	l.kick()
}

func (l *Loop) kick() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *Loop) emit(ev string, data any) { l.srv.Emit(ev, data) }

// Run runs guests until the process should end and returns its exit status; err is
// the one-line reason for a non-zero status.
func (l *Loop) Run() (int, error) {
	signal.Ignore(syscall.SIGPIPE)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		for s := range sigs {
			l.mu.Lock()
			if l.sig == nil {
				l.sig = s
			}
			l.mu.Unlock()
			l.QuitHost("host-signal")
		}
	}()
	defer l.srv.Close()
	for {
		l.mu.Lock()
		quitting := l.quitting
		l.mu.Unlock()
		if quitting {
			return l.finishQuit()
		}
		g, err := l.cfg.New()
		if err != nil {
			return 1, err
		}
		l.mu.Lock()
		l.cur = g
		if l.quitting {
			g.Stop()
		}
		if l.status != monitor.Running {
			if err := g.Pause(); err != nil {
				l.mu.Unlock()
				g.Close()
				return 1, err
			}
		}
		l.mu.Unlock()
		if f := l.cfg.BeforeRun; f != nil {
			l.cfg.BeforeRun = nil
			if err := f(); err != nil {
				g.Stop()
				g.Run()
				g.Close()
				return 1, err
			}
		}
		if l.cfg.Incoming != "" && l.mig.incoming == "" { // the first guest only
			if err := l.startIncoming(g); err != nil {
				g.Stop()
				g.Run()
				g.Close()
				return 1, err
			}
		}
		exit, err := g.Run()
		l.mu.Lock()
		l.cur = nil
		hostReset := l.hostReset
		l.hostReset = false
		quitting = l.quitting
		l.mu.Unlock()
		g.Close()
		if quitting {
			return l.finishQuit()
		}
		switch exit {
		case Reset:
			if hostReset {
				l.afterHostReset()
				continue
			}
			l.emit("RESET", monitor.ShutdownData{Guest: true, Reason: "guest-reset"})
			if l.cfg.NoReboot {
				l.emit("SHUTDOWN", monitor.ShutdownData{Guest: true, Reason: "guest-reset"})
				return 0, nil
			}
		case PowerOff:
			l.emit("SHUTDOWN", monitor.ShutdownData{Guest: true, Reason: "guest-shutdown"})
			if !l.cfg.NoShutdown {
				return 0, nil
			}
			l.mu.Lock()
			l.status = monitor.Shutdown
			l.mu.Unlock()
			l.emit("STOP", nil)
			if !l.waitReset() {
				return l.finishQuit()
			}
			l.afterHostReset()
		case Stopped:
			return l.finishQuit()
		default:
			if err == nil {
				err = errors.New("the guest stopped unexpectedly")
			}
			return 1, err
		}
	}
}

// afterHostReset emits RESET for system_reset; a guest that was not running comes
// back in prelaunch, as QEMU's main loop does.
func (l *Loop) afterHostReset() {
	l.mu.Lock()
	if l.status != monitor.Running {
		l.status = monitor.Prelaunch
	}
	l.mu.Unlock()
	l.emit("RESET", monitor.ShutdownData{Guest: false, Reason: "host-qmp-system-reset"})
}

// waitReset waits in the shutdown state for system_reset (true) or a quit (false).
func (l *Loop) waitReset() bool {
	for {
		l.mu.Lock()
		switch {
		case l.quitting:
			l.mu.Unlock()
			return false
		case l.resetReq:
			l.resetReq = false
			l.mu.Unlock()
			return true
		}
		l.mu.Unlock()
		<-l.wake
	}
}

func (l *Loop) finishQuit() (int, error) {
	l.mu.Lock()
	reason, sent, sig := l.quitReason, l.shutdownSent, l.sig
	l.shutdownSent = true
	l.mu.Unlock()
	if !sent {
		if reason == "" {
			reason = "host-ui"
		}
		l.emit("SHUTDOWN", monitor.ShutdownData{Guest: false, Reason: reason})
	}
	if sig != nil {
		if l.cfg.Restore != nil {
			l.cfg.Restore()
		}
		fmt.Fprintf(l.cfg.Stderr, "%s: terminating on signal %d\n", l.cfg.Prog, sig.(syscall.Signal))
	}
	l.mu.Lock()
	fatal := l.fatal
	l.mu.Unlock()
	if fatal != nil {
		return 1, fatal
	}
	return 0, nil
}

// The monitor.Machine implementation.

func (l *Loop) Status() monitor.Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status
}

func (l *Loop) Stop() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.status != monitor.Running {
		return nil
	}
	if l.cur != nil {
		if err := l.cur.Pause(); err != nil {
			return err
		}
	}
	l.status = monitor.Paused
	l.emit("STOP", nil)
	return nil
}

func (l *Loop) Cont() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch l.status {
	case monitor.Running:
		return nil
	case monitor.Inmigrate:
		l.mig.mu.Lock()
		l.mig.autoRun = true // QEMU's autostart: run once the incoming state is loaded
		l.mig.mu.Unlock()
		return nil
	case monitor.Shutdown:
		return errors.New("Resetting the Virtual Machine is required")
	}
	l.status = monitor.Running
	if l.cur != nil {
		l.cur.Resume()
	}
	l.emit("RESUME", nil)
	return nil
}

func (l *Loop) Reset() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.status == monitor.Shutdown:
		l.resetReq = true
		l.kick()
	case l.cur != nil:
		l.hostReset = true
		l.cur.Reset()
	}
	return nil
}

func (l *Loop) PowerDown() error {
	l.mu.Lock()
	g := l.cur
	l.mu.Unlock()
	if g == nil {
		return errors.New("the guest is not running")
	}
	return g.PowerDown()
}

func (l *Loop) Quit() {
	l.mu.Lock()
	l.shutdownSent = true
	l.mu.Unlock()
	l.QuitHost("host-qmp-quit")
}

func (l *Loop) CPUs() []monitor.CPU {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil {
		return nil
	}
	return l.cur.CPUs()
}

func (l *Loop) Blocks() []monitor.Block {
	if l.cfg.Blocks == nil {
		return nil
	}
	return l.cfg.Blocks()
}

func (l *Loop) Chardevs() []monitor.Chardev { return l.cfg.Chardevs }

func (l *Loop) PCI() []monitor.PCIDevice {
	l.mu.Lock()
	g := l.cur
	l.mu.Unlock()
	if g == nil {
		return nil
	}
	return monitor.PCIFromBus(g.PCI())
}

// ReadPhys reads the current guest's memory; the lock keeps the loop from closing
// the guest meanwhile.
func (l *Loop) ReadPhys(addr uint64, p []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil {
		return errors.New("no guest")
	}
	return l.cur.ReadPhys(addr, p)
}

func (l *Loop) Info() monitor.Info { return l.cfg.Info }

// StopForIOError is werror=stop / rerror=stop: the guest pauses (STOP), the
// BLOCK_IO_ERROR event names the drive, and the failed request waits until the guest
// is resumed (cont), when it is retried; it returns false, for the request to be
// reported to the guest instead, when ctx ends first (the device was reset).
func (l *Loop) StopForIOError(ctx context.Context, drive string, write bool, err error) bool {
	op := "read"
	if write {
		op = "write"
	}
	l.emit("BLOCK_IO_ERROR", map[string]any{"device": drive, "node-name": drive, "operation": op,
		"action": "stop", "nospace": errors.Is(err, syscall.ENOSPC), "reason": err.Error()})
	if e := l.Stop(); e != nil {
		return false
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			if l.Status() == monitor.Running {
				return true
			}
		}
	}
}
