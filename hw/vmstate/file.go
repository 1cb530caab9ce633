package vmstate

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	"gemu/hw/bus"
)

// LoadFile is Load from a stream in a file (a restore from file:), starting at the
// file's beginning. With t.Map set, the data of the RAM batches is not read but mapped
// from the file (format version 2 puts it at page-aligned offsets), as Firecracker
// restores a snapshot's memory file: the restored guest reads its pages from the
// host's page cache when it touches them, so the restore costs neither the copy nor
// the memory of the pages the guest never reads again. The file must not change while
// the guest runs from it (a private mapping sees later changes to pages the guest has
// not written). Pages a stream sends again (a live migration's passes) are mapped
// again, over the earlier ones; the last counts, as for Load. Version 1 streams are
// copied.
func LoadFile(f *os.File, t Target) ([]bus.State, Stats, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, Stats{}, err
	}
	src := &fileSrc{f: f}
	src.r = bufio.NewReaderSize(f, 64<<10)
	return load(src, t)
}

// FileRAM is guest RAM that a lazy restore maps a stream file over (hw/memory.RAM).
type FileRAM interface {
	MapFile(gpa, n uint64, f *os.File, off int64) error
	Discard(gpa, n uint64) error
}

// maxFileMaps bounds the mappings a lazy restore makes (each is a kernel VMA, and a
// process has vm.max_map_count of them, 65530 by default); the runs past it are copied.
const maxFileMaps = 20000

// MapFrom makes a LoadFile through t map guest RAM from f copy-on-write instead of
// copying it, and discard pages a batch sends as zero: a board's lazy restore.
func (t *Target) MapFrom(ram FileRAM, f *os.File) {
	maps := 0
	t.Map = func(gpa, n uint64, off int64) error {
		if maps >= maxFileMaps {
			return errors.New("too many mappings")
		}
		maps++
		return ram.MapFile(gpa, n, f, off)
	}
	t.Zero = ram.Discard
}

// fileSrc reads a stream from a file and can skip data without reading it.
type fileSrc struct {
	f   *os.File
	r   *bufio.Reader
	pos uint64
}

func (s *fileSrc) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.pos += uint64(n)
	return n, err
}

func (s *fileSrc) offset() uint64 { return s.pos }

func (s *fileSrc) skip(n uint64) (bool, error) {
	if n <= uint64(s.r.Buffered()) {
		s.r.Discard(int(n))
		s.pos += n
		return true, nil
	}
	fi, err := s.f.Stat()
	if err != nil {
		return false, err
	}
	if s.pos+n > uint64(fi.Size()) {
		return false, fmt.Errorf("stream truncated")
	}
	_, err = s.seek(s.pos + n)
	return err == nil, err
}

func (s *fileSrc) seek(off uint64) (int64, error) {
	o, err := s.f.Seek(int64(off), io.SeekStart)
	if err != nil {
		return 0, err
	}
	s.r.Reset(s.f)
	s.pos = off
	return o, nil
}
