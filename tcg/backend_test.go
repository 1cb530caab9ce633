package tcg

import "testing"

func TestSelectBackend(t *testing.T) {
	def := BackendClosure
	native := BackendClosure
	if nativeSupported {
		def, native = defaultBackend, BackendNative
	}
	for v, want := range map[string]Backend{"": def, "closure": BackendClosure, "native": native, "jit": def} {
		if got := selectBackend(v); got != want {
			t.Errorf("GEMU_TCG_BACKEND=%q selects %s, want %s", v, got, want)
		}
	}
}
