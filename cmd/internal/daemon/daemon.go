// Package daemon is QEMU's -daemonize and -pidfile for both system emulators: the
// process detaches (a re-executed child in a new session; the parent exits 0 once the
// child says it is ready, or with the child's status if it fails first) and writes a
// locked pid file it removes at exit. Go cannot fork, so the child is the same binary
// started again with the same arguments.
//
// It must not know the run loop or a board: the main calls Ready when its monitors
// listen.
package daemon

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// envKey marks the re-executed child; its value is the ready pipe's descriptor.
const envKey = "GEMU_DAEMONIZE_FD"

var ready *os.File // the child's end of the ready pipe

// Start is called first by a main with -daemonize. In the parent it starts the
// child and waits: parent is true and code is the status to exit with. In the child
// it returns parent false; the child later calls Ready.
func Start(stderr io.Writer) (code int, parent bool) {
	if v := os.Getenv(envKey); v != "" {
		os.Unsetenv(envKey)
		fd, err := strconv.Atoi(v)
		if err == nil {
			ready = os.NewFile(uintptr(fd), "daemonize")
		}
		return 0, false
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "%s: -daemonize: %v\n", prog(), err)
		return 1, true
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "%s: -daemonize: %v\n", prog(), err)
		return 1, true
	}
	defer r.Close()
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(), envKey+"=3")
	cmd.ExtraFiles = []*os.File{w}
	// Until it is ready the child reports errors on the parent's stdout and stderr,
	// as QEMU's daemonized child does.
	cmd.Stdout, cmd.Stderr = os.Stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		fmt.Fprintf(stderr, "%s: -daemonize: %v\n", prog(), err)
		return 1, true
	}
	w.Close()
	var b [1]byte
	if n, _ := r.Read(b[:]); n == 1 {
		cmd.Process.Release()
		return 0, true
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		return ee.ExitCode(), true
	}
	return 1, true
}

// Ready ends the child's start-up: stdin, stdout and stderr go to /dev/null and the
// parent exits 0. It does nothing in a process that is not a daemonized child.
func Ready() {
	if ready == nil {
		return
	}
	if null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0); err == nil {
		for fd := 0; fd <= 2; fd++ {
			unix.Dup2(int(null.Fd()), fd)
		}
		null.Close()
	}
	ready.Write([]byte{1})
	ready.Close()
	ready = nil
}

// WritePidfile writes the process id to path under a write lock (a second process
// given the same file fails, as QEMU's does) and returns the function that removes
// it at exit.
func WritePidfile(path string) (remove func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, fmt.Errorf("cannot create PID file: Cannot open pid file: %v", unwrap(err))
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot create PID file: Cannot lock pid file: %v", unwrap(err))
	}
	if err := f.Truncate(0); err == nil {
		_, err = fmt.Fprintf(f, "%d\n", os.Getpid())
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot create PID file: Failed to write pid file: %v", unwrap(err))
	}
	return func() {
		os.Remove(path)
		f.Close()
	}, nil
}

func unwrap(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func prog() string {
	if len(os.Args) > 0 {
		return baseName(os.Args[0])
	}
	return "gemu"
}

func baseName(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}
