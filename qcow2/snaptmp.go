package qcow2

import (
	"errors"

	"gemu/block"
)

// LoadSnapshot makes a read-only image read as internal snapshot id and/or name (an
// empty string matches any) instead of the active state, as QEMU's
// bdrv_snapshot_load_tmp does for convert -l and measure -l: only the L1 table is
// swapped; the virtual size stays the image's.
func (img *Image) LoadSnapshot(id, name string) error {
	if !img.ro {
		return errors.New("Can't load snapshot in writable mode")
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	idx := -1
	for i, s := range img.snapshots {
		if (id == "" || s.id == id) && (name == "" || s.name == name) {
			idx = i
			break
		}
	}
	if idx < 0 || (id == "" && name == "") {
		return errors.New("Can't find snapshot")
	}
	s := img.snapshots[idx]
	if err := checkOffset(s.l1Offset, uint64(s.l1Size)*8, uint64(img.clusterSize), -1, "Snapshot L1 table"); err != nil {
		return err
	}
	if uint64(s.l1Size)*8 > maxL1Bytes {
		return errors.New("Snapshot L1 table too large")
	}
	if err := img.loadTables(); err != nil {
		return err
	}
	l1, err := img.readL1(int64(s.l1Offset), int(s.l1Size))
	if err != nil {
		return err
	}
	img.l1 = l1
	img.l2 = newTableCache(img, img.clusterSize, cacheBudget(img.clusterSize))
	return nil
}

var _ block.SnapshotLoader = (*Image)(nil)
