package netdev

import (
	"os"
	"strings"
	"testing"
	"time"
)

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o644) }

func getter(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestHelpAndKeys(t *testing.T) {
	h := Help()
	for _, typ := range []string{"user", "tap", "socket", "stream", "dgram"} {
		found := false
		for _, x := range h {
			found = found || x == typ
		}
		if !found {
			t.Errorf("Help() lacks %s: %v", typ, h)
		}
		if _, err := Keys(typ); err != nil {
			t.Errorf("Keys(%s): %v", typ, err)
		}
	}
	if _, err := Keys("vde"); err == nil || !strings.Contains(err.Error(), "'vde'") {
		t.Errorf("Keys(vde): %v", err)
	}
	if _, err := Open("l2tpv3", getter()); err == nil || !strings.Contains(err.Error(), "Parameter 'type'") {
		t.Errorf("Open(l2tpv3): %v", err)
	}
}

// TestOptionErrors: each bad option is one line naming the key.
func TestOptionErrors(t *testing.T) {
	for _, c := range []struct {
		typ  string
		kv   []string
		want string
	}{
		{"tap", []string{"script", "/etc/qemu-ifup"}, "Parameter 'script'"},
		{"tap", []string{"downscript", "/etc/qemu-ifdown"}, "Parameter 'downscript'"},
		{"tap", []string{"vhost", "on"}, "Parameter 'vhost'"},
		{"tap", []string{"vnet_hdr", "sure"}, "Parameter 'vnet_hdr' expects 'on' or 'off'"},
		{"tap", []string{"ifname", "a-very-long-interface-name"}, "Parameter 'ifname'"},
		{"tap", []string{"fd", "x"}, "Parameter 'fd'"},
		{"socket", nil, "exactly one of"},
		{"socket", []string{"listen", "nohost"}, "Parameter 'listen'"},
		{"socket", []string{"connect", "127.0.0.1:http"}, "Parameter 'connect'"},
		{"socket", []string{"mcast", "230.0.0.1:1234"}, "Parameter 'mcast'"},
		{"socket", []string{"udp", "127.0.0.1:9"}, "localaddr"},
		{"stream", nil, "Parameter 'addr.type' is missing"},
		{"stream", []string{"addr.type", "vsock"}, "Parameter 'addr.type'"},
		{"stream", []string{"addr.type", "inet", "addr.host", "127.0.0.1"}, "Parameter 'addr.port' is missing"},
		{"stream", []string{"addr.type", "unix"}, "Parameter 'addr.path' is missing"},
		{"stream", []string{"addr.type", "unix", "addr.path", "/x", "server", "2"}, "Parameter 'server'"},
		{"dgram", []string{"local.type", "inet", "local.host", "127.0.0.1", "local.port", "9"}, "Parameter 'remote.type'"},
	} {
		_, err := Open(c.typ, getter(c.kv...))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s %v: error %v, want one line containing %q", c.typ, c.kv, err, c.want)
		}
	}
}

// TestRxQueueBounded: with a receiver that never has room, the queue stops taking
// frames at its byte budget (big frames) or its length (small ones), then delivers
// the held frames in order once the receiver has room.
func TestRxQueueBounded(t *testing.T) {
	q := newRxQueue(65536)
	defer q.close()
	room := make(chan bool, 1)
	room <- false
	var got [][]byte
	done := make(chan struct{})
	var total int
	q.setReceiver(func(f []byte) bool {
		select {
		case ok := <-room:
			room <- ok
			if !ok {
				return false
			}
		default:
		}
		got = append(got, append([]byte(nil), f[:1]...))
		if len(got) == total {
			close(done)
		}
		return true
	})
	n := 0
	for i := 0; i < 10000; i++ {
		f := make([]byte, 65536)
		f[0] = byte(i)
		if !q.put(f, 0) {
			break
		}
		n++
	}
	// One frame is held by the delivery goroutine, the rest are queued.
	if max := rxQueueBytes/65536 + 1; n > max || n < max-2 {
		t.Errorf("queued %d 64 KiB frames, want about %d", n, max)
	}
	total = n
	<-room
	room <- true
	q.kick()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("delivered %d of %d", len(got), n)
	}
	for i, f := range got {
		if f[0] != byte(i) {
			t.Fatalf("frame %d out of order", i)
		}
	}
}
