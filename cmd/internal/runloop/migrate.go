package runloop

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"gemu/hw/vmstate"
	"gemu/machine/monitor"
)

// Migratable is a Guest whose state can be saved and loaded (hw/vmstate's stream).
// Both are called with the guest paused.
type Migratable interface {
	SaveVM(w io.Writer) (vmstate.Stats, error)
	LoadVM(r io.Reader) (vmstate.Stats, error)
	RAMSize() uint64
}

// LiveMigratable is a Migratable that migrates live (pre-copy, hw/vmstate.LiveParams):
// RAM in passes while the guest runs, then Stop and the rest. It returns the stream's
// stats and how long the guest was stopped.
type LiveMigratable interface {
	SaveLive(w io.Writer, p vmstate.LiveParams) (vmstate.Stats, time.Duration, error)
}

// FileLoader is a Migratable that restores from a stream in a file, mapping guest RAM
// from it when lazy (file: URIs; ",lazy=off" copies instead).
type FileLoader interface {
	LoadVMFile(f *os.File, lazy bool) (vmstate.Stats, error)
}

// migration is the loop's outgoing or incoming migration.
type migration struct {
	mu       sync.Mutex
	info     monitor.MigrationInfo
	start    time.Time
	cancel   func() // closes the channel of the running migration
	sent     *countingWriter
	incoming string // -incoming URI; "defer" until migrate-incoming
	inStart  bool   // the incoming side has started
	autoRun  bool   // cont while inmigrate: run once the state is loaded (QEMU's autostart)
}

type countingWriter struct {
	w  io.Writer
	mu sync.Mutex
	n  uint64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.mu.Lock()
	c.n += uint64(n)
	c.mu.Unlock()
	return n, err
}

func (c *countingWriter) count() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// checkURI refuses a URI gemu cannot use, in one line.
func checkURI(uri string) (scheme, rest string, err error) {
	scheme, rest, ok := strings.Cut(uri, ":")
	switch {
	case !ok || rest == "":
		// QEMU's text; the schemes gemu takes are file:, exec:, unix: and tcp:.
		return "", "", errors.New("Parameter 'uri' expects a valid migration protocol")
	case scheme == "file", scheme == "exec", scheme == "unix":
	case scheme == "tcp":
		if _, _, err := net.SplitHostPort(rest); err != nil {
			return "", "", fmt.Errorf("Invalid migration URI %q: %v", uri, err)
		}
	default:
		return "", "", errors.New("Parameter 'uri' expects a valid migration protocol")
	}
	return scheme, rest, nil
}

// openOut opens the destination of an outgoing migration.
func openOut(uri string) (io.WriteCloser, error) {
	scheme, rest, err := checkURI(uri)
	if err != nil {
		return nil, err
	}
	switch scheme {
	case "file":
		return os.OpenFile(rest, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	case "unix":
		return net.Dial("unix", rest)
	case "tcp":
		return net.DialTimeout("tcp", rest, 30*time.Second)
	}
	cmd := exec.Command("/bin/sh", "-c", rest)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &cmdPipe{WriteCloser: in, cmd: cmd}, nil
}

// cmdPipe is exec:CMD's end: Close closes the command's stdin and waits for it.
type cmdPipe struct {
	io.WriteCloser
	cmd  *exec.Cmd
	once sync.Once
	err  error
}

func (c *cmdPipe) Close() error {
	c.once.Do(func() {
		c.WriteCloser.Close()
		if err := c.cmd.Wait(); err != nil {
			c.err = fmt.Errorf("migration command %q: %v", strings.Join(c.cmd.Args[2:], " "), err)
		}
	})
	return c.err
}

// openIn prepares the source of an incoming migration and returns the function that
// opens it: unix: and tcp: listen now (so a source may connect as soon as this
// returns, as after QEMU's migrate-incoming) and the function takes the first
// connection.
func openIn(uri string) (func() (io.ReadCloser, error), error) {
	scheme, rest, err := checkURI(uri)
	if err != nil {
		return nil, err
	}
	switch scheme {
	case "file":
		return func() (io.ReadCloser, error) {
			path, lazy := fileOptions(rest)
			f, err := os.Open(path)
			if err != nil {
				return nil, err
			}
			return &inFile{f, lazy}, nil
		}, nil
	case "exec":
		return func() (io.ReadCloser, error) {
			cmd := exec.Command("/bin/sh", "-c", rest)
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				return nil, err
			}
			if err := cmd.Start(); err != nil {
				return nil, err
			}
			return &cmdReader{out, cmd}, nil
		}, nil
	}
	if scheme == "unix" {
		os.Remove(rest)
	}
	l, err := net.Listen(scheme, rest)
	if err != nil {
		return nil, err
	}
	return func() (io.ReadCloser, error) {
		c, err := l.Accept()
		l.Close()
		if scheme == "unix" {
			os.Remove(rest)
		}
		return c, err
	}, nil
}

// fileOptions splits an incoming file: URI's ",lazy=on|off" (gemu's; default on:
// guest RAM is mapped from the file) from its path.
func fileOptions(rest string) (path string, lazy bool) {
	for _, o := range []struct {
		suffix string
		lazy   bool
	}{{",lazy=off", false}, {",lazy=on", true}} {
		if p, ok := strings.CutSuffix(rest, o.suffix); ok {
			return p, o.lazy
		}
	}
	return rest, true
}

// inFile is an incoming file: stream.
type inFile struct {
	*os.File
	lazy bool
}

type cmdReader struct {
	io.ReadCloser
	cmd *exec.Cmd
}

func (c *cmdReader) Close() error {
	c.ReadCloser.Close()
	return c.cmd.Wait()
}

func (l *Loop) setMig(f func(i *monitor.MigrationInfo)) {
	l.mig.mu.Lock()
	f(&l.mig.info)
	l.mig.mu.Unlock()
}

func (l *Loop) migStatus(st string) {
	l.setMig(func(i *monitor.MigrationInfo) { i.Status = st })
	l.srv.EmitMigration(st)
}

// Migrate implements monitor.Migrator: a non-live migration (the guest pauses, its
// state is written, the source stays paused in postmigrate, as QEMU's after
// completion; on failure or cancel a guest that was running resumes).
func (l *Loop) Migrate(uri string) error {
	if _, _, err := checkURI(uri); err != nil {
		return err
	}
	l.mu.Lock()
	g, _ := l.cur.(Migratable)
	st := l.status
	l.mu.Unlock()
	if g == nil {
		return errors.New("this machine cannot be migrated")
	}
	if st == monitor.Inmigrate {
		return errors.New("Guest is waiting for an incoming migration")
	}
	l.mig.mu.Lock()
	if s := l.mig.info.Status; s == monitor.MigSetup || s == monitor.MigActive || s == monitor.MigCancelling {
		l.mig.mu.Unlock()
		return errors.New("There's a migration process in progress")
	}
	l.mig.info = monitor.MigrationInfo{Status: monitor.MigSetup, RAMTotal: g.RAMSize()}
	l.mig.start = time.Now()
	l.mig.mu.Unlock()
	l.srv.EmitMigration(monitor.MigSetup)
	go l.runMigrate(g, uri)
	return nil
}

func (l *Loop) runMigrate(g Migratable, uri string) {
	start := time.Now()
	fail := func(err error, wasRunning bool) {
		l.mig.mu.Lock()
		status := monitor.MigFailed
		if l.mig.info.Status == monitor.MigCancelling {
			status = monitor.MigCancelled
		}
		l.mig.info.Status, l.mig.info.Error = status, err.Error()
		l.mig.info.Total = time.Since(start)
		l.mig.cancel = nil
		l.mig.mu.Unlock()
		l.srv.EmitMigration(status)
		if status == monitor.MigFailed {
			fmt.Fprintf(l.cfg.Stderr, "%s: migration failed: %v\n", l.cfg.Prog, err)
		}
		if wasRunning {
			l.mu.Lock()
			if l.status == monitor.FinishMigrate {
				l.status = monitor.Running
				if l.cur != nil {
					l.cur.Resume()
				}
				l.mu.Unlock()
				l.emit("RESUME", nil)
				return
			}
			l.mu.Unlock()
		}
	}
	w, err := openOut(uri)
	if err != nil {
		fail(err, false)
		return
	}
	cw := &countingWriter{w: w}
	cancel := make(chan struct{})
	var once sync.Once
	l.mig.mu.Lock()
	canceled := l.mig.info.Status == monitor.MigCancelling
	l.mig.cancel = func() { once.Do(func() { close(cancel) }); w.Close() }
	l.mig.sent = cw
	l.mig.info.Status = monitor.MigActive
	l.mig.info.Setup = time.Since(start)
	l.mig.mu.Unlock()
	if canceled {
		w.Close()
		fail(errors.New("migration cancelled"), false)
		return
	}
	l.srv.EmitMigration(monitor.MigActive)
	// stop pauses the guest for the (last part of the) save.
	var wasRunning, stopped bool
	var prev monitor.Status
	stop := func() error {
		l.mu.Lock()
		wasRunning = l.status == monitor.Running
		if l.cur != g.(Guest) {
			l.mu.Unlock()
			return errors.New("the guest was reset during migration")
		}
		if err := l.cur.Pause(); err != nil {
			l.mu.Unlock()
			return err
		}
		prev, stopped = l.status, true
		l.status = monitor.FinishMigrate
		l.mu.Unlock()
		if wasRunning {
			l.emit("STOP", nil)
		}
		return nil
	}
	l.mu.Lock()
	running := l.status == monitor.Running
	l.mu.Unlock()
	var stats vmstate.Stats
	var downtime time.Duration
	if lg, ok := g.(LiveMigratable); ok && running {
		stats, downtime, err = lg.SaveLive(cw, l.liveParams(stop, cancel))
	} else if err = stop(); err == nil {
		paused := time.Now()
		stats, err = g.SaveVM(cw)
		downtime = time.Since(paused)
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if stopped && !wasRunning {
			l.mu.Lock()
			l.status = prev
			l.mu.Unlock()
		}
		fail(err, stopped && wasRunning)
		return
	}
	l.mu.Lock()
	l.status = monitor.Postmigrate
	l.mu.Unlock()
	l.mig.mu.Lock()
	l.mig.info.Status = monitor.MigCompleted
	l.mig.info.Total = time.Since(start)
	l.mig.info.Downtime = downtime
	l.mig.info.Sent, l.mig.info.Normal, l.mig.info.Duplicate = stats.Bytes, stats.Pages, stats.ZeroPages
	l.mig.info.Remaining = 0
	l.mig.cancel = nil
	l.mig.mu.Unlock()
	l.srv.EmitMigration(monitor.MigCompleted)
}

// liveParams are the monitor's migration parameters for a live migration whose
// progress goes to query-migrate and MIGRATION_PASS.
func (l *Loop) liveParams(stop func() error, cancel chan struct{}) vmstate.LiveParams {
	mp := l.srv.MigrationParams()
	passes := 0
	return vmstate.LiveParams{MaxBandwidth: mp.MaxBandwidth, DowntimeLimit: mp.DowntimeLimit, AutoConverge: mp.AutoConverge,
		ThrottleTrigger: mp.ThrottleTrigger, ThrottleInitial: mp.ThrottleInitial, ThrottleIncrement: mp.ThrottleIncrement,
		MaxThrottle: mp.MaxThrottle, Stop: stop, Cancel: cancel,
		Progress: func(p vmstate.Progress) {
			l.setMig(func(i *monitor.MigrationInfo) {
				i.Live, i.Syncs, i.Remaining, i.DirtyRate = true, p.Syncs, p.Remaining, p.DirtyRate
				i.Bandwidth, i.ExpectedDowntime, i.Throttle = p.Bandwidth, p.ExpectedDowntime, p.Throttle
				i.Normal, i.Duplicate = p.Stats.Pages, p.Stats.ZeroPages
			})
			if p.Syncs > passes {
				passes = p.Syncs
				l.srv.EmitMigrationPass(p.Syncs)
			}
		}}
}

// MigrateCancel implements monitor.Migrator.
func (l *Loop) MigrateCancel() error {
	l.mig.mu.Lock()
	defer l.mig.mu.Unlock()
	switch l.mig.info.Status {
	case monitor.MigSetup, monitor.MigActive:
		l.mig.info.Status = monitor.MigCancelling
		if l.mig.cancel != nil {
			l.mig.cancel()
		}
	}
	return nil
}

// MigrationInfo implements monitor.Migrator.
func (l *Loop) MigrationInfo() monitor.MigrationInfo {
	l.mig.mu.Lock()
	defer l.mig.mu.Unlock()
	i := l.mig.info
	if i.Status == monitor.MigActive || i.Status == monitor.MigCancelling {
		i.Total = time.Since(l.mig.start)
		if l.mig.sent != nil {
			i.Sent = l.mig.sent.count()
			if !i.Live {
				i.Normal = i.Sent / 4096
			}
		}
	}
	return i
}

// MigrateIncoming implements monitor.Migrator (after -incoming defer).
func (l *Loop) MigrateIncoming(uri string) error {
	if _, _, err := checkURI(uri); err != nil {
		return err
	}
	l.mig.mu.Lock()
	switch {
	case l.mig.incoming == "":
		l.mig.mu.Unlock()
		return errors.New("'-incoming' was not specified on the command line")
	case l.mig.inStart:
		l.mig.mu.Unlock()
		return errors.New("The incoming migration has already been started")
	}
	l.mu.Lock()
	g, _ := l.cur.(Migratable)
	l.mu.Unlock()
	if g == nil {
		l.mig.mu.Unlock()
		return errors.New("this machine cannot be migrated")
	}
	open, err := openIn(uri)
	if err != nil {
		l.mig.mu.Unlock()
		return err
	}
	l.mig.inStart = true
	l.mig.mu.Unlock()
	go l.runIncoming(g, open)
	return nil
}

// startIncoming begins -incoming URI once the first guest is built and paused: a
// socket URI is listening when it returns; an unusable URI is the error.
func (l *Loop) startIncoming(g Guest) error {
	uri := l.cfg.Incoming
	l.mig.mu.Lock()
	l.mig.incoming = uri
	if uri == "defer" {
		l.mig.mu.Unlock()
		return nil
	}
	l.mig.inStart = true
	l.mig.mu.Unlock()
	mg, ok := g.(Migratable)
	if !ok {
		return errors.New("-incoming: this machine cannot be migrated")
	}
	open, err := openIn(uri)
	if err != nil {
		return fmt.Errorf("-incoming %s: %v", uri, err)
	}
	go l.runIncoming(mg, open)
	return nil
}

func (l *Loop) runIncoming(g Migratable, open func() (io.ReadCloser, error)) {
	start := time.Now()
	l.migStatus(monitor.MigSetup)
	r, err := open()
	if err != nil {
		l.incomingFailed(err)
		return
	}
	l.migStatus(monitor.MigActive)
	var stats vmstate.Stats
	if f, ok := r.(*inFile); ok {
		if fl, ok := g.(FileLoader); ok {
			stats, err = fl.LoadVMFile(f.File, f.lazy)
		} else {
			stats, err = g.LoadVM(f)
		}
	} else {
		stats, err = g.LoadVM(r)
	}
	r.Close()
	if err != nil {
		l.incomingFailed(err)
		return
	}
	l.setMig(func(i *monitor.MigrationInfo) {
		i.Total, i.Sent, i.Normal, i.RAMTotal = time.Since(start), stats.Bytes, stats.Pages, g.RAMSize()
	})
	l.migStatus(monitor.MigCompleted)
	l.mu.Lock()
	l.mig.mu.Lock()
	auto := l.mig.autoRun
	l.mig.mu.Unlock()
	resume := (!l.cfg.StartPaused || auto) && l.status == monitor.Inmigrate
	if resume {
		l.status = monitor.Running
		if l.cur != nil {
			l.cur.Resume()
		}
	} else if l.status == monitor.Inmigrate {
		l.status = monitor.Paused
	}
	l.mu.Unlock()
	if resume {
		l.emit("RESUME", nil)
	}
}

// incomingFailed ends the process as QEMU's failed incoming migration does: one line,
// exit status 1.
func (l *Loop) incomingFailed(err error) {
	l.setMig(func(i *monitor.MigrationInfo) { i.Status, i.Error = monitor.MigFailed, err.Error() })
	l.srv.EmitMigration(monitor.MigFailed)
	l.mu.Lock()
	if l.fatal == nil {
		l.fatal = fmt.Errorf("load of migration failed: %v", err)
	}
	l.mu.Unlock()
	l.QuitHost("host-error")
}
