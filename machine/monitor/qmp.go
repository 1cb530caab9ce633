package monitor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
)

// Error classes QEMU uses.
const (
	GenericError    = "GenericError"
	CommandNotFound = "CommandNotFound"
	DeviceNotFound  = "DeviceNotFound"
)

// Error is a QMP error reply.
type Error struct {
	Class string
	Desc  string
}

func (e *Error) Error() string { return e.Desc }

func errorf(class, format string, args ...any) *Error {
	return &Error{Class: class, Desc: fmt.Sprintf(format, args...)}
}

// arg is one declared command argument. typ is the QAPI JSON type: "string",
// "integer", "boolean", "array", "object".
type arg struct {
	name     string
	typ      string
	optional bool
}

// command is one QMP command.
type command struct {
	name string
	args []arg
	ret  string // schema hint: "empty", "any"
	run  func(c *call) (any, error)
	// open: arguments beyond args are the command's to check (device_add's properties).
	open bool
}

// call is one command invocation.
type call struct {
	ss    *session
	args  map[string]json.RawMessage
	after []func() // run after the reply is queued (events that follow it in QEMU)
}

func (c *call) str(name string) (string, bool) {
	raw, ok := c.args[name]
	if !ok {
		return "", false
	}
	var v string
	json.Unmarshal(raw, &v)
	return v, true
}

func (c *call) then(f func()) { c.after = append(c.after, f) }

func (s *Server) add(c *command) {
	s.cmds[c.name] = c
	s.list = append(s.list, c)
}

type qemuVersion struct {
	Micro int `json:"micro"`
	Minor int `json:"minor"`
	Major int `json:"major"`
}

type versionInfo struct {
	QEMU    qemuVersion `json:"qemu"`
	Package string      `json:"package"`
}

func (s *Server) version() versionInfo {
	return versionInfo{qemuVersion{s.opts.Micro, s.opts.Minor, s.opts.Major}, s.opts.Package}
}

// greeting is QEMU's banner.
func (s *Server) greeting() []byte {
	type qmp struct {
		Version      versionInfo `json:"version"`
		Capabilities []string    `json:"capabilities"`
	}
	b, _ := marshal(map[string]qmp{"QMP": {s.version(), []string{"oob"}}})
	return b
}

func (ss *session) qmpLoop(r io.Reader) {
	ss.send(ss.srv.greeting())
	sp := newSplitter(r, ss.srv.opts.MaxMessage)
	for {
		p, err := sp.next()
		if err != nil {
			return
		}
		select {
		case <-ss.done:
			return
		default:
		}
		if p.err != "" {
			ss.reply(nil, nil, &Error{GenericError, p.err})
			continue
		}
		ss.dispatch(p.msg)
	}
}

// reply queues a return or an error, with the request's id echoed.
func (ss *session) reply(id json.RawMessage, ret any, err error) {
	var buf bytes.Buffer
	if err != nil {
		e, ok := err.(*Error)
		if !ok {
			e = &Error{GenericError, err.Error()}
		}
		b, _ := json.Marshal(struct {
			Class string `json:"class"`
			Desc  string `json:"desc"`
		}{e.Class, e.Desc})
		buf.WriteString(`{"error":`)
		buf.Write(b)
	} else {
		if ret == nil {
			ret = struct{}{}
		}
		b, merr := json.Marshal(ret)
		if merr != nil {
			ss.reply(id, nil, merr)
			return
		}
		buf.WriteString(`{"return":`)
		buf.Write(b)
	}
	if id != nil {
		buf.WriteString(`,"id":`)
		buf.Write(id)
	}
	buf.WriteString("}")
	out, _ := marshal(json.RawMessage(buf.Bytes()))
	ss.send(out)
}

// dispatch checks one request as QEMU's qmp_dispatch does and runs it.
func (ss *session) dispatch(msg []byte) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(msg, &obj); err != nil {
		var any any
		if json.Unmarshal(msg, &any) == nil {
			ss.reply(nil, nil, &Error{GenericError, "QMP input must be a JSON object"})
		} else {
			ss.reply(nil, nil, &Error{GenericError, "JSON parse error, " + parseErr(err)})
		}
		return
	}
	id := obj["id"]
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var name string
	oob := false
	for _, k := range keys {
		v := obj[k]
		switch k {
		case "execute", "exec-oob":
			if err := json.Unmarshal(v, &name); err != nil {
				ss.reply(id, nil, errorf(GenericError, "QMP input member '%s' must be a string", k))
				return
			}
			oob = k == "exec-oob"
		case "arguments":
			if len(bytes.TrimSpace(v)) == 0 || bytes.TrimSpace(v)[0] != '{' {
				ss.reply(id, nil, errorf(GenericError, "QMP input member 'arguments' must be an object"))
				return
			}
		case "id":
		default:
			ss.reply(id, nil, errorf(GenericError, "QMP input member '%s' is unexpected", k))
			return
		}
	}
	_, hasExec := obj["execute"]
	_, hasOOB := obj["exec-oob"]
	switch {
	case hasExec && hasOOB:
		ss.reply(id, nil, errorf(GenericError, "QMP input must not have both 'execute' and 'exec-oob'"))
		return
	case !hasExec && !hasOOB:
		ss.reply(id, nil, errorf(GenericError, "QMP input lacks member 'execute'"))
		return
	}
	ss.mu.Lock()
	ready, oobOn := ss.ready, ss.oob
	ss.mu.Unlock()
	if oob && !oobOn {
		ss.reply(id, nil, errorf(GenericError, "QMP input member 'exec-oob' is unexpected"))
		return
	}
	if !ready && name != "qmp_capabilities" {
		ss.reply(id, nil, errorf(CommandNotFound, "Expecting capabilities negotiation with 'qmp_capabilities'"))
		return
	}
	cmd := ss.srv.cmds[name]
	if cmd == nil {
		ss.reply(id, nil, errorf(CommandNotFound, "The command %s has not been found", name))
		return
	}
	if oob {
		ss.reply(id, nil, errorf(GenericError, "The command %s does not support OOB", name))
		return
	}
	args := map[string]json.RawMessage{}
	if raw, ok := obj["arguments"]; ok {
		if err := json.Unmarshal(raw, &args); err != nil {
			ss.reply(id, nil, errorf(GenericError, "QMP input member 'arguments' must be an object"))
			return
		}
	}
	if err := checkArgs(cmd, args); err != nil {
		ss.reply(id, nil, err)
		return
	}
	c := &call{ss: ss, args: args}
	ret, err := cmd.run(c)
	ss.reply(id, ret, err)
	for _, f := range c.after {
		f()
	}
}

// checkArgs applies QEMU's input-visitor checks: declared arguments present and of
// their type, then nothing undeclared.
func checkArgs(cmd *command, args map[string]json.RawMessage) error {
	declared := map[string]bool{}
	for _, a := range cmd.args {
		declared[a.name] = true
		raw, ok := args[a.name]
		if !ok {
			if !a.optional {
				return errorf(GenericError, "Parameter '%s' is missing", a.name)
			}
			continue
		}
		if a.typ != "any" && jsonType(raw) != a.typ {
			return errorf(GenericError, "Invalid parameter type for '%s', expected: %s", a.name, a.typ)
		}
	}
	var extra []string
	for k := range args {
		if !declared[k] && !cmd.open {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return errorf(GenericError, "Parameter '%s' is unexpected", extra[0])
	}
	return nil
}

// jsonType names a raw value's JSON type as QAPI does.
func jsonType(raw json.RawMessage) string {
	b := bytes.TrimSpace(raw)
	if len(b) == 0 {
		return ""
	}
	switch b[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	var n json.Number
	if json.Unmarshal(b, &n) == nil {
		if _, err := n.Int64(); err == nil {
			return "integer"
		}
		return "number"
	}
	return ""
}

// parseErr shortens encoding/json's messages for the error reply.
func parseErr(err error) string {
	if se, ok := err.(*json.SyntaxError); ok {
		return fmt.Sprintf("%s (at byte %d)", se.Error(), se.Offset)
	}
	return err.Error()
}
