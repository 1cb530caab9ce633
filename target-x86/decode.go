package x86

// The decoder: legacy prefixes (66, 67, F2, F3, segment overrides, LOCK), REX, the
// opcode maps (1-byte, 0F, 0F38, 0F3A), ModRM/SIB/displacement (RIP-relative in 64-bit
// mode) and immediates. It yields an insn the translator turns into a helper.

// insn is one decoded instruction.
type insn struct {
	pc, next uint64
	opsz     int // operand size: 2, 4 or 8
	adsz     int // address size: 2, 4 or 8
	mode64   bool
	csBase   uint64 // CS base at translation (legacy modes: RIP holds CS.Base+EIP)
	rex      byte   // 0x40..0x4f, or 0
	rep      byte   // 0xf3, 0xf2 or 0 (the last of them)
	pfx66    bool
	lock     bool
	seg      int    // segment override, -1 none
	mapn     int    // 0 one-byte, 1 0F, 2 0F38, 3 0F3A
	opc      byte   // opcode byte within the map
	modrm    bool   // has a ModRM byte
	mod      byte   // ModRM.mod
	reg      byte   // ModRM.reg | REX.R<<3
	rm       byte   // ModRM.rm | REX.B<<3 (register form), raw rm for memory forms
	hasMem   bool   // rm names memory
	base     int8   // -1 none
	index    int8   // -1 none
	scale    uint8  // shift count
	disp     uint64 // sign-extended displacement (RIP-relative: the absolute target, fixed up after the immediate)
	ripRel   bool
	imm      uint64 // sign- or zero-extended immediate as the form defines
	imm2     uint64 // ENTER's second immediate, far pointers' selector
	length   int
}

// byteReader reads code bytes during translation without raising exceptions.
type byteReader struct {
	c     *CPU
	va    uint64
	n     int
	bad   bool // a byte could not be fetched (the helper re-fetches it to fault)
	badVA uint64
	spans bool // a byte came from the next page
	page  uint64
	host  []byte // the first page (host memory)
	page2 uint64 // physical address of the second page when spans
	host2 []byte
}

func (r *byteReader) byte() byte {
	if r.n >= 15 {
		r.n++
		return 0
	}
	va := r.va
	r.va++
	r.n++
	if va&^0xfff == r.page {
		return r.host[va&0xfff]
	}
	if r.host2 == nil {
		pa, ok := r.c.probe(va &^ 0xfff)
		if !ok {
			if !r.bad {
				r.bad, r.badVA = true, va
			}
			return 0
		}
		b, _ := r.c.cfg.RAM.Slice(pa&^0xfff, 0x1000)
		r.host2, r.page2, r.spans = b, pa&^0xfff, true
	}
	return r.host2[va&0xfff]
}

func (r *byteReader) imm(size int) uint64 {
	var v uint64
	for i := 0; i < size; i++ {
		v |= uint64(r.byte()) << (8 * i)
	}
	return v
}

func sext(v uint64, size int) uint64 {
	s := 64 - 8*uint(size)
	return uint64(int64(v<<s) >> s)
}

// Opcode-shape tables for the one-byte map: which opcodes take a ModRM byte.
var modrm1 = func() (t [256]bool) {
	for _, r := range [][2]int{{0x00, 0x03}, {0x08, 0x0b}, {0x10, 0x13}, {0x18, 0x1b}, {0x20, 0x23},
		{0x28, 0x2b}, {0x30, 0x33}, {0x38, 0x3b}, {0x62, 0x63}, {0x69, 0x69}, {0x6b, 0x6b},
		{0x80, 0x8f}, {0xc0, 0xc1}, {0xc4, 0xc7}, {0xd0, 0xd3}, {0xd8, 0xdf}, {0xf6, 0xf7}, {0xfe, 0xff}} {
		for i := r[0]; i <= r[1]; i++ {
			t[i] = true
		}
	}
	return
}()

// modrm0F says which 0F-map opcodes take a ModRM byte.
var modrm0F = func() (t [256]bool) {
	for i := range t {
		t[i] = true
	}
	for _, o := range []int{0x05, 0x06, 0x07, 0x08, 0x09, 0x0b, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x37,
		0x77, 0xa0, 0xa1, 0xa2, 0xa8, 0xa9, 0xaa} {
		t[o] = false
	}
	for o := 0x80; o <= 0x8f; o++ {
		t[o] = false
	}
	for o := 0xc8; o <= 0xcf; o++ {
		t[o] = false
	}
	return
}()

// decode decodes the instruction at r.va. ok=false: more than 15 bytes (#GP) or a
// byte that could not be fetched (r.bad).
func decode(r *byteReader, mode64 bool, def32 bool) (in insn, ok bool) {
	in.pc = r.va
	in.seg = -1
	in.base, in.index = -1, -1
	in.mode64 = mode64
	in.opsz, in.adsz = 2, 2
	if mode64 {
		in.opsz, in.adsz = 4, 8
	} else if def32 {
		in.opsz, in.adsz = 4, 4
	}
	pfx67 := false
	var b byte
prefixes:
	for {
		b = r.byte()
		switch b {
		case 0x66:
			in.pfx66 = true
		case 0x67:
			pfx67 = true
		case 0xf2, 0xf3:
			in.rep = b
		case 0xf0:
			in.lock = true
		case 0x26, 0x2e, 0x36, 0x3e:
			if !mode64 {
				in.seg = int(b >> 3 & 3) // ES=0 CS=1 SS=2 DS=3
			}
		case 0x64:
			in.seg = segFS
		case 0x65:
			in.seg = segGS
		default:
			break prefixes
		}
	}
	if mode64 && b&0xf0 == 0x40 {
		in.rex = b
		b = r.byte()
	}
	if in.pfx66 {
		if in.opsz == 2 {
			in.opsz = 4
		} else {
			in.opsz = 2
		}
	}
	if in.rex&8 != 0 {
		in.opsz = 8
	}
	if pfx67 {
		switch in.adsz {
		case 8:
			in.adsz = 4
		case 4:
			in.adsz = 2
		default:
			in.adsz = 4
		}
	}
	in.opc = b
	hasModRM := modrm1[b]
	if b == 0x0f {
		b = r.byte()
		in.mapn, in.opc = 1, b
		hasModRM = modrm0F[b]
		if b == 0x38 || b == 0x3a {
			in.mapn = 2 + int(b>>1&1)
			if b == 0x3a {
				in.mapn = 3
			}
			in.opc = r.byte()
			hasModRM = true
		}
	}
	if hasModRM {
		decodeModRM(r, &in)
	}
	decodeImm(r, &in)
	in.length = r.n
	in.next = in.pc + uint64(r.n)
	if in.ripRel {
		in.disp += in.next
		if in.adsz == 4 {
			in.disp &= 0xffffffff
		}
	}
	if r.n > 15 || r.bad {
		return in, false
	}
	return in, true
}

func decodeModRM(r *byteReader, in *insn) {
	m := r.byte()
	in.modrm = true
	in.mod, in.reg, in.rm = m>>6, m>>3&7|(in.rex&4)<<1, m&7
	if in.mod == 3 {
		in.rm |= (in.rex & 1) << 3
		return
	}
	in.hasMem = true
	if in.adsz == 2 {
		// 16-bit addressing: BX+SI, BX+DI, BP+SI, BP+DI, SI, DI, BP, BX.
		bases := [8][2]int8{{3, 6}, {3, 7}, {5, 6}, {5, 7}, {6, -1}, {7, -1}, {5, -1}, {3, -1}}
		in.base, in.index = bases[in.rm][0], bases[in.rm][1]
		switch {
		case in.mod == 0 && in.rm == 6:
			in.base = -1
			in.disp = r.imm(2)
		case in.mod == 1:
			in.disp = sext(r.imm(1), 1)
		case in.mod == 2:
			in.disp = sext(r.imm(2), 2)
		}
		return
	}
	rm := in.rm
	if rm == 4 {
		sib := r.byte()
		in.scale = sib >> 6
		idx := sib>>3&7 | (in.rex&2)<<2
		if idx != 4 {
			in.index = int8(idx)
		}
		bse := sib&7 | (in.rex&1)<<3
		if sib&7 == 5 && in.mod == 0 {
			in.disp = sext(r.imm(4), 4)
		} else {
			in.base = int8(bse)
		}
	} else if rm == 5 && in.mod == 0 {
		in.disp = sext(r.imm(4), 4)
		in.ripRel = in.mode64
	} else {
		in.base = int8(rm | (in.rex&1)<<3)
	}
	switch in.mod {
	case 1:
		in.disp = sext(r.imm(1), 1)
	case 2:
		in.disp = sext(r.imm(4), 4)
	}
}

// immSize returns the operand-size immediate (at most 4 bytes, sign-extended to 64).
func immZ(in *insn) int {
	if in.opsz == 2 {
		return 2
	}
	return 4
}

func decodeImm(r *byteReader, in *insn) {
	o := in.opc
	s8 := func() { in.imm = sext(r.imm(1), 1) }
	sz := func() { n := immZ(in); in.imm = sext(r.imm(n), n) }
	switch in.mapn {
	case 0:
		switch {
		case o < 0x40 && o&7 == 4: // ALU AL, imm8
			s8()
		case o < 0x40 && o&7 == 5: // ALU eAX, immz
			sz()
		case o == 0x68 || o == 0x69 || o == 0x81 || o == 0xc7 || o == 0xa9:
			sz()
		case o == 0x6a || o == 0x6b || o == 0x80 || o == 0x82 || o == 0x83 || o == 0xc0 || o == 0xc1 ||
			o == 0xc6 || o == 0xa8 || o == 0xcd || o >= 0x70 && o <= 0x7f || o >= 0xe0 && o <= 0xe7 || o == 0xeb || o == 0xd4 || o == 0xd5:
			s8()
		case o >= 0xb0 && o <= 0xb7:
			in.imm = r.imm(1)
		case o >= 0xb8 && o <= 0xbf:
			if in.opsz == 8 {
				in.imm = r.imm(8)
			} else {
				in.imm = r.imm(in.opsz)
			}
		case o == 0xc2 || o == 0xca:
			in.imm = r.imm(2)
		case o == 0xc8:
			in.imm = r.imm(2)
			in.imm2 = r.imm(1)
		case o == 0xe8 || o == 0xe9:
			if in.mode64 {
				in.imm = sext(r.imm(4), 4)
			} else {
				sz()
			}
		case o >= 0xa0 && o <= 0xa3: // MOV moffs
			in.imm = r.imm(in.adsz)
		case o == 0xf6 || o == 0xf7:
			if in.reg&7 < 2 {
				if o == 0xf6 {
					s8()
				} else {
					sz()
				}
			}
		case o == 0x9a || o == 0xea:
			in.imm = r.imm(immZ(in))
			in.imm2 = r.imm(2)
		}
	case 1:
		switch {
		case o >= 0x80 && o <= 0x8f:
			if in.mode64 {
				in.imm = sext(r.imm(4), 4)
			} else {
				sz()
			}
		case o == 0x70 || o == 0x71 || o == 0x72 || o == 0x73 || o == 0xa4 || o == 0xac || o == 0xba ||
			o == 0xc2 || o == 0xc4 || o == 0xc5 || o == 0xc6:
			in.imm = r.imm(1)
		}
	case 3:
		in.imm = r.imm(1)
	}
}
