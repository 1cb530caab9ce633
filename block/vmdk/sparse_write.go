package vmdk

import (
	"encoding/binary"
	"fmt"
)

var zeroGrainBuf = make([]byte, 1<<20)

var errCOWDWrite = fmt.Errorf("vmdk: writing vmfsSparse (COWD) extents is not supported")

// writeAt writes p at extent-relative offset off into an uncompressed sparse extent.
func (s *sparseExtent) writeAt(p []byte, off int64) error {
	if s.h.COWD {
		return errCOWDWrite
	}
	if s.compressed {
		if err := s.ensureStream(); err != nil {
			return err
		}
		return s.sw.Load().writeAt(p, off)
	}
	if s.h.Version == 3 {
		return fmt.Errorf("vmdk: VMDK version 3 must be read only")
	}
	for len(p) > 0 {
		if off >= s.limit {
			return fmt.Errorf("vmdk: write past the end of the extent")
		}
		gi := off / s.grainBytes
		in := off % s.grainBytes
		n := min(int64(len(p)), s.grainBytes-in, s.limit-off)
		if err := s.writeGrain(gi, in, p[:n]); err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

func (s *sparseExtent) writeGrain(gi, in int64, p []byte) error {
	st, e, err := s.lookup(gi)
	if err != nil {
		return err
	}
	if st == grainData {
		_, err := s.f.WriteAt(p, int64(e)*sectorSize+in)
		return err
	}
	s.allocMu.Lock()
	defer s.allocMu.Unlock()
	// Another writer may have allocated it meanwhile.
	if st, e, err = s.lookup(gi); err != nil {
		return err
	} else if st == grainData {
		_, err := s.f.WriteAt(p, int64(e)*sectorSize+in)
		return err
	}
	// New grain: the whole grain is written (zeroes around p) before any table
	// points at it, so a crash leaves either the old mapping or the complete grain.
	s.mu.Lock()
	goff := s.end
	s.end += s.grainBytes
	s.size = s.end
	s.mu.Unlock()
	if int64(len(p)) == s.grainBytes {
		if _, err := s.f.WriteAt(p, goff); err != nil {
			return err
		}
	} else {
		gb := scratch.get(int(s.grainBytes))
		buf := *gb
		clear(buf)
		// Around p the grain keeps what it showed: the parent's data unless the
		// grain was a zeroed grain.
		if st == grainUnalloc && s.fill != nil {
			if err := s.fill(buf[:s.grainLen(gi)], gi*s.grainBytes); err != nil {
				scratch.put(gb)
				return err
			}
		}
		copy(buf[in:], p)
		_, err := s.f.WriteAt(buf, goff)
		scratch.put(gb)
		if err != nil {
			return err
		}
	}
	return s.setGTE(gi, uint32(goff/sectorSize))
}

// setGTE points grain gi at sector v, in the grain table and its redundant copy,
// allocating both tables (then the directory entries) when the directory has none.
// Callers hold allocMu.
func (s *sparseExtent) setGTE(gi int64, v uint32) error {
	if s.end/sectorSize > 0xffffffff {
		return fmt.Errorf("vmdk: extent file exceeds the 2 TiB a sparse extent can address")
	}
	per := int64(s.h.NumGTEsPerGT)
	gdi := uint32(gi / per)
	idx := gi % per
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	s.mu.Lock()
	if s.gd[gdi] != 0 {
		// The table entry (and its redundant copy) is written under mu so a grain
		// table being loaded concurrently is either read after it or not cached.
		defer s.mu.Unlock()
		if t, ok := s.gts[gdi]; ok {
			t[idx] = v
		}
		s.gen++
		if _, err := s.f.WriteAt(b[:], int64(s.gd[gdi])*sectorSize+idx*4); err != nil {
			return err
		}
		if s.rgd != nil && s.rgd[gdi] != 0 {
			if _, err := s.f.WriteAt(b[:], int64(s.rgd[gdi])*sectorSize+idx*4); err != nil {
				return err
			}
		}
		return nil
	}
	s.mu.Unlock()
	// No grain table yet: write fresh tables, then the directory entries.
	t := make([]uint32, per)
	t[idx] = v
	raw := make([]byte, s.gtBytes)
	for i, x := range t {
		binary.LittleEndian.PutUint32(raw[4*i:], x)
	}
	s.mu.Lock()
	gtOff := s.end
	s.end += s.gtBytes
	var rgtOff int64 = -1
	if s.rgd != nil {
		rgtOff = s.end
		s.end += s.gtBytes
	}
	s.size = s.end
	s.mu.Unlock()
	if _, err := s.f.WriteAt(raw, gtOff); err != nil {
		return err
	}
	if rgtOff >= 0 {
		if _, err := s.f.WriteAt(raw, rgtOff); err != nil {
			return err
		}
	}
	binary.LittleEndian.PutUint32(b[:], uint32(gtOff/sectorSize))
	if _, err := s.f.WriteAt(b[:], int64(s.h.GDOffset)*sectorSize+int64(gdi)*4); err != nil {
		return err
	}
	if rgtOff >= 0 {
		binary.LittleEndian.PutUint32(b[:], uint32(rgtOff/sectorSize))
		if _, err := s.f.WriteAt(b[:], int64(s.h.RGDOffset)*sectorSize+int64(gdi)*4); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.gd[gdi] = uint32(gtOff / sectorSize)
	if rgtOff >= 0 {
		s.rgd[gdi] = uint32(rgtOff / sectorSize)
	}
	s.gts[gdi] = t
	s.gtsBytes += len(t) * 4
	s.gen++
	s.mu.Unlock()
	return nil
}

// writeZeroes makes [off, off+n) read as zeroes: whole grains become zeroed-grain
// entries when the extent has that feature, allocated grains are overwritten, and
// unallocated grains already read as zeroes.
func (s *sparseExtent) writeZeroes(off, n int64) error {
	if s.h.COWD {
		return errCOWDWrite
	}
	if s.compressed {
		if err := s.ensureStream(); err != nil {
			return err
		}
		return s.sw.Load().writeZeroes(off, n)
	}
	for n > 0 {
		gi := off / s.grainBytes
		in := off % s.grainBytes
		k := min(n, s.grainBytes-in, s.limit-off)
		if k <= 0 {
			return fmt.Errorf("vmdk: write past the end of the extent")
		}
		st, e, err := s.lookup(gi)
		if err != nil {
			return err
		}
		switch {
		case s.zeroGrain && in == 0 && k == s.grainLen(gi) && st != grainZero:
			s.allocMu.Lock()
			err = s.setGTE(gi, gteZeroed)
			s.allocMu.Unlock()
		case st == grainData:
			err = writeZeroRange(s, int64(e)*sectorSize+in, k)
		case st == grainUnalloc && s.fill != nil:
			// Unallocated grains show the parent: allocate one holding zeroes.
			z := zeroGrainBuf
			if k > int64(len(z)) {
				z = make([]byte, k)
			}
			err = s.writeGrain(gi, in, z[:k])
		}
		if err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

func writeZeroRange(s *sparseExtent, host, n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeroGrainBuf)))
		if _, err := s.f.WriteAt(zeroGrainBuf[:k], host); err != nil {
			return err
		}
		host, n = host+k, n-k
	}
	return nil
}

// isEmpty reports whether no grain is allocated (a freshly created image).
func (s *sparseExtent) isEmpty() bool {
	for gdi := range s.gd {
		t, err := s.gt(uint32(gdi))
		if err != nil {
			return false
		}
		s.mu.RLock()
		for _, e := range t {
			if e != 0 {
				s.mu.RUnlock()
				return false
			}
		}
		s.mu.RUnlock()
	}
	return true
}

// ensureStream puts a compressed extent in append mode on its first write; only an
// image with no grains can be written (QEMU likewise refuses rewriting grains).
func (s *sparseExtent) ensureStream() error {
	s.allocMu.Lock()
	defer s.allocMu.Unlock()
	if s.sw.Load() != nil {
		return nil
	}
	if s.fill != nil {
		return fmt.Errorf("vmdk: writing streamOptimized images with a parent is not supported")
	}
	if !s.markers || !s.isEmpty() {
		return fmt.Errorf("vmdk: cannot write to a streamOptimized image that already holds data")
	}
	return s.startStream()
}
