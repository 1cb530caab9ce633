package apic

import (
	"encoding/binary"
	"testing"
	"time"

	"gemu/hw/bus"
	"gemu/hw/timer"
)

func newSys(t *testing.T, n int) (*System, *timer.Fake, []int) {
	t.Helper()
	clk := timer.NewFake()
	s := New(n, clk)
	kicks := make([]int, n)
	for i := 0; i < n; i++ {
		i := i
		s.CPU(i).SetKick(func() { kicks[i]++ })
	}
	return s, clk, kicks
}

// mmio reads/writes the banked page as vCPU cpu's driver would.
func rd(s *System, cpu int, off uint32) uint32 {
	b := make([]byte, 4)
	s.Read(bus.CPUAccess(cpu), uint64(off), b)
	return binary.LittleEndian.Uint32(b)
}

func wr(s *System, cpu int, off, v uint32) {
	b := binary.LittleEndian.AppendUint32(nil, v)
	s.Write(bus.CPUAccess(cpu), uint64(off), b)
}

func enable(s *System, cpu int) { wr(s, cpu, RegSVR, 0x1ff) }

func TestResetValuesAndBanking(t *testing.T) {
	s, _, _ := newSys(t, 3)
	for cpu := 0; cpu < 3; cpu++ {
		want := map[uint32]uint32{
			RegID: uint32(cpu) << 24, RegVersion: 0x50014, RegTPR: 0, RegPPR: 0,
			RegLDR: 0, RegDFR: 0xffffffff, RegSVR: 0xff, RegLVTTimer: 0x10000,
			RegLINT0: 0x10000, RegLINT1: 0x10000, RegLVTError: 0x10000, RegDivide: 0,
		}
		for off, w := range want {
			if g := rd(s, cpu, off); g != w {
				t.Errorf("cpu %d reg %#x = %#x, want %#x", cpu, off, g, w)
			}
		}
	}
	wr(s, 1, RegTPR, 0x40)
	if rd(s, 0, RegTPR) != 0 || rd(s, 1, RegTPR) != 0x40 {
		t.Fatal("TPR is not banked per vCPU")
	}
	if base := s.CPU(0).Base(); base != 0xfee00900 {
		t.Errorf("BSP APIC base %#x, want 0xfee00900", base)
	}
	if base := s.CPU(1).Base(); base != 0xfee00800 {
		t.Errorf("AP APIC base %#x, want 0xfee00800", base)
	}
	// DMA reads see nothing.
	b := []byte{1, 2, 3, 4}
	s.Read(bus.Host, RegVersion, b)
	if binary.LittleEndian.Uint32(b) != 0 {
		t.Error("a read with no vCPU returned APIC state")
	}
}

func TestESRIllegalRegisterAndLatch(t *testing.T) {
	s, _, _ := newSys(t, 1)
	enable(s, 0)
	wr(s, 0, RegLVTError, 0xfe)
	rd(s, 0, 0x40) // reserved
	if rd(s, 0, RegESR) != 0 {
		t.Fatal("ESR changed before the latching write")
	}
	wr(s, 0, RegESR, 0)
	if g := rd(s, 0, RegESR); g != esrIllegalReg {
		t.Fatalf("ESR = %#x, want illegal register %#x", g, esrIllegalReg)
	}
	if s.CPU(0).HighestPending() != 0xfe {
		t.Error("error LVT did not raise its vector")
	}
	wr(s, 0, RegESR, 0)
	if rd(s, 0, RegESR) != 0 {
		t.Error("second ESR write did not clear")
	}
	// Sending an illegal vector.
	wr(s, 0, RegICRLow, 0x4000|ShortSelf<<18|5)
	wr(s, 0, RegESR, 0)
	if g := rd(s, 0, RegESR); g != esrSendIllegal {
		t.Errorf("ESR after IPI vector 5 = %#x, want %#x", g, esrSendIllegal)
	}
}

func TestFixedIPIPriorityAndEOI(t *testing.T) {
	s, _, kicks := newSys(t, 2)
	enable(s, 0)
	enable(s, 1)
	a := s.CPU(1)
	// vCPU 0 sends vectors 0x31 and 0x52 to APIC id 1 (physical).
	wr(s, 0, RegICRHigh, 1<<24)
	wr(s, 0, RegICRLow, 0x31)
	wr(s, 0, RegICRLow, 0x52)
	if kicks[1] == 0 {
		t.Error("target vCPU was not kicked")
	}
	if rd(s, 1, RegIRR+0x10) != 1<<(0x31-32) || rd(s, 1, RegIRR+0x20) != 1<<(0x52-64) {
		t.Fatalf("IRR %#x %#x", rd(s, 1, RegIRR+0x10), rd(s, 1, RegIRR+0x20))
	}
	if rd(s, 0, RegIRR+0x10) != 0 {
		t.Fatal("sender got the IPI")
	}
	if v := a.HighestPending(); v != 0x52 {
		t.Fatalf("HighestPending = %#x, want 0x52", v)
	}
	if v := a.Acknowledge(); v != 0x52 {
		t.Fatalf("Acknowledge = %#x", v)
	}
	if rd(s, 1, RegISR+0x20) != 1<<(0x52-64) || rd(s, 1, RegPPR) != 0x50 {
		t.Fatalf("ISR %#x PPR %#x", rd(s, 1, RegISR+0x20), rd(s, 1, RegPPR))
	}
	// 0x31 is below the in-service class: not deliverable.
	if v := a.HighestPending(); v != -1 {
		t.Fatalf("HighestPending under ISR 0x52 = %#x", v)
	}
	wr(s, 1, RegEOI, 0)
	if rd(s, 1, RegISR+0x20) != 0 || rd(s, 1, RegPPR) != 0 {
		t.Fatal("EOI did not clear ISR")
	}
	// TPR masks class 3: Acknowledge gives the spurious vector.
	wr(s, 1, RegTPR, 0x30)
	if rd(s, 1, RegPPR) != 0x30 {
		t.Errorf("PPR = %#x with TPR 0x30", rd(s, 1, RegPPR))
	}
	if a.HighestPending() != -1 || a.Acknowledge() != 0xff {
		t.Fatal("TPR did not mask vector 0x31 (want spurious 0xff)")
	}
	wr(s, 1, RegTPR, 0x20)
	if a.Acknowledge() != 0x31 {
		t.Fatal("0x31 not delivered after TPR dropped")
	}
}

func TestLogicalAndShorthands(t *testing.T) {
	s, _, _ := newSys(t, 4)
	for i := 0; i < 4; i++ {
		enable(s, i)
		wr(s, i, RegLDR, 1<<(24+i)) // flat: one bit each
	}
	wr(s, 0, RegICRHigh, 0x0a<<24) // CPUs 1 and 3
	wr(s, 0, RegICRLow, 1<<11|0x40)
	got := []int{}
	for i := 0; i < 4; i++ {
		if s.CPU(i).HighestPending() == 0x40 {
			got = append(got, i)
			s.CPU(i).Acknowledge()
			wr(s, i, RegEOI, 0)
		}
	}
	if len(got) != 2 || got[0] != 1 || got[1] != 3 {
		t.Fatalf("flat logical 0x0a reached %v", got)
	}
	// Cluster model: cluster 1 member 2 is CPU 2.
	for i := 0; i < 4; i++ {
		wr(s, i, RegDFR, 0x0fffffff)
		wr(s, i, RegLDR, uint32((i/2)<<4|1<<(i%2))<<24)
	}
	wr(s, 0, RegICRHigh, 0x12<<24)
	wr(s, 0, RegICRLow, 1<<11|0x41)
	for i := 0; i < 4; i++ {
		if p := s.CPU(i).HighestPending(); (p == 0x41) != (i == 3) {
			t.Errorf("cluster dest 0x12: cpu %d pending %#x", i, p)
		}
	}
	for _, c := range []struct {
		short uint32
		want  [4]bool
	}{{ShortSelf, [4]bool{false, false, true, false}}, {ShortAll, [4]bool{true, true, true, true}}, {ShortOthers, [4]bool{true, true, false, true}}} {
		wr(s, 2, RegICRLow, c.short<<18|0x80|uint32(c.short))
		for i := 0; i < 4; i++ {
			v := uint8(0x80 | c.short)
			if got := rd(s, i, RegIRR+uint32(v>>5)<<4)&(1<<(v&31)) != 0; got != c.want[i] {
				t.Errorf("shorthand %d cpu %d got=%v", c.short, i, got)
			}
		}
	}
	// Logical 0xff reaches the APICs with a logical id, not one left at LDR 0.
	wr(s, 3, RegLDR, 0)
	wr(s, 0, RegICRHigh, 0xff<<24)
	wr(s, 0, RegICRLow, 1<<11|0x98)
	for i := 0; i < 4; i++ {
		if got := rd(s, i, RegIRR+0x40)&(1<<24) != 0; got != (i != 3) {
			t.Errorf("logical 0xff: cpu %d got=%v", i, got)
		}
	}
	// Physical broadcast.
	wr(s, 0, RegICRHigh, 0xff<<24)
	wr(s, 0, RegICRLow, 0x90)
	for i := 0; i < 4; i++ {
		if rd(s, i, RegIRR+0x40)&(1<<16) == 0 {
			t.Errorf("broadcast missed cpu %d", i)
		}
	}
}

func TestLowestPriority(t *testing.T) {
	s, _, _ := newSys(t, 3)
	for i := 0; i < 3; i++ {
		enable(s, i)
		wr(s, i, RegLDR, 1<<24)
	}
	wr(s, 0, RegTPR, 0x20)
	wr(s, 1, RegTPR, 0x10)
	wr(s, 2, RegTPR, 0x30)
	s.Deliver(Message{Dest: 1, Logical: true, Mode: ModeLowest, Vector: 0x60, Level: true})
	for i := 0; i < 3; i++ {
		if got := s.CPU(i).HighestPending() == 0x60; got != (i == 1) {
			t.Errorf("lowest priority: cpu %d got=%v", i, got)
		}
	}
}

func TestINITSIPINMI(t *testing.T) {
	s, _, kicks := newSys(t, 2)
	wr(s, 0, RegICRHigh, 1<<24)
	wr(s, 0, RegICRLow, 0xc500) // INIT assert, level
	wr(s, 0, RegICRLow, 0x8500) // INIT de-assert: no event
	ev, _ := s.CPU(1).TakeEvents()
	if ev != EventINIT {
		t.Fatalf("events %#x, want INIT", ev)
	}
	wr(s, 0, RegICRLow, 0x0600|0x9a) // SIPI vector 0x9a
	ev, vec := s.CPU(1).TakeEvents()
	if ev != EventSIPI || vec != 0x9a {
		t.Fatalf("events %#x vec %#x", ev, vec)
	}
	wr(s, 0, RegICRLow, ShortOthers<<18|0x400)
	if ev, _ := s.CPU(1).TakeEvents(); ev != EventNMI {
		t.Fatalf("NMI events %#x", ev)
	}
	if ev, _ := s.CPU(0).TakeEvents(); ev != 0 {
		t.Fatal("all-but-self reached self")
	}
	if kicks[1] < 3 {
		t.Errorf("kicks %d", kicks[1])
	}
	// LINT1 programmed NMI (the PC's wiring) on a rising edge.
	enable(s, 0)
	wr(s, 0, RegLINT1, 0x400)
	s.CPU(0).SetLINT1(true)
	if ev, _ := s.CPU(0).TakeEvents(); ev != EventNMI {
		t.Fatalf("LINT1 NMI: events %#x", ev)
	}
}

type fakePIC struct{ acks int }

func (p *fakePIC) Acknowledge() uint8 { p.acks++; return 0x08 }

func TestExtINTOnLINT0(t *testing.T) {
	s, _, _ := newSys(t, 1)
	a := s.CPU(0)
	pic := &fakePIC{}
	a.SetExtINT(pic)
	a.SetLINT0(true)
	// Software-disabled APIC: LVTs masked, the PIC's interrupt does not get through.
	if a.HighestPending() != -1 {
		t.Fatal("ExtINT through a masked LINT0")
	}
	enable(s, 0)
	wr(s, 0, RegLINT0, 0x700) // ExtINT, unmasked (what Linux programs on the BSP)
	if a.HighestPending() != PendingExtINT {
		t.Fatal("ExtINT not pending")
	}
	if v := a.Acknowledge(); v != 8 || pic.acks != 1 {
		t.Fatalf("Acknowledge = %d (acks %d)", v, pic.acks)
	}
	// Fixed interrupts go first.
	wr(s, 0, RegICRLow, ShortSelf<<18|0x30)
	if a.HighestPending() != 0x30 {
		t.Fatal("fixed vector not ahead of ExtINT")
	}
	a.SetLINT0(false)
	a.Acknowledge()
	if a.HighestPending() != -1 {
		t.Fatal("ExtINT pending with INTR low")
	}
	// Hardware-disabled APIC: INTR straight to the CPU.
	if err := a.SetBase(DefaultBase); err != nil {
		t.Fatal(err)
	}
	a.SetLINT0(true)
	if a.HighestPending() != PendingExtINT {
		t.Fatal("disabled APIC must pass the PIC's INTR through")
	}
}

func TestSoftwareDisableMasksLVT(t *testing.T) {
	s, _, _ := newSys(t, 1)
	wr(s, 0, RegLVTTimer, 0x30)
	if rd(s, 0, RegLVTTimer) != 0x10030 {
		t.Fatalf("LVT timer with SVR disabled = %#x, want masked", rd(s, 0, RegLVTTimer))
	}
	s.Deliver(Message{Dest: 0, Mode: ModeFixed, Vector: 0x40, Level: true})
	if s.CPU(0).HighestPending() != -1 {
		t.Fatal("a software-disabled APIC delivered a fixed interrupt")
	}
	enable(s, 0)
	wr(s, 0, RegLVTTimer, 0x30)
	if rd(s, 0, RegLVTTimer) != 0x30 {
		t.Fatal("LVT not unmaskable once enabled")
	}
	wr(s, 0, RegSVR, 0xff)
	if rd(s, 0, RegLVTTimer)&lvtMasked == 0 {
		t.Fatal("clearing SVR.enable left LVT unmasked")
	}
}

func TestLevelEOIBroadcast(t *testing.T) {
	s, _, _ := newSys(t, 1)
	enable(s, 0)
	var got []uint8
	s.SetEOIBroadcast(func(v uint8) { got = append(got, v) })
	s.Deliver(Message{Mode: ModeFixed, Vector: 0x61, Level: true, LevelTrig: true})
	s.Deliver(Message{Mode: ModeFixed, Vector: 0x51, Level: true})
	if rd(s, 0, RegTMR+0x30) != 2 || rd(s, 0, RegTMR+0x20) != 0 {
		t.Fatalf("TMR %#x %#x", rd(s, 0, RegTMR+0x30), rd(s, 0, RegTMR+0x20))
	}
	s.CPU(0).Acknowledge()
	wr(s, 0, RegEOI, 0)
	s.CPU(0).Acknowledge()
	wr(s, 0, RegEOI, 0)
	if len(got) != 1 || got[0] != 0x61 {
		t.Fatalf("EOI broadcasts %v, want [0x61]", got)
	}
}

func TestTimerOneShotPeriodicDivide(t *testing.T) {
	s, clk, _ := newSys(t, 1)
	a := s.CPU(0)
	enable(s, 0)
	wr(s, 0, RegDivide, 0x3) // divide by 16
	wr(s, 0, RegLVTTimer, 0xec)
	wr(s, 0, RegInitial, 1000)
	clk.Advance(160 * time.Nanosecond) // 10 ticks
	if g := rd(s, 0, RegCurrent); g != 990 {
		t.Fatalf("current count after 10 ticks = %d", g)
	}
	clk.Advance(16000 - 160 - 1)
	if a.HighestPending() != -1 {
		t.Fatal("timer fired early")
	}
	clk.Advance(1)
	if a.HighestPending() != 0xec || rd(s, 0, RegCurrent) != 0 {
		t.Fatalf("one-shot: pending %#x current %d", a.HighestPending(), rd(s, 0, RegCurrent))
	}
	a.Acknowledge()
	wr(s, 0, RegEOI, 0)
	if clk.Pending() != 0 {
		t.Fatal("one-shot left a callback armed")
	}
	// Periodic, divide by 1 (0xb): count 300000 → a fire every 300 µs.
	wr(s, 0, RegDivide, 0xb)
	wr(s, 0, RegLVTTimer, 1<<17|0xed)
	wr(s, 0, RegInitial, 300000)
	fires := 0
	for i := 0; i < 10; i++ {
		clk.Advance(300 * time.Microsecond)
		if a.HighestPending() == 0xed {
			fires++
			a.Acknowledge()
			wr(s, 0, RegEOI, 0)
		}
	}
	if fires != 10 {
		t.Fatalf("periodic timer fired %d times in 10 periods", fires)
	}
	clk.Advance(30)
	if g := rd(s, 0, RegCurrent); g != 300000-30 {
		t.Fatalf("periodic current = %d, want %d", g, 300000-30)
	}
	// A period below timer.MinPeriod (100 ns) coalesces: one interrupt per MinPeriod.
	wr(s, 0, RegInitial, 100)
	fires = 0
	for i := 0; i < 100; i++ {
		clk.Advance(100 * time.Microsecond)
		if a.HighestPending() == 0xed {
			fires++
			a.Acknowledge()
			wr(s, 0, RegEOI, 0)
		}
	}
	if fires < 48 || fires > 51 {
		t.Fatalf("100 ns period over 10 ms: %d interrupts, want about 50 (one per 200 µs)", fires)
	}
	wr(s, 0, RegInitial, 0)
	if clk.Pending() != 0 {
		t.Fatal("initial count 0 did not stop the timer")
	}
	// Divide encodings (SDM table 10-10): 0→2 … 0xa→128, 0xb→1.
	for conf, div := range map[uint32]uint32{0: 2, 1: 4, 2: 8, 3: 16, 8: 32, 9: 64, 0xa: 128, 0xb: 1} {
		wr(s, 0, RegLVTTimer, 0x10000)
		wr(s, 0, RegDivide, conf)
		wr(s, 0, RegInitial, 1000)
		clk.Advance(time.Duration(div) * 7)
		if g := rd(s, 0, RegCurrent); g != 993 {
			t.Errorf("divide conf %#x: count %d after 7 periods of %d ns", conf, g, div)
		}
	}
}

func TestTSCDeadline(t *testing.T) {
	s, clk, _ := newSys(t, 1)
	a := s.CPU(0)
	enable(s, 0)
	wr(s, 0, RegLVTTimer, 2<<17|0xef)
	wr(s, 0, RegInitial, 5) // ignored in deadline mode
	if rd(s, 0, RegInitial) != 0 {
		t.Error("initial count written in TSC-deadline mode")
	}
	const hz = 2_000_000_000 // 2 GHz TSC: 2 ticks per ns
	a.WriteTSCDeadline(1000+2000, 1000, hz)
	if a.TSCDeadline() != 3000 {
		t.Fatal("deadline not readable")
	}
	clk.Advance(999)
	if a.HighestPending() != -1 {
		t.Fatal("deadline fired early")
	}
	clk.Advance(1)
	if a.HighestPending() != 0xef || a.TSCDeadline() != 0 {
		t.Fatal("deadline did not fire at 1 µs")
	}
	a.Acknowledge()
	wr(s, 0, RegEOI, 0)
	a.WriteTSCDeadline(5000, 1000, hz)
	a.WriteTSCDeadline(0, 1000, hz)
	clk.Advance(time.Millisecond)
	if a.HighestPending() != -1 {
		t.Fatal("deadline 0 did not disarm")
	}
	a.WriteTSCDeadline(10, 1000, hz) // already passed
	clk.Advance(0)
	if a.HighestPending() != 0xef {
		t.Fatal("a past deadline did not fire at once")
	}
}

func TestMSI(t *testing.T) {
	s, _, _ := newSys(t, 2)
	enable(s, 0)
	enable(s, 1)
	if err := s.SignalMSI(0xfee00000|1<<12, 0x4041); err != nil {
		t.Fatal(err)
	}
	if s.CPU(1).HighestPending() != 0x41 || s.CPU(0).HighestPending() != -1 {
		t.Fatal("MSI to APIC 1 misrouted")
	}
	if err := s.SignalMSI(0xfed00000, 0x41); err == nil {
		t.Fatal("MSI outside the window accepted")
	}
	// NMI delivery mode.
	s.SendMSI(0xfee00000, 0x400)
	if ev, _ := s.CPU(0).TakeEvents(); ev != EventNMI {
		t.Fatalf("MSI NMI events %#x", ev)
	}
	// A DMA write to the page is an MSI too.
	s.Write(bus.Host, 0, binary.LittleEndian.AppendUint32(nil, 0x42))
	if s.CPU(0).HighestPending() != 0x42 {
		t.Fatal("DMA write to 0xfee00000 was not an MSI")
	}
}

// creepClock advances 1 µs at every reading, as the host clock does between the two
// readings of a TMICT write; callbacks run only from runDue.
type creepClock struct {
	now time.Duration
	q   []*creepTimer
}

type creepTimer struct {
	at   time.Duration
	f    func()
	dead bool
}

func (t *creepTimer) Stop() bool { was := !t.dead; t.dead = true; return was }

func (c *creepClock) Now() time.Duration { c.now += time.Microsecond; return c.now }

func (c *creepClock) AfterFunc(d time.Duration, f func()) timer.Stopper {
	t := &creepTimer{at: c.now + d, f: f}
	c.q = append(c.q, t)
	return t
}

// runDue runs the live callbacks due by now.
func (c *creepClock) runDue() {
	q := c.q
	c.q = nil
	for _, t := range q {
		if t.dead {
			continue
		}
		if t.at <= c.now {
			t.dead = true
			t.f()
		} else {
			c.q = append(c.q, t)
		}
	}
}

// TestTimerOneShotExpiredBeforeArmed: a one-shot count so short that it has run out by
// the time the APIC arms its callback (Linux writes TMICT counts of a few dozen ticks)
// must still interrupt, and so must one whose expiry passed before its late callback
// ran when the guest rewrites the LVT; one that fired does not fire again. Losing these
// left an AP with no timer tick at all (an RCU stall in Debian's boot with -smp 2).
func TestTimerOneShotExpiredBeforeArmed(t *testing.T) {
	clk := &creepClock{}
	s := New(1, clk)
	a := s.CPU(0)
	enable(s, 0)
	wr(s, 0, RegDivide, 0xb) // divide by 1: one tick per ns
	wr(s, 0, RegLVTTimer, 0xec)
	wr(s, 0, RegInitial, 0x3e) // 62 ns: gone before the APIC's next clock reading
	clk.runDue()
	if a.HighestPending() != 0xec {
		t.Fatal("a one-shot count that ran out before arming did not interrupt")
	}
	a.Acknowledge()
	wr(s, 0, RegEOI, 0)

	wr(s, 0, RegInitial, 1_000_000) // 1 ms
	clk.now += 2 * time.Millisecond // expired; its callback has not run yet
	wr(s, 0, RegLVTTimer, 0xec)     // the guest rewrites the LVT meanwhile
	clk.runDue()
	if a.HighestPending() != 0xec {
		t.Fatal("an LVT rewrite lost a one-shot expiry whose callback was late")
	}
	a.Acknowledge()
	wr(s, 0, RegEOI, 0)

	wr(s, 0, RegLVTTimer, 0xec) // after it fired: nothing more
	clk.runDue()
	if a.HighestPending() != -1 {
		t.Fatalf("an expired, delivered one-shot fired again (pending %#x)", a.HighestPending())
	}
}
