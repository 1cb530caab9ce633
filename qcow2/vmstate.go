package qcow2

import (
	"errors"
	"fmt"
	"io"

	"gemu/block"
)

// The VM state area, as QEMU's qcow2 keeps it for savevm: the machine's saved state is
// written as guest data at offsets past the virtual disk, starting at the first L1
// entry the disk does not use (qcow2_vm_state_offset), through the ordinary cluster
// allocation (so the active L1 table grows to reach it). Taking a snapshot then copies
// an L1 table that maps the state too; the entry records its size (vm_state_size) and
// the guest clock (vm_clock_nsec), and the active table drops the area again (QEMU
// discards it: it would only cost copy-on-write at the next snapshot). Loading applies
// the snapshot, which brings the area back into the active table, and reads it there.

// VMStateOffset is the guest offset of the VM state area.
func (img *Image) VMStateOffset() int64 {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.vmStateOffset()
}

func (img *Image) vmStateOffset() int64 {
	return img.l1Entries(img.size) << (img.clusterBits + img.l2Bits)
}

// VMStateUnit is the size WriteVMState's writes are aligned to (the cluster size).
func (img *Image) VMStateUnit() int64 { return img.clusterSize }

// WriteVMState writes p at byte pos of the VM state area. pos and len(p) are
// multiples of VMStateUnit except for a write that ends the state (pad it to the unit
// so no cluster is written twice: a partial cluster write would have to read back what
// the area held).
func (img *Image) WriteVMState(p []byte, pos int64) (int, error) {
	if img.ro {
		return 0, block.ErrReadOnly
	}
	if pos < 0 || pos&(img.clusterSize-1) != 0 {
		return 0, fmt.Errorf("qcow2: VM state write at %d is not cluster aligned", pos)
	}
	if rem := int64(len(p)) & (img.clusterSize - 1); rem != 0 {
		p = append(p[:len(p):len(p)], make([]byte, img.clusterSize-rem)...)
	}
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	off := img.vmStateOffset() + pos
	err := img.startWriting()
	if need := img.l1Entries(off + int64(len(p))); err == nil && need > int64(len(img.l1)) {
		err = img.growL1(need)
	}
	img.mu.Unlock()
	if err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		n, err := img.writeChunk(p[done:], off+int64(done))
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// ReadVMState reads p from byte pos of the VM state area; what was never written
// reads as zeroes.
func (img *Image) ReadVMState(p []byte, pos int64) (int, error) {
	if pos < 0 {
		return 0, errors.New("qcow2: negative VM state offset")
	}
	img.mu.Lock()
	off := img.vmStateOffset() + pos
	img.mu.Unlock()
	done := 0
	for done < len(p) {
		img.mu.Lock()
		at := off + int64(done)
		var ext extent
		var err error
		if at>>(img.clusterBits+img.l2Bits) >= int64(len(img.l1)) {
			ext = extent{kind: kUnalloc, length: int64(len(p) - done)}
		} else {
			ext, err = img.lookup(at, int64(len(p)-done))
		}
		img.mu.Unlock()
		if err != nil {
			return done, err
		}
		b := p[done : done+int(ext.length)]
		if ext.kind == kUnalloc {
			clear(b) // not the backing file's: its area starts elsewhere
		} else if err := img.readExtent(ext, b, at); err != nil {
			return done, err
		}
		done += len(b)
	}
	return done, nil
}

// SaveVMSnapshot takes an internal snapshot whose VM state is the first vmStateSize
// bytes of the area (written by WriteVMState), with the guest clock vmClockNsec, then
// drops the area from the active table.
func (img *Image) SaveVMSnapshot(name string, vmStateSize, vmClockNsec uint64) error {
	if err := img.createSnapshot(snapshot{name: name, vmStateSize: vmStateSize, vmClockNsec: vmClockNsec, icount: -1}); err != nil {
		return err
	}
	return img.DropVMState()
}

// DropVMState releases the VM state area of the active table (its clusters stay
// with the snapshots that hold them).
func (img *Image) DropVMState() error {
	if img.ro {
		return block.ErrReadOnly
	}
	img.wmu.Lock()
	defer img.wmu.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	first := img.l1Entries(img.size)
	if first >= int64(len(img.l1)) {
		return nil
	}
	if err := img.writeBack(false); err != nil {
		return err
	}
	area := append([]uint64(nil), img.l1[first:]...)
	// The table first stops naming the area (on disk), then the references go.
	for i := first; i < int64(len(img.l1)); i++ {
		img.l1[i] = 0
	}
	if err := img.writeL1(); err != nil {
		return err
	}
	if err := img.updateL1Refs(area, -1); err != nil {
		return err
	}
	return img.writeBack(false)
}

// VMStateReader reads the area from the start, for vmStateSize bytes.
func (img *Image) VMStateReader(vmStateSize int64) io.Reader {
	return io.NewSectionReader(vmStateReaderAt{img}, 0, vmStateSize)
}

type vmStateReaderAt struct{ img *Image }

func (r vmStateReaderAt) ReadAt(p []byte, off int64) (int, error) { return r.img.ReadVMState(p, off) }
