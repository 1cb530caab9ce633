// Package cpuprof gives the gemu commands one way to write a Go CPU profile of a run:
// GEMU_CPUPROFILE=FILE in the environment (read it with go tool pprof). It owns nothing
// else and must not touch the commands' flags or output.
package cpuprof

import (
	"os"
	"runtime/pprof"
)

// Start begins profiling into the file GEMU_CPUPROFILE names, when it is set and can be
// created; the returned function stops the profile and closes the file (it does nothing
// when no profile was started).
func Start() (stop func()) {
	p := os.Getenv("GEMU_CPUPROFILE")
	if p == "" {
		return func() {}
	}
	f, err := os.Create(p)
	if err != nil {
		return func() {}
	}
	if pprof.StartCPUProfile(f) != nil {
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
