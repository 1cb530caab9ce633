package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// configStateVersion is the version of SaveConfig's encoding: the configuration
// bytes, the INTx level, then the MSI-X table and PBA, little-endian.
const configStateVersion = 1

// SaveConfig returns the function's guest-visible state (configuration space, INTx
// level, MSI-X table and pending bits) for a device's own bus.Stateful to embed: a
// device that embeds *ConfigSpace saves its other state beside it.
func (c *ConfigSpace) SaveConfig() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	le := binary.LittleEndian
	b := le.AppendUint16(nil, configStateVersion)
	b = le.AppendUint32(b, c.size)
	b = append(b, c.data[:c.size]...)
	lv := byte(0)
	if c.level {
		lv = 1
	}
	b = append(b, lv)
	if m := c.msix; m != nil {
		b = le.AppendUint32(b, uint32(m.n))
		b = append(b, m.table...)
		for _, p := range m.pba {
			b = le.AppendUint64(b, p)
		}
	} else {
		b = le.AppendUint32(b, 0)
	}
	return b
}

// LoadConfig restores what SaveConfig saved on a function built the same way: the
// BARs are mapped where the restored registers say, OnChange hears about every
// vector and the INTx line is driven as restored. State from a function of another
// shape (ids, sizes, capability layout, MSI-X vectors) is refused with an error and
// leaves the function unchanged.
func (c *ConfigSpace) LoadConfig(b []byte) error {
	le := binary.LittleEndian
	c.mu.Lock()
	if len(b) < 6 || le.Uint16(b) != configStateVersion {
		c.mu.Unlock()
		return errors.New("pci: config state: bad version or truncated")
	}
	size := le.Uint32(b[2:])
	if size != c.size {
		c.mu.Unlock()
		return fmt.Errorf("pci: config state of %d bytes for a %d-byte space", size, c.size)
	}
	b = b[6:]
	nvec := 0
	if c.msix != nil {
		nvec = c.msix.n
	}
	want := int(size) + 1 + 4 + nvec*msixEntry + (nvec+63)/64*8
	if len(b) != want || int(le.Uint32(b[size+1:])) != nvec {
		c.mu.Unlock()
		return fmt.Errorf("pci: config state does not fit this function (%d bytes, want %d)", len(b), want)
	}
	data := b[:size]
	for o := uint32(0); o < size; o++ {
		ro := ^(c.wmask[o] | c.w1c[o])
		if o == RegStatus {
			ro &^= StatusIntx
		}
		if m := c.msi; m != nil && m.pvm && o >= m.off+0x14 && o < m.off+0x18 {
			ro = 0 // pending bits
		}
		if (data[o]^c.power[o])&ro != 0 {
			c.mu.Unlock()
			return fmt.Errorf("pci: config state differs from this function at read-only offset %#x", o)
		}
	}
	copy(c.data[:size], data)
	c.level = b[size] != 0
	if m := c.msix; m != nil {
		t := b[size+5:]
		copy(m.table, t[:len(m.table)])
		for i := range m.pba {
			m.pba[i] = le.Uint64(t[len(m.table)+8*i:])
		}
		for v := 0; v < m.n; v++ {
			m.changedLocked(v)
		}
	}
	if c.msi != nil {
		c.msi.changedLocked()
	}
	c.remapLocked()
	c.updateINTxLocked()
	c.unlock()
	return nil
}
