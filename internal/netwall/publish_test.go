package netwall

import (
	"slices"
	"strings"
	"testing"
)

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
