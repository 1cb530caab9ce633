// Package tcg owns the target-independent half of gemu's translating CPU engine: the
// translation-block (TB) cache keyed by guest physical PC, virtual PC and mode flags; the
// per-vCPU direct-mapped jump cache; direct block chaining; the softmmu TLB structure
// (virtual page → host pointer, per vCPU and MMU index); and the bookkeeping that
// invalidates translated code when the guest writes to a page holding it. It must not
// know any guest instruction set, device or machine: targets (target-arm, target-x86)
// decode guest code, walk their page tables and raise their exceptions, and hand tcg
// only addresses, flags and backend code.
//
// # The first backend: block-fused Go closures
//
// A frontend (the target's decoder) turns each guest instruction into backend code
// ("ops"). The first backend's op type is a Go closure specialised at translation time
// for the instruction's operands (register numbers, immediates, shift amounts and the
// instruction's own PC are captured constants, the XZR/SP choice and the condition are
// resolved once), and a TB is the slice of those closures, executed by the target's run
// loop without re-decoding. The numbers measured on this host for the options were:
// per-instruction closures dispatched from a fetch/decode loop ~190 guest MIPS, a plain
// switch interpreter ~440, block-fused closures ~900-1000, native amd64 ~3500. Closures
// were chosen first because they are pure Go (no cgo, no executable memory, no
// assembler), give precise exceptions for free (each op knows its guest PC, and guest
// state is only ever in the State struct, so a fault inside an op leaves every earlier
// instruction's effects committed and no later one's), are debuggable with the normal Go
// tools, and reach most of the block-fused speed once the per-block loop and lookups are
// cheap (jump cache hit, chained successor, one atomic exit-request check per block).
//
// # Path to a native amd64 backend
//
// Cache, TB, JumpCache, the TLB layout and CodePages are generic over the op type, and
// targets reach guest memory only through the TLB entry layout defined here (a tag
// compare that also rejects misaligned accesses, then a host pointer plus page offset,
// then for stores a check of the page's code flag). A native backend keeps those
// structures and replaces the op type: the target would emit tcg IR for each
// instruction instead of a closure, and the backend would lower the IR to amd64 machine
// code in an mmap'ed executable arena, with the TLB fast path inlined (same tag/host
// fields at fixed offsets) and helper calls (page walks, exceptions, system registers)
// going back into Go through a small trampoline. Chaining becomes patched jumps between
// arena blocks instead of the Link pointers here; invalidation stays as is.
package tcg
