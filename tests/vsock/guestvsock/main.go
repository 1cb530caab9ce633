// Command guestvsock is the in-guest half of tests/vsock: a small static program the
// test cross-builds (GOARCH=arm64, CGO_ENABLED=0) into the busybox initramfs, since
// busybox has no vsock tool. In order it
//
//   - connects to host port -refuse (nobody listens there) and prints
//     "VSOCK-REFUSED <error>";
//   - connects to host port -connect, sends -size bytes of data (PCG seed 1) while reading
//     the host's bytes until EOF, half-closing after its own, and prints
//     "VSOCK-GUESTCONN sent=N rcvd=N sha=HEX" (the sha256 of what it received);
//   - listens on port -listen, prints "VSOCK-LISTENING", accepts one connection, sends
//     -size bytes (PCG seed 2) while reading until EOF, and prints
//     "VSOCK-HOSTCONN sent=N rcvd=N sha=HEX".
//
// The data of seed s is PCG(s, s)'s Uint64s, little-endian (-size a multiple of 8).
// Errors print "VSOCK-FAIL <what>" and exit 1. It is not part of gemu.
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

func main() {
	refuse := flag.Uint("refuse", 0, "host port nobody listens on")
	connect := flag.Uint("connect", 0, "host port to exchange data with")
	listen := flag.Uint("listen", 0, "guest port to accept one host connection on")
	size := flag.Int("size", 4<<20, "bytes to send each way")
	ask := flag.Uint("ask", 0, "host port to read one line from")
	flag.Parse()
	if *ask != 0 {
		fd, err := dial(uint32(*ask))
		if err != nil {
			fail("connect to port %d: %v", *ask, err)
		}
		f := os.NewFile(uintptr(fd), "vsock")
		b, err := io.ReadAll(io.LimitReader(f, 256))
		if err != nil {
			fail("read: %v", err)
		}
		fmt.Println(strings.TrimSpace(string(b)))
		return
	}
	if *refuse != 0 {
		fd, err := dial(uint32(*refuse))
		if err == nil {
			unix.Close(fd)
			fail("connect to port %d succeeded", *refuse)
		}
		fmt.Println("VSOCK-REFUSED", err)
	}
	if *connect != 0 {
		fd, err := dial(uint32(*connect))
		if err != nil {
			fail("connect to port %d: %v", *connect, err)
		}
		sent, rcvd, sum := exchange(fd, *size, 1)
		fmt.Printf("VSOCK-GUESTCONN sent=%d rcvd=%d sha=%s\n", sent, rcvd, sum)
	}
	if *listen != 0 {
		lfd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
		if err != nil {
			fail("socket: %v", err)
		}
		if err := unix.Bind(lfd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: uint32(*listen)}); err != nil {
			fail("bind: %v", err)
		}
		if err := unix.Listen(lfd, 4); err != nil {
			fail("listen: %v", err)
		}
		fmt.Println("VSOCK-LISTENING")
		fd, sa, err := unix.Accept(lfd)
		for err == unix.EINTR {
			fd, sa, err = unix.Accept(lfd)
		}
		if err != nil {
			fail("accept: %v", err)
		}
		if vm, ok := sa.(*unix.SockaddrVM); !ok || vm.CID != unix.VMADDR_CID_HOST {
			fail("accepted a connection from %#v", sa)
		}
		sent, rcvd, sum := exchange(fd, *size, 2)
		fmt.Printf("VSOCK-HOSTCONN sent=%d rcvd=%d sha=%s\n", sent, rcvd, sum)
		unix.Close(lfd)
	}
}

func fail(format string, a ...any) {
	fmt.Printf("VSOCK-FAIL "+format+"\n", a...)
	os.Exit(1)
}

// dial connects to the host's port. The connect is non-blocking and waited for with
// poll, which is retried on EINTR: a blocking connect(2) that the Go runtime's
// preemption signal interrupts is cancelled by the kernel, after the host may already
// have accepted it.
func dial(port uint32) (int, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		fail("socket: %v", err)
	}
	err = unix.Connect(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_HOST, Port: port})
	if err == unix.EINPROGRESS {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		for {
			_, err = unix.Poll(pfd, -1)
			if err != unix.EINTR {
				break
			}
		}
		if err == nil {
			var e int
			if e, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err == nil && e != 0 {
				err = unix.Errno(e)
			}
		}
	}
	if err == nil {
		err = unix.SetNonblock(fd, false)
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// exchange sends size bytes from PCG(seed) while reading until EOF, half-closing after
// sending; it returns the counts and the sha256 of what it read.
func exchange(fd, size int, seed uint64) (int, int, string) {
	f := os.NewFile(uintptr(fd), "vsock")
	done := make(chan int)
	go func() {
		r := rand.New(rand.NewPCG(seed, seed))
		buf := make([]byte, 64<<10)
		n := 0
		for n < size {
			k := min(len(buf), size-n)
			for i := 0; i < k; i += 8 {
				binary.LittleEndian.PutUint64(buf[i:], r.Uint64())
			}
			w, err := f.Write(buf[:k])
			n += w
			if err != nil {
				fail("write after %d bytes: %v", n, err)
			}
		}
		if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
			fail("shutdown: %v", err)
		}
		done <- n
	}()
	h := sha256.New()
	rcvd, err := io.Copy(h, f)
	if err != nil {
		fail("read after %d bytes: %v", rcvd, err)
	}
	sent := <-done
	f.Close()
	return sent, int(rcvd), hex.EncodeToString(h.Sum(nil))
}
