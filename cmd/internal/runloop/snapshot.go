package runloop

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"gemu/block"
	"gemu/block/backend"
	"gemu/machine/monitor"
)

// Internal snapshots (savevm, loadvm, delvm; -loadvm): the guest's state (the
// Migratable stream) is written into the VM state area of a qcow2 drive and every
// writable drive gets an internal snapshot of the same name, as QEMU 7.2's
// migration/savevm.c does; the checks and their texts are QEMU's.

// vmStateImage is a drive image that keeps snapshots with a VM state (qcow2.Image).
type vmStateImage interface {
	block.Snapshotter
	VMStateUnit() int64
	WriteVMState(p []byte, pos int64) (int, error)
	VMStateReader(size int64) io.Reader
	SaveVMSnapshot(name string, vmStateSize, vmClockNsec uint64) error
}

// GuestClocked is a Guest that reports its guest clock (the snapshot's VM CLOCK).
type GuestClocked interface{ GuestTime() time.Duration }

// Quiescer is a Guest that can hold its devices' requests while the disks are
// reverted (loadvm); the returned function lets them go.
type Quiescer interface{ QuiesceDevices() (func(), error) }

// snapshots is the loop's part for internal snapshots.
type snapshots struct {
	mu     sync.Mutex // one savevm/loadvm/delvm at a time
	drives map[string]*backend.Backend
}

// SetDrives gives the loop the process's drives (by id or node name), for savevm.
func (l *Loop) SetDrives(d map[string]*backend.Backend) { l.snap.drives = d }

// snapDrive is one drive a snapshot operation looks at.
type snapDrive struct {
	name string
	be   *backend.Backend
	img  vmStateImage // nil: the format keeps no snapshots
}

func (d snapDrive) canSnapshot() bool { return d.img != nil && !d.be.ReadOnly() }

// drivesFor resolves the drives of r (every writable one when r.Devices is nil) and
// checks they can take a snapshot (bdrv_all_can_snapshot).
func (l *Loop) drivesFor(r monitor.SnapshotRequest) ([]snapDrive, error) {
	ids := l.driveIDs()
	nodes := map[string]string{} // query-block's node names → drive ids
	if l.cfg.Blocks != nil {
		for _, b := range l.cfg.Blocks() {
			if b.Inserted != nil {
				nodes[b.Inserted.NodeName] = b.Device
			}
		}
	}
	mk := l.snapDrive
	var out []snapDrive
	if r.Devices == nil {
		for _, id := range ids {
			if d := mk(id); !d.be.ReadOnly() {
				out = append(out, d)
			}
		}
	} else {
		for _, n := range r.Devices {
			id := n
			if l.snap.drives[id] == nil {
				id = nodes[n]
			}
			if l.snap.drives[id] == nil {
				return nil, fmt.Errorf("No block device node '%s'", n)
			}
			out = append(out, mk(id))
		}
	}
	for _, d := range out {
		if !d.canSnapshot() {
			return nil, fmt.Errorf("Device '%s' is writable but does not support snapshots", d.name)
		}
	}
	return out, nil
}

// driveIDs lists the drives in a fixed order (query-block's).
func (l *Loop) driveIDs() []string {
	ids := make([]string, 0, len(l.snap.drives))
	for id := range l.snap.drives {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (l *Loop) snapDrive(id string) snapDrive {
	be := l.snap.drives[id]
	img, _ := be.Driver().(vmStateImage)
	return snapDrive{id, be, img}
}

// vmStateDrive is bdrv_all_find_vmstate_bs.
func vmStateDrive(ds []snapDrive, name string) (snapDrive, error) {
	for _, d := range ds {
		if (name == "" || d.name == name) && d.canSnapshot() {
			return d, nil
		}
	}
	if name != "" {
		return snapDrive{}, fmt.Errorf("vmstate block device '%s' does not exist", name)
	}
	return snapDrive{}, errors.New("no block device can store vmstate for snapshot")
}

// findByName is bdrv_snapshot_find: snapshots are matched by name.
func findByName(img vmStateImage, name string) (block.SnapshotInfo, bool, error) {
	l, err := img.Snapshots()
	if err != nil {
		return block.SnapshotInfo{}, false, err
	}
	for _, s := range l {
		if s.Name == name {
			return s, true, nil
		}
	}
	return block.SnapshotInfo{}, false, nil
}

// deleteAll is bdrv_all_delete_snapshot: drives without the snapshot are skipped.
func deleteAll(ds []snapDrive, name string) error {
	for _, d := range ds {
		s, ok, err := findByName(d.img, name)
		if err == nil && ok {
			err = d.img.DeleteSnapshot(s.ID)
		}
		if err != nil {
			return fmt.Errorf("Could not delete snapshot '%s' on '%s': %v", name, d.name, err)
		}
	}
	return nil
}

// hasAll is bdrv_all_has_snapshot: every drive has it (true when there is none).
func hasAll(ds []snapDrive, name string) (bool, error) {
	for _, d := range ds {
		_, ok, err := findByName(d.img, name)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// snapGuest returns the current guest if it can be saved.
func (l *Loop) snapGuest() (Migratable, error) {
	l.mu.Lock()
	g, _ := l.cur.(Migratable)
	st := l.status
	l.mu.Unlock()
	switch {
	case g == nil:
		return nil, errors.New("this machine cannot save its state")
	case st == monitor.Inmigrate:
		return nil, errors.New("Guest is waiting for an incoming migration")
	}
	return g, nil
}

// stopFor pauses the guest (vm_stop) and returns whether it ran; only a running
// guest changes state (to st), as QEMU's do_vm_stop.
func (l *Loop) stopFor(st monitor.Status) (bool, error) {
	l.mu.Lock()
	running := l.status == monitor.Running
	if l.cur != nil {
		if err := l.cur.Pause(); err != nil {
			l.mu.Unlock()
			return false, err
		}
	}
	if running {
		l.status = st
	}
	l.mu.Unlock()
	if running {
		l.emit("STOP", nil)
	}
	return running, nil
}

// restart resumes a guest that ran (vm_start).
func (l *Loop) restart(running bool) {
	if !running {
		return
	}
	l.mu.Lock()
	l.status = monitor.Running
	if l.cur != nil {
		l.cur.Resume()
	}
	l.mu.Unlock()
	l.emit("RESUME", nil)
}

// SaveSnapshot implements monitor.Snapshotter (savevm, snapshot-save). The vCPUs stay
// paused from before the stream is written until every drive has its snapshot, and
// the save drains the virtio requests in flight, so the disks are snapshotted as the
// saved guest left them. A request the guest had queued but no device had taken yet
// is in the saved rings as not taken: the device may still run it before the disk
// snapshot, and after a load it runs again (a write of the same data, a read of the
// same blocks), as QEMU replays its requests in flight after a migration.
func (l *Loop) SaveSnapshot(r monitor.SnapshotRequest) error {
	l.snap.mu.Lock()
	defer l.snap.mu.Unlock()
	ds, err := l.drivesFor(r)
	if err != nil {
		return err
	}
	g, err := l.snapGuest()
	if err != nil {
		return err
	}
	if r.Overwrite {
		if err := deleteAll(ds, r.Tag); err != nil {
			return err
		}
	} else if has, err := anyHas(ds, r.Tag); err != nil {
		return err
	} else if has {
		return fmt.Errorf("Snapshot '%s' already exists in one or more devices", r.Tag)
	}
	vm, err := vmStateDrive(ds, r.VMState)
	if err != nil {
		return err
	}
	running, err := l.stopFor(monitor.SaveVM)
	if err != nil {
		return err
	}
	defer l.restart(running)
	var clock time.Duration
	if c, ok := g.(GuestClocked); ok {
		clock = c.GuestTime()
	}
	w := &vmStateWriter{img: vm.img, buf: make([]byte, 0, vmStateChunk(vm.img.VMStateUnit()))}
	_, err = g.SaveVM(w)
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		return fmt.Errorf("Error while writing VM state: %v", err)
	}
	for _, d := range ds {
		if err := d.be.Flush(); err != nil {
			return fmt.Errorf("Error while creating snapshot on '%s': %v", d.name, err)
		}
		size := uint64(0)
		if d.name == vm.name {
			size = uint64(w.pos)
		}
		if err := d.img.SaveVMSnapshot(r.Tag, size, uint64(clock)); err != nil {
			return fmt.Errorf("Error while creating snapshot on '%s': %v", d.name, err)
		}
	}
	return nil
}

func anyHas(ds []snapDrive, name string) (bool, error) {
	for _, d := range ds {
		_, ok, err := findByName(d.img, name)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// vmStateChunk is the write size into the area: 1 MiB, a whole number of units.
func vmStateChunk(unit int64) int64 { return max(unit, (1<<20)/unit*unit) }

// vmStateWriter buffers the stream into whole-unit writes of the VM state area.
type vmStateWriter struct {
	img vmStateImage
	buf []byte
	pos int64 // bytes of state so far
	off int64 // bytes written to the area
}

func (w *vmStateWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), cap(w.buf)-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		w.pos += int64(k)
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

func (w *vmStateWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.img.WriteVMState(w.buf, w.off)
	w.off += int64(len(w.buf))
	w.buf = w.buf[:0]
	return err
}

// LoadSnapshot implements monitor.Snapshotter (loadvm, snapshot-load, -loadvm). As
// QEMU 7.2's, the guest stops first and stays stopped (restore-vm) when the load
// fails.
func (l *Loop) LoadSnapshot(r monitor.SnapshotRequest) error {
	l.snap.mu.Lock()
	defer l.snap.mu.Unlock()
	g, err := l.snapGuest()
	if err != nil {
		return err
	}
	running, err := l.stopFor(monitor.RestoreVM)
	if err != nil {
		return err
	}
	if err := l.loadSnapshot(g, r); err != nil {
		return err
	}
	l.restart(running)
	return nil
}

func (l *Loop) loadSnapshot(g Migratable, r monitor.SnapshotRequest) error {
	ds, err := l.drivesFor(r)
	if err != nil {
		return err
	}
	if ok, err := hasAll(ds, r.Tag); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("Snapshot '%s' does not exist in one or more devices", r.Tag)
	}
	vm, err := vmStateDrive(ds, r.VMState)
	if err != nil {
		return err
	}
	sn, _, err := findByName(vm.img, r.Tag)
	if err != nil {
		return err
	}
	if sn.VMStateSize == 0 {
		return errors.New("This is a disk-only snapshot. Revert to it  offline using qemu-img") // sic: QEMU's two spaces
	}
	if q, ok := g.(Quiescer); ok {
		thaw, err := q.QuiesceDevices()
		if err != nil {
			return err
		}
		defer thaw()
	}
	for _, d := range ds {
		s, _, err := findByName(d.img, r.Tag)
		if err == nil {
			if err = d.be.Flush(); err == nil {
				err = d.img.ApplySnapshot(s.ID)
			}
		}
		if err != nil {
			return fmt.Errorf("Could not load snapshot '%s' on '%s': %v", r.Tag, d.name, err)
		}
	}
	if _, err := g.LoadVM(vm.img.VMStateReader(sn.VMStateSize)); err != nil {
		return fmt.Errorf("Error while loading VM state: %v", err)
	}
	return nil
}

// DeleteSnapshot implements monitor.Snapshotter (delvm, snapshot-delete): drives
// without the snapshot are left alone, as QEMU's.
func (l *Loop) DeleteSnapshot(r monitor.SnapshotRequest) error {
	l.snap.mu.Lock()
	defer l.snap.mu.Unlock()
	ds, err := l.drivesFor(r)
	if err != nil {
		return err
	}
	return deleteAll(ds, r.Tag)
}

// SnapshotDisks implements monitor.Snapshotter (info snapshots).
func (l *Loop) SnapshotDisks() ([]monitor.SnapshotDisk, error) {
	l.snap.mu.Lock()
	defer l.snap.mu.Unlock()
	var ds []snapDrive
	if all, err := l.drivesFor(monitor.SnapshotRequest{}); err == nil {
		ds = all
	} else {
		// A drive that cannot take snapshots is left out of the list (QEMU lists
		// those bdrv_can_snapshot accepts), not an error here.
		for _, id := range l.driveIDs() {
			if d := l.snapDrive(id); d.canSnapshot() {
				ds = append(ds, d)
			}
		}
	}
	if _, err := vmStateDrive(ds, ""); err != nil {
		return nil, err
	}
	var out []monitor.SnapshotDisk
	for _, d := range ds {
		l, err := d.img.Snapshots()
		if err != nil {
			return nil, err
		}
		sd := monitor.SnapshotDisk{Drive: d.name}
		for _, s := range l {
			sd.Snapshots = append(sd.Snapshots, monitor.DiskSnapshot{ID: s.ID, Name: s.Name, VMStateSize: s.VMStateSize,
				Date: time.Unix(s.DateSec, s.DateNsec), VMClock: time.Duration(s.VMClockNsec), ICount: s.ICount})
		}
		out = append(out, sd)
	}
	return out, nil
}

// LoadVMAtStart is -loadvm NAME: the first guest, built and not yet run, takes the
// snapshot's state; a failure ends the process as QEMU's does.
func (l *Loop) LoadVMAtStart(tag string) error {
	l.snap.mu.Lock()
	defer l.snap.mu.Unlock()
	g, err := l.snapGuest()
	if err != nil {
		return err
	}
	l.mu.Lock()
	cur := l.cur
	running := l.status == monitor.Running
	l.mu.Unlock()
	if cur == nil {
		return errors.New("-loadvm: no guest")
	}
	if err := cur.Pause(); err != nil {
		return err
	}
	if err := l.loadSnapshot(g, monitor.SnapshotRequest{Tag: tag}); err != nil {
		return err
	}
	if running {
		cur.Resume()
	}
	return nil
}
