//go:build !amd64

package tcg

// nativeSupported reports whether this host has the native backend.
const nativeSupported = false

// compileNative is unavailable off amd64: every block uses the closure backend.
func compileNative[E any](t *Target[E], ops []Op[E]) (func(env *E), Linkage, bool) {
	return nil, Linkage{}, false
}
