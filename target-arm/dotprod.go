package arm

// ARMv8.2 FEAT_DotProd: SDOT and UDOT, vector and by element. Each 32-bit lane of Vd
// accumulates (modulo 2^32) the four products of the corresponding bytes of Vn and
// Vm (by element: of the 32-bit element Vm.4B[index]).

// dot4 is the sum of the four byte products of the words a and b, signed or not.
func dot4(a, b uint64, signed bool) uint64 {
	var sum uint64
	for i := uint(0); i < 32; i += 8 {
		x, y := a>>i&0xff, b>>i&0xff
		if signed {
			x, y = uint64(int64(int8(x))), uint64(int64(int8(y)))
		}
		sum += x * y
	}
	return sum
}

func dotLane(signed bool) laneFn {
	return func(a, b, acc uint64, _ *State) uint64 { return acc + dot4(a, b, signed) }
}

// decodeDot decodes the three-same-extra SDOT/UDOT (opcode 0010, size 10, vector
// only); nil for the other encodings of the class.
func decodeDot(insn uint32) func(*State) {
	if insn>>28&1 != 0 || fld(insn, 11, 4) != 0b0010 || fld(insn, 22, 2) != 2 {
		return nil
	}
	d, n, m := int(fld(insn, 0, 5)), int(fld(insn, 5, 5)), int(fld(insn, 16, 5))
	return vecOp(d, n, m, 2<<fld(insn, 30, 1), 2, dotLane(insn>>29&1 == 0))
}

// decodeDotIndexed decodes SDOT/UDOT by element (opcode 1110, size 10, vector only;
// the index is H:L, Rm all five bits); nil for the other encodings of the class.
func decodeDotIndexed(insn uint32) func(*State) {
	if insn>>28&1 != 0 || fld(insn, 12, 4) != 0b1110 || fld(insn, 22, 2) != 2 {
		return nil
	}
	d, n, m := int(fld(insn, 0, 5)), int(fld(insn, 5, 5)), int(fld(insn, 16, 5))
	idx := int(fld(insn, 11, 1)<<1 | fld(insn, 21, 1))
	return byElement(d, n, m, idx, 2<<fld(insn, 30, 1), 2, dotLane(insn>>29&1 == 0))
}
