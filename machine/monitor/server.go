package monitor

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Options configure a Server.
type Options struct {
	// Version is the QEMU version gemu speaks for (7.2.0) and Package gemu's own
	// version string, as the greeting and query-version carry them.
	Major, Minor, Micro int
	Package             string
	// MaxMessage bounds one client message in bytes (DefaultMaxMessage if 0).
	MaxMessage int
	// MaxQueue bounds the bytes queued for one client (DefaultMaxQueue if 0): a client
	// that does not read is dropped when it is full.
	MaxQueue int
	// Logf, if set, is told about dropped clients.
	Logf func(format string, args ...any)
}

// DefaultMaxQueue is the output bound per client.
const DefaultMaxQueue = 4 << 20

// Mode is a monitor's protocol.
type Mode int

const (
	QMP Mode = iota // JSON machine protocol ("control")
	HMP             // human monitor ("readline")
)

// Server serves QMP and HMP sessions over one Machine. Sessions are independent: each
// negotiates its own capabilities; events go to every QMP session past negotiation.
type Server struct {
	m    Machine
	opts Options
	cmds map[string]*command
	list []*command // registration order, for query-commands and the schema

	mu        sync.Mutex
	sessions  map[*session]struct{}
	listeners []net.Listener
	closed    bool
	wg        sync.WaitGroup

	mig migrateParams // migrate-set-capabilities/-parameters (migrate.go)
}

// NewServer returns a server for m with the QMP and HMP command tables.
func NewServer(m Machine, o Options) *Server {
	if o.MaxMessage <= 0 {
		o.MaxMessage = DefaultMaxMessage
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = DefaultMaxQueue
	}
	if o.Major == 0 && o.Minor == 0 {
		o.Major, o.Minor = 7, 2
	}
	s := &Server{m: m, opts: o, cmds: map[string]*command{}, sessions: map[*session]struct{}{}}
	s.registerQMP()
	s.registerMigrate()
	s.registerBalloon()
	s.registerHotplug() // hotplug.go
	s.registerProbe()   // probe.go
	s.registerSnapshot()
	return s
}

// Serve accepts connections on l until l or the server is closed, each served as its
// own session in mode.
func (s *Server) Serve(l net.Listener, mode Mode) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return errors.New("monitor: server closed")
	}
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.Handle(c, c, c, mode)
		}()
	}
}

// Handle serves one session reading r and writing w until r ends, the client is
// dropped or the server closes; closer (may be nil) is closed then.
func (s *Server) Handle(r io.Reader, w io.Writer, closer io.Closer, mode Mode) {
	ss := &session{srv: s, w: w, closer: closer, mode: mode, out: make(chan []byte, 256), done: make(chan struct{}), flushed: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		if closer != nil {
			closer.Close()
		}
		return
	}
	s.sessions[ss] = struct{}{}
	s.mu.Unlock()
	go ss.writer()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, ss)
		s.mu.Unlock()
		// The client closed its end: what is queued for it still goes out.
		ss.closeOutput()
		select {
		case <-ss.flushed:
		case <-time.After(time.Second):
		}
		ss.finish()
	}()
	if mode == HMP {
		ss.hmpLoop(r)
		return
	}
	ss.qmpLoop(r)
}

// Emit sends event (with data, if not nil) to every QMP session past negotiation,
// stamped with the time now.
func (s *Server) Emit(event string, data any) {
	now := time.Now()
	type stamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	}
	ev := struct {
		Timestamp stamp  `json:"timestamp"`
		Event     string `json:"event"`
		Data      any    `json:"data,omitempty"`
	}{stamp{now.Unix(), int64(now.Nanosecond() / 1000)}, event, data}
	b, err := marshal(ev)
	if err != nil {
		return
	}
	s.mu.Lock()
	var to []*session
	for ss := range s.sessions {
		if ss.mode == QMP && ss.negotiated() {
			to = append(to, ss)
		}
	}
	s.mu.Unlock()
	for _, ss := range to {
		ss.send(b)
	}
}

// Close stops accepting, lets every session's queued output drain for up to a second
// (the reply to quit, the SHUTDOWN event) and closes the sessions.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	ls := s.listeners
	s.listeners = nil
	var ss []*session
	for x := range s.sessions {
		ss = append(ss, x)
	}
	s.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	deadline := time.After(time.Second)
	for _, x := range ss {
		x.closeOutput()
		select {
		case <-x.flushed:
		case <-deadline:
		}
		x.finish()
	}
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

// session is one client.
type session struct {
	srv    *Server
	w      io.Writer
	closer io.Closer
	mode   Mode

	mu      sync.Mutex
	ready   bool // QMP: capabilities negotiated
	oob     bool
	queued  int  // bytes in out
	shut    bool // out closed (no more sends)
	out     chan []byte
	done    chan struct{} // closed by finish
	flushed chan struct{} // closed when the writer has written everything and ended
	fin     sync.Once
}

func (ss *session) negotiated() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.ready
}

// send queues b (one message, newline added by the writer); a client whose queue is
// full is dropped.
func (ss *session) send(b []byte) {
	ss.mu.Lock()
	if ss.shut {
		ss.mu.Unlock()
		return
	}
	if ss.queued+len(b) > ss.srv.opts.MaxQueue || len(ss.out) == cap(ss.out) {
		ss.mu.Unlock()
		ss.srv.logf("monitor: dropping a client that does not read its replies (%d bytes queued)", ss.queued)
		ss.finish()
		return
	}
	ss.queued += len(b)
	ss.out <- b
	ss.mu.Unlock()
}

func (ss *session) writer() {
	defer close(ss.flushed)
	for {
		select {
		case b, ok := <-ss.out:
			if !ok {
				return
			}
			ss.mu.Lock()
			ss.queued -= len(b)
			ss.mu.Unlock()
			if _, err := ss.w.Write(b); err != nil {
				ss.finish()
				return
			}
		case <-ss.done:
			return
		}
	}
}

// closeOutput ends the queue: the writer exits after writing what is queued.
func (ss *session) closeOutput() {
	ss.mu.Lock()
	if !ss.shut {
		ss.shut = true
		close(ss.out)
	}
	ss.mu.Unlock()
}

// finish drops the session now: the connection closes, which ends its reader.
func (ss *session) finish() {
	ss.fin.Do(func() {
		ss.mu.Lock()
		ss.shut = true
		ss.mu.Unlock()
		close(ss.done)
		if ss.closer != nil {
			ss.closer.Close()
		}
	})
}

// marshal encodes v as QEMU prints JSON: ", " and ": " between members, then a
// newline ("\r\n" as QEMU's monitor sends it).
func marshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(b)+len(b)/8+2)
	inStr, esc := false, false
	for _, c := range b {
		out = append(out, c)
		switch {
		case inStr:
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
		case c == '"':
			inStr = true
		case c == ':' || c == ',':
			out = append(out, ' ')
		}
	}
	return append(out, '\r', '\n'), nil
}
