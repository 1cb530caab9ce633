// Package gpio owns general-purpose I/O devices: the ARM PrimeCell PL061 GPIO controller
// (DDI 0190) as QEMU's hw/gpio/pl061.c models it (8 lines; address-masked data
// register; edge, both-edge and level interrupts into one level line; the PrimeCell ID
// Linux's gpio-pl061 driver probes), and Key, QEMU's gpio-key: a button that, pressed,
// drives its line high and lets it go 100 ms later (the virt board's power button).
//
// It must not know about accelerators, boards or the device tree.
package gpio

import (
	"fmt"
	"sync"
	"time"

	"gemu/hw/bus"
)

// PL061 register offsets.
const (
	RegData  = 0x000 // 0x000-0x3fc: offset bits 9:2 mask the lines accessed
	RegDir   = 0x400 // 1 = output
	RegIS    = 0x404 // interrupt sense: 1 = level
	RegIBE   = 0x408 // both edges
	RegIEV   = 0x40c // event: rising edge / high level when 1
	RegIE    = 0x410 // mask: 1 = enabled
	RegRIS   = 0x414
	RegMIS   = 0x418
	RegIC    = 0x41c // write 1 to clear an edge interrupt
	RegAFSEL = 0x420
	regID    = 0xfe0
	Size     = 0x1000
	Lines    = 8
)

// pl061IDs are PeriphID0-3 (part 0x061, designer ARM, revision r1) and the PrimeCell ID.
var pl061IDs = [8]byte{0x61, 0x10, 0x04, 0x00, 0x0d, 0xf0, 0x05, 0xb1}

// PL061 is one GPIO controller. Its methods are safe from any goroutine.
type PL061 struct {
	irq bus.IRQ
	out [Lines]bus.IRQ // where output lines go (nil: nowhere)

	mu                          sync.Mutex
	outv, in, dir               uint8 // driven output values, input levels, directions
	is, ibe, iev, ie, ris, afsl uint8
}

// NewPL061 returns a controller whose combined interrupt is irq.
func NewPL061(irq bus.IRQ) *PL061 {
	if irq == nil {
		irq = bus.NoIRQ
	}
	return &PL061{irq: irq}
}

// ConnectOutput makes line n, when the guest drives it as an output, drive l.
func (g *PL061) ConnectOutput(n int, l bus.IRQ) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.out[n] = l
}

// Input returns the input side of line n, for a device (such as Key) to drive.
func (g *PL061) Input(n int) bus.IRQ {
	return bus.IRQFunc(func(level bool) { g.SetInput(n, level) })
}

// SetInput sets the level an external device drives on line n (0-7).
func (g *PL061) SetInput(n int, level bool) {
	if n < 0 || n >= Lines {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.levels()
	bit := uint8(1) << n
	if level {
		g.in |= bit
	} else {
		g.in &^= bit
	}
	g.latch(old)
	g.update()
}

// levels are the lines' current levels: outputs read back what is driven.
func (g *PL061) levels() uint8 { return g.outv&g.dir | g.in&^g.dir }

// latch records the edge interrupts of the change from old to the current levels.
// Only input lines interrupt, as in QEMU's model (an output's own writes do not).
func (g *PL061) latch(old uint8) {
	now := g.levels()
	changed := (old ^ now) &^ g.dir
	edge := changed &^ g.is
	rising := edge & now
	falling := edge &^ now
	g.ris |= edge&g.ibe | rising&^g.ibe&g.iev | falling&^g.ibe&^g.iev
}

// update recomputes level interrupts and drives the combined line. Called with mu held.
func (g *PL061) update() {
	lv := g.levels()
	level := g.is &^ (lv ^ g.iev) // level-sensitive lines at their active level
	g.ris = g.ris&^g.is | level
	g.irq.Set(g.ris&g.ie != 0)
}

// Reset implements bus.Resetter: every line an input, interrupts off (inputs keep
// what the outside drives).
func (g *PL061) Reset() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.outv, g.dir, g.is, g.ibe, g.iev, g.ie, g.ris, g.afsl = 0, 0, 0, 0, 0, 0, 0, 0
	g.update()
}

// Read implements bus.Device.
func (g *PL061) Read(_ bus.Access, off uint64, data []byte) {
	clear(data)
	var v uint8
	g.mu.Lock()
	switch {
	case off < 0x400:
		v = g.levels() & uint8(off>>2)
	case off == RegDir:
		v = g.dir
	case off == RegIS:
		v = g.is
	case off == RegIBE:
		v = g.ibe
	case off == RegIEV:
		v = g.iev
	case off == RegIE:
		v = g.ie
	case off == RegRIS:
		v = g.ris
	case off == RegMIS:
		v = g.ris & g.ie
	case off == RegAFSEL:
		v = g.afsl
	case off >= regID && off < regID+32 && off%4 == 0:
		v = pl061IDs[(off-regID)/4]
	}
	g.mu.Unlock()
	if len(data) > 0 {
		data[0] = v
	}
}

// Write implements bus.Device.
func (g *PL061) Write(_ bus.Access, off uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	v := data[0]
	g.mu.Lock()
	old, oldOut := g.levels(), g.outv&g.dir
	switch {
	case off < 0x400:
		mask := uint8(off >> 2)
		g.outv = g.outv&^mask | v&mask
	case off == RegDir:
		g.dir = v
	case off == RegIS:
		g.is = v
	case off == RegIBE:
		g.ibe = v
	case off == RegIEV:
		g.iev = v
	case off == RegIE:
		g.ie = v
	case off == RegIC:
		g.ris &^= v
	case off == RegAFSEL:
		g.afsl = v
	}
	g.latch(old)
	g.update()
	newOut, dir := g.outv&g.dir, g.dir
	outs := g.out
	g.mu.Unlock()
	// Outputs that changed drive their lines outside the lock (a line may loop back).
	for n := range Lines {
		bit := uint8(1) << n
		if outs[n] != nil && dir&bit != 0 && (oldOut^newOut)&bit != 0 {
			outs[n].Set(newOut&bit != 0)
		}
	}
}

const stateSize = 9

// SaveState implements bus.Stateful.
func (g *PL061) SaveState() (bus.State, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return bus.State{Name: "pl061", Version: 1, Data: []byte{g.outv, g.in, g.dir, g.is, g.ibe, g.iev, g.ie, g.ris, g.afsl}}, nil
}

// LoadState implements bus.Stateful.
func (g *PL061) LoadState(s bus.State) error {
	if s.Name != "pl061" || s.Version != 1 || len(s.Data) != stateSize {
		return fmt.Errorf("pl061: cannot load state %q version %d (%d bytes)", s.Name, s.Version, len(s.Data))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	d := s.Data
	g.outv, g.in, g.dir, g.is, g.ibe, g.iev, g.ie, g.ris, g.afsl = d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8]
	g.update()
	return nil
}

// KeyLatency is how long Key holds its line after a press (QEMU's GPIO_KEY_LATENCY).
const KeyLatency = 100 * time.Millisecond

// Key is QEMU's gpio-key: Press drives the line high and releases it KeyLatency later.
type Key struct {
	line bus.IRQ

	mu    sync.Mutex
	timer *time.Timer
}

// NewKey returns a key driving line.
func NewKey(line bus.IRQ) *Key { return &Key{line: line} }

// Press raises the line; a press while held restarts the hold time.
func (k *Key) Press() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.line.Set(true)
	if k.timer != nil {
		k.timer.Stop()
	}
	k.timer = time.AfterFunc(KeyLatency, k.release)
}

func (k *Key) release() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.timer = nil
	k.line.Set(false)
}

// Reset implements bus.Resetter: the key is let go.
func (k *Key) Reset() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.timer != nil {
		k.timer.Stop()
		k.timer = nil
	}
	k.line.Set(false)
}
