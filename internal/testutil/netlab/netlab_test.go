package netlab

import (
	"crypto/tls"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/internal/testutil"
	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
)

// TestNet builds an internet in a random /30 of 198.18.0.0/16 (the
// netwall tests use 198.18.0.0/30 in a namespace of their own, the e2e
// tests 198.19.0.0/16), uses each of its services from the host side, and
// checks that Close takes the veth away.
func TestNet(t *testing.T) {
	testutil.RequireRoot(t)
	block := byte(mrand.IntN(254) + 1)
	host, web := netip.AddrFrom4([4]byte{198, 18, block, 1}), netip.AddrFrom4([4]byte{198, 18, block, 2})
	link := fmt.Sprintf("nlt%d", mrand.IntN(1_000_000))
	n := New(t, Config{
		Link: link,
		Host: []netip.Prefix{netip.PrefixFrom(host, 30)},
		Inet: []netip.Prefix{netip.PrefixFrom(web, 30)},
		Web: []Site{{Addr: web, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello "+r.Host)
		})}},
		DNS:       web,
		Zone:      func(name string) []string { return map[string][]string{"a.test.": {"A " + web.String()}}[name] },
		TTL:       42,
		CertNames: []string{"a.test"},
		Sinks:     []netip.AddrPort{netip.AddrPortFrom(web, 9999)},
	})

	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: "a.test", RootCAs: n.Cert.Pool}}}
	for _, url := range []string{"http://" + web.String() + "/", "https://" + web.String() + "/"} {
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "hello "+web.String() {
			t.Errorf("GET %s = %q", url, body)
		}
	}

	server := net.JoinHostPort(web.String(), "53")
	for _, q := range []struct {
		net, name string
		rcode     int
		answers   int
	}{{"udp", "A.Test.", dns.RcodeSuccess, 1}, {"tcp", "b.test.", dns.RcodeNameError, 0}} {
		m, _, err := (&dns.Client{Net: q.net}).Exchange(new(dns.Msg).SetQuestion(q.name, dns.TypeA), server)
		if err != nil || m.Rcode != q.rcode || len(m.Answer) != q.answers {
			t.Fatalf("%s query for %s = %v, %v; want rcode %d with %d answers", q.net, q.name, m, err, q.rcode, q.answers)
		}
		if q.answers > 0 && (m.Answer[0].Header().Ttl != 42 || m.Answer[0].(*dns.A).A.String() != web.String()) {
			t.Errorf("answer %v; want %s with TTL 42", m.Answer[0], web)
		}
	}
	if got := n.Queries(); !slices.Equal(got, []string{"a.test.", "b.test."}) {
		t.Errorf("Queries() = %q", got)
	}

	u, err := net.Dial("udp4", net.JoinHostPort(web.String(), "9999"))
	if err != nil {
		t.Fatal(err)
	}
	u.Write([]byte("stray"))
	u.Close()
	if k, err := net.DialTimeout("tcp4", net.JoinHostPort(web.String(), "9999"), 3*time.Second); err != nil {
		t.Fatal(err)
	} else {
		k.Close()
	}
	deadline := time.Now().Add(3 * time.Second)
	for n.Strays() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if k := n.Strays(); k != 2 {
		t.Errorf("Strays() = %d after one datagram and one connection; want 2", k)
	}

	n.Close()
	n.Close()
	if _, err := netlink.LinkByName(link); err == nil {
		t.Errorf("link %s is still there after Close", link)
	}
}
