package netwall

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

func TestParsePublish(t *testing.T) {
	for _, c := range []struct {
		in, host string
		port     int
	}{
		{"8080:80", "127.0.0.1:8080", 80},
		{"127.0.0.1:3000:3000", "127.0.0.1:3000", 3000},
		{"0.0.0.0:8080:80", "0.0.0.0:8080", 80},
		{"[::1]:8080:80", "[::1]:8080", 80},
	} {
		h, p, err := ParsePublish(c.in)
		if err != nil || h.String() != c.host || p != c.port {
			t.Errorf("ParsePublish(%q) = %v %d %v, want %s %d", c.in, h, p, err, c.host, c.port)
		}
	}
	for _, bad := range []string{"", "80", "8080:", ":80", "0:80", "8080:0", "8080:70000", "host:8080:80", "::1:8080:80", "[fe80::1%eth0]:80:80", "1.2.3.4:x:80"} {
		if _, _, err := ParsePublish(bad); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ParsePublish(%q): want ErrInvalid, got %v", bad, err)
		}
	}
}

func TestUpstreamGetsPort(t *testing.T) {
	q := Policy{Upstream: []string{"192.0.2.53", "192.0.2.54:5353", "2001:db8::53"}}.normalized()
	want := []string{"192.0.2.53:53", "192.0.2.54:5353", "[2001:db8::53]:53"}
	for i := range want {
		if q.Upstream[i] != want[i] {
			t.Errorf("upstream %d = %q, want %q", i, q.Upstream[i], want[i])
		}
	}
}

func TestParseResolvConf(t *testing.T) {
	conf := "# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver  2001:db8::53 \nnameserver fe80::1%eth0\nnameserver bogus\noptions edns0\n"
	got := parseResolvConf(strings.NewReader(conf))
	want := []string{"127.0.0.53:53", "[2001:db8::53]:53", "[fe80::1%eth0]:53"}
	if !slices.Equal(got, want) {
		t.Errorf("parseResolvConf = %q, want %q", got, want)
	}
}
