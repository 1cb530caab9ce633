package monitor

import (
	"bufio"
	"fmt"
	"io"
)

// Limits on one client message: QEMU's JSON streamer bounds tokens and nesting too
// (MAX_TOKEN_SIZE, MAX_NESTING); gemu's are smaller, as no command takes big input.
const (
	DefaultMaxMessage = 1 << 20
	maxNesting        = 1024
	maxKeyword        = 64
)

// splitter cuts a byte stream into top-level JSON values as QEMU's streamer does (a
// message may span lines, a line hold several), without trusting the client: a
// message over max bytes or nested too deep is discarded as it streams in and
// reported once.
type splitter struct {
	r   *bufio.Reader
	max int
}

// piece is what next returns: a complete structured value, or an error to report
// (the stream stays usable), or the end of the stream.
type piece struct {
	msg []byte
	err string
}

func (s *splitter) next() (piece, error) {
	for {
		b, err := s.r.ReadByte()
		if err != nil {
			return piece{}, err
		}
		switch {
		case b == ' ' || b == '\t' || b == '\n' || b == '\r':
			continue
		case b == '{' || b == '[':
			return s.structure(b)
		case b == '"':
			if err := s.skipString(); err != nil {
				return piece{}, err
			}
			return piece{err: "QMP input must be a JSON object"}, nil
		case b == '-' || (b >= '0' && b <= '9'):
			if err := s.skipWord(); err != nil {
				return piece{}, err
			}
			return piece{err: "QMP input must be a JSON object"}, nil
		case isWord(b):
			w := []byte{b}
			for {
				c, err := s.r.ReadByte()
				if err != nil {
					break
				}
				if !isWord(c) {
					s.r.UnreadByte()
					break
				}
				if len(w) < maxKeyword {
					w = append(w, c)
				}
			}
			switch string(w) {
			case "true", "false", "null":
				return piece{err: "QMP input must be a JSON object"}, nil
			}
			return piece{err: fmt.Sprintf("JSON parse error, invalid keyword '%s'", printable(w))}, nil
		default:
			return piece{err: fmt.Sprintf("JSON parse error, stray '%s'", printable([]byte{b}))}, nil
		}
	}
}

func isWord(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' || b == '.' || b == '+'
}

// printable keeps an error message one line of text whatever the client sent.
func printable(w []byte) string {
	out := make([]byte, 0, len(w))
	for _, c := range w {
		if c < 0x20 || c >= 0x7f {
			out = append(out, fmt.Sprintf("\\x%02x", c)...)
		} else {
			out = append(out, c)
		}
	}
	return string(out)
}

func (s *splitter) skipWord() error {
	for {
		c, err := s.r.ReadByte()
		if err != nil {
			return nil
		}
		if !isWord(c) && c != '-' {
			s.r.UnreadByte()
			return nil
		}
	}
}

func (s *splitter) skipString() error {
	esc := false
	for {
		c, err := s.r.ReadByte()
		if err != nil {
			return err
		}
		switch {
		case esc:
			esc = false
		case c == '\\':
			esc = true
		case c == '"':
			return nil
		}
	}
}

// structure reads a value opened by first up to its matching close, tracking strings;
// brackets are counted, not matched against each other (json.Unmarshal judges that).
func (s *splitter) structure(first byte) (piece, error) {
	buf := []byte{first}
	depth, inStr, esc := 1, false, false
	errMsg := ""
	for depth > 0 {
		c, err := s.r.ReadByte()
		if err != nil {
			return piece{}, err
		}
		if errMsg == "" {
			buf = append(buf, c)
		}
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
		case c == '{' || c == '[':
			depth++
			if depth > maxNesting && errMsg == "" {
				errMsg, buf = "JSON parse error, nesting depth limit exceeded", nil
			}
		case c == '}' || c == ']':
			depth--
		}
		if errMsg == "" && len(buf) > s.max {
			errMsg, buf = fmt.Sprintf("JSON parse error, message exceeds %d bytes", s.max), nil
		}
	}
	if errMsg != "" {
		return piece{err: errMsg}, nil
	}
	return piece{msg: buf}, nil
}

// newSplitter reads r with the message bound max.
func newSplitter(r io.Reader, max int) *splitter {
	if max <= 0 {
		max = DefaultMaxMessage
	}
	return &splitter{r: bufio.NewReaderSize(r, 4096), max: max}
}
