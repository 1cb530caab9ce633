package arm

// ARMv8.2 FEAT_SM3 and FEAT_SM4 (not yet implemented: the decoders decline).

func sm3PartW(d, n, m int, two bool) func(*State)     { return nil }
func sm4Op(d, n, m int, ekey bool) func(*State)       { return nil }
func sm3ss1(d, n, m, a int) func(*State)              { return nil }
func sm3tt(d, n, m, imm2 int, op uint32) func(*State) { return nil }
