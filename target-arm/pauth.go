package arm

// ARMv8.3 FEAT_PAuth with the architected QARMA5 algorithm (ID_AA64ISAR1_EL1.APA 1,
// GPA 1: no EPAC, PAuth2 or FPAC, as QEMU 7.2's max), on models whose ID registers
// advertise it:
//
//   - five 128-bit keys, APIAKey/APIBKey (instruction), APDAKey/APDBKey (data) and
//     APGAKey (generic), in the APxxKeyHi/Lo_EL1 registers (EL1 only);
//   - SCTLR_EL1.EnIA/EnIB/EnDA/EnDB enable the four address keys (for EL0 and EL1):
//     with a key disabled, its PAC and AUT instructions leave the pointer unchanged;
//   - PAC* insert a pointer authentication code, computed by ComputePAC from the
//     pointer (its PAC field replaced by the extension bits), a 64-bit modifier and
//     the key, into the bits between the top of the virtual address (64 - TnSZ) and
//     bit 54 (TBI set) or bit 63 (TBI clear, bit 55 kept as the range selector);
//   - AUT* recompute it on the stripped pointer: on a match they return the stripped
//     pointer, otherwise the stripped pointer with a two-bit error code (key A 01,
//     key B 10) in bits 54:53 (TBI) or 62:61, which makes it non-canonical so that a
//     later use faults (no FEAT_FPAC: AUT itself never faults);
//   - XPAC* strip without checking; PACGA returns the top 32 bits of a PAC.
//
// TBI for instruction addresses (PAC*I*, AUT*I*, XPACI, the branches) is TCR_EL1.TBIn
// and not TBIDn, as FEAT_PAuth's TBID bits say.

const (
	sctlrEnIA = 1 << 31
	sctlrEnIB = 1 << 30
	sctlrEnDA = 1 << 27
	sctlrEnDB = 1 << 13
)

// PAC keys, indices into sysRegs.pacKeys (two words each: lo, hi).
const (
	keyIA = iota
	keyIB
	keyDA
	keyDB
	keyGA
)

// hasPAuth reports whether the model advertises (and so executes) address and generic
// authentication (nil, as in unit tests' bare CPUs: no).
func (m *Model) hasPAuth() bool { return m != nil && (m.ISAR1>>4&0xf != 0 || m.ISAR1>>8&0xf != 0) }

// pacEnable is the SCTLR_EL1 enable bit of each address key.
var pacEnable = [4]uint64{sctlrEnIA, sctlrEnIB, sctlrEnDA, sctlrEnDB}

// QARMA5 as ComputePAC of the Arm ARM: 64-bit state of sixteen 4-bit cells (cell i in
// bits 4i+3:4i).

var (
	pacSbox     = [16]uint8{0xb, 0x6, 0x8, 0xf, 0xc, 0x0, 0x9, 0xe, 0x3, 0x7, 0x4, 0x5, 0xd, 0x2, 0x1, 0xa}
	pacShuffle  = [16]uint8{13, 6, 11, 0, 7, 12, 1, 10, 8, 3, 14, 5, 2, 9, 4, 15} // out cell i = in cell pacShuffle[i]
	tweakOrder  = [16]uint8{4, 5, 6, 7, 11, 2, 3, 8, 12, 13, 14, 15, 0, 1, 10, 9} // the same for TweakShuffle
	tweakRotate = uint16(1<<2 | 1<<4 | 1<<7 | 1<<11 | 1<<12 | 1<<14 | 1<<15)      // output cells TweakShuffle rotates

	pacInvSbox    = inverse(&pacSbox)
	pacInvShuffle = inverse(&pacShuffle)
	tweakInvOrder = inverse(&tweakOrder)
)

// inverse is the inverse of the permutation p of 0..15 (as a variable initializer, so
// that the tables built from it below see it).
func inverse(p *[16]uint8) (q [16]uint8) {
	for i := range 16 {
		q[p[i]] = uint8(i)
	}
	return q
}

func cell(v uint64, i uint8) uint64 { return v >> (4 * i) & 0xf }

func pacPermute(v uint64, order *[16]uint8) uint64 {
	var o uint64
	for i := range uint8(16) {
		o |= cell(v, order[i]) << (4 * i)
	}
	return o
}

func pacSubst(v uint64, box *[16]uint8) uint64 {
	var o uint64
	for i := range uint8(16) {
		o |= uint64(box[cell(v, i)]) << (4 * i)
	}
	return o
}

// rotCell rotates a cell left by n.
func rotCell(c uint64, n uint) uint64 { return (c<<n | c>>(4-n)) & 0xf }

// pacMult is PACMult: each column (cells i, i+4, i+8, i+12) times the involutory
// matrix circ(0, rho, rho^2, rho).
func pacMult(v uint64) uint64 {
	var o uint64
	for i := range uint8(4) {
		a, b, c, d := cell(v, i), cell(v, i+4), cell(v, i+8), cell(v, i+12)
		o |= (rotCell(d, 1) ^ rotCell(c, 2) ^ rotCell(b, 1)) << (4 * i)
		o |= (rotCell(d, 2) ^ rotCell(c, 1) ^ rotCell(a, 1)) << (4 * (i + 4))
		o |= (rotCell(d, 1) ^ rotCell(b, 1) ^ rotCell(a, 2)) << (4 * (i + 8))
		o |= (rotCell(c, 1) ^ rotCell(b, 2) ^ rotCell(a, 1)) << (4 * (i + 12))
	}
	return o
}

// tweakShuffle is TweakShuffle: a cell permutation with the LFSR
// (b3 b2 b1 b0) -> (b0^b1 b3 b2 b1) on seven cells.
func tweakShuffle(v uint64) uint64 {
	var o uint64
	for i := range uint8(16) {
		c := cell(v, tweakOrder[i])
		if tweakRotate>>i&1 != 0 {
			c = c>>1 | (c^c>>1)&1<<3
		}
		o |= c << (4 * i)
	}
	return o
}

// tweakInvShuffle is TweakInvShuffle, the inverse of tweakShuffle.
func tweakInvShuffle(v uint64) uint64 {
	var o uint64
	for j := range uint8(16) {
		c := cell(v, tweakInvOrder[j]) // input cell i = tweakInvOrder[j] came from cell j
		if tweakRotate>>tweakInvOrder[j]&1 != 0 {
			c = c<<1&0xf | (c^c>>3)&1
		}
		o |= c << (4 * j)
	}
	return o
}

var pacRC = [5]uint64{0, 0x13198a2e03707344, 0xa4093822299f31d0, 0x082efa98ec4e6c89, 0x452821e638d01377}

const pacAlpha = 0xc0ac29b7c97c50dd

// computePACRef is ComputePAC(data, modifier, key<127:64>, key<63:0>) layer by layer as
// the Arm ARM writes it; computePAC is the same with table-driven layers.
func computePACRef(data, modifier, hi, lo uint64) uint64 {
	k0, k1 := hi, lo
	modk0 := k0<<63 | (k0>>1 ^ k0>>63)
	mod := modifier
	w := data ^ k0
	for i := range 5 {
		w ^= k1 ^ mod ^ pacRC[i]
		if i > 0 {
			w = pacMult(pacPermute(w, &pacShuffle))
		}
		w = pacSubst(w, &pacSbox)
		mod = tweakShuffle(mod)
	}
	w ^= modk0 ^ mod
	w = pacMult(pacPermute(w, &pacShuffle))
	w = pacSubst(w, &pacSbox)
	w = pacMult(pacPermute(w, &pacShuffle))
	w ^= k1
	w = pacPermute(w, &pacInvShuffle)
	w = pacMult(pacSubst(w, &pacInvSbox))
	w = pacPermute(w, &pacInvShuffle)
	w ^= k0 ^ mod
	for i := range 5 {
		w = pacSubst(w, &pacInvSbox)
		if i < 4 {
			w = pacPermute(pacMult(w), &pacInvShuffle)
		}
		mod = tweakInvShuffle(mod)
		w ^= pacRC[4-i] ^ k1 ^ mod ^ pacAlpha
	}
	return w ^ modk0
}

// QARMA5's layers but the S-box are linear over GF(2) (cell permutations, PACMult's
// cell rotations and XORs, the tweak LFSR), so each is the XOR of eight 256-entry
// tables, one per input byte (pacTables, built from the layer-by-layer functions).
type byteTables [8][256]uint64

func (t *byteTables) apply(v uint64) uint64 {
	return t[0][v&0xff] ^ t[1][v>>8&0xff] ^ t[2][v>>16&0xff] ^ t[3][v>>24&0xff] ^
		t[4][v>>32&0xff] ^ t[5][v>>40&0xff] ^ t[6][v>>48&0xff] ^ t[7][v>>56]
}

func newByteTables(f func(uint64) uint64) *byteTables {
	t := new(byteTables)
	for k := range 8 {
		for b := range 256 {
			t[k][b] = f(uint64(b) << (8 * k))
		}
	}
	return t
}

var (
	pacLin      = newByteTables(func(v uint64) uint64 { return pacMult(pacPermute(v, &pacShuffle)) })
	pacInvLin   = newByteTables(func(v uint64) uint64 { return pacPermute(pacMult(v), &pacInvShuffle) })
	pacInvPerm  = newByteTables(func(v uint64) uint64 { return pacPermute(v, &pacInvShuffle) })
	pacTweak    = newByteTables(tweakShuffle)
	pacInvTweak = newByteTables(tweakInvShuffle)

	pacSbox8, pacInvSbox8 = sbox8(&pacSbox), sbox8(&pacInvSbox) // the S-boxes on two cells
)

func sbox8(box *[16]uint8) (t [256]uint8) {
	for b := range 256 {
		t[b] = box[b>>4]<<4 | box[b&15]
	}
	return t
}

func sub8(v uint64, box *[256]uint8) uint64 {
	return uint64(box[v&0xff]) | uint64(box[v>>8&0xff])<<8 | uint64(box[v>>16&0xff])<<16 |
		uint64(box[v>>24&0xff])<<24 | uint64(box[v>>32&0xff])<<32 | uint64(box[v>>40&0xff])<<40 |
		uint64(box[v>>48&0xff])<<48 | uint64(box[v>>56])<<56
}

// computePAC is ComputePAC(data, modifier, key<127:64>, key<63:0>).
func computePAC(data, modifier, hi, lo uint64) uint64 {
	k0, k1 := hi, lo
	modk0 := k0<<63 | (k0>>1 ^ k0>>63)
	mod := modifier
	w := data ^ k0
	for i := range 5 {
		w ^= k1 ^ mod ^ pacRC[i]
		if i > 0 {
			w = pacLin.apply(w)
		}
		w = sub8(w, &pacSbox8)
		mod = pacTweak.apply(mod)
	}
	w ^= modk0 ^ mod
	w = sub8(pacLin.apply(w), &pacSbox8)
	w = pacLin.apply(w) ^ k1
	w = sub8(pacInvPerm.apply(w), &pacInvSbox8)
	w = pacInvLin.apply(w) ^ k0 ^ mod
	for i := range 5 {
		w = sub8(w, &pacInvSbox8)
		if i < 4 {
			w = pacInvLin.apply(w)
		}
		mod = pacInvTweak.apply(mod)
		w ^= pacRC[4-i] ^ k1 ^ mod ^ pacAlpha
	}
	return w ^ modk0
}

// pacField returns the PAC field of ptr, bits top-1:bot, for an instruction (data
// false) or data address in the EL1&0 regime: bot = 64 - TnSZ (TnSZ limited to the
// 16..39 gemu's MMU implements), top = 56 with TBI, 64 without; bit 55 selects TTBR0
// or TTBR1's parameters.
func (c *CPU) pacField(ptr uint64, data bool) (bot, top uint) {
	tcr := c.sr.tcr
	tsz, tbi, tbid := tcr&0x3f, tcr>>37&1, tcr>>51&1
	if ptr>>55&1 != 0 {
		tsz, tbi, tbid = tcr>>16&0x3f, tcr>>38&1, tcr>>52&1
	}
	tsz = min(max(tsz, 16), 39)
	if !data {
		tbi &^= tbid
	}
	return uint(64 - tsz), uint(64 - 8*tbi)
}

func fieldMask(bot, top uint) uint64 { return (^uint64(0) >> (64 - (top - bot))) << bot }

// pacOriginal is the pointer with its PAC field replaced by copies of bit 55.
func pacOriginal(ptr uint64, bot, top uint) uint64 {
	m := fieldMask(bot, top)
	return ptr&^m | -(ptr>>55&1)&m
}

// pacCache remembers recent PACs: a function's AUTIASP recomputes the PAC of its
// PACIASP, and a function called again from the same site with the same stack
// pointer signs the same return address. Entries carry the key itself, so a key
// write (or a snapshot restore) needs no invalidation.
type pacCache [256]struct{ data, mod, hi, lo, pac uint64 }

// pac is computePAC(data, mod, key k), through the CPU's pacCache.
func (c *CPU) pac(data, mod uint64, k int) uint64 {
	hi, lo := c.sr.pacKeys[2*k+1], c.sr.pacKeys[2*k]
	h := (data ^ mod*0x9e3779b97f4a7c15 ^ lo) * 0xff51afd7ed558ccd >> 56
	e := &c.pacCache[h]
	if e.data == data && e.mod == mod && e.hi == hi && e.lo == lo && (e.pac|data|mod|hi|lo) != 0 {
		return e.pac
	}
	p := computePAC(data, mod, hi, lo)
	e.data, e.mod, e.hi, e.lo, e.pac = data, mod, hi, lo, p
	return p
}

// addPAC is AddPAC with key k.
func (c *CPU) addPAC(ptr, mod uint64, k int, data bool) uint64 {
	bot, top := c.pacField(ptr, data)
	extBit := uint(63)
	if top == 56 {
		extBit = 55
	}
	ext := -(ptr >> extBit & 1)
	m := fieldMask(bot, top)
	pac := c.pac(ptr&^m|ext&m, mod, k)
	if f := ptr & m; f != 0 && f != m {
		pac ^= 1 << (top - 2) // non-canonical pointer: a PAC that cannot authenticate
	}
	if top == 56 {
		return ptr&^fieldMask(bot, 56) | pac&fieldMask(bot, 55) | ext&(1<<55)
	}
	low := uint64(1)<<bot - 1
	return ptr&low | pac&^(1<<55|low) | ext&(1<<55)
}

// auth is Auth with key k.
func (c *CPU) auth(ptr, mod uint64, k int, data bool) uint64 {
	bot, top := c.pacField(ptr, data)
	orig := pacOriginal(ptr, bot, top)
	pac := c.pac(orig, mod, k)
	if (pac^ptr)&^(1<<55)&fieldMask(bot, top) == 0 {
		return orig
	}
	code := uint64(1) // key A: 01, key B: 10
	if k&1 != 0 {
		code = 2
	}
	at := uint(61)
	if top == 56 {
		at = 53
	}
	return orig&^(3<<at) | code<<at
}

// strip is Strip (XPACI, XPACD).
func (c *CPU) strip(ptr uint64, data bool) uint64 {
	bot, top := c.pacField(ptr, data)
	return pacOriginal(ptr, bot, top)
}

// pacOp is PAC* (auth false) or AUT* with address key k: unchanged while the key is
// disabled in SCTLR_EL1.
func (c *CPU) pacOp(auth bool, ptr, mod uint64, k int) uint64 {
	if c.sr.sctlr&pacEnable[k] == 0 {
		return ptr
	}
	if auth {
		return c.auth(ptr, mod, k, k >= keyDA)
	}
	return c.addPAC(ptr, mod, k, k >= keyDA)
}

// decodePAC1 decodes data-processing (1 source) with opcode2 00001: PACIA ... AUTDB
// (opcode 0-7, modifier Xn|SP), their Z forms (8-15, Rn 31, modifier 0), XPACI (16)
// and XPACD (17).
func decodePAC1(insn uint32, pc uint64) (op, bool) {
	opc, rn, rd := insn>>10&0x3f, insn>>5&31, insn&31
	switch {
	case opc < 8:
		auth, k := opc&4 != 0, int(opc&3)
		return func(c *CPU) bool {
			if !c.model.hasPAuth() {
				return c.undef(pc)
			}
			c.w(rd, c.pacOp(auth, c.r(rd), c.rsp(rn), k))
			return true
		}, false
	case opc < 16 && rn == 31:
		auth, k := opc&4 != 0, int(opc&3)
		return func(c *CPU) bool {
			if !c.model.hasPAuth() {
				return c.undef(pc)
			}
			c.w(rd, c.pacOp(auth, c.r(rd), 0, k))
			return true
		}, false
	case (opc == 16 || opc == 17) && rn == 31:
		data := opc == 17
		return func(c *CPU) bool {
			if !c.model.hasPAuth() {
				return c.undef(pc)
			}
			c.w(rd, c.strip(c.r(rd), data))
			return true
		}, false
	}
	return undefOp(pc), true
}

// pacga is PACGA Xd, Xn, Xm|SP.
func pacga(rd, rn, rm uint32, pc uint64) op {
	return func(c *CPU) bool {
		if !c.model.hasPAuth() {
			return c.undef(pc)
		}
		c.w(rd, c.pac(c.r(rn), c.rsp(rm), keyGA)&0xffffffff00000000)
		return true
	}
}

// isPACHint reports whether the HINT with CRm:op2 n is a pointer authentication
// instruction (XPACLRI, PAC/AUT*1716, PAC/AUT*Z, PAC/AUT*SP).
func isPACHint(n uint32) bool {
	return n == 7 || n == 8 || n == 10 || n == 12 || n == 14 || n >= 24 && n <= 31
}

// pacHintInsn reports whether insn is one of the isPACHint hints.
func pacHintInsn(insn uint32) bool { return insn&0xfffff01f == 0xd503201f && isPACHint(insn>>5&0x7f) }

// pacHint is the PAC hint CRm:op2 n (isPACHint) on a model with FEAT_PAuth.
func pacHint(n uint32) op {
	if n == 7 { // XPACLRI
		return func(c *CPU) bool { c.State.X[30] = c.strip(c.State.X[30], false); return true }
	}
	auth := n&4 != 0
	k := int(n >> 1 & 1)
	if n < 16 { // PACIA1716, PACIB1716, AUTIA1716, AUTIB1716
		return func(c *CPU) bool {
			c.State.X[17] = c.pacOp(auth, c.State.X[17], c.State.X[16], k)
			return true
		}
	}
	sp := n&1 != 0 // ...SP: modifier SP; ...Z: 0
	return func(c *CPU) bool {
		var mod uint64
		if sp {
			mod = *c.sp
		}
		c.State.X[30] = c.pacOp(auth, c.State.X[30], mod, k)
		return true
	}
}

// decodePACBranch decodes the authenticated branches of unconditional branch
// (register), opc (bits 24:21) and op3 (bits 15:10) 00001M with key A (M 0) or B:
// BRAAZ/BRABZ, BLRAAZ/BLRABZ, RETAA/RETAB, ERETAA/ERETAB (modifier 0 or SP) and
// BRAA/BRAB, BLRAA/BLRAB (modifier Xm|SP). ok is false for other encodings.
func (c *CPU) decodePACBranch(insn uint32, pc uint64) (o op, ok bool) {
	opc, rn, op4 := insn>>21&15, insn>>5&31, insn&31
	if insn>>16&31 != 31 || insn>>11&31 != 1 || !c.model.hasPAuth() {
		return nil, false
	}
	k := int(insn >> 10 & 1)
	ret := pc + 4
	switch {
	case (opc == 0 || opc == 1) && op4 == 31: // BRAAZ, BLRAAZ
		link := opc == 1
		return func(c *CPU) bool {
			t := c.pacOp(true, c.r(rn), 0, k)
			if link {
				c.State.X[30] = ret
			}
			c.PC = t
			return false
		}, true
	case opc == 2 && rn == 31 && op4 == 31: // RETAA
		return func(c *CPU) bool { c.PC = c.pacOp(true, c.State.X[30], *c.sp, k); return false }, true
	case opc == 4 && rn == 31 && op4 == 31: // ERETAA
		return func(c *CPU) bool {
			if c.el == 0 {
				return c.undef(pc)
			}
			elr := c.sr.elr // ELR_EL1 itself keeps its PAC
			c.sr.elr = c.pacOp(true, elr, *c.sp, k)
			c.eret()
			c.sr.elr = elr
			return false
		}, true
	case opc == 8 || opc == 9: // BRAA, BLRAA
		link := opc == 9
		return func(c *CPU) bool {
			t := c.pacOp(true, c.r(rn), c.rsp(op4), k)
			if link {
				c.State.X[30] = ret
			}
			c.PC = t
			return false
		}, true
	}
	return nil, false
}

// ldraa is LDRAA/LDRAB Xt, [Xn|SP, #simm10*8]{!}: the address authenticated with key
// DA (M 0) or DB and modifier 0, then a 64-bit load, with writeback of the address.
func ldraa(insn uint32, pc uint64) (op, bool) {
	if insn>>30 != 3 || insn>>26&1 != 0 {
		return undefOp(pc), true
	}
	k := keyDA + int(insn>>23&1)
	off := signExt(uint64(insn>>22&1)<<12|uint64(insn>>12&0x1ff)<<3, 13)
	wback := insn>>11&1 != 0
	rn, rt := insn>>5&31, insn&31
	return func(c *CPU) bool {
		if !c.model.hasPAuth() {
			return c.undef(pc)
		}
		c.PC = pc
		va := c.pacOp(true, c.rsp(rn), 0, k) + off
		v, ok := c.ld64(va)
		if !ok {
			return false
		}
		if wback {
			c.wsp(rn, va)
		}
		c.w(rt, v)
		return true
	}, false
}

// Key registers APIAKeyLo_EL1 ... APGAKeyHi_EL1: op0 3, op1 0, CRn 2, CRm 1-3.
func pacKeyIndex(k uint32) (int, bool) {
	if k>>7 != 3<<7|0<<4|2 {
		return 0, false
	}
	crm, op2 := k>>3&15, k&7
	switch {
	case crm == 1 && op2 < 4, crm == 2 && op2 < 4, crm == 3 && op2 < 2:
		return int((crm-1)*4 + op2), true
	}
	return 0, false
}

// pacReadSys and pacWriteSys implement MRS/MSR of the key registers (mine = the key
// is one of them; UNDEFINED without FEAT_PAuth).
func (c *CPU) pacReadSys(k uint32) (v uint64, ok, mine bool) {
	i, mine := pacKeyIndex(k)
	if !mine {
		return 0, false, false
	}
	return c.sr.pacKeys[i], c.model.hasPAuth(), true
}

func (c *CPU) pacWriteSys(k uint32, v uint64) (ok, mine bool) {
	i, mine := pacKeyIndex(k)
	if !mine {
		return false, false
	}
	if !c.model.hasPAuth() {
		return false, true
	}
	c.sr.pacKeys[i] = v
	return true, true
}
