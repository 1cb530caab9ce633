package tcg

import "unsafe"

// LoadHost reads size (1, 2, 4 or 8) bytes of guest RAM at the host address p, as a
// TLB hit does: the slow paths of every target share it.
func LoadHost(p unsafe.Pointer, size int) uint64 {
	switch size {
	case 1:
		return uint64(*(*uint8)(p))
	case 2:
		return uint64(*(*uint16)(p))
	case 4:
		return uint64(*(*uint32)(p))
	}
	return *(*uint64)(p)
}

// StoreHost writes the low size bytes of v to guest RAM at the host address p.
func StoreHost(p unsafe.Pointer, size int, v uint64) {
	switch size {
	case 1:
		*(*uint8)(p) = uint8(v)
	case 2:
		*(*uint16)(p) = uint16(v)
	case 4:
		*(*uint32)(p) = uint32(v)
	default:
		*(*uint64)(p) = v
	}
}
