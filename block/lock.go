package block

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Image locking, as QEMU's file-posix driver does it (raw_apply_lock_bytes and
// raw_check_lock_bytes), so that gemu and QEMU processes see each other's locks.
//
// Every open image file carries open-file-description (OFD) read locks on single bytes:
// byte LockPermBase+i while the opener uses permission bit i, byte LockSharedBase+i
// while it does NOT let others use permission bit i. An opener that wants permission i
// checks that nobody holds LockSharedBase+i; one that does not share i checks that
// nobody holds LockPermBase+i. The locks are advisory and vanish when the file is closed.

// Perm is a set of QEMU block permissions (BLK_PERM_*), one lock byte each.
type Perm uint64

const (
	PermConsistentRead Perm = 1 << iota // "consistent read"
	PermWrite                           // "write"
	PermWriteUnchanged                  // "write unchanged"
	PermResize                          // "resize"
	// PermAll is every permission QEMU 7.2 knows (BLK_PERM_ALL).
	PermAll = PermConsistentRead | PermWrite | PermWriteUnchanged | PermResize
)

// Lock byte offsets (RAW_LOCK_PERM_BASE, RAW_LOCK_SHARED_BASE).
const (
	LockPermBase   = 100
	LockSharedBase = 200
)

var permNames = [...]string{"consistent read", "write", "write unchanged", "resize"}

// FileRole says what a host file is to the format above it (QEMU's BdrvChildRole), which
// decides the permissions its locks stand for.
type FileRole int

const (
	// RoleFiltered: the file is the image as is (raw).
	RoleFiltered FileRole = iota
	// RoleImage: the file holds metadata and data (a qcow2 file, a VMDK descriptor or
	// sparse extent). Nobody else may write or resize it, even for a read-only open.
	RoleImage
	// RoleData: the file holds guest data only (a qcow2 external data file, a VMDK flat
	// extent). Nobody else may resize it.
	RoleData
)

// LockError is a lock conflict with another process (or another open in this one). Its
// text is qemu-img's, two lines: `Failed to get "write" lock` and the hint.
type LockError struct {
	Path string // the file, as the image named it
	Msg  string // `Failed to get "write" lock`, `Failed to get shared "write" lock`, ...
}

func (e *LockError) Error() string {
	return e.Msg + "\nIs another process using the image [" + e.Path + "]?"
}

// FilePerms returns the permissions an open with opts takes on a file of the given role,
// and the permissions it shares with others, as QEMU computes them for the file node
// under a BlockBackend opened with the same flags (bdrv_default_perms).
func FilePerms(opts OpenOptions, role FileRole) (perm, shared Perm) {
	perm = PermConsistentRead
	if !opts.ReadOnly {
		perm |= PermWrite
	}
	shared = PermAll &^ opts.Unshare
	switch role {
	case RoleImage:
		if !opts.ReadOnly {
			perm |= PermWrite | PermResize
		}
		shared &^= PermWrite | PermResize
	case RoleData:
		shared &^= PermResize
		if perm&PermWrite != 0 {
			perm |= PermResize
		}
	}
	if opts.ForceShare {
		shared = PermAll
	}
	return perm, shared
}

// BackingOptions returns the options to open the backing layer of an image opened with
// o: read-only, with the permissions QEMU gives a backing child (bdrv_default_perms_for_cow),
// the locking and cache options inherited, and the given backing format.
func (o OpenOptions) BackingOptions(format string) OpenOptions {
	b := OpenOptions{
		ReadOnly:   true,
		Format:     format,
		Depth:      o.Depth + 1,
		NoLock:     o.NoLock,
		ForceShare: o.ForceShare,
		Direct:     o.Direct,
	}
	if o.Unshare&PermWrite != 0 {
		// The layers above cannot tolerate changing data: nor can the backing file.
		b.Unshare = PermWrite | PermResize
	}
	return b
}

// OpenImageFile opens a file of an image (the image itself, an external data file, an
// extent) read-only or read-write as opts says, with O_DIRECT if opts.Direct, and takes
// the QEMU-compatible locks for role unless opts.NoLock. Open errors are *os.PathError;
// lock conflicts *LockError.
func OpenImageFile(name string, opts OpenOptions, role FileRole) (*os.File, error) {
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	if opts.Direct {
		flag |= unix.O_DIRECT
	}
	f, err := os.OpenFile(name, flag, 0)
	if err != nil {
		return nil, err
	}
	if opts.NoLock {
		return f, nil
	}
	perm, shared := FilePerms(opts, role)
	if err := LockFile(f, name, perm, shared); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// CreateImageFile creates (or opens) name for writing a new image and, before truncating
// an existing file, takes the locks QEMU's raw_co_create takes (write and resize, nobody
// else resizing), so creating over an image in use fails and leaves it untouched.
func CreateImageFile(name string) (*os.File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := LockFile(f, name, PermWrite|PermResize, PermAll&^PermResize); err != nil {
		f.Close()
		return nil, err
	}
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// LockFile takes the locks for using perm and sharing shared on f, then checks that no
// other open file description holds a conflicting one. On a conflict the locks f holds
// are left for the caller to drop by closing f. Filesystems without lock support
// (ENOLCK, EOPNOTSUPP) are not an error: QEMU's locking=auto falls back the same way.
func LockFile(f *os.File, path string, perm, shared Perm) error {
	fd := int(f.Fd())
	for i := range permNames {
		bit := Perm(1) << i
		if perm&bit != 0 {
			if err := ofdLock(fd, LockPermBase+i, unix.F_RDLCK); err != nil {
				return lockByteError(path, LockPermBase+i, err)
			}
		}
		if shared&bit == 0 {
			if err := ofdLock(fd, LockSharedBase+i, unix.F_RDLCK); err != nil {
				return lockByteError(path, LockSharedBase+i, err)
			}
		}
	}
	for i, name := range permNames {
		bit := Perm(1) << i
		if perm&bit != 0 {
			if held, err := ofdHeld(fd, LockSharedBase+i); err != nil {
				return lockByteError(path, LockSharedBase+i, err)
			} else if held {
				return &LockError{Path: path, Msg: fmt.Sprintf("Failed to get %q lock", name)}
			}
		}
	}
	for i, name := range permNames {
		bit := Perm(1) << i
		if shared&bit == 0 {
			if held, err := ofdHeld(fd, LockPermBase+i); err != nil {
				return lockByteError(path, LockPermBase+i, err)
			} else if held {
				return &LockError{Path: path, Msg: fmt.Sprintf("Failed to get shared %q lock", name)}
			}
		}
	}
	return nil
}

// errNoLocks marks a filesystem that does not do locking.
var errNoLocks = errors.New("locking not supported")

func lockByteError(path string, off int, err error) error {
	if errors.Is(err, errNoLocks) {
		return nil
	}
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return &LockError{Path: path, Msg: fmt.Sprintf("Failed to lock byte %d", off)}
	}
	return fmt.Errorf("Failed to lock byte %d: %s", off, errnoText(err))
}

func ofdLock(fd, off int, typ int16) error {
	fl := unix.Flock_t{Type: typ, Whence: 0, Start: int64(off), Len: 1}
	err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &fl)
	if errors.Is(err, unix.ENOLCK) || errors.Is(err, unix.EOPNOTSUPP) {
		return errNoLocks
	}
	return err
}

// ofdHeld reports whether another open file description holds a lock on byte off that
// an exclusive lock would conflict with (qemu_lock_fd_test).
func ofdHeld(fd, off int) (bool, error) {
	fl := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: int64(off), Len: 1}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &fl); err != nil {
		if errors.Is(err, unix.ENOLCK) || errors.Is(err, unix.EOPNOTSUPP) {
			return false, errNoLocks
		}
		return false, err
	}
	return fl.Type != unix.F_UNLCK, nil
}
