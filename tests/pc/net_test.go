package pc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"gemu/accel/kvm"
	"gemu/tests/assets"
	"gemu/tests/harness"
	"gemu/tests/testbin"
)

// TestNetUserPC runs the PC board's virtio-net-pci behind -netdev user under Linux on
// KVM (inside the KVM-in-TCG harness where the host's KVM cannot boot Linux; on the
// host where it is hardware-backed): the guest gets 10.0.2.15 by DHCP with the gateway
// 10.0.2.2, downloads 16 MiB from busybox httpd on its host's loopback (the outer
// guest's, in the harness) through 10.0.2.2 and checks its hash against the host's, and
// pings 10.0.2.2. GEMU_PC_EMULATOR=qemu runs the inner guest on QEMU (its slirp)
// instead, to check the test itself.
func TestNetUserPC(t *testing.T) {
	if testing.Short() {
		t.Skip("boots Linux inside the harness (minutes): skipped with -short")
	}
	if m := assets.Missing("amd64"); m != "" {
		t.Skip(m)
	}
	qemu := os.Getenv("GEMU_PC_EMULATOR") == "qemu"
	const size = 16 << 20 // 64 MiB (the arm64 test's size) takes 11 minutes in the nested harness
	inner := "loadmods virtio_pci virtio_net\n" +
		"i=0;while [ ! -e /sys/class/net/eth0 ]&&[ $i -lt 300 ];do sleep .2;i=$((i+1));done;ip link set lo up;ip link set eth0 up\n" +
		`printf '#!/bin/sh\n[ "$1" = bound ]&&{ ip addr add $ip/${mask:-24} dev $interface;ip route add default via $router;echo LEASE=$ip ROUTER=$router;}\nexit 0\n'>/tmp/dh;chmod +x /tmp/dh` + "\n" +
		"udhcpc -i eth0 -s /tmp/dh -q -n -t 10 -T 2||echo LEASE=none\n" +
		"echo GSHA=$(wget -q -O - http://10.0.2.2:8080/blob|sha256sum|cut -d' ' -f1)\n" +
		"ping -c 2 -W 5 10.0.2.2 >/dev/null&&echo PING=ok\n"
	nic := "-netdev user,id=n0 -device virtio-net-pci,netdev=n0"
	if qemu {
		nic += ",romfile=" // the harness carries no NIC option ROM
	}
	// $BB is busybox on the machine that runs the emulator $E.
	script := "ip link set lo up\nmkdir -p /srv\n" +
		fmt.Sprintf("head -c %d /dev/urandom >/srv/blob\n", size) +
		"echo HSHA=$(sha256sum </srv/blob|cut -d' ' -f1)\n" +
		"$BB httpd -p 127.0.0.1:8080 -h /srv; echo HTTPD=$?\n" +
		"$E -accel kvm -nographic -no-reboot " + harness.InnerArgs(512, 1, inner) + " " + nic + "; echo EXIT=$?\n" +
		"kill $(pidof httpd) 2>/dev/null\necho GEMU-NET-END\n"
	var out string
	if kvm.Available() == nil && !kvm.Emulated() {
		emu := "qemu-system-x86_64"
		if !qemu {
			emu = testbin.MustBuild(t, "gemu/cmd/gemu-system-x86_64")
		}
		dir := t.TempDir()
		host := strings.NewReplacer(harness.InnerKernel, assets.Kernel("amd64"), harness.InnerInitrd, assets.Initrd("amd64"),
			"/srv", dir, "127.0.0.1:8080", "127.0.0.1:18080", "10.0.2.2:8080", "10.0.2.2:18080")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "sh", "-c", host.Replace(script))
		cmd.Env = append(os.Environ(), "E="+emu, "BB="+assets.Dir("amd64")+"/busybox")
		b, err := cmd.CombinedOutput()
		out = string(b)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	} else {
		if m := harness.Missing(); m != "" {
			t.Skipf("no hardware KVM here and the KVM-in-TCG harness cannot run: %s", m)
		}
		var gemu string
		env := "BB=busybox E=qemu-system-x86_64\n"
		if !qemu {
			gemu = testbin.MustBuild(t, "gemu/cmd/gemu-system-x86_64")
			env = "BB=busybox E=" + harness.InnerGemu + "\n"
		}
		var err error
		out, err = harness.Run(context.Background(), harness.Options{Script: env + script, Gemu: gemu, QEMU: qemu,
			Timeout: 15 * time.Minute})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	out = strings.ReplaceAll(out, "\r\n", "\n")
	if !strings.Contains(out, "GEMU-NET-END") {
		t.Fatalf("the script did not finish:\n%s", out)
	}
	field := func(key string) string {
		m := regexp.MustCompile(`(?m)`+regexp.QuoteMeta(key)+`=(\S*)`).FindAllStringSubmatch(out, -1)
		if m == nil {
			return ""
		}
		return m[len(m)-1][1]
	}
	defer func() {
		if t.Failed() {
			t.Logf("output:\n%s", out)
		}
	}()
	if field("HTTPD") != "0" {
		t.Fatalf("the host's httpd did not start")
	}
	if field("LEASE") != "10.0.2.15" || field("ROUTER") != "10.0.2.2" {
		t.Errorf("DHCP lease %q via %q, want 10.0.2.15 via 10.0.2.2", field("LEASE"), field("ROUTER"))
	}
	if h := field("HSHA"); len(h) != 64 || field("GSHA") != h {
		t.Errorf("download through 10.0.2.2: guest sha256 %q, host %q", field("GSHA"), h)
	}
	if field("PING") != "ok" {
		t.Errorf("ping 10.0.2.2 failed")
	}
	if field("EXIT") != "0" {
		t.Errorf("emulator exit status %q after guest poweroff", field("EXIT"))
	}
}
