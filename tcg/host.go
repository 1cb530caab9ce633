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

// LoadHostUnaligned is LoadHost for an address that may not be aligned to size (a slow
// path's access within one page): aligned accesses take one host load, others bytes.
func LoadHostUnaligned(p unsafe.Pointer, size int) uint64 {
	if uintptr(p)&uintptr(size-1) == 0 {
		return LoadHost(p, size)
	}
	var v uint64
	for i := 0; i < size; i++ {
		v |= uint64(*(*uint8)(unsafe.Add(p, i))) << (8 * i)
	}
	return v
}

// StoreHostUnaligned is StoreHost for an address that may not be aligned to size.
func StoreHostUnaligned(p unsafe.Pointer, size int, v uint64) {
	if uintptr(p)&uintptr(size-1) == 0 {
		StoreHost(p, size, v)
		return
	}
	for i := 0; i < size; i++ {
		*(*uint8)(unsafe.Add(p, i)) = uint8(v >> (8 * i))
	}
}
