package netdev

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
)

// BenchmarkUserTCP measures guest-stack ↔ host TCP throughput through the user
// backend over one connection: download (host → guest) and upload (guest → host),
// with a 1500-byte MTU guest and with a guest whose NIC does TSO (64 KiB frames, no
// checksums, as virtio-net with the backend's Offloads). MB/s is printed per case.
func BenchmarkUserTCP(b *testing.B) {
	for _, c := range []struct {
		name string
		gso  uint32
	}{{"mtu1500", 0}, {"tso", 65000}} {
		for _, dir := range []string{"download", "upload"} {
			b.Run(c.name+"/"+dir, func(b *testing.B) { benchUserTCP(b, dir == "download", c.gso) })
		}
	}
}

func benchUserTCP(b *testing.B, download bool, gso uint32) {
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
	u := openUserT(b, Options{})
	g := newTestGuest(b, u, 1500, gso)
	g.configure(guestIP, 24, gwAddr)
	c, err := g.dial(context.Background(), fmt.Sprintf("10.0.2.2:%s", portOf(ln.Addr())))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(chunk)
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
