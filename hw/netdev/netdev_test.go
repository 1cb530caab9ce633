package netdev

import (
	"os"
	"strings"
	"testing"
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
