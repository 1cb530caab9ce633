package x86

// The CPU model CPUID reports: QEMU's qemu64 (AuthenticAMD, family 15 model 107
// stepping 1; SSE3 and CX16 on top of the PPro/SSE2 base; LM, SYSCALL, NX, LAHF_LM;
// the hypervisor bit) without SVM, which gemu does not implement. TestCPUIDMatchesQEMU
// compares the leaves with qemu-system-x86_64 -cpu qemu64.

// Feature bits a model may add (checked by the decoder for instructions CPUID gates).
const (
	featPOPCNT = 1 << iota
	featABM    // LZCNT
	featBMI1   // TZCNT
)

// Model is a CPUID model.
type Model struct {
	Vendor                string // 12 characters
	Family, ModelNo, Step uint32
	Leaf1ECX, Leaf1EDX    uint32
	Ext1ECX, Ext1EDX      uint32
	Name                  string // the brand string (at most 48 bytes)
	Extra                 uint32 // feat* bits (set with the matching CPUID bits)
}

const (
	cpuidFPU   = 1 << 0
	cpuidDE    = 1 << 2
	cpuidPSE   = 1 << 3
	cpuidTSC   = 1 << 4
	cpuidMSR   = 1 << 5
	cpuidPAE   = 1 << 6
	cpuidMCE   = 1 << 7
	cpuidCX8   = 1 << 8
	cpuidAPIC  = 1 << 9
	cpuidSEP   = 1 << 11
	cpuidMTRR  = 1 << 12
	cpuidPGE   = 1 << 13
	cpuidMCA   = 1 << 14
	cpuidCMOV  = 1 << 15
	cpuidPAT   = 1 << 16
	cpuidPSE36 = 1 << 17
	cpuidCLFSH = 1 << 19
	cpuidMMX   = 1 << 23
	cpuidFXSR  = 1 << 24
	cpuidSSE   = 1 << 25
	cpuidSSE2  = 1 << 26

	cpuidHypervisor = 1 << 31 // running under a hypervisor (QEMU sets it for every model)

	cpuidSSE3   = 1 << 0
	cpuidCX16   = 1 << 13
	cpuidPOPCNT = 1 << 23

	cpuidLAHF = 1 << 0
	cpuidABM  = 1 << 5

	cpuidSYSCALL = 1 << 11
	cpuidNX      = 1 << 20
	cpuidLM      = 1 << 29
)

// Qemu64 is QEMU's qemu64 model (the default).
var Qemu64 = Model{
	Vendor: "AuthenticAMD", Family: 15, ModelNo: 107, Step: 1,
	Leaf1EDX: cpuidFPU | cpuidDE | cpuidPSE | cpuidTSC | cpuidMSR | cpuidPAE | cpuidMCE | cpuidCX8 |
		cpuidAPIC | cpuidSEP | cpuidMTRR | cpuidPGE | cpuidMCA | cpuidCMOV | cpuidPAT | cpuidPSE36 |
		cpuidCLFSH | cpuidMMX | cpuidFXSR | cpuidSSE | cpuidSSE2,
	Leaf1ECX: cpuidSSE3 | cpuidCX16,
	Ext1EDX:  cpuidSYSCALL | cpuidNX | cpuidLM,
	Ext1ECX:  cpuidLAHF,
	Name:     "QEMU Virtual CPU version 2.5+",
}

// WithBitOps returns m plus POPCNT, LZCNT (ABM) and TZCNT (BMI1).
func (m Model) WithBitOps() Model {
	m.Leaf1ECX |= cpuidPOPCNT
	m.Ext1ECX |= cpuidABM
	m.Extra |= featPOPCNT | featABM | featBMI1
	return m
}

func (m *Model) has(f uint32) bool { return m.Extra&f != 0 }

func (c *CPU) model() *Model {
	if c.cfg.Model != nil {
		return c.cfg.Model
	}
	return &Qemu64
}

func str4(s string, i int) uint32 {
	var v uint32
	for k := 0; k < 4; k++ {
		if i+k < len(s) {
			v |= uint32(s[i+k]) << (8 * k)
		}
	}
	return v
}

// cpuid implements CPUID for leaf EAX, subleaf ECX.
func (c *CPU) cpuid() {
	m := c.model()
	leaf, sub := uint32(c.R[0]), uint32(c.R[1])
	var a, b, cx, d uint32
	switch leaf {
	case 0:
		a, b, d, cx = 0xd, str4(m.Vendor, 0), str4(m.Vendor, 4), str4(m.Vendor, 8)
	case 1:
		fam, ext := m.Family, uint32(0)
		if fam > 15 {
			fam, ext = 15, m.Family-15
		}
		a = m.Step | (m.ModelNo&0xf)<<4 | fam<<8 | (m.ModelNo>>4)<<16 | ext<<20
		b = uint32(c.cfg.ID)<<24 | 8<<8 // APIC ID, CLFLUSH line 64 bytes
		cx, d = m.Leaf1ECX|cpuidHypervisor, m.Leaf1EDX
		if c.CR4&cr4OSXSAVE != 0 {
			cx |= 1 << 27
		}
	case 0xb:
		if sub == 0 {
			a, b, cx = 0, 1, 1<<8
		} else {
			cx = sub & 0xff
		}
		d = uint32(c.cfg.ID)
	case 0x80000000:
		a, b, d, cx = 0x8000000a, str4(m.Vendor, 0), str4(m.Vendor, 4), str4(m.Vendor, 8)
	case 0x80000001:
		a = m.Step | (m.ModelNo&0xf)<<4 | min(m.Family, 15)<<8 | (m.ModelNo>>4)<<16
		cx, d = m.Ext1ECX, m.Ext1EDX|m.Leaf1EDX&0x0183f3ff // AMD mirrors leaf 1's EDX bits
	case 0x80000002, 0x80000003, 0x80000004:
		o := int(leaf-0x80000002) * 16
		a, b, cx, d = str4(m.Name, o), str4(m.Name, o+4), str4(m.Name, o+8), str4(m.Name, o+12)
	case 0x80000005:
		a, b, cx, d = 0x01ff01ff, 0x01ff01ff, 0x40020140, 0x40020140
	case 0x80000006: // L2/L3 as QEMU's legacy AMD cache info reports them
		b, cx, d = 0x42004200, 0x02008140, 0x00808140
	case 0x80000008:
		a = 48<<8 | 40 // 48-bit virtual, 40-bit physical
	}
	c.R[0], c.R[3], c.R[1], c.R[2] = uint64(a), uint64(b), uint64(cx), uint64(d)
}
