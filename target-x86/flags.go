package x86

import "math/bits"

// RFLAGS bits.
const (
	flagCF   = 1 << 0
	flagPF   = 1 << 2
	flagAF   = 1 << 4
	flagZF   = 1 << 6
	flagSF   = 1 << 7
	flagTF   = 1 << 8
	flagDF   = 1 << 10
	flagOF   = 1 << 11
	flagIOPL = 3 << 12
	flagNT   = 1 << 14
	flagRF   = 1 << 16
	flagVM   = 1 << 17
	flagAC   = 1 << 18
	flagVIF  = 1 << 19
	flagVIP  = 1 << 20
	flagID   = 1 << 21

	flagsArith = flagCF | flagPF | flagAF | flagZF | flagSF | flagOF
)

// Arithmetic flags are computed eagerly, per operation, by these helpers (the
// translator's helpers write them into RFLAGS at once).

func sizeMask(size int) uint64 { return ^uint64(0) >> (64 - 8*uint(size)) }
func signBit(size int) uint64  { return 1 << (8*uint(size) - 1) }

var parityTable = func() (t [256]bool) {
	for i := range t {
		t[i] = bits.OnesCount8(uint8(i))%2 == 0
	}
	return
}()

// szp returns ZF, SF and PF of result r (already truncated to size).
func szp(r uint64, size int) uint64 {
	var f uint64
	if r == 0 {
		f |= flagZF
	}
	if r&signBit(size) != 0 {
		f |= flagSF
	}
	if parityTable[uint8(r)] {
		f |= flagPF
	}
	return f
}

// addFlags returns a + b + cin truncated to size and its flags.
func addFlags(a, b, cin uint64, size int) (uint64, uint64) {
	m := sizeMask(size)
	a, b = a&m, b&m
	r := (a + b + cin) & m
	f := szp(r, size)
	var carry bool
	if size == 8 {
		_, co := bits.Add64(a, b, cin)
		carry = co != 0
	} else {
		carry = a+b+cin > m
	}
	if carry {
		f |= flagCF
	}
	if (a^r)&(b^r)&signBit(size) != 0 {
		f |= flagOF
	}
	if (a^b^r)&0x10 != 0 {
		f |= flagAF
	}
	return r, f
}

// subFlags returns a - b - bin truncated to size and its flags (CF is the borrow).
func subFlags(a, b, bin uint64, size int) (uint64, uint64) {
	m := sizeMask(size)
	a, b = a&m, b&m
	r := (a - b - bin) & m
	f := szp(r, size)
	if a < b || a-b < bin {
		f |= flagCF
	}
	if (a^b)&(a^r)&signBit(size) != 0 {
		f |= flagOF
	}
	if (a^b^r)&0x10 != 0 {
		f |= flagAF
	}
	return r, f
}

// logicFlags returns the flags of a logical result (CF, OF clear; AF left zero, as
// hardware does though the SDM calls it undefined).
func logicFlags(r uint64, size int) uint64 { return szp(r&sizeMask(size), size) }

// setArith replaces the arithmetic flags named by mask with f.
func (c *CPU) setArith(f, mask uint64) { c.RFLAGS = c.RFLAGS&^mask | f&mask }

// cond evaluates condition code cc (the low nibble of Jcc/SETcc/CMOVcc).
func cond(fl uint64, cc byte) bool {
	var r bool
	switch cc >> 1 {
	case 0:
		r = fl&flagOF != 0
	case 1:
		r = fl&flagCF != 0
	case 2:
		r = fl&flagZF != 0
	case 3:
		r = fl&(flagCF|flagZF) != 0
	case 4:
		r = fl&flagSF != 0
	case 5:
		r = fl&flagPF != 0
	case 6:
		r = (fl&flagSF != 0) != (fl&flagOF != 0)
	case 7:
		r = fl&flagZF != 0 || (fl&flagSF != 0) != (fl&flagOF != 0)
	}
	return r != (cc&1 != 0)
}
