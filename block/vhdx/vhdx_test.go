package vhdx

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gemu/block"
	"gemu/block/internal/fmttest"
)

func TestMain(m *testing.M) {
	fmttest.HostileChild("vhdx")
	os.Exit(m.Run())
}

var qemuIO = []string{"write -P 0x11 0 100k", "write -P 0x22 2000k 300k", "write -z 3M 64k", "write -P 0x33 5M 1M"}

func TestReadQemuImages(t *testing.T) {
	fmttest.ReadMatrix(t, "vhdx", []fmttest.ReadCase{
		{Size: "7M", IO: qemuIO},
		{Size: "6000001", IO: qemuIO[:3]},
		{Opts: "block_size=1M", Size: "7M", IO: qemuIO},
		{Opts: "block_size=1M,log_size=2M,block_state_zero=off", Size: "7M", IO: qemuIO},
		{Opts: "subformat=fixed", Size: "7M", IO: qemuIO},
		{Opts: "subformat=fixed,block_state_zero=off,block_size=2M", Size: "6000001", IO: qemuIO[:3]},
		{Opts: "block_size=32M", Size: "300M", IO: []string{"write -P 1 200M 1M", "write -P 2 299M 1M", "write -P 3 0 4k"}},
	})
}

func TestWriteReadByQemu(t *testing.T) {
	fmttest.WriteMatrix(t, "vhdx", []fmttest.WriteCase{
		{Size: 6<<20 + 7*512, Seed: 1, QemuCheck: true},
		{Size: 9 << 20, Seed: 2, Opts: map[string]string{"subformat": "fixed", "block_state_zero": "off"}, QemuCheck: true},
		{Size: 9 << 20, Seed: 5, Opts: map[string]string{"subformat": "fixed"}, QemuCheck: true},
		{Size: 5<<20 + 512, Seed: 3, Opts: map[string]string{"block_size": "1M", "log_size": "3M"}, QemuCheck: true},
		{Size: 3<<20 + 1024, Seed: 4, Opts: map[string]string{"block_state_zero": "off"}, QemuCheck: true},
	})
}

func TestCreateLikeQemu(t *testing.T) {
	fmttest.CreateLikeQemu(t, "vhdx", []string{"", "subformat=fixed", "block_state_zero=off", "subformat=fixed,block_state_zero=off",
		"block_size=1M,log_size=2M", "block_size=256M", "block_size=512M", "block_size=100k,log_size=1000k", "preallocation=full"}, []string{"512", "1000001", "10M", "1G", "2G"}, true)
	fmttest.CreateLikeQemu(t, "vhdx", []string{"", "block_size=1M"}, []string{"101G", "2T"}, true)
}

// crashLog turns a clean image into one a crash left with a pending log: one entry
// that rewrites the BAT sector holding entry 0 so block 0 points at data already in
// the file, and zeroes the first 4 KiB of that data; both headers name the log.
func crashLog(t testing.TB, b []byte, seq uint64, corrupt func(entry []byte)) []byte {
	m := parse(t, b)
	// New payload for block 0 at the end of the file, 1 MiB aligned.
	at := (int64(len(b)) + miB - 1) &^ (miB - 1)
	nb := make([]byte, at+m.g.blockSize)
	copy(nb, b)
	copy(nb[at:], bytes.Repeat([]byte("replayed"), int(m.g.blockSize)/8))
	sector := make([]byte, logSector)
	copy(sector, nb[m.batOff:m.batOff+logSector])
	le.PutUint64(sector, uint64(at)|stateFull)

	guid := newGUID()
	entry := make([]byte, 2*logSector)
	copy(entry, "loge")
	le.PutUint32(entry[8:], uint32(len(entry)))
	le.PutUint32(entry[12:], 0) // tail: this entry
	le.PutUint64(entry[16:], seq)
	le.PutUint32(entry[24:], 2)
	copy(entry[32:], guid[:])
	le.PutUint64(entry[48:], uint64(len(nb)))
	le.PutUint64(entry[56:], uint64(len(nb)))
	d := entry[64:]
	copy(d, "desc")
	copy(d[4:8], sector[4092:])
	copy(d[8:16], sector[:8])
	le.PutUint64(d[16:], uint64(m.batOff))
	le.PutUint64(d[24:], seq)
	z := entry[96:]
	copy(z, "zero")
	le.PutUint64(z[8:], logSector)
	le.PutUint64(z[16:], uint64(at))
	le.PutUint64(z[24:], seq)
	ds := entry[logSector:]
	copy(ds, "data")
	le.PutUint32(ds[4:], uint32(seq>>32))
	copy(ds[8:4092], sector[8:4092])
	le.PutUint32(ds[4092:], uint32(seq))
	le.PutUint32(entry[4:], crc(entry, 4))
	if corrupt != nil {
		corrupt(entry)
	}
	copy(nb[m.logOff:], entry)
	for _, off := range []int{header1Off, header2Off} {
		var h Header
		decode(nb[off:], &h)
		h.LogGUID = guid
		copy(nb[off:], h.bytes())
	}
	return nb
}

// parse opens the image bytes read-only to learn its layout.
func parse(t testing.TB, b []byte) *Image {
	p := filepath.Join(t.TempDir(), "p.vhdx")
	os.WriteFile(p, b, 0o644)
	d := fmttest.Open(t, "vhdx", p, true)
	d.Close()
	return d.(*Image)
}

func cleanBase(t testing.TB) []byte {
	return fmttest.Build(t, "vhdx", 4<<20, map[string]string{"block_size": "1M"}, func(d block.Driver) {
		d.WriteAt(bytes.Repeat([]byte("orig"), 1<<18), 0)
		d.WriteAt(bytes.Repeat([]byte("blk2"), 1024), 2<<20)
	})
}

// TestLogReplay: a log left by a crash is replayed by a read-write open as qemu-img
// check -r all replays it (the images then read the same), a read-only open refuses
// the image as qemu does, and check reports the replay as a fixed corruption.
func TestLogReplay(t *testing.T) {
	fmttest.NeedQemu(t)
	dir := t.TempDir()
	img := crashLog(t, cleanBase(t), 7, nil)
	q, g := filepath.Join(dir, "q.vhdx"), filepath.Join(dir, "g.vhdx")
	os.WriteFile(q, img, 0o644)
	os.WriteFile(g, img, 0o644)
	if _, err := (Format{}).Open(g, block.OpenOptions{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "contains a log that needs to be replayed") {
		t.Fatalf("read-only open of an image with a log: %v", err)
	}
	if out, err := fmttest.RunErr("qemu-img", "info", q); err == nil || !strings.Contains(out, "log that needs to be replayed") {
		t.Fatalf("qemu-img info of the crafted image: %v %s (the crafted log is not what qemu expects)", err, out)
	}
	out, _ := fmttest.RunErr("qemu-img", "check", "-r", "all", q)
	if !strings.Contains(out, "corruptions were fixed") && !strings.Contains(out, "The following inconsistencies were found and repaired") {
		t.Logf("qemu-img check -r all: %s", out)
	}
	d := fmttest.Open(t, "vhdx", g, false)
	r, err := d.(block.Checker).Check(block.RepairAll)
	if err != nil || r.CorruptionsFixed != 1 {
		t.Errorf("check after replay: %+v %v, want one corruption fixed", r, err)
	}
	buf := make([]byte, 16)
	d.ReadAt(buf, logSector)
	if string(buf) != "replayedreplayed" {
		t.Errorf("block 0 after replay reads %q", buf)
	}
	d.Close()
	fmttest.Run(t, dir, "qemu-img", "compare", "-f", "vhdx", "-F", "vhdx", q, g)
	fmttest.Run(t, dir, "qemu-img", "check", g)
	// The log is empty now: read-only opens work, by both.
	fmttest.Open(t, "vhdx", g, true).Close()
	fmttest.Run(t, dir, "qemu-img", "info", g)
	var h Header
	b, _ := os.ReadFile(g)
	decode(b[header1Off:], &h)
	var h2 Header
	decode(b[header2Off:], &h2)
	if h.LogGUID != [16]byte{} || h2.LogGUID != [16]byte{} {
		t.Errorf("log GUID not cleared after replay")
	}
	if d := int64(h.Sequence) - int64(h2.Sequence); d != 1 && d != -1 {
		t.Errorf("header sequence numbers %d and %d are not consecutive", h.Sequence, h2.Sequence)
	}
}

// TestHeaderUpdate: a read-write open and a write update both headers with new
// sequence numbers and GUIDs as vhdx_update_headers does, and qemu-img still reads
// the image (it takes the header with the higher sequence number).
func TestHeaderUpdate(t *testing.T) {
	fmttest.NeedQemu(t)
	b := cleanBase(t)
	var h1, h2 Header
	decode(b[header1Off:], &h1)
	decode(b[header2Off:], &h2)
	orig := max(h1.Sequence, h2.Sequence)
	p := filepath.Join(t.TempDir(), "u.vhdx")
	os.WriteFile(p, b, 0o644)
	d := fmttest.Open(t, "vhdx", p, false)
	d.WriteAt([]byte("x"), 0)
	d.Close()
	nb, _ := os.ReadFile(p)
	decode(nb[header1Off:], &h1)
	decode(nb[header2Off:], &h2)
	if max(h1.Sequence, h2.Sequence) != orig+4 {
		t.Errorf("sequence %d after open and write, want %d", max(h1.Sequence, h2.Sequence), orig+4)
	}
	if h1.FileWriteGUID != h2.FileWriteGUID || h1.DataWriteGUID != h2.DataWriteGUID {
		t.Errorf("headers disagree on GUIDs")
	}
	fmttest.Run(t, "", "qemu-img", "check", p)
}

func base(t testing.TB) []byte {
	return cleanBase(t)
}

// mutate edits the image bytes with layout knowledge.
func mutate(fn func(b []byte, m *Image)) func(testing.TB) []byte {
	return func(t testing.TB) []byte {
		b := base(t)
		fn(b, parse(t, b))
		return b
	}
}

// setRegion rewrites both region tables' entry i.
func setRegion(i int, off uint64, n uint32, required uint32) func(b []byte, m *Image) {
	return func(b []byte, m *Image) {
		for _, rt := range []int{region1Off, region2Off} {
			e := b[rt+16+32*i:]
			le.PutUint64(e[16:], off)
			le.PutUint32(e[24:], n)
			le.PutUint32(e[28:], required)
			le.PutUint32(b[rt+4:], crc(b[rt:rt+regionLen], 4))
		}
	}
}

// setMeta rewrites metadata item i's data (the first 8 bytes).
func setMeta(guid [16]byte, v uint64, n int) func(b []byte, m *Image) {
	return func(b []byte, m *Image) {
		t := b[m.metaOff:]
		for i := range int(le.Uint16(t[10:])) {
			e := t[32+32*i:]
			if [16]byte(e[:16]) == guid {
				o := le.Uint32(e[16:])
				for k := range n {
					t[int(o)+k] = byte(v >> (8 * k))
				}
			}
		}
	}
}

func badHeaders(b []byte, m *Image) {
	b[header1Off+20] ^= 1
	b[header2Off+20] ^= 1
}

var hostileCases = toCases([]hc{
	{"valid", "", base},
	{"one-header-bad", "", mutate(func(b []byte, m *Image) { b[header1Off+20] ^= 1 })},
	{"headers-bad-crc", "No valid VHDX header found", mutate(badHeaders)},
	{"no-identifier", "vhdxfile", mutate(func(b []byte, m *Image) { b[0] = 'X' })},
	{"region-tables-bad-crc", "region table checksum", mutate(func(b []byte, m *Image) { b[region1Off+40]++; b[region2Off+40]++ })},
	{"region-entries-huge", "region table has", mutate(func(b []byte, m *Image) {
		for _, rt := range []int{region1Off, region2Off} {
			le.PutUint32(b[rt+8:], 1<<30)
			le.PutUint32(b[rt+4:], crc(b[rt:rt+regionLen], 4))
		}
	})},
	{"region-overlap", "overlaps", mutate(func(b []byte, m *Image) { setRegion(1, uint64(m.batOff), miB, 0)(b, m) })},
	{"region-over-log", "overlaps", mutate(func(b []byte, m *Image) { setRegion(0, uint64(m.logOff), miB, 0)(b, m) })},
	{"region-past-eof", "past the end of the file", mutate(setRegion(0, 1<<50, miB, 0))},
	{"region-overflow", "past the end of the file", mutate(setRegion(0, ^uint64(0)-miB+1, miB, 0))},
	{"region-unaligned", "not aligned", mutate(setRegion(0, 2*miB+512, miB, 0))},
	{"region-unknown-required", "Unsupported data region", mutate(func(b []byte, m *Image) {
		for _, rt := range []int{region1Off, region2Off} {
			b[rt+16]++
			le.PutUint32(b[rt+16+28:], 1)
			le.PutUint32(b[rt+4:], crc(b[rt:rt+regionLen], 4))
		}
	})},
	{"block-size-0", "invalid block size 0", mutate(setMeta(guidFileParam, 0, 4))},
	{"block-size-huge", "invalid block size", mutate(setMeta(guidFileParam, 1<<31, 4))},
	{"virtual-size-2^63", "larger than 64 TiB", mutate(setMeta(guidDiskSize, 1<<63, 8))},
	{"bat-too-small", "BAT region", mutate(setMeta(guidDiskSize, 60<<40, 8))},
	{"logical-sector-1000", "logical sector size", mutate(setMeta(guidLogical, 1000, 4))},
	{"has-parent", "differencing", mutate(setMeta(guidFileParam, 1<<20|2<<32, 8))},
	{"meta-item-past-region", "outside the metadata region", mutate(func(b []byte, m *Image) {
		le.PutUint32(b[m.metaOff+32+16:], 0xfffff000)
	})},
	{"meta-entries-huge", "metadata table has", mutate(func(b []byte, m *Image) { le.PutUint16(b[m.metaOff+10:], 0xffff) })},
	{"bat-entry-past-eof", "points past the end of the file", mutate(func(b []byte, m *Image) {
		le.PutUint64(b[m.batOff+8:], 1<<45|stateFull)
	})},
	{"bat-entry-in-header", "header section", mutate(func(b []byte, m *Image) { le.PutUint64(b[m.batOff+8:], stateFull) })},
	{"bat-entry-on-bat", "metadata region", mutate(func(b []byte, m *Image) { le.PutUint64(b[m.batOff+8:], uint64(m.batOff)|stateFull) })},
	{"bat-bad-state", "invalid state", mutate(func(b []byte, m *Image) { le.PutUint64(b[m.batOff+8:], 4) })},
	{"log-unaligned", "misaligned", mutate(func(b []byte, m *Image) {
		for _, off := range []int{header1Off, header2Off} {
			var h Header
			decode(b[off:], &h)
			h.LogOffset += 512
			copy(b[off:], h.bytes())
		}
	})},
	// A log whose only entry has a bad checksum holds no valid sequence: nothing to
	// replay, so QEMU (and gemu) read the image as is.
	{"log-bad-crc", "", func(t testing.TB) []byte {
		return crashLog(t, cleanBase(t), 9, func(e []byte) { e[4]++ })
	}},
	{"log-pending", "contains a log that needs to be replayed", func(t testing.TB) []byte {
		return crashLog(t, cleanBase(t), 9, nil)
	}},
	{"log-desc-past-eof", "needs to be replayed", func(t testing.TB) []byte { // read-only: refused for the log first
		return crashLog(t, cleanBase(t), 9, func(e []byte) {
			le.PutUint64(e[64+16:], 1<<44)
			le.PutUint32(e[4:], crc(e, 4))
		})
	}},
	{"truncated", "file too small", func(testing.TB) []byte { return []byte("vhdxfile") }},
})

// hc is a hostile case written positionally.
type hc struct {
	name, want string
	make       func(testing.TB) []byte
}

func toCases(l []hc) []fmttest.HostileCase {
	var out []fmttest.HostileCase
	for _, c := range l {
		out = append(out, fmttest.HostileCase{Name: c.name, Want: c.want, Make: c.make})
	}
	return out
}

func TestHostileCorpus(t *testing.T) { fmttest.Hostile(t, "vhdx", hostileCases) }

// Images qemu-img refuses, gemu refuses too; a read-write open of a log pointing past
// the end of the file fails with one line and leaves the image unreplayed.
func TestHostileLikeQemu(t *testing.T) {
	fmttest.NeedQemu(t)
	dir := t.TempDir()
	for _, c := range hostileCases {
		p := filepath.Join(dir, c.Name)
		os.WriteFile(p, c.Make(t), 0o644)
		_, qerr := fmttest.RunErr("qemu-img", "info", "-f", "vhdx", p)
		gerr := fmttest.Exercise("vhdx", p)
		if qerr != nil && gerr == nil {
			t.Errorf("%s: qemu-img refuses it, gemu reads it", c.Name)
		}
	}
	p := filepath.Join(dir, "log-desc-past-eof")
	before, _ := os.ReadFile(p)
	_, err := (Format{}).Open(p, block.OpenOptions{})
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("read-write open of a log writing past EOF: %v", err)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Errorf("a refused log replay changed the file")
	}
	for _, name := range []string{"log-desc-past-eof", "log-pending"} {
		p := filepath.Join(dir, name)
		for _, c := range []string{"rw"} {
			_ = c
			d, err := (Format{}).Open(p, block.OpenOptions{})
			if name == "log-pending" {
				if err != nil {
					t.Errorf("%s: read-write open: %v", name, err)
				} else {
					d.Close()
				}
			}
		}
	}
}

func FuzzOpen(f *testing.F) {
	fmttest.Seeds(f, hostileCases)
	f.Fuzz(func(t *testing.T, b []byte) { fmttest.FuzzImage(t, "vhdx", b) })
}

// TestLogical4K: an image with 4 KiB logical sectors (as Hyper-V makes them; qemu-img
// can neither create nor open one: QEMU 7.2 supports 512-byte sectors only) has a
// chunk ratio eight times larger (MS-VHDX 2.5: 2^23 * sector size / block size), so
// the BAT has no sector-bitmap entry after block 4095 as a 512-byte image has; gemu
// puts the entry of block 4097 where the spec says and reads it back.
func TestLogical4K(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "4k.vhdx")
	if err := (Format{}).Create(p, block.CreateOptions{Size: 5 << 30, Options: map[string]string{"block_size": "1M"}}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	m := parse(t, b)
	setMeta(guidLogical, 4096, 4)(b, m)
	setMeta(guidPhysical, 4096, 4)(b, m)
	os.WriteFile(p, b, 0o644)
	d := fmttest.Open(t, "vhdx", p, false)
	if r := d.(*Image).g.chunkRatio; r != 32768 {
		t.Fatalf("chunk ratio %d, want 32768", r)
	}
	d.WriteAt(bytes.Repeat([]byte{0x5b}, 4096), 4097<<20)
	d.Close()
	b, _ = os.ReadFile(p)
	e := le.Uint64(b[m.batOff+4097*8:])
	if e&stateMask != stateFull {
		t.Errorf("BAT entry 4097 is %#x, want a fully present block (512-byte layout would put it at 4098)", e)
	}
	d = fmttest.Open(t, "vhdx", p, true)
	defer d.Close()
	buf := make([]byte, 4096)
	d.ReadAt(buf, 4097<<20)
	if !bytes.Equal(buf, bytes.Repeat([]byte{0x5b}, 4096)) {
		t.Errorf("block 4097 does not read back")
	}
	if out, err := fmttest.RunErr("qemu-img", "info", p); err == nil {
		t.Logf("qemu-img now opens 4 KiB-sector VHDX images: compare against it (%s)", out)
	}
}
