package chardev

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Options configures backends created by Open.
type Options struct {
	// OnQuit is called (from the stdio input goroutine) when the user types the Ctrl-A x
	// escape. The caller stops the guest and exits; nil disables the escape's effect.
	OnQuit func()
	// Stdin and Stdout default to os.Stdin and os.Stdout; tests substitute a pty.
	Stdin, Stdout *os.File
	// Notify, if set, receives one-line notices, such as a waiting socket server's
	// "waiting for connection on: ..." (QEMU prints it to stderr).
	Notify func(msg string)
}

// Open creates the backend named by a QEMU -serial style spec: "stdio", "file:PATH"
// or "null". The error names the spec and is fit for a one-line message.
func Open(spec string, o Options) (Backend, error) {
	switch {
	case spec == "null" || spec == "none":
		return Null{}, nil
	case spec == "stdio":
		in, out := o.Stdin, o.Stdout
		if in == nil {
			in = os.Stdin
		}
		if out == nil {
			out = os.Stdout
		}
		return NewStdio(in, out, o.OnQuit)
	case strings.HasPrefix(spec, "file:"):
		path := strings.TrimPrefix(spec, "file:")
		if path == "" {
			return nil, fmt.Errorf("chardev %q: empty file name", spec)
		}
		return NewFile(path)
	}
	return nil, fmt.Errorf("chardev %q: unsupported backend (want stdio, file:PATH or null)", spec)
}

// backendKeys lists, per -chardev backend, the keys OpenOpts reads (besides the
// caller's id= and backend type).
var backendKeys = map[string][]string{
	"null":   nil,
	"stdio":  {"signal"},
	"file":   {"path", "append"},
	"pipe":   {"path"},
	"socket": {"path", "host", "port", "server", "wait", "nodelay", "reconnect", "telnet", "ipv4", "ipv6"},
}

// Keys returns the keys OpenOpts reads for backend typ, so the caller can refuse any
// other key before opening (with its own "Invalid parameter" message).
func Keys(typ string) ([]string, error) {
	k, ok := backendKeys[typ]
	if !ok {
		return nil, unsupported(typ)
	}
	return append([]string(nil), k...), nil
}

func unsupported(typ string) error {
	return fmt.Errorf("chardev: backend '%s' is not supported (null, stdio, file, pipe, socket)", typ)
}

// OpenOpts opens the backend of a parsed -chardev option set: typ is the backend
// (socket, pipe, file, stdio, null) and get returns a key's value and whether it was
// given. Booleans take QEMU's on/off/yes/no/true/false. A server socket with wait=on
// (QEMU's default) returns only once the first client connected. Errors are one line.
func OpenOpts(typ string, get func(key string) (string, bool), o Options) (Backend, error) {
	if _, ok := backendKeys[typ]; !ok {
		return nil, unsupported(typ)
	}
	var err error
	flag := func(key string, def bool) bool {
		v, ok := get(key)
		if !ok || err != nil {
			return def
		}
		b, ok := parseBool(v)
		if !ok {
			err = fmt.Errorf("chardev %s: Parameter '%s' expects 'on' or 'off'", typ, key)
		}
		return b
	}
	need := func(key string) string {
		v, ok := get(key)
		if (!ok || v == "") && err == nil {
			err = fmt.Errorf("chardev %s: Parameter '%s' is missing", typ, key)
		}
		return v
	}
	switch typ {
	case "null":
		return Null{}, nil
	case "stdio":
		if flag("signal", false) && err == nil {
			err = errors.New("chardev stdio: signal=on is not supported (the terminal is raw: Ctrl-C goes to the guest, Ctrl-A x quits)")
		}
		if err != nil {
			return nil, err
		}
		return Open("stdio", o)
	case "file":
		path, app := need("path"), flag("append", false)
		if err != nil {
			return nil, err
		}
		if app {
			return NewFileAppend(path)
		}
		return NewFile(path)
	case "pipe":
		path := need("path")
		if err != nil {
			return nil, err
		}
		return NewPipe(path)
	}
	// socket
	c := SocketConfig{Server: flag("server", false), NoDelay: flag("nodelay", false), Notify: o.Notify}
	c.Wait = flag("wait", c.Server)
	if flag("telnet", false) && err == nil {
		err = errors.New("chardev socket: telnet=on is not supported")
	}
	v4, v6 := flag("ipv4", false), flag("ipv6", false)
	if err != nil {
		return nil, err
	}
	if r, ok := get("reconnect"); ok {
		n, perr := strconv.ParseUint(r, 10, 32)
		if perr != nil {
			return nil, fmt.Errorf("chardev socket: Parameter 'reconnect' expects a number of seconds")
		}
		c.Reconnect = time.Duration(n) * time.Second
	}
	path, hasPath := get("path")
	host, hasHost := get("host")
	port, hasPort := get("port")
	switch {
	case hasPath && (hasHost || hasPort):
		return nil, errors.New("chardev socket: path= (unix) and host=/port= (tcp) exclude each other")
	case hasPath:
		if path == "" {
			return nil, errors.New("chardev socket: empty path")
		}
		c.Path = path
	case hasPort:
		if _, perr := strconv.ParseUint(port, 10, 16); perr != nil {
			// QEMU also takes service names; gemu wants a number.
			return nil, fmt.Errorf("chardev socket: invalid port '%s'", port)
		}
		c.Host, c.Port = host, port
		switch {
		case v4 && !v6:
			c.Network = "tcp4"
		case v6 && !v4:
			c.Network = "tcp6"
		}
	default:
		return nil, errors.New("chardev socket: Parameter 'path' or 'port' is missing (unix path= or tcp host=,port=)")
	}
	if c.Server && c.Reconnect > 0 {
		return nil, errors.New("chardev socket: reconnect= is for clients (server=off)")
	}
	return NewSocket(c)
}

// parseBool reads QEMU's boolean spellings.
func parseBool(s string) (bool, bool) {
	switch s {
	case "on", "yes", "true", "y":
		return true, true
	case "off", "no", "false", "n":
		return false, true
	}
	return false, false
}
