package netdev

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// FrameLink is a gVisor link endpoint that speaks Ethernet frames: the stack's
// outgoing packets are serialized into one frame each and handed to the output
// function (on the stack's goroutine, no queue of its own); Inject gives the stack
// one incoming frame, processed on the caller's goroutine. The user backend sits on
// one; tests build a second gVisor stack on another as the "guest".
type FrameLink struct {
	mtu  uint32
	addr tcpip.LinkAddress
	caps stack.LinkEndpointCapabilities
	gso  uint32
	kind stack.SupportedGSO
	out  func(frame []byte)
	buf  func() []byte // optional frame buffer source (the rx queue's pool)

	vnet atomic.Bool // frames carry a virtio_net_hdr_v1 both ways

	mu   sync.RWMutex
	disp stack.NetworkDispatcher
}

// NewFrameLink returns a link of the given MTU (IP bytes per frame) and MAC whose
// outgoing frames go to out; out must copy a frame it keeps. noChecksum makes the
// stack trust the checksums of injected frames (the NIC's checksum offload).
func NewFrameLink(mtu uint32, mac [6]byte, noChecksum bool, out func(frame []byte)) *FrameLink {
	l := &FrameLink{mtu: mtu, addr: tcpip.LinkAddress(mac[:]), out: out, caps: stack.CapabilityResolutionRequired}
	if noChecksum {
		l.caps |= stack.CapabilityRXChecksumOffload
	}
	return l
}

// EnableGSO lets the stack hand the link TCP segments up to max bytes, leaving their
// checksums partial: the far end must accept such frames (Offloads.MaxFrame and
// NoChecksum). Test guests use it to model a NIC with TSO.
func (l *FrameLink) EnableGSO(max uint32) { l.enableHostGSO(max) }

func (l *FrameLink) enableHostGSO(max uint32) {
	l.gso, l.kind = max, stack.HostGSOSupported
	l.caps |= stack.CapabilityTXChecksumOffload | stack.CapabilityRXChecksumOffload
}

// EnableVnetHdr makes the link put a virtio_net_hdr_v1 before each frame it
// sends (describing its GSO and partial checksums) and expect one before each
// frame injected (whose offload requests it trusts, as the stack does not verify
// checksums then). Test guests use it as a virtio-net guest with offloads.
func (l *FrameLink) EnableVnetHdr() {
	l.caps |= stack.CapabilityRXChecksumOffload
	l.vnet.Store(true)
}

// enableBatching lets the stack build TCP segments in batches of up to 64 KiB
// (gVisor's own GSO: it still cuts MSS-sized, checksummed packets, but per batch
// rather than per segment), for frames that must stay complete and MTU-sized.
func (l *FrameLink) enableBatching() {
	l.gso, l.kind = stack.GVisorGSOMaxSize, stack.GVisorGSOSupported
}

func (l *FrameLink) MTU() uint32                                  { return l.mtu }
func (l *FrameLink) SetMTU(mtu uint32)                            { l.mtu = mtu }
func (l *FrameLink) MaxHeaderLength() uint16                      { return header.EthernetMinimumSize }
func (l *FrameLink) LinkAddress() tcpip.LinkAddress               { return l.addr }
func (l *FrameLink) SetLinkAddress(a tcpip.LinkAddress)           { l.addr = a }
func (l *FrameLink) Capabilities() stack.LinkEndpointCapabilities { return l.caps }
func (l *FrameLink) Wait()                                        {}
func (l *FrameLink) ARPHardwareType() header.ARPHardwareType      { return header.ARPHardwareEther }
func (l *FrameLink) Close()                                       {}
func (l *FrameLink) SetOnCloseAction(func())                      {}

// GSOMaxSize and SupportedGSO implement stack.GSOEndpoint.
func (l *FrameLink) GSOMaxSize() uint32 { return l.gso }
func (l *FrameLink) SupportedGSO() stack.SupportedGSO {
	return l.kind
}

func (l *FrameLink) Attach(d stack.NetworkDispatcher) {
	l.mu.Lock()
	l.disp = d
	l.mu.Unlock()
}

func (l *FrameLink) IsAttached() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.disp != nil
}

func (l *FrameLink) AddHeader(pkt *stack.PacketBuffer) {
	eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
	eth.Encode(&header.EthernetFields{
		SrcAddr: pkt.EgressRoute.LocalLinkAddress,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
		Type:    pkt.NetworkProtocolNumber,
	})
}

func (l *FrameLink) ParseHeader(pkt *stack.PacketBuffer) bool {
	_, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	return ok
}

// WritePackets serializes each packet into one frame for out.
func (l *FrameLink) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		var f []byte
		if l.buf != nil {
			f = l.buf()
		} else {
			f = make([]byte, 0, pkt.Size())
		}
		hdr := 0
		if l.vnet.Load() {
			hdr = VnetHdrLen
			f = append(f, make([]byte, VnetHdrLen)...)
		}
		for _, s := range pkt.AsSlices() {
			f = append(f, s...)
		}
		if hdr != 0 || l.caps&stack.CapabilityTXChecksumOffload != 0 {
			l.offload(f, hdr, pkt)
		}
		l.out(f)
		n++
	}
	return n, nil
}

// offload describes the packet's GSO and partial checksum in the vnet header at
// f[0:hdr] (when hdr is not zero), and completes the checksum of a TCP packet the
// stack left without one (resets and other segments sent outside a GSO route).
func (l *FrameLink) offload(f []byte, hdr int, pkt *stack.PacketBuffer) {
	gso := pkt.GSOOptions
	eth := hdr
	l3 := eth + header.EthernetMinimumSize
	if gso.Type != stack.GSONone && gso.NeedsCsum {
		if hdr == 0 {
			return // a host-GSO link without vnet header: the far end trusts it
		}
		l4 := l3 + int(gso.L3HdrLen)
		thl := len(pkt.TransportHeader().Slice())
		f[0] = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
		binary.LittleEndian.PutUint16(f[6:], uint16(l4-hdr))
		binary.LittleEndian.PutUint16(f[8:], gso.CsumOffset)
		if pkt.Data().Size() > int(gso.MSS) && gso.MSS != 0 {
			switch gso.Type {
			case stack.GSOTCPv4:
				f[1] = 1 // VIRTIO_NET_HDR_GSO_TCPV4
			case stack.GSOTCPv6:
				f[1] = 4
			}
			binary.LittleEndian.PutUint16(f[2:], uint16(l4-hdr+thl))
			binary.LittleEndian.PutUint16(f[4:], gso.MSS)
		}
		return
	}
	if pkt.NetworkProtocolNumber != header.IPv4ProtocolNumber || pkt.TransportProtocolNumber != header.TCPProtocolNumber || len(f) < l3+20 {
		return
	}
	ihl := int(f[l3]&15) * 4
	tot := int(binary.BigEndian.Uint16(f[l3+2:]))
	if ihl < 20 || l3+tot > len(f) || tot < ihl+20 {
		return
	}
	seg := f[l3+ihl : l3+tot]
	seg[16], seg[17] = 0, 0
	sum := csumAdd(0, f[l3+12:l3+20])
	sum += 6 + uint32(len(seg))
	c := csumFold(csumAdd(sum, seg))
	seg[16], seg[17] = byte(c>>8), byte(c)
}

// Inject hands the stack one Ethernet frame; frames too short, or addressed to
// another unicast MAC, are dropped. The frame is copied.
func (l *FrameLink) Inject(frame []byte) {
	if l.vnet.Load() {
		if len(frame) < VnetHdrLen {
			return
		}
		frame = frame[VnetHdrLen:]
	}
	if len(frame) < header.EthernetMinimumSize {
		return
	}
	l.mu.RLock()
	d := l.disp
	l.mu.RUnlock()
	if d == nil {
		return
	}
	eth := header.Ethernet(frame)
	dst := eth.DestinationAddress()
	var typ tcpip.PacketType
	switch {
	case dst == header.EthernetBroadcastAddress:
		typ = tcpip.PacketBroadcast
	case header.IsMulticastEthernetAddress(dst):
		typ = tcpip.PacketMulticast
	case dst == l.addr:
		typ = tcpip.PacketHost
	default:
		return
	}
	proto := eth.Type()
	if proto != header.IPv4ProtocolNumber && proto != header.ARPProtocolNumber && proto != header.IPv6ProtocolNumber {
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
	defer pkt.DecRef()
	if !l.ParseHeader(pkt) {
		return
	}
	pkt.PktType = typ
	d.DeliverNetworkPacket(proto, pkt)
}
