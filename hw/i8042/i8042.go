// Package i8042 owns the PC keyboard controller at ports 0x60 (data) and 0x64
// (status/command): the controller's command set (configuration byte, self-tests,
// output port, pulse lines), a keyboard that answers the host's commands (no keys are
// ever typed; the console is the serial port), and CPU reset through command 0xFE or
// the output port's reset line. There is no mouse: the auxiliary port reports no
// device.
//
// It must not know about accelerators or boards; reset goes through a callback.
package i8042

import (
	"sync"

	"gemu/hw/bus"
)

// Status register bits.
const (
	stsOBF    = 0x01 // output buffer full
	stsSys    = 0x04 // system flag (self-test passed)
	stsCmd    = 0x08 // last write was to the command port
	stsUnlock = 0x10 // keyboard not inhibited
	stsAuxOBF = 0x20 // output buffer holds auxiliary-port data
	stsTimeo  = 0x40 // timeout (no device answered)
)

// Controller configuration byte bits.
const (
	ctrKbdInt    = 0x01
	ctrSys       = 0x04
	ctrKbdDis    = 0x10
	ctrAuxDis    = 0x20
	ctrTranslate = 0x40
)

// I8042 is the controller; a bus.Device over ports 0x60..0x64 (offsets 0 and 4).
type I8042 struct {
	mu    sync.Mutex
	reset func()
	kbd   interface{ Set(bool) }

	ctr     byte
	status  byte
	out     []byte // output buffer queue (the controller holds one byte, the keyboard queues)
	pending byte   // command awaiting a data byte on port 0x60, 0 for none
	outPort byte
	kbdCmd  byte // keyboard command awaiting its argument, 0 for none
}

// New returns a controller. reset is called (from a vCPU thread) when the guest pulses
// the reset line; kbdIRQ is IRQ 1, raised while keyboard data waits and the
// configuration byte enables it.
func New(reset func(), kbdIRQ interface{ Set(bool) }) *I8042 {
	return &I8042{
		reset:   reset,
		kbd:     kbdIRQ,
		ctr:     ctrKbdInt | ctrSys | ctrTranslate | ctrAuxDis,
		status:  stsSys | stsUnlock,
		outPort: 0x03, // reset line deasserted, A20 enabled
	}
}

func (c *I8042) push(b ...byte) { c.out = append(c.out, b...) }

func (c *I8042) updateIRQLocked() {
	if c.kbd != nil {
		c.kbd.Set(len(c.out) > 0 && c.ctr&ctrKbdInt != 0)
	}
}

func (c *I8042) statusLocked() byte {
	s := c.status &^ (stsOBF | stsAuxOBF)
	if len(c.out) > 0 {
		s |= stsOBF
	}
	return s
}

// Read implements bus.Device.
func (c *I8042) Read(_ bus.Access, off uint64, data []byte) {
	for i := range data {
		data[i] = 0xff
	}
	if len(data) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch off {
	case 0:
		if len(c.out) > 0 {
			data[0] = c.out[0]
			c.out = c.out[1:]
		} else {
			data[0] = 0
		}
		c.status &^= stsTimeo
		c.updateIRQLocked()
	case 4:
		data[0] = c.statusLocked()
	}
}

// Write implements bus.Device.
func (c *I8042) Write(_ bus.Access, off uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	v := data[0]
	c.mu.Lock()
	doReset := false
	switch off {
	case 0:
		c.status &^= stsCmd
		doReset = c.dataLocked(v)
	case 4:
		c.status |= stsCmd
		doReset = c.commandLocked(v)
	}
	c.updateIRQLocked()
	c.mu.Unlock()
	if doReset && c.reset != nil {
		c.reset()
	}
}

// commandLocked runs a controller command; it reports whether the CPU is reset.
func (c *I8042) commandLocked(cmd byte) bool {
	c.pending = 0
	switch {
	case cmd == 0x20: // read configuration byte
		c.push(c.ctr)
	case cmd == 0x60, cmd == 0xd1, cmd == 0xd2, cmd == 0xd3, cmd == 0xd4:
		c.pending = cmd
	case cmd == 0xa7:
		c.ctr |= ctrAuxDis
	case cmd == 0xa8:
		c.ctr &^= ctrAuxDis
	case cmd == 0xa9: // auxiliary interface test: clock line stuck low (no mouse)
		c.push(0x01)
	case cmd == 0xaa: // controller self-test
		c.push(0x55)
		c.status |= stsSys
	case cmd == 0xab: // keyboard interface test
		c.push(0x00)
	case cmd == 0xad:
		c.ctr |= ctrKbdDis
	case cmd == 0xae:
		c.ctr &^= ctrKbdDis
	case cmd == 0xd0: // read output port
		c.push(c.outPort)
	case cmd >= 0xf0: // pulse output lines low for 6 µs; bit 0 is the CPU reset line
		return cmd&0x01 == 0
	}
	return false
}

// dataLocked handles a byte written to port 0x60: a controller command's argument or
// a keyboard command. It reports whether the CPU is reset.
func (c *I8042) dataLocked(v byte) bool {
	if p := c.pending; p != 0 {
		c.pending = 0
		switch p {
		case 0x60:
			c.ctr = v
			if v&ctrSys != 0 {
				c.status |= stsSys
			} else {
				c.status &^= stsSys
			}
		case 0xd1: // write output port; bit 0 low resets the CPU
			c.outPort = v
			return v&0x01 == 0
		case 0xd2: // write keyboard output buffer
			c.push(v)
		case 0xd3, 0xd4: // to the auxiliary device: none attached
			c.status |= stsTimeo
		}
		return false
	}
	c.keyboardLocked(v)
	return false
}

// keyboardLocked answers what an AT keyboard answers, so drivers that probe it find a
// keyboard that is simply never typed on.
func (c *I8042) keyboardLocked(v byte) {
	const ack = 0xfa
	if k := c.kbdCmd; k != 0 {
		c.kbdCmd = 0
		if k == 0xf0 && v == 0 { // get current scancode set
			c.push(ack, 0x02)
			return
		}
		c.push(ack)
		return
	}
	switch v {
	case 0xed, 0xf0, 0xf3: // LEDs, scancode set, typematic: take one argument
		c.kbdCmd = v
		c.push(ack)
	case 0xee: // echo
		c.push(0xee)
	case 0xf2: // identify: MF2 keyboard
		c.push(ack, 0xab, 0x83)
	case 0xff: // reset and self-test passed
		c.push(ack, 0xaa)
	default: // enable/disable scanning, defaults, resend...
		c.push(ack)
	}
}
