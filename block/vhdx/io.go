package vhdx

import (
	"encoding/binary"
	"errors"
	"fmt"

	"gemu/block"
	"gemu/block/internal/imgfile"
)

func decode(b []byte, v any) { binary.Decode(b, le, v) }

func (m *Image) Format() string   { return "vhdx" }
func (m *Image) Filename() string { return m.name }
func (m *Image) Size() int64      { return m.g.size }

// hostOff is the file offset of guest offset off (-1: the block holds no data and
// reads as zeroes) and the bytes left in its block.
func (m *Image) hostOff(off int64) (int64, int64) {
	b := off / m.g.blockSize
	in := off % m.g.blockSize
	left := m.g.blockSize - in
	e := m.bat[m.g.batIndex(b)]
	switch e & stateMask {
	case stateFull, statePartial:
		return int64(e>>20<<20) + in, left
	}
	return -1, left
}

func (m *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > m.g.size {
		return 0, fmt.Errorf("vhdx: read at %d outside the disk", off)
	}
	n := min(int64(len(p)), m.g.size-off)
	for done := int64(0); done < n; {
		m.mu.RLock()
		h, left := m.hostOff(off + done)
		m.mu.RUnlock()
		k := min(n-done, left)
		q := p[done : done+k]
		if h < 0 {
			clear(q)
		} else if err := imgfile.ReadZeroPast(m.f, q, h); err != nil {
			return int(done), err
		}
		done += k
	}
	if n < int64(len(p)) {
		return int(n), errors.New("vhdx: read past the end of the disk")
	}
	return int(n), nil
}

func (m *Image) WriteAt(p []byte, off int64) (int, error) {
	if m.readOnly {
		return 0, block.ErrReadOnly
	}
	if off < 0 || off+int64(len(p)) > m.g.size {
		return 0, fmt.Errorf("vhdx: write at %d+%d outside the disk", off, len(p))
	}
	if err := m.firstWrite(); err != nil {
		return 0, err
	}
	n := int64(len(p))
	for done := int64(0); done < n; {
		m.mu.RLock()
		h, left := m.hostOff(off + done)
		m.mu.RUnlock()
		k := min(n-done, left)
		if h < 0 {
			var err error
			if h, err = m.alloc(off + done); err != nil {
				return int(done), err
			}
		}
		if _, err := m.f.WriteAt(p[done:done+k], h); err != nil {
			return int(done), err
		}
		done += k
	}
	return int(n), nil
}

// firstWrite gives the image a new data write GUID before its first guest-visible
// change in this session (vhdx_user_visible_write).
func (m *Image) firstWrite() error {
	m.mu.RLock()
	w := m.wrote
	m.mu.RUnlock()
	if w {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.wrote {
		return nil
	}
	if err := m.updateHeaders(true, nil); err != nil {
		return err
	}
	m.wrote = true
	return nil
}

// alloc gives the block holding off a new payload block at the end of the file,
// rounded up to 1 MiB and zero-filled by extending the file (vhdx_allocate_block),
// then points its BAT entry at it.
func (m *Image) alloc(off int64) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h, _ := m.hostOff(off); h >= 0 {
		return h, nil
	}
	st, err := m.f.Stat()
	if err != nil {
		return 0, err
	}
	at := (st.Size() + miB - 1) &^ (miB - 1)
	if at+m.g.blockSize > 1<<46 {
		return 0, errors.New("vhdx: image file too large for another block")
	}
	if err := m.f.Truncate(at + m.g.blockSize); err != nil {
		return 0, err
	}
	b := off / m.g.blockSize
	idx := m.g.batIndex(b)
	e := uint64(at) | stateFull
	var eb [8]byte
	le.PutUint64(eb[:], e)
	if _, err := m.f.WriteAt(eb[:], m.batOff+idx*8); err != nil {
		return 0, err
	}
	m.bat[idx] = e
	return at + off%m.g.blockSize, nil
}

// WriteZeroes writes zeroes into allocated blocks; others already read as zero.
func (m *Image) WriteZeroes(off, n int64, _ block.ZeroFlags) error {
	if m.readOnly {
		return block.ErrReadOnly
	}
	if off < 0 || off+n > m.g.size {
		return errors.New("vhdx: zero write outside the disk")
	}
	zero := make([]byte, min(n, 1<<20))
	for n > 0 {
		m.mu.RLock()
		h, left := m.hostOff(off)
		m.mu.RUnlock()
		k := min(n, left, int64(len(zero)))
		if h >= 0 {
			if err := m.firstWrite(); err != nil {
				return err
			}
			if _, err := m.f.WriteAt(zero[:k], h); err != nil {
				return err
			}
		}
		off += k
		n -= k
	}
	return nil
}

func (m *Image) Discard(off, n int64) error {
	if m.readOnly {
		return block.ErrReadOnly
	}
	return nil
}

func (m *Image) Flush() error {
	if m.readOnly {
		return nil
	}
	return m.f.Sync()
}

// BlockStatus reports the whole disk as data with no host offset, as qemu-img map
// shows VHDX images (QEMU's vhdx driver has no block-status callback).
func (m *Image) BlockStatus(off, n int64) (block.Status, error) {
	if off < 0 || off >= m.g.size {
		return block.Status{Offset: off, HostOffset: -1}, nil
	}
	return block.Status{Offset: off, Length: min(n, m.g.size-off), Data: true, Allocated: true, HostOffset: -1}, nil
}

func (m *Image) Resize(size int64, o block.ResizeOptions) error {
	return errors.New("Image format driver does not support resize")
}

func (m *Image) Close() error {
	if m.f == nil {
		return nil
	}
	var err error
	if !m.readOnly {
		err = m.f.Sync()
	}
	if e := m.f.Close(); err == nil {
		err = e
	}
	m.f = nil
	return err
}

// Info: the block size is the cluster size.
func (m *Image) Info() (*block.ImageInfo, error) {
	return &block.ImageInfo{ClusterSize: m.g.blockSize, HasDirtyFlag: true}, nil
}

func (m *Image) ActualSize() (int64, error) { return block.FileSize(m.name) }

// Check is qemu-img check for vhdx (vhdx_co_check): a log replayed on open counts as
// a fixed corruption; payload blocks must lie inside the file and not overlap.
func (m *Image) Check(mode block.RepairMode) (*block.CheckResult, error) {
	r := &block.CheckResult{Filename: m.name, Format: "vhdx"}
	if m.replayed {
		r.CorruptionsFixed++
	}
	st, err := m.f.Stat()
	if err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	owner := map[int64]int64{}
	for b := int64(0); b < m.g.dataBlocks; b++ {
		idx := m.g.batIndex(b)
		e := m.bat[idx]
		if s := e & stateMask; s != stateFull && s != statePartial {
			continue
		}
		off := int64(e >> 20 << 20)
		if off+m.g.blockSize > st.Size() && !(b == m.g.dataBlocks-1 && off+m.g.size-b*m.g.blockSize <= st.Size()) {
			r.Messages = append(r.Messages, fmt.Sprintf("VHDX BAT entry %d start offset %d points after end of file (%d). Image has probably been truncated.", idx, off, st.Size()))
			r.Corruptions++
			continue
		}
		for o := off; o < off+m.g.blockSize; o += miB {
			if prev, dup := owner[o]; dup {
				r.Messages = append(r.Messages, fmt.Sprintf("VHDX BAT entry %d offset %d overlaps with BAT entry %d", idx, off, prev))
				r.Corruptions++
				break
			}
			owner[o] = idx
		}
	}
	return r, nil
}

// ContentStatus is what convert uses instead of BlockStatus (which mirrors QEMU's map
// output): blocks with no payload, and payload the host file holds as holes, read as
// zeroes and need not be read at all.
func (m *Image) ContentStatus(off, n int64) (block.Status, error) {
	if off < 0 || off >= m.g.size {
		return block.Status{Offset: off, HostOffset: -1}, nil
	}
	n = min(n, m.g.size-off)
	m.mu.RLock()
	h, left := m.hostOff(off)
	length := min(n, left)
	// Merge following blocks of the same kind (present or not).
	for length < n {
		h2, l2 := m.hostOff(off + length)
		if (h2 < 0) != (h < 0) {
			break
		}
		length += min(n-length, l2)
	}
	m.mu.RUnlock()
	if h < 0 {
		return block.Status{Offset: off, Length: length, Zero: true, HostOffset: -1}, nil
	}
	// Only the first block's host range is known to be contiguous.
	length = min(length, left)
	st := block.Status{Offset: off, Length: length, Data: true, Allocated: true, HostOffset: h}
	if hole, k := imgfile.HostExtent(m.f, h, length); hole {
		st.Zero, st.Data, st.Length = true, false, k
	} else {
		st.Length = k
	}
	return st, nil
}
