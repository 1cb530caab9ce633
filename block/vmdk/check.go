package vmdk

import (
	"encoding/binary"
	"errors"
	"fmt"

	"gemu/block"
)

// errInvalid is the errno text qemu-img prints after a failed vmdk check.
var errInvalid = errors.New("Invalid argument")

// Check does what qemu-img's vmdk check does: walk every grain in guest order and
// stop at the first one whose table cannot be read or whose data starts past the end
// of its extent file. It only reports; repair is not supported (as in QEMU). On a
// finding it returns the result (one corruption, the ERROR line in Messages) together
// with an "Invalid argument" error, which qemu-img prints as "Check failed".
//
// One deliberate difference: a grain table (or directory) lying outside the file is a
// finding here, where QEMU reads it as zeroes and calls the image clean. This driver
// refuses to read such a table (so map and convert fail on it), and check agrees
// with what reads do rather than calling an image clean that cannot be read.
// Repair is refused with block.ErrUnsupported, which gemu-img reports as qemu-img
// does ("This image format does not support checks", exit 63).
func (m *image) Check(mode block.RepairMode) (*block.CheckResult, error) {
	if mode != block.RepairNone {
		return nil, fmt.Errorf("vmdk: %w: repair", block.ErrUnsupported)
	}
	res := &block.CheckResult{Filename: m.filename, Format: "vmdk"}
	for _, e := range m.extents {
		if e.sp == nil {
			continue
		}
		if msg := e.sp.check(e.start / sectorSize); msg != "" {
			res.Messages = append(res.Messages, msg)
			res.Corruptions = 1
			return res, errInvalid
		}
	}
	return res, nil
}

// check scans the raw tables (bypassing the validation done for reads) and returns
// qemu-img's message for the first bad grain, or "".
func (s *sparseExtent) check(firstSector int64) string {
	st, err := s.f.Stat()
	if err != nil {
		return fmt.Sprintf("ERROR: could not get extent file length for sector %d", firstSector)
	}
	size := st.Size()
	per := int64(s.h.NumGTEsPerGT)
	grains := (int64(s.h.Capacity) + int64(s.h.GrainSize) - 1) / int64(s.h.GrainSize)
	raw := make([]byte, per*4)
	s.mu.RLock()
	gd := append([]uint32(nil), s.gd...)
	s.mu.RUnlock()
	for gdi, sector := range gd {
		if sector == 0 {
			continue
		}
		base := int64(gdi) * per
		if _, err := s.f.ReadAt(raw, int64(sector)*sectorSize); err != nil {
			return fmt.Sprintf("ERROR: could not get cluster_offset for sector %d", firstSector+base*int64(s.h.GrainSize))
		}
		for i := int64(0); i < per && base+i < grains; i++ {
			e := binary.LittleEndian.Uint32(raw[4*i:])
			if e == 0 || (e == gteZeroed && s.zeroGrain) {
				continue
			}
			if int64(e)*sectorSize >= size {
				return fmt.Sprintf("ERROR: cluster offset for sector %d points after EOF", firstSector+(base+i)*int64(s.h.GrainSize))
			}
		}
	}
	return ""
}
