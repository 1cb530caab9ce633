package vmstate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"unsafe"
)

// Fields encoding: a device or CPU whose state is a plain struct of integers, booleans,
// arrays and nested structs (exported or not) can save it by name with EncodeFields
// and read it back with DecodeFields. Each leaf is recorded as
//
//	u16 name length, name (the Go field path: "sr.sctlr", "X", "timers.1.cval"),
//	u32 count, count × u64 little-endian (an array of leaves is one record)
//
// so a field added to the struct later is simply absent from older records (it keeps
// the value the struct had before DecodeFields, its reset value), and a record naming a
// field the struct does not have is refused: the state comes from a different model.

// maxFieldName bounds a field path; maxFieldCount bounds one record's values.
const (
	maxFieldName  = 256
	maxFieldCount = 1 << 16
)

// leaf is one encodable field: a settable value of an integer or bool kind, or an
// array of them.
type leaf struct {
	name string
	v    reflect.Value
}

func settable(v reflect.Value) reflect.Value {
	if v.CanSet() {
		return v
	}
	return reflect.NewAt(v.Type(), unsafe.Pointer(v.UnsafeAddr())).Elem()
}

func scalar(k reflect.Kind) bool {
	switch k {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return true
	}
	return false
}

// leaves flattens v (addressable) into its leaf fields.
func leaves(prefix string, v reflect.Value, out *[]leaf) error {
	switch {
	case scalar(v.Kind()):
		*out = append(*out, leaf{prefix, settable(v)})
	case v.Kind() == reflect.Array && scalar(v.Type().Elem().Kind()):
		*out = append(*out, leaf{prefix, settable(v)})
	case v.Kind() == reflect.Array:
		for i := 0; i < v.Len(); i++ {
			if err := leaves(join(prefix, strconv.Itoa(i)), v.Index(i), out); err != nil {
				return err
			}
		}
	case v.Kind() == reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			if t.Field(i).Name == "_" {
				continue
			}
			if err := leaves(join(prefix, t.Field(i).Name), v.Field(i), out); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("vmstate: field %q of kind %s cannot be saved", prefix, v.Kind())
	}
	return nil
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

func get(v reflect.Value) uint64 {
	switch {
	case v.Kind() == reflect.Bool:
		if v.Bool() {
			return 1
		}
		return 0
	case v.CanInt():
		return uint64(v.Int())
	default:
		return v.Uint()
	}
}

// set stores u into v, refusing a value the field cannot hold.
func set(v reflect.Value, u uint64) bool {
	switch {
	case v.Kind() == reflect.Bool:
		if u > 1 {
			return false
		}
		v.SetBool(u == 1)
	case v.CanInt():
		if v.OverflowInt(int64(u)) {
			return false
		}
		v.SetInt(int64(u))
	default:
		if v.OverflowUint(u) {
			return false
		}
		v.SetUint(u)
	}
	return true
}

// EncodeFields appends the fields of the struct *p to b.
func EncodeFields(b []byte, p any) ([]byte, error) {
	rv := reflect.ValueOf(p)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return nil, errors.New("vmstate: EncodeFields needs a pointer to a struct")
	}
	var ls []leaf
	if err := leaves("", rv.Elem(), &ls); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	for _, l := range ls {
		b = le.AppendUint16(b, uint16(len(l.name)))
		b = append(b, l.name...)
		if l.v.Kind() == reflect.Array {
			b = le.AppendUint32(b, uint32(l.v.Len()))
			for i := 0; i < l.v.Len(); i++ {
				b = le.AppendUint64(b, get(l.v.Index(i)))
			}
		} else {
			b = le.AppendUint32(b, 1)
			b = le.AppendUint64(b, get(l.v))
		}
	}
	return b, nil
}

// DecodeFields reads records EncodeFields wrote into the struct *p. Fields the data
// does not name keep their values; a record for an unknown field, of the wrong length
// or with a value out of the field's range, or truncated data, is an error (p may then
// be partly updated: callers decode into a copy).
func DecodeFields(b []byte, p any) error {
	rv := reflect.ValueOf(p)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return errors.New("vmstate: DecodeFields needs a pointer to a struct")
	}
	var ls []leaf
	if err := leaves("", rv.Elem(), &ls); err != nil {
		return err
	}
	byName := make(map[string]reflect.Value, len(ls))
	for _, l := range ls {
		byName[l.name] = l.v
	}
	le := binary.LittleEndian
	seen := map[string]bool{}
	for len(b) > 0 {
		if len(b) < 2 {
			return errors.New("vmstate: field record truncated")
		}
		n := int(le.Uint16(b))
		b = b[2:]
		if n == 0 || n > maxFieldName || len(b) < n+4 {
			return errors.New("vmstate: field record truncated or malformed")
		}
		name := string(b[:n])
		cnt := le.Uint32(b[n:])
		b = b[n+4:]
		if cnt > maxFieldCount || uint64(len(b)) < uint64(cnt)*8 {
			return fmt.Errorf("vmstate: field %q truncated", name)
		}
		v, ok := byName[name]
		if !ok {
			return fmt.Errorf("vmstate: unknown field %q", name)
		}
		if seen[name] {
			return fmt.Errorf("vmstate: field %q given twice", name)
		}
		seen[name] = true
		if v.Kind() == reflect.Array {
			if int(cnt) != v.Len() {
				return fmt.Errorf("vmstate: field %q has %d values, want %d", name, cnt, v.Len())
			}
			for i := 0; i < v.Len(); i++ {
				if !set(v.Index(i), le.Uint64(b[8*i:])) {
					return fmt.Errorf("vmstate: field %q value out of range", name)
				}
			}
		} else {
			if cnt != 1 {
				return fmt.Errorf("vmstate: field %q has %d values, want 1", name, cnt)
			}
			if !set(v, le.Uint64(b)) {
				return fmt.Errorf("vmstate: field %q value out of range", name)
			}
		}
		b = b[8*cnt:]
	}
	return nil
}
