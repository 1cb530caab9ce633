package vhdx

import (
	"fmt"

	"gemu/block/internal/imgfile"
)

// The log (MS-VHDX 2.3): a circular buffer of entries, each a 4 KiB-aligned run of
// sectors starting with a header and descriptors, followed by one data sector per
// data descriptor. Replay applies the active sequence, the run of consecutive valid
// entries with the highest sequence number, from its tail, then empties the log.

const (
	sigLoge = 0x65676f6c // "loge"
	sigDesc = 0x63736564 // "desc"
	sigZero = 0x6f72657a // "zero"
	sigData = 0x61746164 // "data"

	logHeaderLen = 64
	descLen      = 32
	// maxLogEntries bounds the work of one replay.
	maxLogEntries = 1 << 16
)

type logHeader struct {
	Signature     uint32
	Checksum      uint32
	EntryLength   uint32
	Tail          uint32
	Sequence      uint64
	DescCount     uint32
	Reserved      uint32
	LogGUID       [16]byte
	FlushedOffset uint64
	LastOffset    uint64
}

// logEntry is one validated entry.
type logEntry struct {
	pos  int64 // offset inside the log
	h    logHeader
	body []byte // the whole entry
}

// readLog reads n bytes at offset pos of the circular log.
func (m *Image) readLog(pos, n int64) ([]byte, error) {
	b := make([]byte, n)
	for done := int64(0); done < n; {
		p := (pos + done) % m.logLen
		k := min(n-done, m.logLen-p)
		if err := imgfile.ReadAt(m.f, b[done:done+k], m.logOff+p, "log"); err != nil {
			return nil, err
		}
		done += k
	}
	return b, nil
}

// entryAt validates the entry at log position pos: signature, length, GUID,
// checksum, descriptors and data sectors all carrying its sequence number.
func (m *Image) entryAt(pos int64, guid [16]byte) (*logEntry, bool) {
	hb, err := m.readLog(pos, logSector)
	if err != nil {
		return nil, false
	}
	var h logHeader
	decode(hb, &h)
	if h.Signature != sigLoge || h.EntryLength == 0 || h.EntryLength%logSector != 0 ||
		int64(h.EntryLength) > m.logLen || h.LogGUID != guid || h.Sequence == 0 ||
		int64(h.Tail)%logSector != 0 || int64(h.Tail) >= m.logLen {
		return nil, false
	}
	descSectors := (int64(h.DescCount)*descLen + logHeaderLen + logSector - 1) / logSector
	var data int64
	if descSectors > int64(h.EntryLength)/logSector {
		return nil, false
	}
	body, err := m.readLog(pos, int64(h.EntryLength))
	if err != nil {
		return nil, false
	}
	if crc(body, 4) != h.Checksum {
		return nil, false
	}
	for i := range int64(h.DescCount) {
		d := body[logHeaderLen+i*descLen:]
		sig := le.Uint32(d)
		if le.Uint64(d[24:]) != h.Sequence {
			return nil, false
		}
		switch sig {
		case sigDesc:
			ds := (descSectors + data) * logSector
			if ds+logSector > int64(len(body)) {
				return nil, false
			}
			s := body[ds:]
			if le.Uint32(s) != sigData || uint64(le.Uint32(s[4:]))<<32|uint64(le.Uint32(s[4092:])) != h.Sequence {
				return nil, false
			}
			data++
		case sigZero:
		default:
			return nil, false
		}
	}
	if descSectors+data != int64(h.EntryLength)/logSector {
		return nil, false
	}
	return &logEntry{pos: pos, h: h, body: body}, true
}

// findLog returns the active sequence of the log, or nil when it holds none.
func (m *Image) findLog(fsize int64) ([]*logEntry, error) {
	if m.logLen == 0 {
		return nil, nil
	}
	guid := m.hdrs[m.cur].LogGUID
	var best []*logEntry
	for start := int64(0); start < m.logLen; start += logSector {
		e, ok := m.entryAt(start, guid)
		if !ok {
			continue
		}
		seq := []*logEntry{e}
		pos := start
		for len(seq) < maxLogEntries {
			pos = (pos + int64(seq[len(seq)-1].h.EntryLength)) % m.logLen
			if pos == start {
				break
			}
			n, ok := m.entryAt(pos, guid)
			if !ok || n.h.Sequence != seq[len(seq)-1].h.Sequence+1 {
				break
			}
			seq = append(seq, n)
		}
		if best == nil || seq[len(seq)-1].h.Sequence > best[len(best)-1].h.Sequence {
			best = seq
		}
	}
	if best == nil {
		return nil, nil
	}
	// Start at the tail the head entry names, when it is part of the sequence.
	tail := int64(best[len(best)-1].h.Tail)
	for i, e := range best {
		if e.pos == tail {
			best = best[i:]
			break
		}
	}
	return best, nil
}

// replay writes every descriptor of the sequence to the file, extends the file to the
// head entry's last file offset, and empties the log (vhdx_log_flush).
func (m *Image) replay(seq []*logEntry, fsize int64) error {
	// Validate every descriptor of the sequence before writing anything, so a bad
	// log leaves the file as it was.
	if err := m.applyLog(seq, fsize, false); err != nil {
		return err
	}
	if err := m.applyLog(seq, fsize, true); err != nil {
		return err
	}
	if err := m.f.Sync(); err != nil {
		return err
	}
	// Re-read the headers (a log may rewrite them) and clear the log GUID.
	if err := m.readHeaders(); err != nil {
		return err
	}
	m.session = newGUID()
	var zero [16]byte
	if err := m.updateHeaders(false, &zero); err != nil {
		return fmt.Errorf("vhdx: clearing the log after replay: %v", err)
	}
	return nil
}

// applyLog checks (write false) or applies (write true) the sequence's descriptors.
func (m *Image) applyLog(seq []*logEntry, fsize int64, write bool) error {
	for _, e := range seq {
		if int64(e.h.FlushedOffset) > fsize || e.h.FlushedOffset > 1<<62 {
			return fmt.Errorf("vhdx: log entry %d names a flushed file offset %d past the end of the file", e.h.Sequence, e.h.FlushedOffset)
		}
		descSectors := (int64(e.h.DescCount)*descLen + logHeaderLen + logSector - 1) / logSector
		data := int64(0)
		for i := range int64(e.h.DescCount) {
			d := e.body[logHeaderLen+i*descLen:]
			off := int64(le.Uint64(d[16:]))
			if off < 0 || off%logSector != 0 || off > 1<<46 {
				return fmt.Errorf("vhdx: log descriptor file offset %d is invalid", off)
			}
			if off < headerEnd && le.Uint32(d) == sigZero {
				return fmt.Errorf("vhdx: log descriptor zeroes the header section")
			}
			switch le.Uint32(d) {
			case sigDesc:
				s := e.body[(descSectors+data)*logSector:][:logSector]
				sec := make([]byte, logSector)
				copy(sec, d[8:16])       // leading bytes
				copy(sec[8:], s[8:4092]) // 4084 data bytes
				copy(sec[4092:], d[4:8]) // trailing bytes
				if off+logSector > max(fsize, int64(e.h.LastOffset)) {
					return fmt.Errorf("vhdx: log descriptor writes at %d, past the end of the file", off)
				}
				if write {
					if _, err := m.f.WriteAt(sec, off); err != nil {
						return err
					}
				}
				data++
			case sigZero:
				n := int64(le.Uint64(d[8:]))
				if n < 0 || n%logSector != 0 || off+n > max(fsize, int64(e.h.LastOffset)) {
					return fmt.Errorf("vhdx: log zero descriptor (%d bytes at %d) reaches past the end of the file", n, off)
				}
				if write {
					if err := imgfile.ZeroFill(m.f, off, n); err != nil {
						return err
					}
				}
			}
		}
		if last := int64(e.h.LastOffset); last > fsize {
			if last > fsize+1<<30 || last > 1<<46 {
				return fmt.Errorf("vhdx: log entry names a last file offset %d far past the end of the file", last)
			}
			last = (last + miB - 1) &^ (miB - 1)
			if write {
				if err := m.f.Truncate(last); err != nil {
					return err
				}
			}
			fsize = last
		}
	}
	return nil
}
