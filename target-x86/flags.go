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

// Lazy flags (lower.go): a flag-setting instruction lowered to IR does not compute
// RFLAGS' arithmetic bits; it stores its kind and size (op), operands (a, b), result
// (r) and carry in or computed carry (c) here, in the style of QEMU's i386 cc_op. The
// translator materializes RFLAGS from them in IR before anything in the block reads
// flags or leaves it (Jcc, SETcc, CMOVcc, rotates, every block exit), so RFLAGS is
// authoritative at block boundaries and op is zero there. Within a block, Go code that
// may run (helpers, TLB-miss and fault slow paths, exception delivery) calls syncFlags
// first. op == 0 means RFLAGS holds the flags.
type ccState struct {
	op, a, b, r, c uint64
	// rc and ro are CF and OF of rotates run since the record was made (ccRot set in
	// op): a rotate changes only those two, so it leaves the record in place.
	rc, ro uint64
}

// ccRot in ccState.op: CF and OF are rc and ro, not the record's.
const ccRot = 1 << 12

// Lazy flag kinds (ccState.op = kind<<4 | operand size).
const (
	ccAdd   = iota + 1 // CF = r < a
	ccAdc              // CF = r < a || r == a && c
	ccSub              // CF = a < b
	ccSbb              // CF = a < b || a == b && c
	ccInc              // CF = c (kept)
	ccDec              // CF = c (kept)
	ccLogic            // CF = OF = AF = 0
	ccShift            // CF = c, OF = b, AF = 0
	ccImul             // CF = OF = c, AF = 0
)

// lazyFlags computes the arithmetic flags s describes (s.op != 0).
func (s *ccState) lazyFlags() uint64 {
	kind, size := s.op>>4&0xff, int(s.op&0xf)
	m := sizeMask(size)
	a, b, r := s.a&m, s.b&m, s.r&m
	f := szp(r, size)
	var cf bool
	switch kind {
	case ccAdd:
		cf = r < a
	case ccAdc:
		cf = r < a || r == a && s.c != 0
	case ccSub:
		cf = a < b
	case ccSbb:
		cf = a < b || a == b && s.c != 0
	case ccInc, ccDec, ccShift, ccImul:
		cf = s.c&1 != 0
	}
	if cf {
		f |= flagCF
	}
	switch kind {
	case ccAdd, ccAdc, ccInc:
		if (a^r)&(b^r)&signBit(size) != 0 {
			f |= flagOF
		}
	case ccSub, ccSbb, ccDec:
		if (a^b)&(a^r)&signBit(size) != 0 {
			f |= flagOF
		}
	case ccShift:
		if s.b&1 != 0 {
			f |= flagOF
		}
	case ccImul:
		if cf {
			f |= flagOF
		}
	}
	if kind <= ccDec {
		f |= (a ^ b ^ r) & flagAF
	}
	if s.op&ccRot != 0 {
		f = f&^(flagCF|flagOF) | s.rc&1 | (s.ro&1)<<11
	}
	return f
}

// syncFlags materializes lazily computed flags into RFLAGS.
func (c *CPU) syncFlags() {
	if c.cc.op != 0 {
		c.RFLAGS = c.RFLAGS&^flagsArith | c.cc.lazyFlags()
		c.cc.op = 0
	}
}
