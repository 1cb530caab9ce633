package netdev

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkUserTCP measures guest-stack ↔ host TCP throughput through the user
// backend over one connection: download (host → guest) and upload (guest → host),
// with a 1500-byte MTU guest, with a guest whose NIC does TSO (64 KiB frames, no
// checksums, as virtio-net with the backend's Offloads), and with a guest taking
// offloads both ways through the vnet header (as virtio-net with GUEST_TSO4). MB/s is printed per case.
func BenchmarkUserTCP(b *testing.B) {
	for _, c := range []struct {
		name string
		gso  uint32
	}{{"mtu1500", 0}, {"tso", 65000}, {"vnet", vnetGuest}} {
		for _, dir := range []string{"download", "upload"} {
			b.Run(c.name+"/"+dir, func(b *testing.B) { benchUserTCP(b, dir == "download", c.gso) })
		}
	}
}

// BenchmarkQEMUSlirpTCP is the same transfer through QEMU's own user backend
// (libslirp), reached over a -netdev socket joined to it on a QEMU hub: the
// baseline the user backend is measured against. The socket hop costs QEMU a
// little extra, so the ratio flatters gemu slightly.
func BenchmarkQEMUSlirpTCP(b *testing.B) {
	for _, dir := range []string{"download", "upload"} {
		b.Run("mtu1500/"+dir, func(b *testing.B) {
			be, pid := qemuSlirpPID(b, "")
			benchTCP(b, be, dir == "download", 0, pid)
		})
	}
}

func benchUserTCP(b *testing.B, download bool, gso uint32) {
	benchTCP(b, openUserT(b, Options{}), download, gso, 0)
}

// cpuTime returns the CPU time this process, and QEMU's when pid is not zero,
// have used: on a loaded machine CPU per byte compares backends better than wall
// time. The test guest's stack is in both figures alike.
func cpuTime(pid int) time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	d := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if pid != 0 {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			s := string(b)
			if i := strings.LastIndexByte(s, ')'); i > 0 {
				f := strings.Fields(s[i+1:])
				if len(f) > 13 {
					ut, _ := strconv.ParseInt(f[11], 10, 64)
					st, _ := strconv.ParseInt(f[12], 10, 64)
					d += time.Duration(ut+st) * (time.Second / 100) // USER_HZ
				}
			}
		}
	}
	return d
}

func benchTCP(b *testing.B, be Backend, download bool, gso uint32, qemuPID int) {
	dhcp := qemuPID != 0
	const chunk = 1 << 20
	total := int64(b.N) * chunk
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- 0
			return
		}
		defer c.Close()
		if download {
			n, _ := io.CopyN(c, zeroReader{}, total)
			done <- n
		} else {
			n, _ := io.Copy(io.Discard, c)
			done <- n
		}
	}()
	g := newTestGuest(b, be, 1500, gso)
	if dhcp {
		ok := false
		for i := 0; i < 20 && !ok; i++ { // QEMU drops frames until it saw our connection
			_, ok = g.dhcpExchange(dhcpDiscover, 1, nil)
		}
	}
	g.configure(guestIP, 24, gwAddr)
	c, err := g.dial(context.Background(), fmt.Sprintf("10.0.2.2:%s", portOf(ln.Addr())))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(chunk)
	cpu0 := cpuTime(qemuPID)
	b.ResetTimer()
	var n int64
	if download {
		n, _ = io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
	} else {
		n, _ = io.CopyBuffer(c, io.LimitReader(zeroReader{}, total), make([]byte, 256<<10))
		c.CloseWrite()
		n = <-done
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime(qemuPID)-cpu0)/float64(total), "cpu-ns/B")
	c.Close()
	if n != total {
		b.Fatalf("moved %d of %d bytes", n, total)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
