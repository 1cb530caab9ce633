package qemuopts

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// qemuRun starts QEMU paused with QMP on stdio, sends cmd after the handshake and
// quits. It returns cmd's "return" value (nil if QEMU failed) and QEMU's stderr.
func qemuRun(t *testing.T, bin string, args []string, cmd, arguments string) (json.RawMessage, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	full := append([]string{"-S", "-display", "none", "-nodefaults", "-no-user-config", "-qmp", "stdio"}, args...)
	c := exec.CommandContext(ctx, bin, full...)
	c.Stdin = strings.NewReader(`{"execute":"qmp_capabilities"}` + "\n" + `{"execute":"` + cmd + `","arguments":` + arguments + `}` + "\n" + `{"execute":"quit"}` + "\n")
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	c.Run()
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 1<<22)
	n := 0
	for sc.Scan() {
		var m struct {
			Return json.RawMessage `json:"return"`
		}
		if json.Unmarshal(sc.Bytes(), &m) == nil && m.Return != nil {
			if n++; n == 2 {
				return m.Return, errb.String()
			}
		} else if strings.Contains(sc.Text(), `"error"`) && n == 1 {
			t.Errorf("%s: %s", cmd, sc.Text())
			return nil, errb.String()
		}
	}
	return nil, errb.String()
}

// qemuTopology asks QEMU for the machine's completed -smp configuration.
func qemuTopology(t *testing.T, bin string, args []string) (Topology, string) {
	ret, stderr := qemuRun(t, bin, args, "qom-get", `{"path":"/machine","property":"smp"}`)
	if ret == nil {
		return Topology{}, stderr
	}
	var s struct{ CPUs, Sockets, Dies, Clusters, Cores, Threads, MaxCPUs int }
	if err := json.Unmarshal(ret, &s); err != nil {
		t.Errorf("qom-get smp: %v in %s", err, ret)
	}
	return Topology(s), stderr
}

func needQEMU(t *testing.T, bin string) string {
	p, err := exec.LookPath(bin)
	if err != nil {
		t.Skipf("%s not installed: %v", bin, err)
	}
	return p
}

// TestSMPAgainstQEMU runs qemu-system-x86_64 (pc) and qemu-system-aarch64 (virt) on
// the same -smp strings: valid topologies must match what QEMU builds, invalid ones
// must fail with QEMU's message.
func TestSMPAgainstQEMU(t *testing.T) {
	x86 := needQEMU(t, "qemu-system-x86_64")
	arm := needQEMU(t, "qemu-system-aarch64")
	type run struct {
		bin   string
		args  []string
		props SMPProps
	}
	pc := run{x86, []string{"-machine", "pc", "-accel", "tcg"}, pcProps}
	virt := run{arm, []string{"-machine", "virt", "-accel", "tcg", "-cpu", "cortex-a57"}, virtProps}
	cases := []struct {
		m    run
		spec string
	}{
		{pc, "4"}, {pc, "4,sockets=1,cores=2,threads=2"}, {pc, "8,sockets=2"}, {pc, "8,cores=2"},
		{pc, "sockets=2,cores=3,threads=2"}, {pc, "2,maxcpus=8"}, {pc, "8,sockets=2,dies=2"},
		{pc, "4,sockets=3"}, {pc, "4,maxcpus=2"}, {pc, "2,clusters=2"}, {pc, "2,foo=1"}, {pc, "x"},
		{virt, "8,clusters=2,cores=2"}, {virt, "6,sockets=2"}, {virt, "2,dies=2"}, {virt, "4,clusters=3"},
		{virt, "4,threads=2"},
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2) // the machine has two cores for everyone
	for _, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			q, stderr := qemuTopology(t, c.m.bin, append(c.m.args, "-smp", c.spec))
			got, err := ParseSMP(c.spec, c.m.props)
			if q.MaxCPUs == 0 {
				line, _, _ := strings.Cut(stderr, "\n")
				msg := line[strings.Index(line, ": ")+2:]
				if e, ok := err.(*Error); !ok || e.Msg != msg {
					t.Errorf("-smp %s: QEMU fails with %q, we give %v", c.spec, msg, err)
				}
				return
			}
			if err != nil || got != q {
				t.Errorf("-smp %s: QEMU builds %+v, we %+v (%v)", c.spec, q, got, err)
			}
		}()
	}
	wg.Wait()
}

// TestMemAgainstQEMU compares -m sizes with QEMU's base memory, and refusals.
func TestMemAgainstQEMU(t *testing.T) {
	x86 := needQEMU(t, "qemu-system-x86_64")
	for _, spec := range []string{"100", "1.5G", "size=64M", "65536K", "1.5", "lots", "0.5G", "2G,foo=1", "1e3"} {
		ret, stderr := qemuRun(t, x86, []string{"-machine", "none", "-m", spec}, "query-memory-size-summary", "{}")
		m, err := ParseMem(spec)
		if ret == nil {
			if err == nil {
				t.Errorf("-m %s: QEMU refuses (%q), we accept %d", spec, stderr, m.Size)
			}
			continue
		}
		var s struct {
			Base uint64 `json:"base-memory"`
		}
		json.Unmarshal(ret, &s)
		if err != nil || m.Size != s.Base {
			t.Errorf("-m %s: QEMU gives %d, we %d (%v)", spec, s.Base, m.Size, err)
		}
	}
}
