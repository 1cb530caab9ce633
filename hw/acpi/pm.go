package acpi

import (
	"encoding/binary"
	"sync"
	"time"

	"gemu/hw/bus"
)

// PMPorts places the fixed-hardware register block in port I/O. The block is
// PMBlockSize bytes: PM1a event (status, enable), PM1a control, PM timer, GPE0
// (status, enable).
type PMPorts struct {
	Base uint16
}

// Offsets and lengths within the PM block, as the FADT announces them.
const (
	pm1EvtOff = 0x0
	pm1EvtLen = 4
	pm1CntOff = 0x4
	pm1CntLen = 2
	pmTmrOff  = 0x8
	pmTmrLen  = 4
	gpe0Off   = 0xc
	gpe0Len   = 4

	// PMBlockSize is the number of ports the PM device occupies.
	PMBlockSize = 0x10
)

// PM1 register bits (ACPI 6.4 §4.8.3).
const (
	pm1CntSCIEn = 1 << 0
	pm1CntSlpEn = 1 << 13
	pm1SlpTypSh = 10

	// pmTimerHz is the ACPI PM timer frequency.
	pmTimerHz = 3579545
)

// PM is the ACPI fixed-hardware register block: PM1 status/enable/control, the PM
// timer and GPE0. The platform is always in ACPI mode (SCI_EN reads 1, there is no
// SMI command port). Writing SLP_TYP=SleepTypeS5 with SLP_EN calls PowerOff; other
// sleep types are not supported and are ignored, so the guest stays running.
type PM struct {
	mu       sync.Mutex
	sci      bus.IRQ
	powerOff func()
	start    time.Time
	sciHigh  bool

	pm1Sts, pm1En, pm1Cnt uint16
	gpeSts, gpeEn         uint16
}

// NewPM returns the PM block in its reset state. sci is the SCI line (level, active
// high); powerOff is called from the vCPU thread that requests S5.
func NewPM(sci bus.IRQ, powerOff func()) *PM {
	if sci == nil {
		sci = bus.NoIRQ
	}
	return &PM{sci: sci, powerOff: powerOff, start: time.Now(), pm1Cnt: pm1CntSCIEn}
}

// timer returns the free-running 32-bit PM timer value.
func (p *PM) timer() uint32 {
	d := time.Since(p.start)
	return uint32(uint64(d/time.Second)*pmTimerHz + uint64(d%time.Second)*pmTimerHz/uint64(time.Second))
}

// regs returns the block's current contents as bytes.
func (p *PM) regsLocked() [PMBlockSize]byte {
	var r [PMBlockSize]byte
	le := binary.LittleEndian
	le.PutUint16(r[pm1EvtOff:], p.pm1Sts)
	le.PutUint16(r[pm1EvtOff+2:], p.pm1En)
	le.PutUint16(r[pm1CntOff:], p.pm1Cnt)
	le.PutUint32(r[pmTmrOff:], p.timer())
	le.PutUint16(r[gpe0Off:], p.gpeSts)
	le.PutUint16(r[gpe0Off+2:], p.gpeEn)
	return r
}

// Read implements bus.Device.
func (p *PM) Read(_ bus.Access, off uint64, data []byte) {
	p.mu.Lock()
	r := p.regsLocked()
	p.mu.Unlock()
	for i := range data {
		if o := off + uint64(i); o < PMBlockSize {
			data[i] = r[o]
		} else {
			data[i] = 0xff
		}
	}
}

// Write implements bus.Device. Status registers are write-one-to-clear; SLP_EN is
// write-only and triggers the sleep transition.
func (p *PM) Write(_ bus.Access, off uint64, data []byte) {
	p.mu.Lock()
	var w, mask [PMBlockSize]byte
	for i, b := range data {
		if o := off + uint64(i); o < PMBlockSize {
			w[o], mask[o] = b, 0xff
		}
	}
	le := binary.LittleEndian
	reg := func(o int) (val, m uint16) { return le.Uint16(w[o:]), le.Uint16(mask[o:]) }
	if v, m := reg(pm1EvtOff); m != 0 {
		p.pm1Sts &^= v & m
	}
	if v, m := reg(pm1EvtOff + 2); m != 0 {
		p.pm1En = p.pm1En&^m | v&m
	}
	var sleep = -1
	if v, m := reg(pm1CntOff); m != 0 {
		n := p.pm1Cnt&^m | v&m
		if n&pm1CntSlpEn != 0 {
			sleep = int(n>>pm1SlpTypSh) & 7
		}
		// SCI_EN stays set; SLP_EN is write-only.
		p.pm1Cnt = n&^pm1CntSlpEn | pm1CntSCIEn
	}
	if v, m := reg(gpe0Off); m != 0 {
		p.gpeSts &^= v & m
	}
	if v, m := reg(gpe0Off + 2); m != 0 {
		p.gpeEn = p.gpeEn&^m | v&m
	}
	p.updateSCILocked()
	p.mu.Unlock()
	if sleep == SleepTypeS5 && p.powerOff != nil {
		p.powerOff()
	}
}

func (p *PM) updateSCILocked() {
	level := p.pm1Sts&p.pm1En != 0 || p.gpeSts&p.gpeEn != 0
	if level != p.sciHigh {
		p.sciHigh = level
		p.sci.Set(level)
	}
}

// RaiseGPE sets GPE0 status bit n (a general-purpose event, such as PCI hotplug's
// GPE 1); the SCI is raised if the guest has enabled it.
func (p *PM) RaiseGPE(n int) {
	p.mu.Lock()
	p.gpeSts |= 1 << n
	p.updateSCILocked()
	p.mu.Unlock()
}
