package qemuopts

import (
	"reflect"
	"strings"
	"testing"
)

type kv [][2]string

func pairs(o *Opts) kv {
	var r kv
	for _, k := range o.Keys() {
		v, _ := o.vals[k]
		r = append(r, [2]string{k, v})
	}
	return r
}

func TestParse(t *testing.T) {
	cases := []struct {
		spec, implied string
		want          kv
		help          bool
		short         []string
	}{
		{"virtio-blk-pci,drive=d0,id=x", "driver", kv{{"driver", "virtio-blk-pci"}, {"drive", "d0"}, {"id", "x"}}, false, nil},
		{"file=a,,b,,,format=raw", "", kv{{"file", "a,b,"}, {"format", "raw"}}, false, nil},
		{"a,,b,c=1", "driver", kv{{"driver", "a,b"}, {"c", "1"}}, false, nil},
		{"if=none,readonly", "", kv{{"if", "none"}, {"readonly", "on"}}, false, []string{"readonly"}},
		{"file=x,noreadonly", "", kv{{"file", "x"}, {"readonly", "off"}}, false, []string{"noreadonly"}},
		{"a=1,b=2,a=3", "", kv{{"a", "3"}, {"b", "2"}}, false, nil},
		{"help", "driver", kv{{"driver", "help"}}, true, nil},
		{"?", "type", kv{{"type", "?"}}, true, nil},
		{"virtio-net-pci,help", "driver", kv{{"driver", "virtio-net-pci"}}, true, nil},
		{"driver=help", "driver", kv{{"driver", "help"}}, true, nil},
		{"help", "", nil, true, nil},
		{"", "driver", nil, false, nil},
		{"x=", "", kv{{"x", ""}}, false, nil},
		{"a=1,", "", kv{{"a", "1"}}, false, nil},
		{"a=b=c", "", kv{{"a", "b=c"}}, false, nil},
		{"qcow2,file.driver=file,file.filename=/x,,y", "driver", kv{{"driver", "qcow2"}, {"file.driver", "file"}, {"file.filename", "/x,y"}}, false, nil},
		{"size=1G", "size", kv{{"size", "1G"}}, false, nil},
		{"2G", "size", kv{{"size", "2G"}}, false, nil},
		// The implied key applies to the first element only.
		{"a=1,b", "driver", kv{{"a", "1"}, {"b", "on"}}, false, []string{"b"}},
	}
	for _, c := range cases {
		o, err := Parse(c.spec, c.implied)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.spec, err)
			continue
		}
		if got := pairs(o); !reflect.DeepEqual(got, c.want) || o.Help != c.help || !reflect.DeepEqual(o.ShortFlags, c.short) {
			t.Errorf("Parse(%q, %q) = %v help=%v short=%v; want %v help=%v short=%v", c.spec, c.implied, got, o.Help, o.ShortFlags, c.want, c.help, c.short)
		}
	}
	for spec, want := range map[string]string{
		"=1":                   "Invalid parameter ''",
		",a=1":                 "Invalid parameter ''",
		"a=1,,,=2":             "", // value "1," then key "" → error below
		"file=x,file.driver=y": "Parameters 'file.*' used inconsistently",
		"file.driver=y,file=x": "Parameters 'file.*' used inconsistently",
		".a=1":                 "Invalid parameter '.a'",
		"a.=1":                 "Invalid parameter 'a.'",
		"a..b=1":               "Invalid parameter 'a..b'",
	} {
		_, err := ParseOpt("drive", spec, "")
		if err == nil {
			t.Errorf("Parse(%q) accepted", spec)
			continue
		}
		if want != "" && err.Error() != "-drive "+spec+": "+want {
			t.Errorf("Parse(%q): %q, want %q", spec, err, want)
		}
	}
}

func TestJSON(t *testing.T) {
	cases := []struct {
		spec, implied string
		want          kv
	}{
		{`{"driver":"virtio-blk-pci","drive":"d0","bootindex":1}`, "driver", kv{{"driver", "virtio-blk-pci"}, {"drive", "d0"}, {"bootindex", "1"}}},
		{`{"driver":"qcow2","node-name":"n","file":{"driver":"file","filename":"x,y"}}`, "driver",
			kv{{"driver", "qcow2"}, {"node-name", "n"}, {"file.driver", "file"}, {"file.filename", "x,y"}}},
		{`{"qom-type":"rng-random","id":"rng0","filename":"/dev/urandom"}`, "qom-type", kv{{"qom-type", "rng-random"}, {"id", "rng0"}, {"filename", "/dev/urandom"}}},
		{` {"read-only":true,"auto-read-only":false,"n":-1.5e3}`, "driver", kv{{"read-only", "on"}, {"auto-read-only", "off"}, {"n", "-1.5e3"}}},
		{`{"driver":"quorum","children":[{"driver":"file","filename":"a"},"b"]}`, "driver",
			kv{{"driver", "quorum"}, {"children.0.driver", "file"}, {"children.0.filename", "a"}, {"children.1", "b"}}},
		{`{"driver":"help"}`, "driver", kv{{"driver", "help"}}},
	}
	for _, c := range cases {
		o, err := Parse(c.spec, c.implied)
		if err != nil {
			t.Errorf("Parse(%s): %v", c.spec, err)
			continue
		}
		if got := pairs(o); !o.JSON || !reflect.DeepEqual(got, c.want) {
			t.Errorf("Parse(%s) = %v; want %v", c.spec, got, c.want)
		}
		if o.Help != (o.vals[c.implied] == "help") {
			t.Errorf("Parse(%s): Help=%v", c.spec, o.Help)
		}
	}
	for _, bad := range []string{`{`, `{"a":1}x`, `{"a":null}`, `{"a":{}}`, `{"a":[]}`, `{"":1}`, `{"a":1,"a.b":2}`} {
		if o, err := ParseOpt("device", bad, "driver"); err == nil {
			t.Errorf("Parse(%s) accepted: %v", bad, pairs(o))
		} else if strings.Count(err.Error(), "\n") != 0 || !strings.HasPrefix(err.Error(), "-device ") {
			t.Errorf("Parse(%s): error %q is not one line naming the option", bad, err)
		}
	}
	// A duplicate dotted key in JSON: the later one wins, like a repeated key=val.
	o, err := Parse(`{"a":{"b":1},"a.b":2}`, "")
	if err != nil || pairs(o)[0][1] != "2" {
		t.Errorf("duplicate dotted key: %v %v", err, o)
	}
}

func TestGetters(t *testing.T) {
	o, err := ParseOpt("device", "e1000,a=on,b=no,c=true,d=off,e=yes,f=false,g=maybe,s=1.5G,n=0x10,m=abc,o8=010,big=18446744073709551616,file.x=1,file.y=2", "driver")
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]bool{"a": true, "b": false, "c": true, "d": false, "e": true, "f": false, "absent": true} {
		if got, err := o.Bool(k, true); err != nil || got != want {
			t.Errorf("Bool(%s) = %v, %v", k, got, err)
		}
	}
	if _, err := o.Bool("g", false); err == nil || err.Error() != "-device "+o.Spec+": Parameter 'g' expects 'on' or 'off'" {
		t.Errorf("Bool(g): %v", err)
	}
	if n, err := o.Size("s", 0); err != nil || n != 3<<29 {
		t.Errorf("Size(s) = %d, %v", n, err)
	}
	if _, err := o.Size("m", 0); err == nil || !strings.Contains(err.Error(), "Parameter 'm' expects a non-negative number below 2^64") {
		t.Errorf("Size(m): %v", err)
	}
	if n, err := o.Number("n", 0); err != nil || n != 16 {
		t.Errorf("Number(n) = %d, %v", n, err)
	}
	if n, err := o.Number("o8", 0); err != nil || n != 8 {
		t.Errorf("Number(o8) = %d, %v", n, err)
	}
	if _, err := o.Number("m", 0); err == nil || !strings.HasSuffix(err.Error(), "Parameter 'm' expects a number") {
		t.Errorf("Number(m): %v", err)
	}
	if _, err := o.Number("big", 0); err == nil || !strings.HasSuffix(err.Error(), "Value '18446744073709551616' is too large for parameter 'big'") {
		t.Errorf("Number(big): %v", err)
	}
	if got := o.String("absent", "def"); got != "def" {
		t.Errorf("String default: %q", got)
	}
	if err := o.Check(); err == nil || !strings.HasSuffix(err.Error(), ": Invalid parameter 'driver'") {
		t.Errorf("Check() with the implied key unread: %v", err)
	}
	if o.ImpliedValue() != "e1000" {
		t.Error("ImpliedValue")
	}
	if err := o.Check(); err == nil || !strings.HasSuffix(err.Error(), ": Invalid parameter 'file.x'") {
		t.Errorf("Check(): %v", err)
	}
	if err := o.Check("file."); err != nil {
		t.Errorf("Check(file.): %v", err)
	}
	if u := o.Unused(); !reflect.DeepEqual(u, []string{"file.x", "file.y"}) {
		t.Errorf("Unused = %v", u)
	}
	sub := o.Sub("file")
	if !reflect.DeepEqual(pairs(sub), kv{{"x", "1"}, {"y", "2"}}) || len(o.Unused()) != 0 {
		t.Errorf("Sub = %v, unused %v", pairs(sub), o.Unused())
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	for _, spec := range []string{"virtio-blk-pci,drive=a,,b", `{"driver":"qcow2","file":{"filename":"x,y=z"}}`, "type=a=b,x=1"} {
		o, err := Parse(spec, "driver")
		if err != nil {
			t.Fatal(err)
		}
		o2, err := Parse(o.Encode(), "driver")
		if err != nil || !reflect.DeepEqual(pairs(o), pairs(o2)) {
			t.Errorf("%q → %q → %v (%v), want %v", spec, o.Encode(), pairs(o2), err, pairs(o))
		}
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]uint64{
		"0": 0, "4096": 4096, "4096B": 4096, "1k": 1024, "1K": 1024, "1M": 1 << 20, "2g": 2 << 30, "1T": 1 << 40,
		"1P": 1 << 50, "1E": 1 << 60, "15E": 15 << 60, "1.5G": 3 << 29, "0.5K": 512, "1.0001K": 1024,
		"1.0005K": 1025, // 1024.512 rounds up
		"0x1000":  4096, "18446744073709551615": 1<<64 - 1, "16383.99999999999999P": 1 << 64 >> 0 & (1<<64 - 1),
	}
	delete(good, "16383.99999999999999P") // fraction precision is QEMU's 53 bits: not a clean case
	for in, want := range good {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, wantErr := range map[string]error{
		"": errSyntax, "abc": errSyntax, "-1": errSyntax, "1X": errSyntax, "1e3": errSyntax, "1.5": errSyntax,
		"1.5B": errSyntax, ".5K": errSyntax, "1.K": errSyntax, "1KB": errSyntax, "0x10M": errSyntax, "0x": errSyntax,
		"0x1.8": errSyntax, " 1": errSyntax, "+1": errSyntax, "16E": errRange, "99999999999T": errRange,
		"18446744073709551616": errRange, "0x10000000000000000": errRange, "1,5G": errSyntax,
	} {
		if got, err := ParseSize(in); err != wantErr {
			t.Errorf("ParseSize(%q) = %d, %v; want %v", in, got, err, wantErr)
		}
	}
}

func TestParseMem(t *testing.T) {
	for in, want := range map[string]uint64{
		"512": 512 << 20, "512M": 512 << 20, "512m": 512 << 20, "2G": 2 << 30, "1.5G": 3 << 29,
		"size=2G": 2 << 30, "65536K": 64 << 20, "1T": 1 << 40, "4096B": 4096, "0": 0, "": 0, "1G,size=2G": 2 << 30,
	} {
		got, err := ParseMem(in)
		if err != nil || got.Size != want {
			t.Errorf("ParseMem(%q) = %d, %v; want %d", in, got.Size, err, want)
		}
	}
	for in, want := range map[string]string{
		"abc":            "-m abc: Parameter 'size' expects a non-negative number below 2^64 (optional suffix k, M, G, T, P or E)",
		"1.5":            "-m 1.5: Parameter 'size' expects a non-negative number below 2^64 (optional suffix k, M, G, T, P or E)",
		"0x10":           "-m 0x10: Parameter 'size' expects a non-negative number below 2^64 (optional suffix k, M, G, T, P or E)",
		"99999999999T":   "-m 99999999999T: Value '99999999999T' is out of range for parameter 'size'",
		"17592186044416": "-m 17592186044416: Value '17592186044416' is out of range for parameter 'size'", // 2^44 MiB = 2^64
		"2G,foo=1":       "-m 2G,foo=1: Invalid parameter 'foo'",
		"2G,slots=2":     "-m 2G,slots=2: memory hotplug (slots=) is not supported",
		"2G,maxmem=4G":   "-m 2G,maxmem=4G: memory hotplug (maxmem=) is not supported",
		"help":           "-m help: -m options: size=SIZE (slots= and maxmem= are not supported)",
	} {
		if _, err := ParseMem(in); err == nil || err.Error() != want {
			t.Errorf("ParseMem(%q): %v; want %q", in, err, want)
		}
	}
}

var pcProps = SMPProps{Machine: "pc-i440fx-7.2", Dies: true, MaxCPUs: 255}
var virtProps = SMPProps{Machine: "virt-7.2", Clusters: true, MaxCPUs: 512}

func TestParseSMP(t *testing.T) {
	T := func(cpus, sockets, dies, clusters, cores, threads, maxcpus int) Topology {
		return Topology{cpus, sockets, dies, clusters, cores, threads, maxcpus}
	}
	cases := []struct {
		spec  string
		props SMPProps
		want  Topology
	}{
		{"4", pcProps, T(4, 1, 1, 1, 4, 1, 4)},
		{"cpus=4", pcProps, T(4, 1, 1, 1, 4, 1, 4)},
		{"4,sockets=1,cores=2,threads=2", pcProps, T(4, 1, 1, 1, 2, 2, 4)},
		{"8,sockets=2", pcProps, T(8, 2, 1, 1, 4, 1, 8)},
		{"8,cores=2", pcProps, T(8, 4, 1, 1, 2, 1, 8)},
		{"8,sockets=2,cores=2", pcProps, T(8, 2, 1, 1, 2, 2, 8)},
		{"sockets=2,cores=3,threads=2", pcProps, T(12, 2, 1, 1, 3, 2, 12)},
		{"2,maxcpus=8", pcProps, T(2, 1, 1, 1, 8, 1, 8)},
		{"8,sockets=2,dies=2", pcProps, T(8, 2, 2, 1, 2, 1, 8)},
		{"8,clusters=2,cores=2", virtProps, T(8, 2, 1, 2, 2, 1, 8)},
		{"8,cores=2", SMPProps{PreferSockets: true}, T(8, 4, 1, 1, 2, 1, 8)},
		{"8", SMPProps{PreferSockets: true}, T(8, 8, 1, 1, 1, 1, 8)},
		{"maxcpus=4", pcProps, T(4, 1, 1, 1, 4, 1, 4)},
		{"4,cpus=2", pcProps, T(2, 1, 1, 1, 2, 1, 2)}, // last wins
	}
	for _, c := range cases {
		got, err := ParseSMP(c.spec, c.props)
		if err != nil || got != c.want {
			t.Errorf("ParseSMP(%q) = %+v, %v; want %+v", c.spec, got, err, c.want)
		}
	}
	for spec, want := range map[string]string{
		"4,sockets=3":                        "Invalid CPU topology: product of the hierarchy must match maxcpus: sockets (3) * dies (1) * cores (1) * threads (1) != maxcpus (4)",
		"4,maxcpus=2":                        "Invalid CPU topology: maxcpus must be equal to or greater than smp: sockets (1) * dies (1) * cores (2) * threads (1) == maxcpus (2) < smp_cpus (4)",
		"cpus=4,sockets=1,cores=2,threads=3": "Invalid CPU topology: product of the hierarchy must match maxcpus: sockets (1) * dies (1) * cores (2) * threads (3) != maxcpus (4)",
		"2,clusters=2":                       "clusters not supported by this machine's CPU topology",
		"foo":                                "Parameter 'smp.cpus' expects integer",
		"-2":                                 "Parameter 'smp.cpus' expects integer",
		"2,foo=1":                            "Parameter 'smp.foo' is unexpected",
		"0":                                  "Invalid CPU topology: CPU topology parameters must be greater than zero",
		"2,cores=0":                          "Invalid CPU topology: CPU topology parameters must be greater than zero",
		"256":                                "Invalid SMP CPUs 256. The max CPUs supported by machine 'pc-i440fx-7.2' is 255",
		"2000000":                            "Value '2000000' is too large for parameter 'smp.cpus'",
		"sockets=1048576,cores=1048576":      "Invalid CPU topology: more than 1048576 CPUs",
	} {
		_, err := ParseSMP(spec, pcProps)
		if e, ok := err.(*Error); !ok || e.Msg != want || err.Error() != "-smp "+spec+": "+want {
			t.Errorf("ParseSMP(%q): %v; want %q", spec, err, want)
		}
	}
	if _, err := ParseSMP("2,dies=2", virtProps); err == nil || !strings.HasSuffix(err.Error(), "dies not supported by this machine's CPU topology") {
		t.Errorf("dies on virt: %v", err)
	}
	if tp, _ := ParseSMP("4", pcProps); !tp.Flat() {
		t.Error("4 CPUs not flat")
	}
	if tp, _ := ParseSMP("4,threads=2", pcProps); tp.Flat() {
		t.Error("threads=2 flat")
	}
}

func TestParseCPU(t *testing.T) {
	c, err := ParseCPU("host,+x2apic,-avx,pmu=off,,migratable")
	want := CPU{Model: "host", Features: []CPUFeature{{"x2apic", "on", true}, {"avx", "off", true}, {"pmu", "off", false}, {"migratable", "on", false}}}
	if err != nil || !reflect.DeepEqual(c, want) {
		t.Errorf("ParseCPU = %+v, %v", c, err)
	}
	if c, _ := ParseCPU("help"); !c.Help {
		t.Error("-cpu help")
	}
	for _, bad := range []string{"", ",+x", "host,+", "host,=on"} {
		if _, err := ParseCPU(bad); err == nil {
			t.Errorf("ParseCPU(%q) accepted", bad)
		}
	}
}

func TestCommon(t *testing.T) {
	var c Common
	var got []string
	args := []string{"-M", "pc,accel=kvm", "--machine", "usb=off,accel=tcg", "-m", "1.5G", "-smp", "4,cores=2",
		"-cpu", "host,+x2apic", "-accel", "kvm,kernel-irqchip=on", "-enable-kvm",
		"-drive", "file=a,,b.img,if=none,id=d0", "-device", `{"driver":"virtio-blk-pci","drive":"d0"}`,
		"-blockdev", `{"driver":"qcow2","node-name":"n","file":{"driver":"file","filename":"x"}}`,
		"-chardev", "socket,id=c0,path=/tmp/s,server=on,wait=off", "-object", "rng-random,id=r,filename=/dev/urandom",
		"-netdev", "user,id=n0", "-nic", "user", "-global", "kvm-pit.lost_tick_policy=delay", "-mon", "chardev=c0,mode=control",
		"-qmp", "unix:/tmp/q,server=on,wait=off", "-hda", "a.img", "disk2.img", "-snapshot", "-nodefaults", "-no-user-config",
		"-display", "none", "-vga", "none", "-msg", "timestamp=on", "-name", "guest=vm1,debug-threads=on", "-monitor", "none",
		"-kernel", "k", "-initrd", "i", "-append", "console=ttyS0", "-serial", "null", "-nographic", "-no-reboot", "-mine", "x", "-flag"}
	err := c.Parse(args, map[string]bool{"mine": true, "flag": false}, func(n, v string) error { got = append(got, n+"="+v); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if c.MachineType() != "pc" || c.Machine.String("accel", "") != "tcg" || c.Machine.String("usb", "") != "off" ||
		c.Mem.Size != 3<<29 || c.SMP != "4,cores=2" || c.CPU.Model != "host" || len(c.Accels) != 2 ||
		c.Accels[1].ImpliedValue() != "kvm" || len(c.Drives) != 3 || c.Drives[0].String("file", "") != "a,b.img" ||
		c.Drives[2].String("file", "") != "disk2.img" || c.Drives[2].String("index", "") != "1" ||
		len(c.Devices) != 1 || !c.Devices[0].JSON || len(c.Blockdevs) != 1 || c.Blockdevs[0].String("file.filename", "") != "x" ||
		len(c.Chardevs) != 1 || len(c.Objects) != 1 || len(c.Netdevs) != 1 || len(c.NICs) != 1 || len(c.Globals) != 1 ||
		c.Globals[0].String("property", "") != "lost_tick_policy" || len(c.Mons) != 1 || len(c.QMP) != 1 ||
		!c.Snapshot || !c.NoDefaults || !c.NoUserConfig || !c.MsgTimestamp || c.Name != "vm1" || len(c.Monitors) != 0 ||
		c.Kernel != "k" || c.Initrd != "i" || c.Append != "console=ttyS0" || len(c.Serials) != 1 || !c.NoGraphic || !c.NoReboot ||
		!reflect.DeepEqual(got, []string{"mine=x", "flag="}) || len(c.Warnings) != 0 {
		t.Fatalf("parsed %+v; extra %v", c, got)
	}
	if u := c.Unwired(); len(u) != 1 {
		t.Errorf("Unwired = %v", u)
	}
	for _, bad := range [][]string{
		{"-frobnicate"}, {"-m"}, {"-m", "lots"}, {"-display", "gtk"}, {"-vga", "std"}, {"-drive", "=x"},
		{"-drive", `{"file":"x"}`}, {"-chardev", "socket,path=/x"}, {"-msg", "timestamp=maybe"}, {"-global", "x=1"},
		{"-global", ".p=1"}, {"-device", `{"driver":`}, {"-name", "x,bogus=1"}, {"-cpu", ""}, {"-hda", ""},
	} {
		var c Common
		err := c.Parse(bad, nil, nil)
		if err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	var w Common
	if err := w.Parse([]string{"-msg", "timestamp", "-drive", "file=x,noreadonly"}, nil, nil); err != nil || len(w.Warnings) != 2 ||
		w.Warnings[0] != "-msg timestamp: short-form boolean option 'timestamp' deprecated; please use timestamp=on instead" ||
		!strings.Contains(w.Warnings[1], "please use readonly=off instead") {
		t.Errorf("short-form warnings: %v %q", err, w.Warnings)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"a=1,b", "x,,y", `{"a":{"b":[1,true]}}`, "help", "no", ",", "=", "a.b=1,a=2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := Parse(s, "driver")
		if err == nil {
			o.Check()
			o.Encode()
		}
		ParseSize(s)
		ParseMem(s)
		ParseSMP(s, pcProps)
		ParseCPU(s)
		var c Common
		c.Parse(strings.Split(s, " "), map[string]bool{"x": true}, func(string, string) error { return nil })
	})
}

func TestRepeatedKeyAll(t *testing.T) {
	o, err := Parse("user,id=n0,hostfwd=tcp::2222-:22,hostfwd=udp::5353-:53", "type")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := o.Get("hostfwd"); v != "udp::5353-:53" {
		t.Errorf("Get = %q, want the last value", v)
	}
	if all := o.All("hostfwd"); len(all) != 2 || all[0] != "tcp::2222-:22" || all[1] != "udp::5353-:53" {
		t.Errorf("All = %q", all)
	}
	if all := o.All("guestfwd"); len(all) != 0 {
		t.Errorf("All of an absent key = %q", all)
	}
}
