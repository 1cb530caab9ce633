package monitor

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// maxHMPLine bounds one human-monitor line.
const maxHMPLine = 4096

// maxDump bounds what one x/xp prints.
const maxDump = 64 << 10

var hmpHelp = []struct{ name, args, help string }{
	{"balloon", "target", "request VM to change its memory allocation (in MB)"},
	{"cont|c", "", "resume emulation"},
	{"delvm", "tag", "delete a VM snapshot from its tag"},
	{"device_add", "driver[,prop=value][,...]", "add device, like -device on the command line"},
	{"device_del", "device", "remove device"},
	{"help|?", "[cmd]", "show the help"},
	{"info", "[subcommand]", "show various information about the system state"},
	{"loadvm", "tag", "restore a VM snapshot from its tag"},
	{"migrate", "[-d] uri", "migrate to URI (file:, exec:, unix:, tcp:)"},
	{"migrate_cancel", "", "cancel the current VM migration"},
	{"migrate_incoming", "uri", "Continue an incoming migration from an -incoming defer"},
	{"netdev_add", "[user|tap|socket|stream|dgram],id=str[,prop=value][,...]", "add host network device"},
	{"netdev_del", "id", "remove host network device"},
	{"quit|q", "", "quit the emulator"},
	{"savevm", "[tag]", "save a VM snapshot. If no tag is provided, a new snapshot is created"},
	{"stop", "", "stop emulation"},
	{"system_powerdown", "", "send system power down event"},
	{"system_reset", "", "reset the system"},
	{"x", "/fmt addr", "virtual memory dump starting at 'addr'"},
	{"xp", "/fmt addr", "physical memory dump starting at 'addr'"},
}

var hmpInfo = []struct{ name, help string }{
	{"balloon", "show balloon information"},
	{"block", "show info of one block device or all block devices"},
	{"chardev", "show the character devices"},
	{"cpus", "show infos for each CPU"},
	{"kvm", "show KVM information"},
	{"migrate", "show migration status"},
	{"name", "show the current VM name"},
	{"network", "show the network state"},
	{"pci", "show PCI info"},
	{"qtree", "show device tree"},
	{"snapshots", "show the currently saved VM snapshots"},
	{"status", "show the current VM status (running|paused)"},
	{"uuid", "show the current VM UUID"},
	{"version", "show the version of QEMU"},
}

// hmp runs one human-monitor command line and returns its output, "\r\n" line ends
// as QEMU's monitor writes them. c is the QMP call for human-monitor-command (its
// reply then precedes events the command causes), nil on an HMP session.
func (s *Server) hmp(line string, c *call) string {
	var b strings.Builder
	s.hmpRun(&b, strings.TrimSpace(line), c)
	return strings.ReplaceAll(strings.ReplaceAll(b.String(), "\r\n", "\n"), "\n", "\r\n")
}

func (s *Server) hmpRun(w *strings.Builder, line string, c *call) {
	m := s.m
	if line == "" {
		return
	}
	cmd, rest, _ := strings.Cut(line, " ")
	rest = strings.TrimSpace(rest)
	if i := strings.IndexByte(cmd, '/'); i > 0 { // x/4x addr
		cmd, rest = cmd[:i], cmd[i:]+" "+rest
	}
	later := func(f func()) {
		if c != nil {
			c.then(f)
		} else {
			f()
		}
	}
	fail := func(err error) {
		if err != nil {
			fmt.Fprintf(w, "Error: %v\n", err)
		}
	}
	switch cmd {
	case "help", "?":
		for _, h := range hmpHelp {
			fmt.Fprintf(w, "%s %s -- %s\n", h.name, h.args, h.help)
		}
	case "info":
		s.hmpInfo(w, rest)
	case "stop":
		fail(m.Stop())
	case "cont", "c":
		fail(m.Cont())
	case "system_reset":
		later(func() { fail(m.Reset()) })
	case "system_powerdown":
		if err := m.PowerDown(); err != nil {
			fail(err)
			return
		}
		later(func() { s.Emit("POWERDOWN", nil) })
	case "quit", "q":
		s.Emit("SHUTDOWN", ShutdownData{Guest: false, Reason: "host-qmp-quit"})
		later(m.Quit)
	case "x", "xp":
		s.hmpDump(w, cmd, rest)
	case "savevm", "loadvm", "delvm":
		s.hmpSnapshot(w, cmd, rest) // snapshot.go
	default:
		if !s.hmpMigrate(w, cmd, rest) && !s.hmpBalloon(w, cmd, rest) && !s.hmpHotplug(w, cmd, rest, c) {
			fmt.Fprintf(w, "unknown command: '%s'\n", cmd)
		}
	}
}

func (s *Server) hmpInfo(w *strings.Builder, what string) {
	m := s.m
	what, _, _ = strings.Cut(what, " ")
	switch what {
	case "":
		for _, h := range hmpInfo {
			fmt.Fprintf(w, "info %s  -- %s\n", h.name, h.help)
		}
	case "status":
		switch st := m.Status(); st {
		case Running:
			w.WriteString("VM status: running\n")
		case Paused:
			w.WriteString("VM status: paused\n")
		default:
			fmt.Fprintf(w, "VM status: paused (%s)\n", st)
		}
	case "version":
		fmt.Fprintf(w, "%d.%d.%d (%s)\n", s.opts.Major, s.opts.Minor, s.opts.Micro, s.opts.Package)
	case "name":
		if n := m.Info().Name; n != "" {
			fmt.Fprintf(w, "%s\n", n)
		}
	case "uuid":
		u := m.Info().UUID
		if u == "" {
			u = "00000000-0000-0000-0000-000000000000"
		}
		fmt.Fprintf(w, "%s\n", u)
	case "kvm":
		i := m.Info()
		switch {
		case i.KVMEnabled:
			w.WriteString("kvm support: enabled\n")
		case i.KVMPresent:
			w.WriteString("kvm support: disabled\n")
		default:
			w.WriteString("kvm support: not compiled\n")
		}
	case "cpus":
		for _, c := range m.CPUs() {
			mark := ' '
			if c.Current {
				mark = '*'
			}
			fmt.Fprintf(w, "%c CPU #%d: thread_id=%d\n", mark, c.Index, c.ThreadID)
		}
	case "block":
		for i, b := range m.Blocks() {
			if i > 0 {
				w.WriteString("\n")
			}
			in := b.Inserted
			if in == nil {
				fmt.Fprintf(w, "%s: [not inserted]\n", b.Device)
				if b.Removable {
					w.WriteString("    Removable device: not locked, tray closed\n")
				}
				continue
			}
			ro := ""
			if in.ReadOnly {
				ro = ", read-only"
			}
			fmt.Fprintf(w, "%s (%s): %s (%s%s)\n", b.Device, in.NodeName, in.File, in.Format, ro)
			if b.QDev != "" {
				fmt.Fprintf(w, "    Attached to:      %s\n", b.QDev)
			}
			mode := "writeback"
			switch {
			case !in.Writeback && in.Direct:
				mode = "directsync"
			case !in.Writeback:
				mode = "writethrough"
			case in.Direct:
				mode = "none"
			}
			if in.NoFlush {
				mode += ", ignore flushes"
			}
			fmt.Fprintf(w, "    Cache mode:       %s\n", mode)
			if in.BackingFile != "" {
				fmt.Fprintf(w, "    Backing file:     %s (chain depth: %d)\n", in.BackingFile, in.BackingDepth)
			}
		}
	case "pci":
		for _, d := range m.PCI() {
			fmt.Fprintf(w, "  Bus %2d, device %3d, function %d:\n", d.Bus, d.Slot, d.Function)
			desc := pciClassDesc[d.Class]
			if desc == "" {
				desc = fmt.Sprintf("Class %04x", d.Class)
			}
			fmt.Fprintf(w, "    %s: PCI device %04x:%04x\n", desc, d.Vendor, d.Device)
			fmt.Fprintf(w, "      PCI subsystem %04x:%04x\n", d.SubVendor, d.SubID)
			if d.IRQPin != 0 {
				fmt.Fprintf(w, "      IRQ %d, pin %c\n", d.IRQ, 'A'+d.IRQPin-1)
			}
			for _, r := range d.Regions {
				addr := uint64(r.Address)
				switch {
				case r.IO:
					fmt.Fprintf(w, "      BAR%d: I/O at 0x%04x [0x%04x].\n", r.BAR, addr, addr+r.Size-1)
				default:
					kind := "32 bit"
					if r.Mem64 {
						kind = "64 bit"
					}
					if r.Prefetch {
						kind += " prefetchable"
					}
					fmt.Fprintf(w, "      BAR%d: %s memory at 0x%08x [0x%08x].\n", r.BAR, kind, addr, addr+r.Size-1)
				}
			}
			fmt.Fprintf(w, "      id \"%s\"\n", d.QDevID)
		}
	case "chardev":
		for _, c := range m.Chardevs() {
			fmt.Fprintf(w, "%s: filename=%s\n", c.Label, c.Filename)
		}
	case "migrate":
		s.hmpInfoMigrate(w)
	case "balloon":
		s.hmpInfoBalloon(w)
	case "snapshots":
		s.hmpInfoSnapshots(w)
	default:
		if !s.hmpInfoHotplug(w, what) {
			fmt.Fprintf(w, "unknown command: 'info %s'\n", what)
		}
	}
}

// hmpDump is x and xp: /NFU (count, format x d u o c, unit b h w g) then an address.
func (s *Server) hmpDump(w *strings.Builder, cmd, rest string) {
	count, format, size := 1, byte('x'), 4
	rest = strings.TrimSpace(rest)
	if strings.HasPrefix(rest, "/") {
		spec, tail, _ := strings.Cut(rest[1:], " ")
		rest = strings.TrimSpace(tail)
		i := 0
		for i < len(spec) && spec[i] >= '0' && spec[i] <= '9' {
			i++
		}
		if i > 0 {
			n, err := strconv.Atoi(spec[:i])
			if err != nil || n <= 0 {
				fmt.Fprintf(w, "invalid count '%s'\n", spec[:i])
				return
			}
			count = n
		}
		for _, f := range []byte(spec[i:]) {
			switch f {
			case 'x', 'd', 'u', 'o', 'c':
				format = f
				if f == 'c' {
					size = 1
				}
			case 'b':
				size = 1
			case 'h':
				size = 2
			case 'w':
				size = 4
			case 'g':
				size = 8
			case 'i':
				w.WriteString("gemu's monitor cannot disassemble (format 'i')\n")
				return
			default:
				fmt.Fprintf(w, "invalid char in format: '%c'\n", f)
				return
			}
		}
	}
	if rest == "" {
		fmt.Fprintf(w, "unexpected end of expression\nTry \"help %s\" for more information\n", cmd)
		return
	}
	addr, err := strconv.ParseUint(rest, 0, 64)
	if err != nil {
		fmt.Fprintf(w, "invalid address '%s' (gemu takes a number: 0x..., decimal or 0...)\n", rest)
		return
	}
	if cmd == "x" {
		// Without a debug translation of the vCPU's page tables, only an identity view
		// is honest: refuse instead of showing physical memory as if it were virtual.
		w.WriteString("x: virtual addresses are not supported yet (use xp with a physical address)\n")
		return
	}
	n := count * size
	if n > maxDump {
		fmt.Fprintf(w, "at most %d bytes per dump\n", maxDump)
		return
	}
	buf := make([]byte, n)
	if err := s.m.ReadPhys(addr, buf); err != nil {
		fmt.Fprintf(w, "Cannot access memory\n")
		return
	}
	perLine := 16 // QEMU's line sizes: 8 bytes a line for byte units, else 16
	if size == 1 && format != 'c' {
		perLine = 8
	}
	for off := 0; off < n; off += perLine {
		fmt.Fprintf(w, "%016x:", addr+uint64(off))
		end := min(off+perLine, n)
		for i := off; i+size <= end; i += size {
			var v uint64
			switch size {
			case 1:
				v = uint64(buf[i])
			case 2:
				v = uint64(binary.LittleEndian.Uint16(buf[i:]))
			case 4:
				v = uint64(binary.LittleEndian.Uint32(buf[i:]))
			case 8:
				v = binary.LittleEndian.Uint64(buf[i:])
			}
			switch format {
			case 'x':
				fmt.Fprintf(w, " 0x%0*x", size*2, v)
			case 'o':
				fmt.Fprintf(w, " %#*o", (size*8+2)/3, v)
			case 'd':
				// As QEMU's memory_dump: the value is loaded zero-extended, so only
				// 8-byte units can print negative.
				fmt.Fprintf(w, " %*d", (size*8*10+32)/33, int64(v))
			case 'u':
				fmt.Fprintf(w, " %*d", (size*8*10+32)/33, v)
			case 'c':
				if v >= 0x20 && v < 0x7f {
					fmt.Fprintf(w, " '%c'", rune(v))
				} else {
					fmt.Fprintf(w, " '\\x%02x'", v)
				}
			}
		}
		w.WriteString("\n")
	}
}

// hmpLoop serves a human-monitor session: the banner, then a prompt per line.
func (ss *session) hmpLoop(r io.Reader) {
	s := ss.srv
	ss.send([]byte(fmt.Sprintf("QEMU %d.%d.%d monitor - type 'help' for more information\r\n(qemu) ", s.opts.Major, s.opts.Minor, s.opts.Micro)))
	br := bufio.NewReaderSize(r, maxHMPLine)
	for {
		line, err := readBoundedLine(br)
		if err != nil {
			return
		}
		select {
		case <-ss.done:
			return
		default:
		}
		var out string
		if line == nil {
			out = fmt.Sprintf("line too long (at most %d bytes)\r\n", maxHMPLine)
		} else {
			out = s.hmp(string(line), nil)
		}
		ss.send([]byte(out + "(qemu) "))
	}
}

// readBoundedLine returns the next line without its end; a line over maxHMPLine is
// consumed and returned as nil.
func readBoundedLine(br *bufio.Reader) ([]byte, error) {
	line := []byte{}
	long := false
	for {
		frag, isPrefix, err := br.ReadLine()
		if err != nil {
			return nil, err
		}
		if !long {
			line = append(line, frag...)
			if len(line) > maxHMPLine {
				long, line = true, []byte{}
			}
		}
		if !isPrefix {
			if long {
				return nil, nil
			}
			return line, nil
		}
	}
}
