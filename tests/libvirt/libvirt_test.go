// Package libvirt holds the management-stack probe tests: Debian's libvirt (virsh
// domcapabilities, its QEMU driver embedded in virsh with a private root directory,
// so no system daemon or /run/libvirt state is touched) probes gemu's system
// emulators the way it probes QEMU (-machine none, -daemonize, -pidfile, QMP), and
// the probe commands' replies are compared in shape with qemu-system-x86_64's. It
// drives the built binaries, as libvirt does; it must not reach into gemu's packages.
package libvirt

import (
	"bufio"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"gemu/tests/testbin"
)

// binDir holds the emulators where libvirt's unprivileged QEMU user can run them.
func binDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gemu-libvirt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	return dir
}

func build(t *testing.T, dir, prog string) string {
	t.Helper()
	p, err := testbin.Build(dir, "gemu/cmd/"+prog)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type domCaps struct {
	Path    string `xml:"path"`
	Domain  string `xml:"domain"`
	Machine string `xml:"machine"`
	Arch    string `xml:"arch"`
	Devices struct {
		Disk struct {
			Supported string `xml:"supported,attr"`
			Enums     []enum `xml:"enum"`
		} `xml:"disk"`
		RNG struct {
			Supported string `xml:"supported,attr"`
			Enums     []enum `xml:"enum"`
		} `xml:"rng"`
	} `xml:"devices"`
}

type enum struct {
	Name   string   `xml:"name,attr"`
	Values []string `xml:"value"`
}

func values(es []enum, name string) []string {
	for _, e := range es {
		if e.Name == name {
			return e.Values
		}
	}
	return nil
}

func has(vs []string, v string) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

func kvmUsable() string {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return err.Error()
	}
	f.Close()
	return ""
}

// TestDomcapabilities runs virsh domcapabilities on both emulators and checks that
// libvirt accepted them: the virt type, gemu's machine type and virtio disk and rng
// models are what it reports.
func TestDomcapabilities(t *testing.T) {
	if testing.Short() {
		t.Skip("runs libvirt's probe: skipped under -short")
	}
	virsh, err := exec.LookPath("virsh")
	if err != nil {
		t.Skip("virsh not installed (make deps installs libvirt-clients and libvirt-daemon-system)")
	}
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so"); err != nil {
		t.Skip("libvirt's QEMU driver is not installed (libvirt-daemon-system): ", err)
	}
	dir := binDir(t)
	x86 := build(t, dir, "gemu-system-x86_64")
	arm := build(t, dir, "gemu-system-aarch64")
	for _, c := range []struct {
		bin, arch, virt, machine string
	}{
		{x86, "x86_64", "kvm", "pc-i440fx-7.2"},
		{x86, "x86_64", "qemu", "pc-i440fx-7.2"},
		{arm, "aarch64", "qemu", "virt-7.2"},
	} {
		t.Run(c.arch+"-"+c.virt, func(t *testing.T) {
			if c.virt == "kvm" {
				if why := kvmUsable(); why != "" {
					t.Skip("no usable /dev/kvm: ", why)
				}
			}
			root, err := os.MkdirTemp("", "gemu-libvirt-root-")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(root)
			os.Chmod(root, 0o755)
			cmd := exec.Command(virsh, "-c", "qemu:///embed?root="+root, "domcapabilities",
				"--emulatorbin", c.bin, "--arch", c.arch, "--virttype", c.virt)
			cmd.Env = append(os.Environ(), "LIBVIRT_LOG_OUTPUTS=1:file:"+filepath.Join(root, "libvirt.log"),
				"LIBVIRT_LOG_FILTERS=1:qemu.qemu_monitor 1:qemu.qemu_process 1:util.command")
			out, err := cmd.Output()
			if err != nil {
				var stderr string
				if ee, ok := err.(*exec.ExitError); ok {
					stderr = string(ee.Stderr)
				}
				log, _ := os.ReadFile(filepath.Join(root, "libvirt.log"))
				if len(log) > 8000 {
					log = log[len(log)-8000:]
				}
				t.Fatalf("virsh domcapabilities: %v\n%s\nlibvirt log tail:\n%s", err, stderr, log)
			}
			var dc domCaps
			if err := xml.Unmarshal(out, &dc); err != nil {
				t.Fatalf("domcapabilities XML: %v\n%s", err, out)
			}
			if dc.Path != c.bin || dc.Domain != c.virt || dc.Arch != c.arch || dc.Machine != c.machine {
				t.Errorf("got path %q domain %q arch %q machine %q; want %q %q %q %q", dc.Path, dc.Domain, dc.Arch, dc.Machine,
					c.bin, c.virt, c.arch, c.machine)
			}
			if m := values(dc.Devices.Disk.Enums, "model"); !has(m, "virtio") {
				t.Errorf("disk models %v lack virtio", m)
			}
			if b := values(dc.Devices.Disk.Enums, "bus"); !has(b, "virtio") {
				t.Errorf("disk buses %v lack virtio", b)
			}
			if m := values(dc.Devices.RNG.Enums, "model"); !has(m, "virtio") {
				t.Errorf("rng models %v lack virtio", m)
			}
		})
	}
}

// qmpClient is a minimal QMP client for the shape comparison.
type qmpClient struct {
	c net.Conn
	r *bufio.Reader
}

func startQMP(t *testing.T, bin string, args ...string) *qmpClient {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "qmp.sock")
	cmd := exec.Command(bin, append([]string{"-S", "-no-user-config", "-nodefaults", "-nographic", "-machine", "none",
		"-qmp", "unix:" + sock + ",server=on,wait=off"}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var conn net.Conn
	var err error
	for i := 0; i < 200; i++ {
		if conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%s: QMP socket: %v", bin, err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	q := &qmpClient{conn, bufio.NewReaderSize(conn, 1<<20)}
	q.read(t) // greeting
	q.do(t, `{"execute":"qmp_capabilities"}`)
	return q
}

func (q *qmpClient) read(t *testing.T) map[string]any {
	t.Helper()
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			t.Fatalf("QMP read: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("QMP reply %q: %v", line, err)
		}
		if _, ev := m["event"]; !ev {
			return m
		}
	}
}

func (q *qmpClient) do(t *testing.T, req string) map[string]any {
	t.Helper()
	if _, err := q.c.Write([]byte(req + "\n")); err != nil {
		t.Fatal(err)
	}
	return q.read(t)
}

// shape describes a reply: the error class, or for a return its JSON kind and the
// members of the object (of every element of a list): each member's kind, and which
// members every element has (required) and which some have (optional in QAPI).
type shape struct {
	kind     string            // "error CLASS", "obj", "list", "str", ...
	all      map[string]string // member → kind, over every element
	required map[string]bool   // members on every element
	empty    bool              // an empty list
}

func kindOf(v any) string {
	switch v.(type) {
	case string:
		return "str"
	case float64:
		return "num"
	case bool:
		return "bool"
	case []any:
		return "list"
	case map[string]any:
		return "obj"
	}
	return "null"
}

func shapeOf(m map[string]any) shape {
	if e, ok := m["error"].(map[string]any); ok {
		return shape{kind: fmt.Sprintf("error %v", e["class"])}
	}
	sh := shape{kind: kindOf(m["return"]), all: map[string]string{}, required: map[string]bool{}}
	var objs []map[string]any
	switch v := m["return"].(type) {
	case []any:
		sh.empty = len(v) == 0
		for _, e := range v {
			if o, ok := e.(map[string]any); ok {
				objs = append(objs, o)
			} else {
				sh.all[""] = kindOf(e)
			}
		}
	case map[string]any:
		objs = append(objs, v)
	}
	count := map[string]int{}
	for _, o := range objs {
		for k, x := range o {
			sh.all[k] = kindOf(x)
			count[k]++
		}
	}
	for k, n := range count {
		sh.required[k] = n == len(objs)
	}
	return sh
}

// compatible reports why gemu's reply shape g differs from QEMU's q: another kind
// or error class, a member QEMU never sends or of another kind, or a member QEMU
// always sends that gemu lacks. An empty list matches any list.
func compatible(q, g shape) string {
	if q.kind != g.kind {
		return fmt.Sprintf("qemu %s, gemu %s", q.kind, g.kind)
	}
	if g.empty || q.empty {
		return ""
	}
	for k, kind := range g.all {
		if qk, ok := q.all[k]; !ok {
			return fmt.Sprintf("member %q: qemu has none", k)
		} else if qk != kind {
			return fmt.Sprintf("member %q: qemu %s, gemu %s", k, qk, kind)
		}
	}
	var missing []string
	for k, req := range q.required {
		if req && !g.required[k] {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Sprintf("gemu lacks member(s) %v", missing)
	}
	return ""
}

// TestProbeReplyShapes sends libvirt's probe commands to qemu-system-x86_64 and to
// gemu-system-x86_64 (both -machine none) and compares the replies' shapes: members
// and their JSON kinds, or the error class.
func TestProbeReplyShapes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts qemu-system-x86_64: skipped under -short")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed (make deps)")
	}
	gemu := build(t, t.TempDir(), "gemu-system-x86_64")
	// -accel tcg on both: the same accelerator whatever /dev/kvm allows.
	q := startQMP(t, qemu, "-accel", "tcg")
	g := startQMP(t, gemu, "-accel", "tcg")
	for _, req := range []string{
		`{"execute":"query-version"}`,
		`{"execute":"query-target"}`,
		`{"execute":"query-kvm"}`,
		`{"execute":"qom-list-types"}`,
		`{"execute":"qom-list-types","arguments":{"implements":"accel"}}`,
		`{"execute":"device-list-properties","arguments":{"typename":"virtio-blk-pci"}}`,
		`{"execute":"device-list-properties","arguments":{"typename":"no-such-device"}}`,
		`{"execute":"device-list-properties","arguments":{"typename":"none-machine"}}`,
		`{"execute":"qom-list-properties","arguments":{"typename":"memory-backend-file"}}`,
		`{"execute":"qom-list-properties","arguments":{"typename":"none-machine"}}`,
		`{"execute":"qom-list-properties","arguments":{"typename":"no-such-class"}}`,
		`{"execute":"query-machines"}`,
		`{"execute":"query-cpu-definitions"}`,
		`{"execute":"query-tpm-types"}`,
		`{"execute":"query-command-line-options","arguments":{"option":"machine"}}`,
		`{"execute":"query-command-line-options","arguments":{"option":"no-such-option"}}`,
		`{"execute":"query-sev-capabilities"}`,
		`{"execute":"query-gic-capabilities"}`,
	} {
		qs, gs := shapeOf(q.do(t, req)), shapeOf(g.do(t, req))
		if why := compatible(qs, gs); why != "" {
			t.Errorf("%s: %s", req, why)
		}
	}
	// What gemu answers comes from its own tables.
	r := g.do(t, `{"execute":"qom-list-types","arguments":{"implements":"accel"}}`)
	b, _ := json.Marshal(r["return"])
	if !strings.Contains(string(b), `"tcg-accel"`) || !strings.Contains(string(b), `"kvm-accel"`) {
		t.Errorf("accelerators: %s", b)
	}
	r = g.do(t, `{"execute":"device-list-properties","arguments":{"typename":"virtio-net-pci"}}`)
	b, _ = json.Marshal(r["return"])
	if !strings.Contains(string(b), `"netdev"`) || !strings.Contains(string(b), `"mac"`) {
		t.Errorf("virtio-net-pci properties: %s", b)
	}
}
