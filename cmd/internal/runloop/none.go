package runloop

import (
	"errors"
	"sync"

	"gemu/hw/pci"
	"gemu/machine/monitor"
)

// NoneGuest is QEMU's `-machine none`: no CPU, no memory, no device; only the
// monitors run (management tools probe capabilities this way). Run returns when the
// loop stops it.
func NoneGuest() Guest { return &noneGuest{stop: make(chan struct{})} }

type noneGuest struct {
	once sync.Once
	stop chan struct{}
	exit Exit
}

func (g *noneGuest) end(e Exit) { g.once.Do(func() { g.exit = e; close(g.stop) }) }

func (g *noneGuest) Run() (Exit, error) { <-g.stop; return g.exit, nil }
func (g *noneGuest) Stop()              { g.end(Stopped) }
func (g *noneGuest) Pause() error       { return nil }
func (g *noneGuest) Resume()            {}
func (g *noneGuest) Reset()             { g.end(Reset) }
func (g *noneGuest) PowerDown() error {
	return errors.New("the none machine has no power button")
}
func (g *noneGuest) ReadPhys(addr uint64, p []byte) error {
	return errors.New("the none machine has no memory")
}
func (g *noneGuest) CPUs() []monitor.CPU { return []monitor.CPU{} }
func (g *noneGuest) PCI() *pci.Bus       { return nil }
func (g *noneGuest) Close()              {}
