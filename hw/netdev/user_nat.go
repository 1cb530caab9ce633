package netdev

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// hostTarget maps the destination the guest addressed to the host address the NAT
// dials, as slirp's sotranslate_out: the DNS address to the host's resolver, any
// other address of the virtual network to the host's loopback, the rest unchanged.
// ok is false for what the NAT refuses (restrict=on, broadcast, multicast).
func (u *User) hostTarget(dst tcpip.Address, port uint16) (string, bool) {
	if u.cfg.restrict {
		return "", false
	}
	a, ok := netip.AddrFromSlice(dst.AsSlice())
	if !ok || !a.Is4() || a.IsMulticast() || a.IsUnspecified() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return "", false
	}
	if u.cfg.net.Contains(a) {
		if a == u.cfg.dns {
			if port != 53 {
				return "", false
			}
			return u.cfg.upstream, true
		}
		bc := u.cfg.net.Masked().Addr().As4()
		hb := 32 - u.cfg.net.Bits()
		for i := 0; i < 4; i++ {
			bc[3-i] |= byte((1<<hb - 1) >> (8 * i))
		}
		if a == netip.AddrFrom4(bc) {
			return "", false
		}
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), true
	}
	if a.IsLoopback() {
		return "", false // a guest cannot name the host's loopback directly
	}
	return net.JoinHostPort(a.String(), strconv.Itoa(int(port))), true
}

var splicePool = sync.Pool{New: func() any { b := make([]byte, spliceBufSize); return &b }}

// splice copies both ways between the guest-side and host-side connections until
// both directions end, half-closing as each side finishes.
func (u *User) splice(g *gonet.TCPConn, h net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn, closeWrite func() error) {
		bp := splicePool.Get().(*[]byte)
		io.CopyBuffer(dst, struct{ io.Reader }{src}, *bp) // plain Reader: use our buffer
		splicePool.Put(bp)
		closeWrite()
		done <- struct{}{}
	}
	hc, _ := h.(interface{ CloseWrite() error })
	hostCloseWrite := func() error {
		if hc != nil {
			return hc.CloseWrite()
		}
		return h.Close()
	}
	go cp(h, g, hostCloseWrite)
	go cp(g, h, g.CloseWrite)
	stop := u.stop
	for n := 0; n < 2; {
		select {
		case <-done:
			n++
		case <-stop:
			g.Close()
			h.Close()
			stop = nil
		}
	}
	g.Close()
	h.Close()
}

// tcpForward runs for each new guest connection (the forwarder's goroutine, at most
// maxTCPInFlight at once): dial the host first, then complete the guest's handshake,
// or reset it when the host refuses, as slirp does.
func (u *User) tcpForward(r *tcp.ForwarderRequest) {
	id := r.ID()
	target, ok := u.hostTarget(id.LocalAddress, id.LocalPort)
	if !ok || u.closed.Load() {
		r.Complete(true)
		return
	}
	if u.tcpConns.Add(1) > maxTCPConns {
		u.tcpConns.Add(-1)
		r.Complete(true)
		return
	}
	release := func() { u.tcpConns.Add(-1) }
	d := net.Dialer{Timeout: tcpDialTimeout}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-u.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	h, err := d.DialContext(ctx, "tcp4", target)
	cancel()
	if err != nil {
		release()
		r.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		release()
		h.Close()
		r.Complete(true)
		return
	}
	r.Complete(false)
	ep.SocketOptions().SetDelayOption(false)
	if tc, ok := h.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	g := gonet.NewTCPConn(&wq, ep)
	if !u.track() {
		release()
		g.Close()
		h.Close()
		return
	}
	go func() {
		defer u.wg.Done()
		defer release()
		u.splice(g, h)
	}()
}

// udpForward runs, on the stack's goroutine, for a guest datagram no flow owns yet:
// it opens a host UDP socket to the mapped destination and relays both ways until
// the flow is idle.
func (u *User) udpForward(r *udp.ForwarderRequest) bool {
	id := r.ID()
	target, ok := u.hostTarget(id.LocalAddress, id.LocalPort)
	if !ok || u.closed.Load() {
		u.dropped.Add(1)
		return true
	}
	if u.udpFlows.Add(1) > maxUDPFlows {
		u.udpFlows.Add(-1)
		u.dropped.Add(1)
		return true
	}
	h, err := net.Dial("udp4", target)
	if err != nil {
		u.udpFlows.Add(-1)
		return true
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		u.udpFlows.Add(-1)
		h.Close()
		return true
	}
	g := gonet.NewUDPConn(&wq, ep)
	idle := udpIdle
	if id.LocalPort == 53 {
		idle = dnsIdle
	}
	if !u.track() {
		u.udpFlows.Add(-1)
		g.Close()
		h.Close()
		return true
	}
	go func() {
		defer u.wg.Done()
		defer u.udpFlows.Add(-1)
		u.relayUDP(g, h, idle)
	}()
	return true
}

// relayUDP copies datagrams between a guest UDP flow and a host socket until
// neither side sent anything for idle, or the backend closes.
func (u *User) relayUDP(g, h net.Conn, idle time.Duration) {
	var mu sync.Mutex
	last := time.Now()
	touch := func() { mu.Lock(); last = time.Now(); mu.Unlock() }
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		buf := make([]byte, 65536)
		for {
			src.SetReadDeadline(time.Now().Add(time.Second))
			n, err := src.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					mu.Lock()
					quiet := time.Since(last) >= idle
					mu.Unlock()
					select {
					case <-u.stop:
						quiet = true
					default:
					}
					if !quiet {
						continue
					}
				}
				break
			}
			touch()
			if _, err := dst.Write(buf[:n]); err != nil {
				var ne net.Error
				if !errors.As(err, &ne) { // host ICMP errors (refused) do not end the flow
					continue
				}
			}
		}
		done <- struct{}{}
	}
	go cp(h, g)
	go cp(g, h)
	<-done
	g.Close()
	h.Close()
	<-done
}

// startHostFwd listens on the host for one hostfwd rule.
func (u *User) startHostFwd(f hostFwd) error {
	addr := net.JoinHostPort(f.hostAddr, strconv.Itoa(f.hostPort))
	guest := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4(f.guestAddr.As4()), Port: uint16(f.guestPort)}
	local := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4(u.cfg.host.As4())}
	if !f.udp {
		l, err := net.Listen("tcp4", addr)
		if err != nil {
			return errors.New("netdev user: could not set up host forwarding rule 'tcp:" + addr + "': " + err.Error())
		}
		u.addListener(l)
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			for {
				h, err := l.Accept()
				if err != nil {
					if ne, ok := err.(net.Error); ok && !errors.Is(err, net.ErrClosed) && ne.Timeout() {
						continue
					}
					return
				}
				if u.tcpConns.Add(1) > maxTCPConns {
					u.tcpConns.Add(-1)
					h.Close()
					continue
				}
				u.wg.Add(1)
				go func() {
					defer u.wg.Done()
					defer u.tcpConns.Add(-1)
					ctx, cancel := context.WithTimeout(context.Background(), tcpDialTimeout)
					g, err := gonet.DialTCPWithBind(ctx, u.st, local, guest, ipv4.ProtocolNumber)
					cancel()
					if err != nil {
						h.Close()
						return
					}
					u.splice(g, h)
				}()
			}
		}()
		return nil
	}
	pc, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return errors.New("netdev user: could not set up host forwarding rule 'udp:" + addr + "': " + err.Error())
	}
	u.addListener(pc)
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		u.udpHostFwd(pc.(*net.UDPConn), local, guest)
	}()
	return nil
}

// track counts one more goroutine for Close to wait for, unless the backend is
// closing (callers on the stack's goroutines race with Close).
func (u *User) track() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed.Load() {
		return false
	}
	u.wg.Add(1)
	return true
}

func (u *User) addListener(l interface{ Close() error }) {
	u.mu.Lock()
	u.listeners = append(u.listeners, l)
	u.mu.Unlock()
}

// udpHostFwd relays datagrams arriving at a host port to the guest: each host peer
// gets its own guest-side flow from the gateway address (bounded like NAT flows).
func (u *User) udpHostFwd(pc *net.UDPConn, local, guest tcpip.FullAddress) {
	type flow struct {
		g    *gonet.UDPConn
		last time.Time
	}
	var mu sync.Mutex
	flows := map[netip.AddrPort]*flow{}
	defer func() {
		mu.Lock()
		for _, f := range flows {
			f.g.Close()
		}
		mu.Unlock()
	}()
	buf := make([]byte, 65536)
	for {
		n, peer, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		mu.Lock()
		f := flows[peer]
		if f == nil {
			if int(u.udpFlows.Add(1)) > maxUDPFlows {
				u.udpFlows.Add(-1)
				mu.Unlock()
				continue
			}
			g, err := gonet.DialUDP(u.st, &local, &guest, ipv4.ProtocolNumber)
			if err != nil {
				u.udpFlows.Add(-1)
				mu.Unlock()
				continue
			}
			f = &flow{g: g}
			flows[peer] = f
			u.wg.Add(1)
			go func(peer netip.AddrPort, f *flow) { // replies from the guest to this peer
				defer u.wg.Done()
				defer u.udpFlows.Add(-1)
				rb := make([]byte, 65536)
				for {
					f.g.SetReadDeadline(time.Now().Add(time.Second))
					n, err := f.g.Read(rb)
					if err != nil {
						mu.Lock()
						quiet := time.Since(f.last) >= udpIdle
						mu.Unlock()
						select {
						case <-u.stop:
							quiet = true
						default:
						}
						var ne net.Error
						if errors.As(err, &ne) && ne.Timeout() && !quiet {
							continue
						}
						break
					}
					pc.WriteToUDPAddrPort(rb[:n], peer)
				}
				mu.Lock()
				delete(flows, peer)
				mu.Unlock()
				f.g.Close()
			}(peer, f)
		}
		f.last = time.Now()
		g := f.g
		mu.Unlock()
		g.Write(buf[:n])
	}
}
