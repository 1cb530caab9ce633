package arm

// Instruction-set extensions beyond ARMv8.0 in the FP/AdvSIMD group, each executed
// only on a model whose ID registers advertise it (UNDEFINED otherwise, as on the
// silicon): the decoders live in their own files (rdm.go, dotprod.go, sha512.go,
// ...); decodeFPSIMDFeat tries them before the ARMv8.0 decoder (decodeFPSIMD, whose
// encodings they do not overlap: every one of them is UNDEFINED in ARMv8.0).

// isaFeat is a set of extensions a model executes.
type isaFeat uint32

const (
	featRDM     isaFeat = 1 << iota // ARMv8.1 SQRDMLAH/SQRDMLSH (rdm.go)
	featDotProd                     // ARMv8.2 SDOT/UDOT (dotprod.go)
	featSHA512                      // ARMv8.2 SHA512H/H2/SU0/SU1 (sha512.go)
	featSHA3                        // ARMv8.2 EOR3, RAX1, XAR, BCAX (sha512.go)
	featSM3                         // ARMv8.2 SM3SS1, SM3TT*, SM3PARTW* (sm.go)
	featSM4                         // ARMv8.2 SM4E, SM4EKEY (sm.go)
	featFP16                        // ARMv8.2 half-precision arithmetic (fp16.go)
)

// isaFeatures returns the extensions the model's ID registers advertise.
func (m *Model) isaFeatures() isaFeat {
	var f isaFeat
	field := func(reg uint64, lo uint) uint64 { return reg >> lo & 0xf }
	if field(m.ISAR0, 28) >= 1 {
		f |= featRDM
	}
	if field(m.ISAR0, 44) >= 1 {
		f |= featDotProd
	}
	if field(m.ISAR0, 12) >= 2 {
		f |= featSHA512
	}
	if field(m.ISAR0, 32) >= 1 {
		f |= featSHA3
	}
	if field(m.ISAR0, 36) >= 1 {
		f |= featSM3
	}
	if field(m.ISAR0, 40) >= 1 {
		f |= featSM4
	}
	if m.hasFP16() {
		f |= featFP16
	}
	return f
}

// decodeFPSIMDFeat is decodeFPSIMD for a model with the extensions f.
func decodeFPSIMDFeat(insn uint32, f isaFeat) func(*State) {
	if f != 0 {
		if g := decodeFPSIMDExt(insn, f); g != nil {
			return g
		}
	}
	return decodeFPSIMD(insn)
}

// decodeFPSIMDExt decodes the extension encodings of f (nil: not one of them).
func decodeFPSIMDExt(insn uint32, f isaFeat) func(*State) {
	if f&featFP16 != 0 {
		if g := decodeFP16(insn); g != nil {
			return g
		}
	}
	switch {
	case insn&0x9f208400 == 0x0e008400, insn&0xdf208400 == 0x5e008400:
		// AdvSIMD (scalar) three same extra: SQRDMLAH/SQRDMLSH, SDOT/UDOT
		if f&featRDM != 0 {
			if g := decodeRDM(insn); g != nil {
				return g
			}
		}
		if f&featDotProd != 0 {
			return decodeDot(insn)
		}
	case insn&0x9f000400 == 0x0f000000, insn&0xdf000400 == 0x5f000000:
		// AdvSIMD (scalar) x indexed element
		if f&featRDM != 0 {
			if g := decodeRDMIndexed(insn); g != nil {
				return g
			}
		}
		if f&featDotProd != 0 {
			return decodeDotIndexed(insn)
		}
	case insn>>24 == 0xce:
		// Cryptographic three/four register, XAR, two-register SHA512
		return decodeCryptoExt(insn, f)
	}
	return nil
}
