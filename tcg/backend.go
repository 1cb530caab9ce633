package tcg

import (
	"fmt"
	"os"
)

// Backend names a code generator for the IR.
type Backend string

const (
	// BackendClosure compiles blocks into Go closures (closure.go); portable.
	BackendClosure Backend = "closure"
	// BackendNative compiles blocks into amd64 machine code (native_amd64.go); blocks
	// it cannot compile, and every block on other hosts, use the closure backend.
	BackendNative Backend = "native"
)

// defaultBackend is used when GEMU_TCG_BACKEND is unset and the host supports it.
const defaultBackend = BackendNative

// selected is the backend chosen once at start from GEMU_TCG_BACKEND.
var selected = selectBackend(os.Getenv("GEMU_TCG_BACKEND"))

func selectBackend(v string) Backend {
	switch Backend(v) {
	case "":
		if !nativeSupported {
			return BackendClosure
		}
		return defaultBackend
	case BackendNative:
		if !nativeSupported {
			fmt.Fprintf(os.Stderr, "gemu: GEMU_TCG_BACKEND=native is amd64-only; using closure\n")
			return BackendClosure
		}
		return BackendNative
	case BackendClosure:
		return BackendClosure
	}
	d := selectBackend("")
	fmt.Fprintf(os.Stderr, "gemu: GEMU_TCG_BACKEND=%q unknown (closure, native); using %s\n", v, d)
	return d
}

// SelectedBackend returns the backend Compile uses.
func SelectedBackend() Backend { return selected }

// Compile compiles a block's IR with the selected backend. The returned function runs
// the block on env. The IR must end with an exit (or a helper that ends the block).
func Compile[E any](t *Target[E], ops []Op[E]) (func(env *E), error) {
	f, _, err := compileWith(selected, t, ops)
	return f, err
}

// CompileLinked is Compile that also returns the block's Linkage, for
// Cache.InsertLinked (zero unless the native backend compiled the whole block).
func CompileLinked[E any](t *Target[E], ops []Op[E]) (func(env *E), Linkage, error) {
	return compileWith(selected, t, ops)
}

func compileWith[E any](be Backend, t *Target[E], ops []Op[E]) (func(env *E), Linkage, error) {
	// The native compiler runs the closure compiler's checks on every op (it builds
	// closures for the runs it does not compile natively), so a block it accepts is
	// well-formed; anything else, malformed IR included, goes to the closure compiler,
	// which reports malformed IR the same way whichever backend is selected.
	if be == BackendNative {
		if f, lk, ok := compileNative(t, ops); ok {
			return f, lk, nil
		}
	}
	f, err := compileClosure(t, ops)
	return f, Linkage{}, err
}
