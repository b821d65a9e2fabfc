package netwall

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestParseHostLiteral(t *testing.T) {
	for in, want := range map[string]string{
		"2852039166":               "169.254.169.254",
		"0251.0376.0251.0376":      "169.254.169.254",
		"0xa9fea9fe":               "169.254.169.254",
		"0xA9.0xFE.0xA9.0xFE":      "169.254.169.254",
		"169.254.43518":            "169.254.169.254",
		"169.16689662":             "169.254.169.254",
		"127.1":                    "127.0.0.1",
		"0":                        "0.0.0.0",
		"127.0.0.1.":               "127.0.0.1",
		"[::1]":                    "::1",
		"::ffff:a9fe:a9fe":         "::ffff:169.254.169.254",
		"[::ffff:169.254.169.254]": "::ffff:169.254.169.254",
		"fe80::1%eth0":             "fe80::1",
		"64:ff9b::a9fe:a9fe":       "64:ff9b::a9fe:a9fe",
	} {
		got, ok := ParseHostLiteral(in)
		if !ok || got.String() != want {
			t.Errorf("ParseHostLiteral(%q) = %v, %v; want %s", in, got, ok, want)
		}
	}
	for _, name := range []string{"example.com", "1.2.3.4.5", "256.1.1.1", "0x", "1e3", "08.1.1.1", "-1", "1.2.3.4a", "", "[]", "1..2"} {
		if a, ok := ParseHostLiteral(name); ok && name != "0x" {
			t.Errorf("ParseHostLiteral(%q) = %v; want not a literal", name, a)
		}
	}
}

func TestCheckAddr(t *testing.T) {
	denied := []string{
		"127.0.0.1", "127.255.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
		"169.254.1.1", "100.64.0.1", "100.100.100.200", "0.0.0.0", "0.1.2.3", "224.0.0.1",
		"255.255.255.255", "240.0.0.1", "198.18.0.2", "192.0.0.192",
		"::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1",
		"::ffff:127.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1", "::a9fe:a9fe",
		"64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "2002:a9fe:a9fe::1", "2002:7f00:1::", "2001:0:4136:e378::1",
		"2001:2::1", "3fff::1", "2001:db8::1",
	}
	for _, s := range denied {
		if ok, why := CheckAddr(netip.MustParseAddr(s), nil); ok {
			t.Errorf("CheckAddr(%s) allowed (%s)", s, why)
		}
	}
	for _, s := range []string{"1.1.1.1", "8.8.8.8", "2606:4700::1111", "::ffff:1.1.1.1", "64:ff9b::808:808", "2002:0808:0808::1"} {
		if ok, why := CheckAddr(netip.MustParseAddr(s), nil); !ok {
			t.Errorf("CheckAddr(%s) denied: %s", s, why)
		}
	}
	private := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	if ok, _ := CheckAddr(netip.MustParseAddr("10.1.2.3"), private); !ok {
		t.Errorf("AllowPrivate not honoured")
	}
	if ok, _ := CheckAddr(netip.MustParseAddr("::ffff:10.1.2.3"), private); !ok {
		t.Errorf("AllowPrivate not honoured for the mapped form")
	}
	if ok, _ := CheckAddr(netip.MustParseAddr("10.2.0.1"), private); ok {
		t.Errorf("AllowPrivate leaked beyond its prefix")
	}
}

func TestNameVerdict(t *testing.T) {
	p := Policy{Allow: []string{"Example.com.", "*.github.com"}, Deny: []string{"evil.github.com"}}.normalized()
	for name, want := range map[string]bool{
		"example.com": true, "EXAMPLE.COM.": true, "www.example.com": false,
		"api.github.com": true, "github.com": false, "evil.github.com": false,
		"x.evil.github.com": true, "github.com.evil.test": false, "notgithub.com": false,
		// Presentation-form escapes: one label "x.api" under "github.com"'s
		// parent, not a subdomain; and other bytes a suffix match would pass.
		`x\.api.github.com`: false, `x\046api.github.com`: false, "x\x00.api.github.com": false,
		"x y.github.com": false, "..github.com": false, ".github.com": false, "_srv._tcp.api.github.com": true,
	} {
		if got, why := p.nameVerdict(name); got != want {
			t.Errorf("allow mode: %s = %v (%s); want %v", name, got, why, want)
		}
	}
	p.DNSMode = DNSMonitor
	if ok, _ := p.nameVerdict(`x\.github.com`); ok {
		t.Errorf("monitor mode allowed a name with an escaped dot")
	}
	p.DNSMode = DNSDeny
	if ok, _ := p.nameVerdict("anything.test"); !ok {
		t.Errorf("deny mode refused an unlisted name")
	}
	if ok, _ := p.nameVerdict("evil.github.com"); ok {
		t.Errorf("deny mode allowed a denied name")
	}
}

// clientHello captures the first record crypto/tls sends for sni.
func clientHello(t *testing.T, sni string) []byte {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		_ = tls.Client(a, &tls.Config{ServerName: sni, InsecureSkipVerify: true}).Handshake()
	}()
	br := bufio.NewReaderSize(b, bufSize)
	head, _ := br.Peek(5)
	n := int(head[3])<<8 | int(head[4])
	rec, _ := br.Peek(5 + n)
	out := bytes.Clone(rec)
	a.Close()
	b.Close()
	return out
}

func TestPeekFirst(t *testing.T) {
	rec := clientHello(t, "Api.Example.com")
	fb, err := peekFirst(bufio.NewReaderSize(bytes.NewReader(rec), bufSize))
	if err != nil || !fb.tls || fb.name != "api.example.com" {
		t.Errorf("TLS: %+v %v", fb, err)
	}
	fb, _ = peekFirst(bufio.NewReaderSize(bytes.NewReader(clientHello(t, "")), bufSize))
	if !fb.tls || fb.name != "" {
		t.Errorf("TLS without SNI: %+v", fb)
	}
	req := "GET / HTTP/1.1\r\nHost: Example.com:8080\r\n\r\n"
	fb, err = peekFirst(bufio.NewReaderSize(strings.NewReader(req), bufSize))
	if err != nil || !fb.http || fb.name != "example.com" {
		t.Errorf("HTTP: %+v %v", fb, err)
	}
	// Truncated and hostile records never panic and never yield a name.
	for i := 5; i < len(rec); i += 7 {
		bad := bytes.Clone(rec[:i])
		fb, _ := peekFirst(bufio.NewReaderSize(bytes.NewReader(bad), bufSize))
		if fb.name != "" {
			t.Fatalf("truncated hello (%d bytes) yielded %q", i, fb.name)
		}
	}
}
