package sysdev

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gemu/cmd/internal/qemuopts"
	"gemu/hw/chardev"
)

func common(t *testing.T, args ...string) *qemuopts.Common {
	t.Helper()
	var c qemuopts.Common
	if err := c.Parse(args, nil, nil); err != nil {
		t.Fatal(err)
	}
	return &c
}

// Open fails with one line, and releases what it opened, for every kind of bad input;
// a good set opens drives and chardevs that Close releases (the image lock too).
func TestOpen(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "d.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "c.sock")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-drive", "file=" + filepath.Join(dir, "none.qcow2") + ",if=virtio"}, "No such file or directory"},
		{[]string{"-drive", "file=" + img + ",format=raw"}, "no IDE controller"},
		{[]string{"-drive", "file=" + img + ",if=none,id=a,format=raw", "-drive", "file=" + img + ",if=none,id=a,format=raw,readonly=on"}, "Duplicate ID 'a'"},
		{[]string{"-drive", "file=" + img + ",if=none,id=a,format=raw", "-drive", "file=" + img + ",if=none,id=b,format=raw"}, `Failed to get "write" lock`},
		{[]string{"-chardev", "socket,id=c0,path=" + sock + ",server=on,wait=off,colour=red"}, "Invalid parameter 'colour'"},
		{[]string{"-chardev", "null,id=c0", "-chardev", "null,id=c0"}, "duplicate chardev id"},
		{[]string{"-object", "memory-backend-ram,id=m0,size=1G"}, "not supported"},
		{[]string{"-object", "rng-random,id=r0,filename=/etc/passwd"}, "only /dev/urandom"},
		{[]string{"-blockdev", "driver=nbd,node-name=n0"}, "Unknown driver 'nbd'"},
	} {
		w, err := Open(common(t, c.args...), "ide", chardev.Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") && !strings.Contains(c.want, "lock") {
			t.Errorf("%v: %v, want one line with %q", c.args, err, c.want)
		}
		if w != nil {
			t.Errorf("%v: a Wiring came back with the error", c.args)
		}
	}
	w, err := Open(common(t, "-drive", "file="+img+",if=virtio,format=raw", "-chardev", "socket,id=c0,path="+sock+",server=on,wait=off"), "ide", chardev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if w.Drives["virtio0"] == nil || w.Chardevs["c0"] == nil {
		t.Fatalf("drives %v chardevs %v", w.Drives, w.Chardevs)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// The lock went with Close: the image opens read-write again.
	w, err = Open(common(t, "-drive", "file="+img+",if=none,id=x,format=raw"), "virtio", chardev.Options{})
	if err != nil {
		t.Fatalf("after Close: %v", err)
	}
	w.Close()
}

// Repeated hostfwd= reach the user backend as every rule, not the last one only.
func TestRepeatedHostfwd(t *testing.T) {
	o, err := qemuopts.Parse("user,id=n0,hostfwd=tcp:127.0.0.1:0-:22,hostfwd=udp:127.0.0.1:0-:53,hostfwd=tcp:127.0.0.1:0-:80", "type")
	if err != nil {
		t.Fatal(err)
	}
	get := repeatedGet(o, "hostfwd")
	var got []string
	if v, ok := get("hostfwd"); ok {
		got = append(got, v)
	}
	for i := 0; i < 4; i++ {
		if v, ok := get(fmt.Sprintf("hostfwd.%d", i)); ok {
			got = append(got, v)
		}
	}
	if strings.Join(got, " ") != "tcp:127.0.0.1:0-:22 udp:127.0.0.1:0-:53 tcp:127.0.0.1:0-:80" {
		t.Fatalf("rules seen: %q", got)
	}
	if v, _ := get("id"); v != "n0" {
		t.Fatalf("other keys: id = %q", v)
	}
}
