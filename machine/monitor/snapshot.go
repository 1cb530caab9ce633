package monitor

import (
	"fmt"
	"strings"
	"time"
)

// Run states of internal snapshots, as query-status names them.
const (
	SaveVM    Status = "save-vm"    // savevm writes the state
	RestoreVM Status = "restore-vm" // loadvm reads it; a failed load stays here, paused (QEMU 7.2)
)

// SnapshotRequest is one savevm, loadvm or delvm.
type SnapshotRequest struct {
	Tag string
	// VMState names the drive that holds the VM state (a node name); "" picks the
	// first drive that can, as HMP's commands do.
	VMState string
	// Devices names the drives the snapshot covers (node names); nil means every
	// writable drive (HMP), an empty list is refused as QEMU does.
	Devices []string
	// Overwrite lets savevm replace a snapshot of the same name (HMP); the QMP job
	// refuses one instead.
	Overwrite bool
}

// DiskSnapshot is one internal snapshot of a drive.
type DiskSnapshot struct {
	ID, Name    string
	VMStateSize int64
	Date        time.Time
	VMClock     time.Duration
	ICount      int64 // -1: none
}

// SnapshotDisk is one drive's snapshot list.
type SnapshotDisk struct {
	Drive     string
	Snapshots []DiskSnapshot
}

// Snapshotter is the optional internal-snapshot side of a Machine: savevm, loadvm and
// delvm over the drives' qcow2 images (the VM state stored in the image, as QEMU
// does). Errors carry QEMU's texts.
type Snapshotter interface {
	SaveSnapshot(r SnapshotRequest) error
	LoadSnapshot(r SnapshotRequest) error
	DeleteSnapshot(r SnapshotRequest) error
	// SnapshotDisks lists the drives that can hold snapshots, the one savevm puts
	// the VM state in first; the error when there is none.
	SnapshotDisks() ([]SnapshotDisk, error)
}

func (s *Server) snapshotter() (Snapshotter, error) {
	if sn, ok := s.m.(Snapshotter); ok {
		return sn, nil
	}
	return nil, errorf(GenericError, "no block device can store vmstate for snapshot")
}

// hmpSnapshot runs savevm, loadvm and delvm; false when cmd is none of them.
func (s *Server) hmpSnapshot(w *strings.Builder, cmd, rest string) bool {
	switch cmd {
	case "savevm", "loadvm", "delvm":
	default:
		return false
	}
	args := strings.Fields(rest)
	if len(args) > 1 {
		fmt.Fprintf(w, "%s: extraneous characters at the end of line\nTry \"help %s\" for more information\n", cmd, cmd)
		return true
	}
	if len(args) == 0 && cmd != "savevm" {
		fmt.Fprintf(w, "%s: string expected\nTry \"help %s\" for more information\n", cmd, cmd)
		return true
	}
	sn, err := s.snapshotter()
	if err == nil {
		r := SnapshotRequest{Overwrite: true}
		if len(args) == 1 {
			r.Tag = args[0]
		} else {
			r.Tag = time.Now().Format("vm-20060102150405") // QEMU's name for an unnamed savevm
		}
		switch cmd {
		case "savevm":
			err = sn.SaveSnapshot(r)
		case "loadvm":
			err = sn.LoadSnapshot(r)
		case "delvm":
			err = sn.DeleteSnapshot(r)
		}
	}
	if err != nil {
		fmt.Fprintf(w, "Error: %v\n", errText(err))
	}
	return true
}

func errText(err error) string {
	if e, ok := err.(*Error); ok {
		return e.Desc
	}
	return err.Error()
}

// hmpInfoSnapshots is info snapshots, as QEMU 7.2 prints it: the snapshots of the VM
// state drive that every other drive has too (IDs shown as "--": they may differ
// between images), then each drive's partial ones.
func (s *Server) hmpInfoSnapshots(w *strings.Builder) {
	sn, err := s.snapshotter()
	var disks []SnapshotDisk
	if err == nil {
		disks, err = sn.SnapshotDisks()
	}
	if err != nil {
		fmt.Fprintf(w, "%s\n", errText(err))
		return
	}
	any := false
	for _, d := range disks {
		any = any || len(d.Snapshots) > 0
	}
	if !any {
		w.WriteString("There is no snapshot available.\n")
		return
	}
	onAll := func(name string) bool {
		for _, d := range disks[1:] {
			found := false
			for _, x := range d.Snapshots {
				found = found || x.Name == name
			}
			if !found {
				return false
			}
		}
		return true
	}
	var global []DiskSnapshot
	for _, x := range disks[0].Snapshots {
		if onAll(x.Name) {
			global = append(global, x)
		}
	}
	w.WriteString("List of snapshots present on all disks:\n")
	if len(global) == 0 {
		w.WriteString("None\n")
	}
	for i := range global {
		global[i].ID = "--"
	}
	if len(global) > 0 {
		snapshotRows(w, global)
	}
	for _, d := range disks {
		var partial []DiskSnapshot
		for _, x := range d.Snapshots {
			if !onAll(x.Name) || !hasName(disks[0].Snapshots, x.Name) {
				partial = append(partial, x)
			}
		}
		if len(partial) > 0 {
			fmt.Fprintf(w, "List of partial (non-loadable) snapshots on '%s':\n", d.Drive)
			snapshotRows(w, partial)
		}
	}
}

func hasName(l []DiskSnapshot, name string) bool {
	for _, x := range l {
		if x.Name == name {
			return true
		}
	}
	return false
}

// snapshotRows prints QEMU's bdrv_snapshot_dump header and rows.
func snapshotRows(w *strings.Builder, l []DiskSnapshot) {
	fmt.Fprintf(w, "%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT")
	for _, x := range l {
		ns := x.VMClock.Nanoseconds()
		clock := fmt.Sprintf("%02d:%02d:%02d.%03d", ns/3600e9, ns/60e9%60, ns/1e9%60, ns/1e6%1000)
		ic := ""
		if x.ICount >= 0 {
			ic = fmt.Sprint(x.ICount)
		}
		fmt.Fprintf(w, "%-9s %-16s %8s%20s%13s%11s\n", x.ID, x.Name, sizeToStr(x.VMStateSize),
			x.Date.Format("2006-01-02 15:04:05"), clock, ic)
	}
}

// sizeToStr is QEMU's size_to_str: three significant digits and a binary unit.
func sizeToStr(v int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	i := 0
	f := float64(v)
	// QEMU picks the unit where the value is below 1000 (so 1000 KiB prints 0.977 MiB).
	for i < len(units)-1 && f >= 1000 {
		f /= 1024
		i++
	}
	return strings.TrimSpace(fmt.Sprintf("%0.3g %s", f, units[i]))
}
