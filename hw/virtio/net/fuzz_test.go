package net

import (
	"testing"
	"time"

	"gemu/hw/virtio/virtiotest"
)

// FuzzTxChain runs arbitrary tx chains (header, frame, descriptor split, an optional
// writable buffer, negotiated features, the backend's offloads) through the device.
// Any outcome is fine but a panic, a hang, a frame larger than the backend takes, a
// segment with a wrong TCP checksum when the backend needs complete checksums, or a
// chain neither completed nor breaking the queue.
// Run longer with: go test ./hw/virtio/net -run '^$' -fuzz FuzzTxChain -fuzztime 10s
func FuzzTxChain(f *testing.F) {
	tso := append(encodeHdr(hdr{flags: HdrFNeedsCsum, gsoType: GSOTCPv4, gsoSize: 536, csumStart: 34, csumOffset: 16}), tcp4(pattern(3000), 1, 0x18)...)
	tso6 := append(encodeHdr(hdr{flags: HdrFNeedsCsum, gsoType: GSOTCPv6 | GSOECN, gsoSize: 1000, csumStart: 54, csumOffset: 16}), tcp6(pattern(2500), 1, 0x98)...)
	csum := append(encodeHdr(hdr{flags: HdrFNeedsCsum, csumStart: 34, csumOffset: 6}), udp4(pattern(77))...)
	f.Add(tso, uint8(3), false, uint8(0))
	f.Add(tso6, uint8(1), false, uint8(1))
	f.Add(csum, uint8(2), false, uint8(2))
	f.Add(tso[:60], uint8(1), true, uint8(0))
	f.Add([]byte{1, 2, 3}, uint8(1), false, uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, split uint8, writable bool, mode uint8) {
		if len(data) > 70000 {
			return
		}
		offs := []Offloads{{}, {NoChecksum: true, MaxFrame: 65549}, {MaxFrame: 69632}, {VnetHdr: true, NoChecksum: true, MaxFrame: 65561}}
		off := offs[int(mode)%len(offs)]
		want := allFeatures
		if mode&4 != 0 {
			want &^= 1<<FHostTSO4 | 1<<FHostTSO6 | 1<<FHostECN
		}
		m := virtiotest.NewMem(ramBase, 4<<20)
		defer m.Close()
		be := &fakeBackend{}
		d, err := New(Config{Backend: be, MAC: guestMAC, Offloads: off})
		if err != nil {
			t.Fatal(err)
		}
		tx := virtiotest.NewRing(m, 16, ramBase, 1<<20)
		tr := virtiotest.Bringup(d, m, &virtiotest.IRQ{}, want, nil, tx, nil)
		defer tr.SetStatus(0)
		n := int(split%8) + 1
		var bufs []virtiotest.Buf
		b := data
		for i := 0; i < n && len(b) > 0; i++ {
			k := (len(b) + n - 1 - i) / (n - i)
			bufs = append(bufs, virtiotest.Buf{Data: b[:k]})
			b = b[k:]
		}
		if writable || len(bufs) == 0 {
			bufs = append(bufs, virtiotest.Buf{Write: 8})
		}
		tx.Add(bufs...)
		tr.Notify(1)
		_, _, used := tx.PopUsed()
		for i := 0; !used && i < 20000 && !d.broken(tr); i++ {
			time.Sleep(50 * time.Microsecond)
			_, _, used = tx.PopUsed()
		}
		if !used && !d.broken(tr) {
			t.Fatal("chain neither completed nor breaking the queue")
		}
		be.mu.Lock()
		defer be.mu.Unlock()
		limit := max(off.MaxFrame, 1514)
		for _, s := range be.sent {
			if len(s) > limit {
				t.Fatalf("frame of %d bytes to a backend taking %d", len(s), limit)
			}
		}
		if len(be.sent) > 1 && !off.NoChecksum {
			for _, s := range be.sent {
				if s[12] == 8 && s[13] == 0 {
					checkTCP4(t, s)
				}
			}
		}
	})
}

// FuzzCtrlCommand runs arbitrary control commands: any ack is fine, but not a panic,
// a MAC table beyond MACTableEntries, or an ack other than OK or ERR.
func FuzzCtrlCommand(f *testing.F) {
	f.Add(uint8(CtrlRx), uint8(CtrlRxPromisc), []byte{0})
	f.Add(uint8(CtrlMAC), uint8(CtrlMACTableSet), append(macTableBytes(guestMAC), macTableBytes(hostMAC)...))
	f.Add(uint8(CtrlMAC), uint8(CtrlMACAddrSet), guestMAC[:])
	f.Add(uint8(CtrlMQ), uint8(CtrlMQVQPairsSet), []byte{2, 0})
	f.Add(uint8(CtrlMAC), uint8(CtrlMACTableSet), []byte{0xff, 0xff, 0xff, 0x3f})
	f.Fuzz(func(t *testing.T, class, cmd uint8, data []byte) {
		d, err := New(Config{Backend: &fakeBackend{}, MAC: guestMAC, QueuePairs: 2})
		if err != nil {
			t.Fatal(err)
		}
		if a := d.command(allFeatures, class, cmd, data); a != CtrlOK && a != CtrlErr {
			t.Fatalf("ack %d", a)
		}
		if len(d.filt.uni) > MACTableEntries || len(d.filt.multi) > MACTableEntries {
			t.Fatalf("tables %d/%d", len(d.filt.uni), len(d.filt.multi))
		}
		d.filt.accept(append(data, make([]byte, 14)...))
	})
}
