package arm

// ARMv8.1 FEAT_RDM: SQRDMLAH and SQRDMLSH (signed saturating rounding doubling
// multiply accumulate/subtract returning high half), vector, scalar and by element,
// on 16- and 32-bit elements.

// sqrdmlah is one element of SQRDMLAH (sub false) or SQRDMLSH: the saturated high
// half of (acc << esize) ± 2*a*b + (1 << (esize-1)). As (acc << esize) has no low
// bits, that is acc + ((±a*b + (1 << (esize-2))) >> (esize-1)), which fits int64 for
// 32-bit elements (|a*b| <= 2^62). FPSR.QC records saturation.
func sqrdmlah(a, b, acc uint64, size uint, sub bool, s *State) uint64 {
	e := uint(8) << size
	p := sext(a, size) * sext(b, size)
	if sub {
		p = -p
	}
	return satS(sext(acc, size)+(p+1<<(e-2))>>(e-1), size, s)
}

func rdmLane(size uint, sub bool) laneFn {
	return func(a, b, acc uint64, s *State) uint64 { return sqrdmlah(a, b, acc, size, sub, s) }
}

// decodeRDM decodes the three-same-extra SQRDMLAH/SQRDMLSH, vector (bit 28 = 0) or
// scalar (bit 28 = 1); nil for the other opcodes of the class.
func decodeRDM(insn uint32) func(*State) {
	opc := fld(insn, 11, 4)
	size := uint(fld(insn, 22, 2))
	if insn>>29&1 == 0 || opc > 1 {
		return nil
	}
	if size == 0 || size == 3 {
		return nil
	}
	d, n, m := int(fld(insn, 0, 5)), int(fld(insn, 5, 5)), int(fld(insn, 16, 5))
	elems := 1
	if insn>>28&1 == 0 {
		elems = (8 << fld(insn, 30, 1)) >> size
	}
	return vecOp(d, n, m, elems, size, rdmLane(size, opc == 1))
}

// decodeRDMIndexed decodes SQRDMLAH/SQRDMLSH by element (opcode 1101/1111, U = 1),
// vector or scalar; nil for the other opcodes of the class.
func decodeRDMIndexed(insn uint32) func(*State) {
	opc := fld(insn, 12, 4)
	if insn>>29&1 == 0 || (opc != 0b1101 && opc != 0b1111) {
		return nil
	}
	size := uint(fld(insn, 22, 2))
	h, l, mbit := fld(insn, 11, 1), fld(insn, 21, 1), fld(insn, 20, 1)
	var idx, m int
	switch size {
	case 1:
		idx, m = int(h<<2|l<<1|mbit), int(fld(insn, 16, 4))
	case 2:
		idx, m = int(h<<1|l), int(fld(insn, 16, 5))
	default:
		return nil
	}
	d, n := int(fld(insn, 0, 5)), int(fld(insn, 5, 5))
	elems := 1
	if insn>>28&1 == 0 {
		elems = (8 << fld(insn, 30, 1)) >> size
	}
	return byElement(d, n, m, idx, elems, size, rdmLane(size, opc == 0b1111))
}
