package arm

import "math/bits"

// Register access. Register number 31 is XZR or SP depending on the instruction; the
// decoder picks the accessor.

func (c *CPU) r(n uint32) uint64 {
	if n == 31 {
		return 0
	}
	return c.State.X[n]
}

func (c *CPU) rsp(n uint32) uint64 {
	if n == 31 {
		return *c.sp
	}
	return c.State.X[n]
}

func (c *CPU) w(n uint32, v uint64) {
	if n != 31 {
		c.State.X[n] = v
	}
}

func (c *CPU) wsp(n uint32, v uint64) {
	if n == 31 {
		*c.sp = v
	} else {
		c.State.X[n] = v
	}
}

// add64 and add32 are addWithCarry for a known width, small enough to inline into ops.
func add64(x, y, carry uint64) (uint64, uint64) {
	r, cout := bits.Add64(x, y, carry)
	f := (r>>63)<<31 | cout<<29 | (((x^r)&(y^r))>>63)<<28
	if r == 0 {
		f |= 1 << 30
	}
	return r, f
}

func add32(x, y, carry uint64) (uint64, uint64) {
	x32, y32 := uint32(x), uint32(y)
	s := uint64(x32) + uint64(y32) + carry
	r := uint32(s)
	f := uint64(r>>31)<<31 | (s>>32)<<29 | uint64(((x32^r)&(y32^r))>>31)<<28
	if r == 0 {
		f |= 1 << 30
	}
	return uint64(r), f
}

// addWithCarry returns x+y+carry truncated to 32 or 64 bits and the resulting NZCV
// (bits 31:28).
func addWithCarry(sf bool, x, y, carry uint64) (uint64, uint64) {
	if sf {
		r, cout := bits.Add64(x, y, carry)
		f := (r>>63)<<31 | cout<<29 | (((x^r)&(y^r))>>63)<<28
		if r == 0 {
			f |= 1 << 30
		}
		return r, f
	}
	x32, y32 := uint32(x), uint32(y)
	s := uint64(x32) + uint64(y32) + carry
	r := uint32(s)
	f := uint64(r>>31)<<31 | (s>>32)<<29 | uint64(((x32^r)&(y32^r))>>31)<<28
	if r == 0 {
		f |= 1 << 30
	}
	return uint64(r), f
}

// logicFlags returns NZCV for a logical result (C and V cleared).
func logicFlags(sf bool, r uint64) uint64 {
	if !sf {
		r = uint64(uint32(r)) << 32
	}
	f := (r >> 63) << 31
	if r == 0 {
		f |= 1 << 30
	}
	return f
}

// condMask[cond] has bit n set when the condition holds for NZCV value n.
var condMask = func() (m [16]uint16) {
	for cond := 0; cond < 16; cond++ {
		for f := 0; f < 16; f++ {
			n, z, cf, v := f>>3&1 == 1, f>>2&1 == 1, f>>1&1 == 1, f&1 == 1
			var r bool
			switch cond >> 1 {
			case 0:
				r = z
			case 1:
				r = cf
			case 2:
				r = n
			case 3:
				r = v
			case 4:
				r = cf && !z
			case 5:
				r = n == v
			case 6:
				r = n == v && !z
			case 7:
				r = true
			}
			if cond&1 == 1 && cond != 15 {
				r = !r
			}
			if r {
				m[cond] |= 1 << f
			}
		}
	}
	return
}()

func (c *CPU) cond(cond uint32) bool { return condMask[cond]>>(c.NZCV>>28&15)&1 != 0 }

// shiftReg applies a shifted-register operand shift (LSL, LSR, ASR, ROR).
func aluShift(sf bool, v uint64, typ, amt uint32) uint64 {
	if sf {
		switch typ {
		case 0:
			return v << amt
		case 1:
			return v >> amt
		case 2:
			return uint64(int64(v) >> amt)
		}
		return bits.RotateLeft64(v, -int(amt))
	}
	w := uint32(v)
	switch typ {
	case 0:
		return uint64(w << amt)
	case 1:
		return uint64(w >> amt)
	case 2:
		return uint64(uint32(int32(w) >> amt))
	}
	return uint64(bits.RotateLeft32(w, -int(amt)))
}

// extendReg applies an extended-register operand (UXTB..SXTX) and left shift.
func aluExtend(v uint64, option, shift uint32) uint64 {
	switch option {
	case 0:
		v = uint64(uint8(v))
	case 1:
		v = uint64(uint16(v))
	case 2:
		v = uint64(uint32(v))
	case 4:
		v = uint64(int64(int8(v)))
	case 5:
		v = uint64(int64(int16(v)))
	case 6:
		v = uint64(int64(int32(v)))
	}
	return v << shift
}

// decodeBitMasks implements the A64 DecodeBitMasks pseudo-code. ok=false for reserved
// encodings.
func decodeBitMasks(n, imms, immr uint32, immediate bool, datasize uint32) (wmask, tmask uint64, ok bool) {
	x := n<<6 | (^imms & 0x3f)
	if x == 0 {
		return 0, 0, false
	}
	length := uint32(bits.Len32(x)) - 1
	if length < 1 && immediate {
		return 0, 0, false
	}
	levels := uint32(1)<<length - 1
	if immediate && imms&levels == levels {
		return 0, 0, false
	}
	s := imms & levels
	r := immr & levels
	diff := (s - r) & 0x3f
	esize := uint32(1) << length
	if esize > datasize {
		return 0, 0, false
	}
	d := diff & levels
	welem := ones(s + 1)
	telem := ones(d + 1)
	welem = ror(welem, r, esize)
	wmask = replicate(welem, esize, datasize)
	tmask = replicate(telem, esize, datasize)
	return wmask, tmask, true
}

func ones(n uint32) uint64 {
	if n >= 64 {
		return ^uint64(0)
	}
	return 1<<n - 1
}

func ror(v uint64, r, size uint32) uint64 {
	if r == 0 {
		return v
	}
	m := ones(size)
	v &= m
	return (v>>r | v<<(size-r)) & m
}

func replicate(v uint64, esize, datasize uint32) uint64 {
	var out uint64
	for i := uint32(0); i < datasize; i += esize {
		out |= v << i
	}
	return out
}
