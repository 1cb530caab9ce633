package vmstate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"gemu/hw/bus"
)

type inner struct {
	ctl, cval uint64
	level     bool
}

type sample struct {
	X      [4]uint64
	PC     uint64
	el     uint8
	off    int64
	timers [2]inner
	on     bool
}

func TestFieldsRoundTrip(t *testing.T) {
	in := sample{X: [4]uint64{1, 2, 3, ^uint64(0)}, PC: 0x4000_1000, el: 1, off: -7,
		timers: [2]inner{{1, 99, true}, {3, 5, false}}, on: true}
	b, err := EncodeFields(nil, &in)
	if err != nil {
		t.Fatal(err)
	}
	var out sample
	if err := DecodeFields(b, &out); err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
	}
	// A field the struct lacks is refused; a field the data lacks keeps its value.
	type older struct{ PC uint64 }
	ob, _ := EncodeFields(nil, &older{PC: 5})
	out2 := sample{el: 1}
	if err := DecodeFields(ob, &out2); err != nil || out2.PC != 5 || out2.el != 1 {
		t.Fatalf("older record: %v %+v", err, out2)
	}
	if err := DecodeFields(b, &older{}); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Fatalf("newer record into older struct: %v", err)
	}
	// Out-of-range values and truncation are errors.
	type small struct{ el uint8 }
	big, _ := EncodeFields(nil, &struct{ el uint64 }{300})
	if err := DecodeFields(big, &small{}); err == nil {
		t.Fatal("300 into a uint8 accepted")
	}
	for n := 1; n < len(b); n++ {
		if err := DecodeFields(b[:n], &out); err == nil {
			// A cut exactly at a record boundary is a valid shorter record.
			if _, err2 := EncodeFields(nil, &out); err2 != nil {
				t.Fatal(err2)
			}
		}
	}
}

func testConfig(ram string) Config {
	return Config{{"machine", "virt"}, {"ram", ram}, {"smp", "1"}}
}

func saveSample(t *testing.T, mem []byte) []byte {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, testConfig("64K"))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Section(bus.State{Name: "cpu0", Version: 1, Data: []byte{1, 2, 3}}); err != nil {
		t.Fatal(err)
	}
	if err := w.RAM(0x4000_0000, mem); err != nil {
		t.Fatal(err)
	}
	if err := w.Section(bus.State{Name: "gic", Version: 2, Data: nil}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Stats.Pages != 3 || w.Stats.ZeroPages != 13 || w.Stats.Bytes != uint64(buf.Len()) {
		t.Fatalf("stats %+v (stream %d bytes)", w.Stats, buf.Len())
	}
	return buf.Bytes()
}

func sampleRAM() []byte {
	mem := make([]byte, 16*PageSize)
	mem[0] = 1
	mem[PageSize+17] = 2
	mem[9*PageSize+PageSize-1] = 3
	return mem
}

func TestStreamRoundTrip(t *testing.T) {
	mem := sampleRAM()
	s := saveSample(t, mem)
	if len(s) > 5*PageSize {
		t.Fatalf("sparse stream is %d bytes for 3 non-zero pages", len(s))
	}
	dst := make([]byte, len(mem))
	tg := Target{Config: testConfig("64K"), RAM: func(gpa, n uint64) ([]byte, bool) {
		if gpa < 0x4000_0000 || gpa+n > 0x4000_0000+uint64(len(dst)) {
			return nil, false
		}
		return dst[gpa-0x4000_0000 : gpa-0x4000_0000+n], true
	}}
	secs, st, err := Load(bytes.NewReader(s), tg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst, mem) {
		t.Fatal("RAM differs after load")
	}
	if len(secs) != 2 || secs[0].Name != "cpu0" || !bytes.Equal(secs[0].Data, []byte{1, 2, 3}) || secs[1].Name != "gic" || secs[1].Version != 2 {
		t.Fatalf("sections %+v", secs)
	}
	if st.Pages != 3 || st.Bytes != uint64(len(s)) {
		t.Fatalf("stats %+v", st)
	}
	// Another configuration is refused with the difference named.
	tg.Config = testConfig("128K")
	_, _, err = Load(bytes.NewReader(s), tg)
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "ram=64K, this one ram=128K") {
		t.Fatalf("other config: %v", err)
	}
	// Every truncation is an error.
	tg.Config = testConfig("64K")
	for n := 0; n < len(s); n++ {
		if _, _, err := Load(bytes.NewReader(s[:n]), tg); err == nil {
			t.Fatalf("stream cut at %d of %d accepted", n, len(s))
		}
	}
	// RAM outside the destination is refused.
	tg.RAM = func(gpa, n uint64) ([]byte, bool) { return nil, false }
	if _, _, err := Load(bytes.NewReader(s), tg); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("RAM outside: %v", err)
	}
}

func FuzzLoad(f *testing.F) {
	mem := sampleRAM()
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, testConfig("64K"))
	w.Section(bus.State{Name: "cpu0", Version: 1, Data: []byte{1, 2, 3}})
	w.RAM(0x4000_0000, mem)
	w.Close()
	f.Add(buf.Bytes())
	f.Add([]byte(Magic + "\x01\x00\x00\x00\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, s []byte) {
		dst := make([]byte, len(mem))
		tg := Target{Config: testConfig("64K"), RAM: func(gpa, n uint64) ([]byte, bool) {
			if gpa < 0x4000_0000 || n > uint64(len(dst)) || gpa-0x4000_0000 > uint64(len(dst))-n {
				return nil, false
			}
			return dst[gpa-0x4000_0000 : gpa-0x4000_0000+n], true
		}}
		secs, _, err := Load(bytes.NewReader(s), tg)
		if err == nil {
			for _, sec := range secs {
				var x sample
				DecodeFields(sec.Data, &x)
			}
		}
	})
}

// v1Stream is a format version 1 stream (gemu before live migration) of the sample:
// kind 2 RAM runs, unaligned.
func v1Stream(mem []byte) []byte {
	le := binary.LittleEndian
	b := []byte(Magic)
	b = le.AppendUint32(b, 1)
	cfg := testConfig("64K")
	b = le.AppendUint32(b, uint32(len(cfg)))
	for _, kv := range cfg {
		b = le.AppendUint16(b, uint16(len(kv.Key)))
		b = le.AppendUint16(b, uint16(len(kv.Value)))
		b = append(b, kv.Key+kv.Value...)
	}
	b = append(b, recSection)
	b = le.AppendUint16(b, 4)
	b = append(b, "cpu0"...)
	b = le.AppendUint32(b, 1)
	b = le.AppendUint32(b, 3)
	b = append(b, 1, 2, 3)
	pages := 0
	for _, r := range [][2]int{{0, 2}, {9, 1}} {
		b = append(b, recRAMv1)
		b = le.AppendUint64(b, 0x4000_0000+uint64(r[0])*PageSize)
		b = le.AppendUint32(b, uint32(r[1]))
		b = append(b, mem[r[0]*PageSize:(r[0]+r[1])*PageSize]...)
		pages += r[1]
	}
	b = append(b, recEnd)
	b = le.AppendUint64(b, 1)
	return le.AppendUint64(b, uint64(pages))
}

func memTarget(dst []byte) Target {
	return Target{Config: testConfig("64K"), RAM: func(gpa, n uint64) ([]byte, bool) {
		if gpa < 0x4000_0000 || gpa+n > 0x4000_0000+uint64(len(dst)) {
			return nil, false
		}
		return dst[gpa-0x4000_0000 : gpa-0x4000_0000+n], true
	}}
}

// An old (version 1) stream still loads; one of a version this gemu does not know is
// refused in one line naming it.
func TestStreamV1Loads(t *testing.T) {
	mem := sampleRAM()
	s := v1Stream(mem)
	dst := make([]byte, len(mem))
	secs, st, err := Load(bytes.NewReader(s), memTarget(dst))
	if err != nil || !bytes.Equal(dst, mem) || len(secs) != 1 || st.Pages != 3 {
		t.Fatalf("version 1 stream: %v, %d sections, %+v, RAM equal %v", err, len(secs), st, bytes.Equal(dst, mem))
	}
	s[8] = 9
	if _, _, err := Load(bytes.NewReader(s), memTarget(dst)); err == nil || !strings.Contains(err.Error(), "format version 9 is not supported") {
		t.Fatalf("version 9: %v", err)
	}
}

// Live migration passes: a page sent again replaces the earlier copy, a page that
// became zero is sent as a zero entry, and every page's data starts at a page-aligned
// stream offset (what LoadFile maps).
func TestStreamPassesAndAlignment(t *testing.T) {
	mem := sampleRAM()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, testConfig("64K"))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.RAM(0x4000_0000, mem); err != nil {
		t.Fatal(err)
	}
	mem[0] = 0          // page 0 becomes zero
	mem[PageSize] = 5   // page 1 changes
	mem[3*PageSize] = 7 // page 3 was zero
	sel := []uint64{1<<0 | 1<<1 | 1<<3 | 1<<4}
	if err := w.RAMPages(0x4000_0000, mem, sel); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Stats.Pages != 3+2 {
		t.Fatalf("stats %+v: want 5 pages sent with data", w.Stats)
	}
	s := buf.Bytes()
	for _, p := range [][]byte{mem[PageSize : 2*PageSize], mem[3*PageSize : 4*PageSize], mem[9*PageSize : 10*PageSize]} {
		i := bytes.Index(s, p)
		if i < 0 || i%PageSize != 0 {
			t.Fatalf("page data at stream offset %d, want page aligned", i)
		}
	}
	dst := make([]byte, len(mem))
	for i := 4 * PageSize; i < 5*PageSize; i++ {
		dst[i] = 0xee // what page 4, sent as a zero entry, held
	}
	tg := memTarget(dst)
	if _, _, err := Load(bytes.NewReader(s), tg); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst[:5*PageSize], mem[:5*PageSize]) || !bytes.Equal(dst[9*PageSize:10*PageSize], mem[9*PageSize:10*PageSize]) {
		t.Fatal("RAM after two passes differs (the last copy of a page must count, zero entries must zero)")
	}
	// LoadFile maps what Load copied, at page-aligned offsets; a Map that fails
	// makes it copy.
	f, err := os.CreateTemp(t.TempDir(), "stream")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Write(s)
	var mapped []int64
	clear(dst)
	tg.Map = func(gpa, n uint64, off int64) error {
		if off%PageSize != 0 {
			t.Errorf("Map(%#x, %d, %d): offset not page aligned", gpa, n, off)
		}
		copy(dst[gpa-0x4000_0000:gpa-0x4000_0000+n], s[off:off+int64(n)]) // what a mapping shows
		mapped = append(mapped, off)
		return nil
	}
	_, st, err := LoadFile(f, tg)
	if err != nil || st.Mapped != 5 || st.Pages != 5 || len(mapped) == 0 || !bytes.Equal(dst[:5*PageSize], mem[:5*PageSize]) {
		t.Fatalf("LoadFile: %v, stats %+v, maps at %v", err, st, mapped)
	}
	tg.Map = func(gpa, n uint64, off int64) error { return errors.New("no") }
	clear(dst)
	if _, st, err := LoadFile(f, tg); err != nil || st.Mapped != 0 || !bytes.Equal(dst[:5*PageSize], mem[:5*PageSize]) {
		t.Fatalf("LoadFile copying: %v, stats %+v", err, st)
	}
	// A file cut inside the data is refused, not mapped past its end.
	f.Truncate(int64(len(s) - PageSize))
	if _, _, err := LoadFile(f, tg); err == nil {
		t.Fatal("truncated file accepted")
	}
}
