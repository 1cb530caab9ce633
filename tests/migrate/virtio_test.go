package migrate

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp/raw"

	"gemu/tests/diskimg"
)

// virtioScript mounts ext4 on a virtio-blk (virtio-mmio) qcow2 disk, writes a file,
// takes a DHCP lease from -netdev user on virtio-net (virtio-mmio) and fetches a blob
// from the host through 10.0.2.2; then it counts, writing the count to the disk each
// TICK and asking the host's /go whether to stop. After that it reads the file written
// first (caches dropped), writes another, fetches the blob again and unmounts.
const virtioScript = `loadmods virtio_mmio virtio_pci virtio_blk virtio_net crc32c_generic ext4
i=0;while [ ! -e /dev/vda -o ! -e /sys/class/net/eth0 ]&&[ $i -lt 300 ];do sleep .2;i=$((i+1));done
mkdir -p /mnt;mount -t ext4 /dev/vda /mnt||echo MOUNT-FAILED
echo HOST $(sha256sum </mnt/host)
echo BUS $(readlink -f /sys/block/vda) $(readlink -f /sys/class/net/eth0/device)
yes before|head -c 300000 >/mnt/before;sync;echo BEFORE $(sha256sum </mnt/before)
ip link set lo up;ip link set eth0 up
printf '#!/bin/sh\n[ "$1" = bound ]&&{ ip addr add $ip/24 dev $interface;ip route add default via $router;echo DHCP-OK;}\nexit 0\n'>/tmp/dh;chmod +x /tmp/dh
udhcpc -i eth0 -s /tmp/dh -q -n -t 10 -T 2
echo NET $(wget -q -O - http://10.0.2.2:PORT/blob|sha256sum)
i=0;while [ $i -lt 100000 ];do echo TICK $i;echo $i >/mnt/count;sync;[ "$(wget -q -O - http://10.0.2.2:PORT/go)" = yes ]&&break;i=$((i+1));sleep .2;done
echo COUNT $(cat /mnt/count)
echo 3 >/proc/sys/vm/drop_caches
echo BEFORE2 $(sha256sum </mnt/before)
yes after|head -c 300000 >/mnt/after;sync;echo AFTER $(sha256sum </mnt/after)
echo NET2 $(wget -q -O - http://10.0.2.2:PORT/blob|sha256sum)
umount /mnt&&echo UMOUNT-OK
`

// hostServer is the HTTP server on the host's loopback the guest reaches through
// 10.0.2.2: /blob is fixed data, /go answers "yes" once the test says so.
type hostServer struct {
	port  string
	blob  []byte
	goNow atomic.Bool
	blobs atomic.Int32
}

func newHostServer(t *testing.T) *hostServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &hostServer{blob: diskimg.Pseudo(7, 256<<10)}
	_, s.port, _ = net.SplitHostPort(l.Addr().String())
	mux := http.NewServeMux()
	mux.HandleFunc("/blob", func(w http.ResponseWriter, r *http.Request) { s.blobs.Add(1); w.Write(s.blob) })
	mux.HandleFunc("/go", func(w http.ResponseWriter, r *http.Request) {
		if s.goNow.Load() {
			fmt.Fprint(w, "yes")
		} else {
			fmt.Fprint(w, "no")
		}
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return s
}

// field waits for a console line that is key, or key, a space and a value, and
// returns the value (a trailing "-" of sha256sum dropped).
func (g *guest) field(t *testing.T, key string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		g.mu.Lock()
		for _, l := range g.lines {
			if v, ok := strings.CutPrefix(l, key); ok && (v == "" || v[0] == ' ') {
				g.mu.Unlock()
				return strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "-"))
			}
		}
		g.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no %s line within %v; console:\n%s", key, d, g.console())
	return ""
}

// TestSaveRestoreVirtio: an arm64 Debian guest with a virtio-blk qcow2 disk and
// virtio-net user networking (both on virtio-mmio, then both on virtio-pci with MSI-X)
// is saved with QMP migrate file: while
// it counts and writes to the disk, and restored with -incoming in a new process: the
// counter goes on, the count on the disk is the last one written, the file written
// before the save reads back with its sha256, a file written after lands in the image
// (checked on the host with debugfs and qemu-img check), and the network works again
// (a new download from the host through 10.0.2.2 after the NAT was re-established).
func TestSaveRestoreVirtio(t *testing.T) {
	needAssets(t)
	diskimg.Need(t)
	t.Run("mmio", func(t *testing.T) { saveRestoreVirtio(t, "device") })
	t.Run("pci", func(t *testing.T) { saveRestoreVirtio(t, "pci") })
}

// saveRestoreVirtio runs the test with -device virtio-blk-<kind>, virtio-net-<kind>.
func saveRestoreVirtio(t *testing.T, kind string) {
	dir := t.TempDir()
	hostFile := diskimg.Pseudo(3, 1<<20)
	rawImg, img := filepath.Join(dir, "fs.raw"), filepath.Join(dir, "disk.qcow2")
	diskimg.Ext4(t, rawImg, 32, map[string][]byte{"host": hostFile})
	diskimg.Convert(t, rawImg, "raw", img, "qcow2")
	os.Remove(rawImg)
	srv := newHostServer(t)
	script := strings.ReplaceAll(virtioScript, "PORT", srv.port)
	args := []string{"-drive", "file=" + img + ",if=none,id=d0,format=qcow2", "-device", "virtio-blk-" + kind + ",drive=d0",
		"-netdev", "user,id=n0", "-device", "virtio-net-" + kind + ",netdev=n0"}

	src := startScript(t, binary(t), dir, "src", "256", script, args...)
	r, _ := dial(t, src)
	if got := src.field(t, "HOST", 5*time.Minute); got != diskimg.SHA256(hostFile) {
		t.Fatalf("guest's sha256 of the host's file %q, want %s\n%s", got, diskimg.SHA256(hostFile), src.console())
	}
	bus := src.field(t, "BUS", time.Minute)
	if want := map[string]string{"device": "virtio_mmio", "pci": "pci0000"}[kind]; strings.Count(bus, want) != 2 {
		t.Fatalf("disk and NIC are not both on %s: %s", want, bus)
	}
	before := diskimg.SHA256(diskimg.Repeat("before", 300000))
	if got := src.field(t, "BEFORE", time.Minute); got != before {
		t.Fatalf("BEFORE %q, want %s", got, before)
	}
	if got := src.field(t, "NET", 2*time.Minute); got != diskimg.SHA256(srv.blob) {
		t.Fatalf("download before the save: %q\n%s", got, src.console())
	}
	for src.tick(t, 2*time.Minute) < 5 {
	}
	state := filepath.Join(dir, "vm.state")
	if err := r.Migrate("file:"+state, nil, nil, nil); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if info := waitMigration(t, r); *info.Status != raw.MigrationStatusCompleted {
		t.Fatalf("migration: %+v (error %v)\n%s", info, deref(info.ErrorDesc), src.errText())
	}
	time.Sleep(300 * time.Millisecond)
	last := src.drain()
	src.cmd.Process.Kill()
	<-src.exited
	src.exited <- nil
	t.Logf("saved at TICK %d", last)
	blobs := srv.blobs.Load()

	dst := startScript(t, binary(t), dir, "dst", "256", script, append(args, "-incoming", "file:"+state)...)
	checkContinues(t, dst, last)
	srv.goNow.Store(true)
	n := dst.drain()
	if got := dst.field(t, "COUNT", 2*time.Minute); got != fmt.Sprint(n) && got != fmt.Sprint(dst.drain()) {
		t.Fatalf("count on the disk %q, the last TICK %d", got, n)
	}
	if got := dst.field(t, "BEFORE2", time.Minute); got != before {
		t.Fatalf("file written before the save reads back as %q after, want %s", got, before)
	}
	after := diskimg.Repeat("after", 300000)
	if got := dst.field(t, "AFTER", time.Minute); got != diskimg.SHA256(after) {
		t.Fatalf("AFTER %q", got)
	}
	if got := dst.field(t, "NET2", 2*time.Minute); got != diskimg.SHA256(srv.blob) || srv.blobs.Load() != blobs+1 {
		t.Fatalf("download after the restore: %q (%d requests)\n%s", got, srv.blobs.Load()-blobs, dst.console())
	}
	dst.field(t, "UMOUNT-OK", time.Minute)
	select {
	case <-dst.exited:
	case <-time.After(time.Minute):
		t.Fatalf("guest did not power off\n%s", dst.console())
	}
	dst.exited <- nil
	if c := diskimg.Check(t, img, "qcow2"); !c.Clean() {
		t.Fatalf("qemu-img check after the run:\n%s", c.Text)
	}
	if got := diskimg.Ext4Cat(t, img, "qcow2", "after"); diskimg.SHA256(got) != diskimg.SHA256(after) {
		t.Fatalf("the file written after the restore is not in the image (%d bytes)", len(got))
	}
}
