// Package statecodec is the small fixed-order binary encoding the PC chipset's
// devices (hw/intc/*, hw/timer) use for their bus.Stateful data: little-endian
// integers appended in a documented order, read back with bounds checks (a short or
// long record is an error, never a panic).
//
// It is internal to hw/: each device owns its field order and bumps its State
// Version when the order changes.
package statecodec

import (
	"encoding/binary"
	"errors"
)

// Enc appends fields.
type Enc struct{ B []byte }

func (e *Enc) U8(v uint8)   { e.B = append(e.B, v) }
func (e *Enc) U32(v uint32) { e.B = binary.LittleEndian.AppendUint32(e.B, v) }
func (e *Enc) U64(v uint64) { e.B = binary.LittleEndian.AppendUint64(e.B, v) }
func (e *Enc) I64(v int64)  { e.U64(uint64(v)) }
func (e *Enc) Bool(v bool) {
	if v {
		e.U8(1)
	} else {
		e.U8(0)
	}
}

// Dec reads fields; after the first short read every read returns zero and Err
// reports it.
type Dec struct {
	B   []byte
	err error
}

// ErrShort is the error of a record shorter than its fields.
var ErrShort = errors.New("state record too short")

func (d *Dec) take(n int) []byte {
	if d.err != nil || len(d.B) < n {
		d.err = ErrShort
		return make([]byte, n)
	}
	b := d.B[:n]
	d.B = d.B[n:]
	return b
}

func (d *Dec) U8() uint8   { return d.take(1)[0] }
func (d *Dec) U32() uint32 { return binary.LittleEndian.Uint32(d.take(4)) }
func (d *Dec) U64() uint64 { return binary.LittleEndian.Uint64(d.take(8)) }
func (d *Dec) I64() int64  { return int64(d.U64()) }
func (d *Dec) Bool() bool  { return d.U8() != 0 }

// Err returns the decoding error: a short record, or trailing bytes.
func (d *Dec) Err() error {
	if d.err == nil && len(d.B) != 0 {
		return errors.New("state record has trailing bytes")
	}
	return d.err
}

// Bytes appends a byte queue: u32 length, the bytes.
func (e *Enc) Bytes(b []byte) {
	e.U32(uint32(len(b)))
	e.B = append(e.B, b...)
}

// ErrTooLong is the error of a byte queue longer than its reader allows.
var ErrTooLong = errors.New("state record holds a queue longer than the device's")

// Bytes reads a queue Enc.Bytes wrote, of at most max bytes (a copy; nil when empty).
func (d *Dec) Bytes(max int) []byte {
	n := d.U32()
	if d.err != nil {
		return nil
	}
	if uint64(n) > uint64(max) {
		d.err = ErrTooLong
		return nil
	}
	b := d.take(int(n))
	if d.err != nil || n == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}
