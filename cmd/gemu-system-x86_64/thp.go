package main

import (
	"bytes"
	"os"
	"strings"
	"syscall"
)

// thpModeFile holds the host's transparent huge page mode, the selected one in brackets.
const thpModeFile = "/sys/kernel/mm/transparent_hugepage/enabled"

// avoidHeapHugePages keeps gemu's own Go heap on small pages where the host backs every
// anonymous mapping with transparent huge pages (mode "always", as in Debian's kernels),
// by re-executing gemu once with GODEBUG=disablethp=1. Guest RAM wants huge pages and
// asks for them itself (hw/memory); gemu's heap is a few hundred KiB live, yet its first
// touch faults in a whole 2 MiB page, and a second one as it grows: measured in the
// KVM-in-TCG harness, the 4 MiB heap arena was resident as huge pages, 2-4 MiB of
// gemu's 4.3-6.4 MiB outside guest RAM. The Go runtime reads disablethp only at start-up
// and does not accept it as a //go:debug directive, hence the re-exec. If anything
// fails gemu simply runs on as it is.
func avoidHeapHugePages() {
	if strings.Contains(os.Getenv("GODEBUG"), "disablethp=") {
		return
	}
	mode, err := os.ReadFile(thpModeFile)
	if err != nil || !bytes.Contains(mode, []byte("[always]")) {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	godebug := "disablethp=1"
	if old := os.Getenv("GODEBUG"); old != "" {
		godebug = old + "," + godebug
	}
	env := []string{"GODEBUG=" + godebug}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	_ = syscall.Exec(exe, os.Args, env)
}
