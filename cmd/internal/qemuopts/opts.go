// Package qemuopts owns QEMU's command-line option syntax, once, for both system
// emulators: `key=val,key=val` option strings with an implied first key and `,,` escapes
// (util/qemu-option.c), the JSON forms libvirt passes to -device, -blockdev, -object and
// -netdev, flattened to dotted keys as QEMU's keyval does, typed getters with QEMU's
// one-line errors, sizes (qemu_strtosz), -m, -smp (hw/core/machine-smp.c, QEMU 7.2
// rules), -cpu feature lists, and the flag set both mains share (Common, Scan).
//
// It parses and validates syntax only. It must not know about devices, boards,
// accelerators or chardev backends: the mains and the packages they call decide what
// a key means.
package qemuopts

import (
	"fmt"
	"strings"
)

// Opts is one parsed option string: ordered keys with their values. A key given twice
// keeps its first position and its last value, as QemuOpts' lookups do.
type Opts struct {
	// Option names the command-line option (without the dash, e.g. "device") for error
	// messages; empty when the caller parsed a bare string.
	Option string
	// Spec is the option string as given.
	Spec string
	// Implied is the implied key's name ("" when the option has none).
	Implied string
	// Help reports that help was asked for: `help` or `?` as the implied key's value or
	// as a lone word anywhere in the string. Callers list drivers or keys and exit 0.
	Help bool
	// JSON reports that the string was a JSON object.
	JSON bool
	// ShortFlags lists keys given in the deprecated short boolean form (`key` for
	// key=on, `nokey` for key=off), so callers can warn as QEMU does.
	ShortFlags []string

	keys []string
	vals map[string]string
	all  map[string][]string // every value of a repeated key, in order (hostfwd=, guestfwd=)
	used map[string]bool
}

// Error is a one-line option error: "-opt spec: msg" (QEMU's shape), or msg alone when
// the option is not named.
type Error struct {
	Option, Spec, Msg string
}

func (e *Error) Error() string {
	if e.Option == "" {
		return e.Msg
	}
	return "-" + e.Option + " " + e.Spec + ": " + e.Msg
}

func (o *Opts) errorf(format string, a ...any) error {
	return &Error{Option: o.Option, Spec: o.Spec, Msg: fmt.Sprintf(format, a...)}
}

// IsHelp reports whether s asks for help the way QEMU's is_help_option does.
func IsHelp(s string) bool { return s == "help" || s == "?" }

// MaxSpec bounds an option string (a command line cannot be longer anyway, but a
// config file could hand us anything).
const MaxSpec = 1 << 20

// Parse parses one option string. impliedKey names the key a leading element without
// `=` is the value of ("driver" for -device, "type" for -netdev, "" for -drive). A
// string starting with `{` is parsed as a JSON object. See ParseOpt to name the option
// in errors.
func Parse(spec, impliedKey string) (*Opts, error) { return ParseOpt("", spec, impliedKey) }

// ParseOpt is Parse for command-line option `-option`, named in errors.
func ParseOpt(option, spec, impliedKey string) (*Opts, error) {
	o := New(option, impliedKey)
	o.Spec = spec
	if len(spec) > MaxSpec {
		return nil, o.errorf("option string longer than %d bytes", MaxSpec)
	}
	if strings.HasPrefix(strings.TrimLeft(spec, " \t\n\r"), "{") {
		o.JSON = true
		if err := o.parseJSON(spec); err != nil {
			return nil, err
		}
		if v, ok := o.vals[impliedKey]; ok && impliedKey != "" && IsHelp(v) {
			o.Help = true
		}
		return o, o.checkDotted()
	}
	p := spec
	first := true
	for p != "" {
		n := strings.IndexAny(p, "=,")
		if n < 0 || p[n] == ',' {
			// "word" or "word,more": the implied key's value, or a flag.
			if first && impliedKey != "" {
				var v string
				v, p = value(p)
				o.Set(impliedKey, v)
			} else {
				name := p
				if n >= 0 {
					name, p = p[:n], p[n+1:]
				} else {
					p = ""
				}
				switch {
				case IsHelp(name):
					o.Help = true
				case name == "":
					return nil, o.errorf("Invalid parameter ''")
				case strings.HasPrefix(name, "no") && len(name) > 2:
					o.Set(name[2:], "off")
					o.ShortFlags = append(o.ShortFlags, name)
				default:
					o.Set(name, "on")
					o.ShortFlags = append(o.ShortFlags, name)
				}
			}
		} else {
			name := p[:n]
			if name == "" {
				return nil, o.errorf("Invalid parameter ''")
			}
			var v string
			v, p = value(p[n+1:])
			o.Set(name, v)
		}
		first = false
	}
	if v, ok := o.vals[impliedKey]; ok && impliedKey != "" && IsHelp(v) {
		o.Help = true // driver=help as much as a leading help
	}
	return o, o.checkDotted()
}

// value reads a value up to an unescaped comma; ",," stands for one comma. It returns
// the value and the rest after the comma.
func value(p string) (string, string) {
	var b strings.Builder
	for {
		i := strings.IndexByte(p, ',')
		if i < 0 {
			b.WriteString(p)
			return b.String(), ""
		}
		b.WriteString(p[:i])
		if i+1 < len(p) && p[i+1] == ',' {
			b.WriteByte(',')
			p = p[i+2:]
			continue
		}
		return b.String(), p[i+1:]
	}
}

// checkDotted refuses a key that is both a value and a prefix of dotted keys
// (file=x,file.driver=y), as keyval does.
func (o *Opts) checkDotted() error {
	for _, k := range o.keys {
		for i := 0; i < len(k); i++ {
			if k[i] != '.' {
				continue
			}
			if k[:i] == "" || i == len(k)-1 || strings.Contains(k, "..") {
				return o.errorf("Invalid parameter '%s'", k)
			}
			if _, ok := o.vals[k[:i]]; ok {
				return o.errorf("Parameters '%s.*' used inconsistently", k[:i])
			}
		}
	}
	return nil
}

// New returns empty options for -option with the given implied key, for callers that
// build an option set themselves (-hda FILE becomes a -drive).
func New(option, impliedKey string) *Opts {
	return &Opts{Option: option, Implied: impliedKey, vals: map[string]string{}, used: map[string]bool{}}
}

// Set sets key to val; a key set again keeps its position and takes the new value.
func (o *Opts) Set(key, val string) {
	if _, ok := o.vals[key]; !ok {
		o.keys = append(o.keys, key)
	}
	o.vals[key] = val
	if o.all == nil {
		o.all = map[string][]string{}
	}
	o.all[key] = append(o.all[key], val)
}

// All returns every value given for key, in order, and marks it used: for the options
// QEMU lets repeat (-netdev user's hostfwd= and guestfwd=), where Get sees only the last.
func (o *Opts) All(key string) []string {
	if _, ok := o.vals[key]; ok {
		o.used[key] = true
	}
	return append([]string(nil), o.all[key]...)
}

// Keys returns the keys in the order they were first given.
func (o *Opts) Keys() []string { return append([]string(nil), o.keys...) }

// Has reports whether key was given (without marking it used).
func (o *Opts) Has(key string) bool { _, ok := o.vals[key]; return ok }

// Get returns key's value and whether it was given, and marks it used.
func (o *Opts) Get(key string) (string, bool) {
	v, ok := o.vals[key]
	if ok {
		o.used[key] = true
	}
	return v, ok
}

// ImpliedValue returns the implied key's value ("" if absent), marking it used.
func (o *Opts) ImpliedValue() string {
	if o.Implied == "" {
		return ""
	}
	v, _ := o.Get(o.Implied)
	return v
}

// String returns key's value, or def when absent.
func (o *Opts) String(key, def string) string {
	if v, ok := o.Get(key); ok {
		return v
	}
	return def
}

// ParseBool reads a boolean as QEMU's qapi_bool_parse does: on/yes/true/y and
// off/no/false/n.
func ParseBool(s string) (bool, bool) {
	switch s {
	case "on", "yes", "true", "y":
		return true, true
	case "off", "no", "false", "n":
		return false, true
	}
	return false, false
}

// Bool returns key as a boolean, or def when absent.
func (o *Opts) Bool(key string, def bool) (bool, error) {
	v, ok := o.Get(key)
	if !ok {
		return def, nil
	}
	b, ok := ParseBool(v)
	if !ok {
		return false, o.errorf("Parameter '%s' expects 'on' or 'off'", key)
	}
	return b, nil
}

// Size returns key as a byte size (suffixes K M G T P E, default bytes), or def.
func (o *Opts) Size(key string, def uint64) (uint64, error) {
	v, ok := o.Get(key)
	if !ok {
		return def, nil
	}
	n, err := ParseSize(v)
	if err != nil {
		return 0, o.sizeError(key, v, err)
	}
	return n, nil
}

func (o *Opts) sizeError(key, v string, err error) error {
	if err == errRange {
		return o.errorf("Value '%s' is out of range for parameter '%s'", v, key)
	}
	return o.errorf("Parameter '%s' expects a non-negative number below 2^64 (optional suffix k, M, G, T, P or E)", key)
}

// Number returns key as an unsigned number (decimal, 0x hex or 0 octal, as
// QemuOpts' number type), or def.
func (o *Opts) Number(key string, def uint64) (uint64, error) {
	v, ok := o.Get(key)
	if !ok {
		return def, nil
	}
	n, err := parseUint(v)
	if err == errRange {
		return 0, o.errorf("Value '%s' is too large for parameter '%s'", v, key)
	}
	if err != nil {
		return 0, o.errorf("Parameter '%s' expects a number", key)
	}
	return n, nil
}

// Unused returns the keys no getter has read, in order.
func (o *Opts) Unused() []string {
	var u []string
	for _, k := range o.keys {
		if !o.used[k] {
			u = append(u, k)
		}
	}
	return u
}

// Check returns QEMU's "Invalid parameter 'x'" for the first key that is neither in
// allowed nor already read by a getter. An allowed entry ending in "." admits every
// dotted key under it ("file." admits file.driver).
func (o *Opts) Check(allowed ...string) error {
	for _, k := range o.keys {
		if !o.used[k] && !contains(allowed, k) {
			return o.errorf("Invalid parameter '%s'", k)
		}
	}
	return nil
}

func contains(allowed []string, k string) bool {
	for _, a := range allowed {
		if a == k || strings.HasSuffix(a, ".") && strings.HasPrefix(k, a) {
			return true
		}
	}
	return false
}

// Sub returns the keys under prefix (without "prefix."), in order, as their own
// option set: Sub("file") of file.driver=qcow2 gives driver=qcow2. The keys count as
// read in o.
func (o *Opts) Sub(prefix string) *Opts {
	s := New(o.Option, "")
	s.Spec = o.Spec
	for _, k := range o.keys {
		if rest, ok := strings.CutPrefix(k, prefix+"."); ok {
			s.Set(rest, o.vals[k])
			o.used[k] = true
		}
	}
	return s
}

// Encode renders the options back in key=val form with commas escaped (JSON input
// comes back flattened). The implied key, if set, is written first without its name.
func (o *Opts) Encode() string {
	var parts []string
	esc := func(s string) string { return strings.ReplaceAll(s, ",", ",,") }
	if v, ok := o.vals[o.Implied]; ok && o.Implied != "" {
		if strings.ContainsRune(v, '=') {
			v = o.Implied + "=" + v
		}
		parts = append(parts, esc(v))
	}
	for _, k := range o.keys {
		if k == o.Implied && o.Implied != "" {
			continue
		}
		parts = append(parts, k+"="+esc(o.vals[k]))
	}
	return strings.Join(parts, ",")
}
