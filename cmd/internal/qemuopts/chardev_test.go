package qemuopts

import (
	"net"
	"path/filepath"
	"strings"
	"testing"

	"gemu/hw/chardev"
)

// TestChardevFromOpts shows how a main opens a stored -chardev: the backend's keys
// checked first (QEMU's "Invalid parameter"), then chardev.OpenOpts reads them.
func TestChardevFromOpts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	var c Common
	if err := c.Parse([]string{"-chardev", "socket,id=c0,path=" + path + ",server=on,wait=off",
		"-chardev", "socket,id=c1,path=/x,logfile=/tmp/l"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	open := func(o *Opts) (chardev.Backend, error) {
		typ := o.ImpliedValue()
		keys, err := chardev.Keys(typ)
		if err != nil {
			return nil, err
		}
		if err := o.Check(append(keys, "id")...); err != nil {
			return nil, err
		}
		return chardev.OpenOpts(typ, o.Get, chardev.Options{})
	}
	be, err := open(c.Chardevs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	if conn, err := net.Dial("unix", path); err != nil {
		t.Errorf("the -chardev socket does not listen: %v", err)
	} else {
		conn.Close()
	}
	if _, err := open(c.Chardevs[1]); err == nil || !strings.HasSuffix(err.Error(), ": Invalid parameter 'logfile'") {
		t.Errorf("unknown chardev key: %v", err)
	}
}
