package netdev

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// ICMP in the slirp layer: echo requests to the gateway and DNS addresses go to the
// netstack, which answers them; echo requests to other hosts go out through one
// unprivileged ICMP socket (SOCK_DGRAM, IPPROTO_ICMP) when the host's
// net.ipv4.ping_group_range allows it, and are dropped otherwise (or with
// restrict=on). Other ICMP to the netstack's addresses goes to the netstack; the
// rest is dropped.

// handleICMP reports whether the frame should go on to the netstack.
func (u *User) handleICMP(frame []byte, ip ipHdr) bool {
	dst := netip.AddrFrom4(ip.dst)
	if dst == u.cfg.host || dst == u.cfg.dns {
		return true
	}
	icmpMsg := frame[ip.off+ip.ihl : ip.off+ip.total]
	if len(icmpMsg) < 8 || icmpMsg[0] != 8 || u.ping == nil || u.cfg.net.Contains(dst) || dst.IsLoopback() || dst.IsMulticast() {
		u.dropped.Add(1)
		return false
	}
	var mac [6]byte
	copy(mac[:], frame[6:12])
	u.ping.send(ip.src, ip.dst, mac, icmpMsg)
	return false
}

const (
	maxPings  = 256
	pingTTL   = 5 * time.Second
	pingRecvT = 500 // ms
)

type pingKey struct {
	dst [4]byte
	seq uint16
}

type pingWait struct {
	id   uint16
	src  [4]byte
	mac  [6]byte
	sent time.Time
}

type pinger struct {
	u      *User
	once   sync.Once
	fd     int
	ok     bool
	closed atomic.Bool
	mu     sync.Mutex
	wait   map[pingKey]pingWait
}

func newPinger(u *User) *pinger { return &pinger{u: u, fd: -1, wait: map[pingKey]pingWait{}} }

func (p *pinger) open() {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err != nil {
		return // not permitted here: only the gateway answers pings
	}
	tv := unix.NsecToTimeval(pingRecvT * int64(time.Millisecond))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if !p.u.track() {
		unix.Close(fd)
		return
	}
	p.fd, p.ok = fd, true
	go p.recv()
}

func (p *pinger) send(src, dst [4]byte, mac [6]byte, msg []byte) {
	p.once.Do(p.open)
	if !p.ok || p.closed.Load() {
		p.u.dropped.Add(1)
		return
	}
	seq := uint16(msg[6])<<8 | uint16(msg[7])
	id := uint16(msg[4])<<8 | uint16(msg[5])
	now := time.Now()
	p.mu.Lock()
	if len(p.wait) >= maxPings {
		for k, w := range p.wait {
			if now.Sub(w.sent) > pingTTL {
				delete(p.wait, k)
			}
		}
	}
	if len(p.wait) >= maxPings {
		p.mu.Unlock()
		p.u.dropped.Add(1)
		return
	}
	p.wait[pingKey{dst, seq}] = pingWait{id: id, src: src, mac: mac, sent: now}
	p.mu.Unlock()
	out := append([]byte(nil), msg...)
	unix.Sendto(p.fd, out, unix.MSG_DONTWAIT, &unix.SockaddrInet4{Addr: dst})
}

func (p *pinger) recv() {
	defer p.u.wg.Done()
	buf := make([]byte, 65536)
	for !p.closed.Load() {
		n, from, err := unix.Recvfrom(p.fd, buf, 0)
		if err != nil {
			continue // timeout: check closed
		}
		sa, ok := from.(*unix.SockaddrInet4)
		if !ok || n < 8 || buf[0] != 0 {
			continue
		}
		seq := uint16(buf[6])<<8 | uint16(buf[7])
		p.mu.Lock()
		w, ok := p.wait[pingKey{sa.Addr, seq}]
		delete(p.wait, pingKey{sa.Addr, seq})
		p.mu.Unlock()
		if !ok {
			continue
		}
		msg := append([]byte(nil), buf[:n]...)
		msg[4], msg[5] = byte(w.id>>8), byte(w.id)
		msg[2], msg[3] = 0, 0
		c := csumFold(csumAdd(0, msg))
		msg[2], msg[3] = byte(c>>8), byte(c)
		if 14+20+len(msg) > userMTU+14 {
			continue
		}
		f := ipv4Frame(p.u.frameBuf(), w.mac, p.u.mac, sa.Addr, w.src, 1, msg)
		p.u.rx.put(f, 0)
	}
}

func (p *pinger) close() {
	if p.closed.Swap(true) {
		return
	}
	p.once.Do(func() {})
	if p.fd >= 0 {
		unix.Shutdown(p.fd, unix.SHUT_RDWR)
		// the reader sees the flag within its receive timeout; close after it left
		go func(fd int) { time.Sleep(2 * pingRecvT * time.Millisecond); unix.Close(fd) }(p.fd)
	}
}
