package acpi

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The decoder in this file is written from the ACPI 6.4 specification's table layouts
// independently of the builder's constants.

const testBase = 0xe0000

func testConfig() Config {
	return Config{
		CPUs: 4, LAPICAddr: 0xfee00000, IOAPICAddr: 0xfec00000, SCI: 9,
		PM: PMPorts{Base: 0x600}, ResetPort: 0xcf9, ResetValue: 6, CenturyReg: 0x32,
		PCI: true, PCIMem32Start: 0xe0000000, PCIMem32Length: 0x1ec00000, PCIRouting: true,
	}
}

func sum(b []byte) (s byte) {
	for _, c := range b {
		s += c
	}
	return
}

// decoded tables by signature, found by walking from the RSDP.
func decode(t *testing.T, tb *Tables) map[string][]byte {
	t.Helper()
	blob := tb.Blob
	le := binary.LittleEndian
	at := func(addr uint64) []byte {
		if addr < tb.Base || addr-tb.Base+36 > uint64(len(blob)) {
			t.Fatalf("table address %#x outside the blob", addr)
		}
		b := blob[addr-tb.Base:]
		n := le.Uint32(b[4:])
		if string(b[:4]) == "FACS" {
			return b[:n]
		}
		if uint64(n) > uint64(len(b)) || n < 36 {
			t.Fatalf("table %q length %d", b[:4], n)
		}
		if sum(b[:n]) != 0 {
			t.Errorf("table %q checksum bad", b[:4])
		}
		return b[:n]
	}
	r := blob[tb.RSDP-tb.Base:]
	if string(r[:8]) != "RSD PTR " || tb.RSDP%16 != 0 || tb.RSDP < 0xe0000 || tb.RSDP > 0xfffff {
		t.Fatalf("RSDP %q at %#x", r[:8], tb.RSDP)
	}
	if sum(r[:20]) != 0 || sum(r[:36]) != 0 || r[15] != 2 || le.Uint32(r[20:]) != 36 {
		t.Fatal("RSDP checksums, revision or length wrong")
	}
	tables := map[string][]byte{}
	xsdt := at(le.Uint64(r[24:]))
	rsdt := at(uint64(le.Uint32(r[16:])))
	if string(xsdt[:4]) != "XSDT" || string(rsdt[:4]) != "RSDT" {
		t.Fatal("RSDP does not point at XSDT/RSDT")
	}
	n := (len(xsdt) - 36) / 8
	if (len(rsdt)-36)/4 != n {
		t.Fatal("RSDT and XSDT list different numbers of tables")
	}
	for i := 0; i < n; i++ {
		a := le.Uint64(xsdt[36+8*i:])
		if uint64(le.Uint32(rsdt[36+4*i:])) != a {
			t.Errorf("RSDT entry %d differs from XSDT", i)
		}
		tab := at(a)
		tables[string(tab[:4])] = tab
	}
	f := tables["FACP"]
	if f == nil {
		t.Fatal("no FADT")
	}
	facs, dsdt := le.Uint64(f[132:]), le.Uint64(f[140:])
	if uint64(le.Uint32(f[36:])) != facs || uint64(le.Uint32(f[40:])) != dsdt {
		t.Error("FADT 32- and 64-bit FACS/DSDT pointers disagree")
	}
	if facs%64 != 0 {
		t.Errorf("FACS at %#x not 64-byte aligned", facs)
	}
	tables["FACS"] = at(facs)
	tables["DSDT"] = at(dsdt)
	return tables
}

func TestTablesDecode(t *testing.T) {
	tb, err := Build(testBase, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	if len(tb.Blob) > 0x20000 {
		t.Fatalf("tables %d bytes do not fit the BIOS area", len(tb.Blob))
	}
	tabs := decode(t, tb)
	le := binary.LittleEndian

	f := tabs["FACP"]
	if f[8] < 5 || len(f) < 268 {
		t.Errorf("FADT revision %d length %d", f[8], len(f))
	}
	if le.Uint16(f[46:]) != 9 {
		t.Errorf("SCI_INT %d", le.Uint16(f[46:]))
	}
	if le.Uint32(f[48:]) != 0 {
		t.Error("SMI_CMD set: the guest would try to switch to ACPI mode")
	}
	pm1aEvt, pm1aCnt, tmr := le.Uint32(f[56:]), le.Uint32(f[64:]), le.Uint32(f[76:])
	if pm1aEvt == 0 || pm1aCnt == 0 || f[88] != 4 || f[89] != 2 || (tmr != 0 && f[91] != 4) {
		t.Errorf("PM1 blocks evt %#x/%d cnt %#x/%d", pm1aEvt, f[88], pm1aCnt, f[89])
	}
	// X_ blocks agree with the legacy ones (ACPICA warns on mismatch).
	for _, c := range []struct{ legacy, x, lenOff int }{{56, 148, 88}, {64, 172, 89}, {76, 208, 91}, {80, 220, 92}} {
		gas := f[c.x : c.x+12]
		if le.Uint32(f[c.legacy:]) != 0 && (gas[0] != 1 || le.Uint64(gas[4:]) != uint64(le.Uint32(f[c.legacy:])) || gas[1] != f[c.lenOff]*8) {
			t.Errorf("X_ block at FADT+%d %x disagrees with legacy field", c.x, gas)
		}
	}
	flags := le.Uint32(f[112:])
	if flags&(1<<10) == 0 || flags&(1<<20) != 0 {
		t.Errorf("FADT flags %#x: want RESET_REG_SUP, not HW_REDUCED_ACPI", flags)
	}
	reset := f[116:128]
	if reset[0] != 1 || reset[1] != 8 || le.Uint64(reset[4:]) != 0xcf9 || f[128] != 6 {
		t.Errorf("reset register %x value %d", reset, f[128])
	}
	if f[108] != 0x32 {
		t.Errorf("century %#x", f[108])
	}
	if string(tabs["FACS"][:4]) != "FACS" || le.Uint32(tabs["FACS"][4:]) != 64 {
		t.Error("FACS malformed")
	}

	m := tabs["APIC"]
	if le.Uint32(m[36:]) != 0xfee00000 || le.Uint32(m[40:])&1 == 0 {
		t.Error("MADT local APIC address or PCAT_COMPAT")
	}
	var apicIDs []int
	isos := map[byte][2]uint32{}
	ioapics := 0
	for o := 44; o < len(m); {
		typ, l := m[o], int(m[o+1])
		if l < 2 || o+l > len(m) {
			t.Fatalf("MADT entry at %d has length %d", o, l)
		}
		e := m[o : o+l]
		switch typ {
		case 0:
			if le.Uint32(e[4:])&1 == 0 {
				t.Errorf("CPU %d disabled", e[3])
			}
			apicIDs = append(apicIDs, int(e[3]))
		case 1:
			ioapics++
			if le.Uint32(e[4:]) != 0xfec00000 || le.Uint32(e[8:]) != 0 {
				t.Errorf("IOAPIC entry %x", e)
			}
		case 2:
			isos[e[3]] = [2]uint32{le.Uint32(e[4:]), uint32(le.Uint16(e[8:]))}
		}
		o += l
	}
	if len(apicIDs) != 4 || apicIDs[0] != 0 || apicIDs[3] != 3 {
		t.Errorf("local APIC ids %v", apicIDs)
	}
	if ioapics != 1 {
		t.Errorf("%d IOAPICs", ioapics)
	}
	if iso := isos[0]; iso[0] != 2 || iso[1]&0xc == 0xc {
		t.Errorf("IRQ0 override %v, want GSI 2 edge", iso)
	}
	if iso := isos[9]; iso[0] != 9 || iso[1] != 0xd {
		t.Errorf("IRQ9 override %v, want GSI 9 level active-high (0xd)", iso)
	}

	typa, typb, ok := findS5(tabs["DSDT"][36:])
	if !ok || typa != SleepTypeS5 || typb != SleepTypeS5 {
		t.Errorf("\\_S5 = %d,%d (%v)", typa, typb, ok)
	}
}

// findS5 scans AML for Name(\_S5, Package(){a, b, ...}) and decodes the first two
// integers.
func findS5(aml []byte) (a, b int, ok bool) {
	i := strings.Index(string(aml), "_S5_")
	if i < 0 || i+5 >= len(aml) || aml[i+4] != 0x12 {
		return 0, 0, false
	}
	p := aml[i+5:]
	// PkgLength: top two bits of the lead byte count the extra bytes.
	p = p[1+int(p[0]>>6):]
	p = p[1:] // NumElements
	readInt := func() int {
		switch p[0] {
		case 0x00:
			p = p[1:]
			return 0
		case 0x01:
			p = p[1:]
			return 1
		case 0x0a:
			v := int(p[1])
			p = p[2:]
			return v
		}
		return -1
	}
	a = readInt()
	b = readInt()
	return a, b, a >= 0 && b >= 0
}

// TestTablesIasl disassembles every table with ACPICA's iasl, the reference
// implementation, and checks the fields it reports.
func TestTablesIasl(t *testing.T) {
	iasl, err := exec.LookPath("iasl")
	if err != nil {
		t.Skip("iasl not installed (Debian package acpica-tools); skipping the ACPICA cross-check")
	}
	tb, err := Build(testBase, hpetConfig())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	le := binary.LittleEndian
	dis := map[string]string{}
	for sig, off := range tb.Offsets {
		if sig == "RSD PTR " {
			continue
		}
		n := le.Uint32(tb.Blob[off+4:])
		name := strings.ToLower(sig)
		path := filepath.Join(dir, name+".dat")
		os.WriteFile(path, tb.Blob[off:off+int(n)], 0o644)
		out, err := exec.Command(iasl, "-d", path).CombinedOutput()
		if err != nil {
			t.Fatalf("iasl -d %s: %v\n%s", sig, err, out)
		}
		dsl, err := os.ReadFile(filepath.Join(dir, name+".dsl"))
		if err != nil {
			t.Fatalf("iasl wrote no disassembly for %s: %v\n%s", sig, err, out)
		}
		if strings.Contains(string(out), "Error") || strings.Contains(string(dsl), "**** ") {
			t.Errorf("iasl reports problems in %s:\n%s", sig, out)
		}
		dis[sig] = string(dsl)
	}
	want := map[string][]string{
		"DSDT": {`Name (\_S5, Package (0x04)`, `0x05`, `Device (PCI0)`, `EisaId ("PNP0A03")`,
			`WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode`,
			`IO (Decode16,`, `0x0CF8,`, `DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite`,
			`0xFEBFFFFF,`, `Name (_PRT, Package (0x7C)`,
			// Slot 1 INTA → GSI 17, slot 31 INTD → GSI 16 + (31+3)%8 = 18.
			`Package (0x04) { 0x0001FFFF, Zero, Zero, 0x11 }`,
			`Package (0x04) { 0x001FFFFF, 0x03, Zero, 0x12 }`},
		"FACP": {`SCI Interrupt : 0009`, `PM1A Control Block Address : 00000604`, `Reset Register Supported (V2) : 1`,
			`Address : 0000000000000CF9`, `Value to cause reset : 06`, `Hardware Reduced (V5) : 0`},
		"APIC": {`Local Apic ID : 03`, `Address : FEC00000`, `Source : 09`, `Interrupt : 00000002`},
		"FACS": {`Version : 02`},
		"HPET": {`Hardware Block ID : 8086A201`, `Space ID : 00 [SystemMemory]`,
			`Address : 00000000FED00000`, `Sequence Number : 00`},
	}
	space := regexp.MustCompile(`\s+`)
	for sig, subs := range want {
		text := space.ReplaceAllString(dis[sig], " ")
		for _, s := range subs {
			if !strings.Contains(text, space.ReplaceAllString(s, " ")) {
				t.Errorf("%s disassembly lacks %q:\n%s", sig, s, dis[sig])
			}
		}
	}
}

// TestTablesUnchangedWithoutHPET pins the tables of configurations without the HPET
// option to the bytes the KVM PC boots with (digests of main's Build at e6b858b, taken
// from a checkout without the option), so options for the userspace chipset cannot
// change them. A deliberate change to the KVM tables updates the digests.
func TestTablesUnchangedWithoutHPET(t *testing.T) {
	small := testConfig()
	small.PCI, small.PCIRouting, small.CPUs = false, false, 1
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{testConfig(), "5d5881636e7c37744a566ce8c520e429de823770f2a5ff284f66c3f4bf573cfa"},
		{small, "ff731f46abe61be4c784dca056e4ae14dc157e44269a583bc898f61f3c56858f"},
	} {
		tb, err := Build(testBase, c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("%x", sha256.Sum256(tb.Blob)); got != c.want {
			t.Errorf("tables changed: sha256 %s, want %s", got, c.want)
		}
	}
}

func hpetConfig() Config {
	c := testConfig()
	c.HPET, c.HPETAddr, c.HPETID = true, 0xfed00000, 0x8086a201
	return c
}

func TestHPETTable(t *testing.T) {
	tb, err := Build(testBase, hpetConfig())
	if err != nil {
		t.Fatal(err)
	}
	tables := decode(t, tb)
	h := tables["HPET"]
	if h == nil {
		t.Fatal("no HPET table in the XSDT")
	}
	le := binary.LittleEndian
	if len(h) != 56 || h[8] != 1 {
		t.Fatalf("HPET length %d revision %d, want 56 and 1", len(h), h[8])
	}
	if le.Uint32(h[36:]) != 0x8086a201 || h[40] != 0 || le.Uint64(h[44:]) != 0xfed00000 {
		t.Errorf("HPET id %#x space %d base %#x", le.Uint32(h[36:]), h[40], le.Uint64(h[44:]))
	}
	// The other tables are the same bytes as without the option.
	plain, _ := Build(testBase, testConfig())
	for _, sig := range []string{"FACP", "APIC", "DSDT", "FACS"} {
		a, b := decode(t, plain)[sig], tables[sig]
		if string(a) != string(b) {
			t.Errorf("%s differs with the HPET option", sig)
		}
	}
}
