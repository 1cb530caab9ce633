// Package fdt owns the flattened device tree (DTB, devicetree specification v0.3,
// format version 17): building a tree of nodes and properties, serialising it to a blob a
// kernel accepts, and parsing a blob back (for a user's -dtb, which the board amends
// with /chosen before boot).
//
// It must not know about any board, device model or accelerator: boards describe their
// hardware with it.
package fdt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

const (
	magic       = 0xd00dfeed
	tokBegin    = 1
	tokEnd      = 2
	tokProp     = 3
	tokNop      = 4
	tokEndTree  = 9
	headerSize  = 40
	version     = 17
	lastCompVer = 16
)

// Prop is one property: a name and its raw big-endian value.
type Prop struct {
	Name  string
	Value []byte
}

// Node is one device-tree node. Children and properties keep insertion order, which is
// the order they are written in.
type Node struct {
	Name     string
	Props    []Prop
	Children []*Node
}

// NewRoot returns an empty root node.
func NewRoot() *Node { return &Node{} }

// Child returns the child called name, creating it if absent.
func (n *Node) Child(name string) *Node {
	if c := n.Lookup(name); c != nil {
		return c
	}
	c := &Node{Name: name}
	n.Children = append(n.Children, c)
	return c
}

// Lookup returns the direct child called name, or nil.
func (n *Node) Lookup(name string) *Node {
	for _, c := range n.Children {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Path returns the node at a slash-separated path below n ("" or "/" is n), or nil.
func (n *Node) Path(p string) *Node {
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		if part == "" {
			continue
		}
		if n = n.Lookup(part); n == nil {
			return nil
		}
	}
	return n
}

// Prop returns the value of the named property and whether it exists.
func (n *Node) Prop(name string) ([]byte, bool) {
	for _, p := range n.Props {
		if p.Name == name {
			return p.Value, true
		}
	}
	return nil, false
}

// Set sets (or replaces) a property with a raw value.
func (n *Node) Set(name string, v []byte) {
	for i := range n.Props {
		if n.Props[i].Name == name {
			n.Props[i].Value = v
			return
		}
	}
	n.Props = append(n.Props, Prop{name, v})
}

// Delete removes a property if present.
func (n *Node) Delete(name string) {
	for i := range n.Props {
		if n.Props[i].Name == name {
			n.Props = append(n.Props[:i], n.Props[i+1:]...)
			return
		}
	}
}

// SetEmpty sets a boolean (zero-length) property.
func (n *Node) SetEmpty(name string) { n.Set(name, []byte{}) }

// SetU32 sets a property to a list of 32-bit cells.
func (n *Node) SetU32(name string, cells ...uint32) {
	b := make([]byte, 4*len(cells))
	for i, c := range cells {
		binary.BigEndian.PutUint32(b[4*i:], c)
	}
	n.Set(name, b)
}

// SetU64 sets a property to a list of 64-bit values, each written as two cells (the
// usual #address-cells = #size-cells = 2 encoding of reg).
func (n *Node) SetU64(name string, vals ...uint64) {
	b := make([]byte, 8*len(vals))
	for i, v := range vals {
		binary.BigEndian.PutUint64(b[8*i:], v)
	}
	n.Set(name, b)
}

// SetString sets a property to one or more NUL-terminated strings (a string list).
func (n *Node) SetString(name string, ss ...string) {
	var b []byte
	for _, s := range ss {
		b = append(b, s...)
		b = append(b, 0)
	}
	n.Set(name, b)
}

// MemReserve is one entry of the memory reservation block.
type MemReserve struct{ Addr, Size uint64 }

// Blob is a whole tree with its header fields.
type Blob struct {
	Root        *Node
	Reserve     []MemReserve
	BootCPUPhys uint32
}

// Marshal serialises the tree as a version 17 DTB.
func (b *Blob) Marshal() []byte {
	var strs []byte
	strOff := map[string]uint32{}
	nameOff := func(s string) uint32 {
		if o, ok := strOff[s]; ok {
			return o
		}
		o := uint32(len(strs))
		strs = append(strs, s...)
		strs = append(strs, 0)
		strOff[s] = o
		return o
	}
	var st []byte
	u32 := func(v uint32) { st = binary.BigEndian.AppendUint32(st, v) }
	pad := func() {
		for len(st)%4 != 0 {
			st = append(st, 0)
		}
	}
	var walk func(n *Node)
	walk = func(n *Node) {
		u32(tokBegin)
		st = append(st, n.Name...)
		st = append(st, 0)
		pad()
		for _, p := range n.Props {
			u32(tokProp)
			u32(uint32(len(p.Value)))
			u32(nameOff(p.Name))
			st = append(st, p.Value...)
			pad()
		}
		for _, c := range n.Children {
			walk(c)
		}
		u32(tokEnd)
	}
	root := b.Root
	if root == nil {
		root = NewRoot()
	}
	walk(root)
	u32(tokEndTree)

	rsvOff := uint32(headerSize) // already 8-byte aligned
	rsv := make([]byte, 0, 16*(len(b.Reserve)+1))
	for _, r := range b.Reserve {
		rsv = binary.BigEndian.AppendUint64(rsv, r.Addr)
		rsv = binary.BigEndian.AppendUint64(rsv, r.Size)
	}
	rsv = append(rsv, make([]byte, 16)...)
	structOff := rsvOff + uint32(len(rsv))
	stringsOff := structOff + uint32(len(st))
	total := stringsOff + uint32(len(strs))

	out := make([]byte, headerSize, total)
	h := []uint32{magic, total, structOff, stringsOff, rsvOff, version, lastCompVer,
		b.BootCPUPhys, uint32(len(strs)), uint32(len(st))}
	for i, v := range h {
		binary.BigEndian.PutUint32(out[4*i:], v)
	}
	out = append(out, rsv...)
	out = append(out, st...)
	out = append(out, strs...)
	return out
}

// ErrBadBlob is wrapped by every Parse error.
var ErrBadBlob = errors.New("not a valid flattened device tree")

// Parse reads a DTB (version 16 or later). It checks every offset and length against
// the blob's size, so a corrupt or hostile file gives an error, never a panic.
func Parse(data []byte) (*Blob, error) {
	bad := func(f string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrBadBlob, fmt.Sprintf(f, a...))
	}
	if len(data) < headerSize {
		return nil, bad("%d bytes is shorter than the header", len(data))
	}
	be := binary.BigEndian
	if be.Uint32(data) != magic {
		return nil, bad("bad magic %#x", be.Uint32(data))
	}
	total := be.Uint32(data[4:])
	structOff, stringsOff, rsvOff := be.Uint32(data[8:]), be.Uint32(data[12:]), be.Uint32(data[16:])
	ver, lastComp := be.Uint32(data[20:]), be.Uint32(data[24:])
	stringsSize, structSize := be.Uint32(data[32:]), be.Uint32(data[36:])
	if uint64(total) > uint64(len(data)) || total < headerSize {
		return nil, bad("total size %d does not match the %d-byte file", total, len(data))
	}
	if ver < 16 || lastComp > version {
		return nil, bad("unsupported version %d (last compatible %d)", ver, lastComp)
	}
	in := func(off, size uint32) bool { return uint64(off)+uint64(size) <= uint64(total) }
	if !in(structOff, structSize) || !in(stringsOff, stringsSize) || !in(rsvOff, 16) {
		return nil, bad("block offsets outside the blob")
	}
	b := &Blob{BootCPUPhys: be.Uint32(data[28:])}
	for off := rsvOff; ; off += 16 {
		if !in(off, 16) {
			return nil, bad("unterminated memory reservation block")
		}
		a, s := be.Uint64(data[off:]), be.Uint64(data[off+8:])
		if a == 0 && s == 0 {
			break
		}
		b.Reserve = append(b.Reserve, MemReserve{a, s})
	}
	st := data[structOff : structOff+structSize]
	strs := data[stringsOff : stringsOff+stringsSize]
	pos := 0
	next := func() (uint32, error) {
		if pos+4 > len(st) {
			return 0, bad("structure block ends early")
		}
		v := be.Uint32(st[pos:])
		pos += 4
		return v, nil
	}
	align := func() { pos = (pos + 3) &^ 3 }
	var stack []*Node
	for {
		tok, err := next()
		if err != nil {
			return nil, err
		}
		switch tok {
		case tokBegin:
			i := pos
			for i < len(st) && st[i] != 0 {
				i++
			}
			if i >= len(st) {
				return nil, bad("unterminated node name")
			}
			n := &Node{Name: string(st[pos:i])}
			pos = i + 1
			align()
			if len(stack) == 0 {
				if b.Root != nil {
					return nil, bad("more than one root node")
				}
				b.Root = n
			} else {
				p := stack[len(stack)-1]
				p.Children = append(p.Children, n)
			}
			stack = append(stack, n)
		case tokProp:
			if len(stack) == 0 {
				return nil, bad("property outside a node")
			}
			l, err := next()
			if err != nil {
				return nil, err
			}
			no, err := next()
			if err != nil {
				return nil, err
			}
			if uint64(pos)+uint64(l) > uint64(len(st)) || no >= uint32(len(strs)) {
				return nil, bad("property runs past its block")
			}
			end := int(no)
			for end < len(strs) && strs[end] != 0 {
				end++
			}
			if end >= len(strs) {
				return nil, bad("unterminated property name")
			}
			v := append([]byte{}, st[pos:pos+int(l)]...)
			pos += int(l)
			align()
			n := stack[len(stack)-1]
			n.Props = append(n.Props, Prop{string(strs[no:end]), v})
		case tokEnd:
			if len(stack) == 0 {
				return nil, bad("unbalanced end of node")
			}
			stack = stack[:len(stack)-1]
		case tokNop:
		case tokEndTree:
			if len(stack) != 0 || b.Root == nil {
				return nil, bad("tree ends inside a node")
			}
			return b, nil
		default:
			return nil, bad("unknown token %#x at offset %d", tok, pos-4)
		}
	}
}
