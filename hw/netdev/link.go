package netdev

import (
	"sync"

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
	out  func(frame []byte)
	buf  func() []byte // optional frame buffer source (the rx queue's pool)

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
func (l *FrameLink) EnableGSO(max uint32) {
	l.gso = max
	l.caps |= stack.CapabilityTXChecksumOffload
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
	if l.gso == 0 {
		return stack.GSONotSupported
	}
	return stack.HostGSOSupported
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
		for _, s := range pkt.AsSlices() {
			f = append(f, s...)
		}
		l.out(f)
		n++
	}
	return n, nil
}

// Inject hands the stack one Ethernet frame; frames too short, or addressed to
// another unicast MAC, are dropped. The frame is copied.
func (l *FrameLink) Inject(frame []byte) {
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
