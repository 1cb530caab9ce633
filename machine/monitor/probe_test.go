package monitor

import (
	"bufio"
	"encoding/json"
	"net"
	"testing"
)

// probeFake is the fake machine with probe tables.
type probeFake struct{ *fake }

func (p probeFake) Info() Info {
	return Info{Target: "aarch64", Machines: []MachineType{{Name: "virt-7.2", Alias: "virt"}},
		Probe: &Probe{Accels: []string{"tcg"}, GICVersions: []int{2, 3},
			CPUs:    []CPUModel{{Name: "cortex-a57", Type: "cortex-a57-arm-cpu"}},
			Devices: []DeviceType{{Name: "virtio-blk-pci", Parent: "virtio-pci", Props: []DeviceProp{{"drive", "str"}}}},
			Options: map[string][]OptionParam{"machine": {{Name: "type", Type: "string"}}}}}
}

// TestProbeCommands checks the probe commands answer from the Probe tables, filter
// as QEMU's do and fail in QEMU's classes (texts recorded from qemu-system-x86_64 7.2
// -machine none).
func TestProbeCommands(t *testing.T) {
	s := NewServer(probeFake{&fake{status: Running}}, Options{})
	t.Cleanup(s.Close)
	a, b := net.Pipe()
	go s.Handle(b, b, b, QMP)
	c := &client{t: t, c: a, r: bufio.NewReader(a)}
	c.read()
	c.do(`{"execute":"qmp_capabilities"}`)
	names := func(m map[string]any) map[string]bool {
		out := map[string]bool{}
		l, _ := m["return"].([]any)
		for _, e := range l {
			o, _ := e.(map[string]any)
			n, _ := o["name"].(string)
			out[n] = true
		}
		return out
	}
	all := names(c.do(`{"execute":"qom-list-types"}`))
	for _, n := range []string{"virtio-blk-pci", "tcg-accel", "virt-7.2-machine", "none-machine", "cortex-a57-arm-cpu", "rng-random"} {
		if !all[n] {
			t.Errorf("qom-list-types lacks %s: %v", n, all)
		}
	}
	if all["device"] || all["memory-backend-file"] {
		t.Errorf("abstract types listed without abstract=true: %v", all)
	}
	accels := names(c.do(`{"execute":"qom-list-types","arguments":{"implements":"accel"}}`))
	if len(accels) != 1 || !accels["tcg-accel"] {
		t.Errorf("implements accel: %v", accels)
	}
	if p := names(c.do(`{"execute":"device-list-properties","arguments":{"typename":"virtio-blk-pci"}}`)); !p["drive"] || len(p) != 1 {
		t.Errorf("device-list-properties virtio-blk-pci: %v", p)
	}
	for req, want := range map[string][2]string{
		`{"execute":"device-list-properties","arguments":{"typename":"nope"}}`:             {DeviceNotFound, "Device 'nope' not found"},
		`{"execute":"device-list-properties","arguments":{"typename":"none-machine"}}`:     {GenericError, "Parameter 'typename' expects a non-abstract device type"},
		`{"execute":"qom-list-properties","arguments":{"typename":"nope"}}`:                {DeviceNotFound, "Class 'nope' not found"},
		`{"execute":"query-command-line-options","arguments":{"option":"nope"}}`:           {GenericError, "invalid option name: nope"},
		`{"execute":"device-list-properties","arguments":{"typename":1}}`:                  {GenericError, "Invalid parameter type for 'typename', expected: string"},
		`{"execute":"query-sgx-capabilities"}`:                                             {CommandNotFound, "The command query-sgx-capabilities has not been found"},
		`{"execute":"qom-list-types","arguments":{"implements":"accel","abstract":"yes"}}`: {GenericError, "Invalid parameter type for 'abstract', expected: boolean"},
	} {
		if cl, d := errOf(c.do(req)); cl != want[0] || d != want[1] {
			t.Errorf("%s: %s %q, want %s %q", req, cl, d, want[0], want[1])
		}
	}
	r := c.do(`{"execute":"query-gic-capabilities"}`)
	b2, _ := json.Marshal(r["return"])
	if string(b2) != `[{"emulated":true,"kernel":false,"version":2},{"emulated":true,"kernel":false,"version":3}]` {
		t.Errorf("query-gic-capabilities: %s", b2)
	}
	r = c.do(`{"execute":"query-target"}`)
	if tg, _ := r["return"].(map[string]any); tg["arch"] != "aarch64" {
		t.Errorf("query-target: %v", r)
	}
}
