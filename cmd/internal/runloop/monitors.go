package runloop

import (
	"fmt"
	"net"
	"os"
	"strings"

	"gemu/cmd/internal/qemuopts"
	"gemu/machine/monitor"
)

// endpoint is where one monitor listens or connects.
type endpoint struct {
	mode     monitor.Mode
	stdio    bool
	network  string // unix, tcp
	addr     string
	server   bool
	wait     bool
	label    string // query-chardev's
	filename string
}

// TakeMonitorChardevs removes from c.Chardevs the -chardev options a -mon names, so
// that the device wiring (cmd/internal/sysdev) does not open them: the monitor serves
// those sockets itself, one session per connection.
func TakeMonitorChardevs(c *qemuopts.Common) map[string]*qemuopts.Opts {
	used := map[string]bool{}
	for _, m := range c.Mons {
		if id, _ := m.Get("chardev"); id != "" {
			used[id] = true
		}
	}
	out := map[string]*qemuopts.Opts{}
	kept := c.Chardevs[:0:0]
	for _, o := range c.Chardevs {
		if id, _ := o.Get("id"); used[id] {
			out[id] = o
			continue
		}
		kept = append(kept, o)
	}
	c.Chardevs = kept
	return out
}

// parseLegacy reads a -qmp/-monitor chardev spec: stdio, unix:PATH[,server=on|off]
// [,wait=on|off] or tcp:[HOST]:PORT[,...] (QEMU's short forms server, nowait too).
func parseLegacy(option, spec string, mode monitor.Mode) (endpoint, error) {
	e := endpoint{mode: mode}
	bad := func(msg string) (endpoint, error) {
		return e, &qemuopts.Error{Option: option, Spec: spec, Msg: msg}
	}
	if spec == "stdio" {
		e.stdio, e.filename = true, "stdio"
		return e, nil
	}
	kind, rest, ok := strings.Cut(spec, ":")
	if !ok || (kind != "unix" && kind != "tcp") {
		return bad("unsupported monitor backend (gemu takes stdio, unix:PATH[,server=on,wait=off] or tcp:HOST:PORT[,server=on,wait=off])")
	}
	o, err := qemuopts.ParseOpt(option, rest, "addr")
	if err != nil {
		return e, err
	}
	addr := o.ImpliedValue()
	if e.server, err = o.Bool("server", false); err != nil {
		return e, err
	}
	if e.wait, err = o.Bool("wait", e.server); err != nil {
		return e, err
	}
	if err := o.Check("addr", "server", "wait", "nodelay"); err != nil {
		return e, err
	}
	if addr == "" {
		return bad("no address")
	}
	e.network, e.addr = kind, addr
	if kind == "tcp" {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return bad(fmt.Sprintf("tcp address '%s' is not HOST:PORT", addr))
		}
	}
	e.filename = kind + ":" + addr
	if e.server {
		e.filename += ",server=on"
	}
	return e, nil
}

// chardevEndpoint turns the -chardev a -mon names into an endpoint.
func chardevEndpoint(o *qemuopts.Opts, mode monitor.Mode) (endpoint, error) {
	e := endpoint{mode: mode}
	id, _ := o.Get("id")
	e.label = id
	bad := func(msg string) (endpoint, error) {
		return e, &qemuopts.Error{Option: "chardev", Spec: o.Spec, Msg: msg}
	}
	switch typ := o.ImpliedValue(); typ {
	case "stdio":
		if err := o.Check("backend", "id", "signal"); err != nil {
			return e, err
		}
		e.stdio, e.filename = true, "stdio"
		return e, nil
	case "socket":
		if err := o.Check("backend", "id", "path", "host", "port", "server", "wait", "nodelay", "ipv4", "ipv6"); err != nil {
			return e, err
		}
		var err error
		if e.server, err = o.Bool("server", false); err != nil {
			return e, err
		}
		if e.wait, err = o.Bool("wait", e.server); err != nil {
			return e, err
		}
		if p, ok := o.Get("path"); ok {
			if p == "" {
				return bad("empty path")
			}
			e.network, e.addr = "unix", p
		} else if port, ok := o.Get("port"); ok {
			e.network, e.addr = "tcp", net.JoinHostPort(o.String("host", ""), port)
		} else {
			return bad("Parameter 'path' or 'port' is missing")
		}
		e.filename = e.network + ":" + e.addr
		if e.server {
			e.filename += ",server=on"
		}
		return e, nil
	default:
		return bad(fmt.Sprintf("a monitor needs a socket or stdio chardev, not '%s'", typ))
	}
}

// OpenMonitors starts every monitor of the command line: -qmp (QMP), -monitor (HMP)
// and -mon chardev=ID,mode=control|readline over the chardevs TakeMonitorChardevs
// took. serialOnStdio refuses a monitor on stdio, which the console already holds.
// Server sockets with wait=on (QEMU's default) return only once a client connected.
func (l *Loop) OpenMonitors(c *qemuopts.Common, monChardevs map[string]*qemuopts.Opts, serialOnStdio bool) error {
	var eps []endpoint
	for _, q := range c.QMP {
		e, err := parseLegacy("qmp", q, monitor.QMP)
		if err != nil {
			return err
		}
		eps = append(eps, e)
	}
	for _, m := range c.Monitors {
		e, err := parseLegacy("monitor", m, monitor.HMP)
		if err != nil {
			return err
		}
		eps = append(eps, e)
	}
	for _, m := range c.Mons {
		id, _ := m.Get("chardev")
		mode := monitor.HMP
		switch v := m.String("mode", "readline"); v {
		case "control":
			mode = monitor.QMP
		case "readline":
		default:
			return &qemuopts.Error{Option: "mon", Spec: m.Spec, Msg: fmt.Sprintf("Parameter 'mode' does not accept value '%s'", v)}
		}
		if _, err := m.Bool("pretty", false); err != nil {
			return err
		}
		if err := m.Check("chardev", "mode", "pretty"); err != nil {
			return err
		}
		o := monChardevs[id]
		if o == nil {
			return &qemuopts.Error{Option: "mon", Spec: m.Spec, Msg: fmt.Sprintf("chardev \"%s\" not found", id)}
		}
		e, err := chardevEndpoint(o, mode)
		if err != nil {
			return err
		}
		eps = append(eps, e)
	}
	stdio := false
	for i, e := range eps {
		if e.label == "" {
			e.label = fmt.Sprintf("compat_monitor%d", i)
		}
		if e.stdio {
			if serialOnStdio || stdio {
				return fmt.Errorf("cannot use stdio by multiple character devices (the serial console is on stdio: use -serial null or a socket monitor)")
			}
			stdio = true
			go l.srv.Handle(os.Stdin, os.Stdout, nil, e.mode)
		} else if err := l.listen(e); err != nil {
			return err
		}
		l.cfg.Chardevs = append(l.cfg.Chardevs, monitor.Chardev{Label: e.label, Filename: e.filename, FrontendOpen: true})
	}
	return nil
}

func (l *Loop) listen(e endpoint) error {
	if !e.server {
		conn, err := net.Dial(e.network, e.addr)
		if err != nil {
			return fmt.Errorf("monitor %s: %v", e.filename, err)
		}
		go l.srv.Handle(conn, conn, conn, e.mode)
		return nil
	}
	if e.network == "unix" {
		// QEMU unlinks a stale socket before binding; only sockets are removed.
		if st, err := os.Lstat(e.addr); err == nil && st.Mode()&os.ModeSocket != 0 {
			os.Remove(e.addr)
		}
	}
	ln, err := net.Listen(e.network, e.addr)
	if err != nil {
		return fmt.Errorf("monitor %s: %v", e.filename, err)
	}
	if e.wait {
		fmt.Fprintf(l.cfg.Stderr, "%s: waiting for connection on: %s\n", l.cfg.Prog, e.filename)
		// A signal or Ctrl-A x while waiting ends the wait (and the process).
		type accepted struct {
			c   net.Conn
			err error
		}
		ch := make(chan accepted, 1)
		go func() {
			c, err := ln.Accept()
			ch <- accepted{c, err}
		}()
		select {
		case a := <-ch:
			if a.err != nil {
				ln.Close()
				return fmt.Errorf("monitor %s: %v", e.filename, a.err)
			}
			go l.srv.Handle(a.c, a.c, a.c, e.mode)
		case <-l.quitCh:
			ln.Close()
			return nil
		}
	}
	go l.srv.Serve(ln, e.mode)
	return nil
}
