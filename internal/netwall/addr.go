package netwall

import (
	"net/netip"
	"strconv"
	"strings"
	"sync"
)

// deniedRange is one address block the proxy refuses to dial, with the
// reason reported in the audit trail.
type deniedRange struct {
	prefix netip.Prefix
	reason string
}

// deniedRanges is the address policy as data: every block here is refused
// unless the pod's policy lists it in AllowPrivate. Order matters only for
// the reason reported: more specific blocks come first. The blocks stay
// text until deniedPrefixes parses them, on the first check, so that a start
// of the binary that never dials (every one but the supervisor's) skips it.
var deniedRanges = []struct{ cidr, reason string }{
	{"169.254.169.254/32", "cloud metadata service"},
	{"fd00:ec2::254/128", "cloud metadata service (IPv6)"},
	{"100.100.100.200/32", "cloud metadata service (Alibaba)"},
	{"192.0.0.192/32", "cloud metadata service (Oracle)"},
	{"0.0.0.0/8", "this-network / unspecified"},
	{"10.0.0.0/8", "private (RFC 1918)"},
	{"100.64.0.0/10", "carrier-grade NAT (RFC 6598)"},
	{"127.0.0.0/8", "loopback"},
	{"169.254.0.0/16", "link-local"},
	{"172.16.0.0/12", "private (RFC 1918)"},
	{"192.0.0.0/24", "IETF protocol assignments"},
	{"192.0.2.0/24", "documentation (TEST-NET-1)"},
	{"192.88.99.0/24", "6to4 relay anycast"},
	{"192.168.0.0/16", "private (RFC 1918)"},
	{"198.18.0.0/15", "benchmarking (RFC 2544)"},
	{"198.51.100.0/24", "documentation (TEST-NET-2)"},
	{"203.0.113.0/24", "documentation (TEST-NET-3)"},
	{"224.0.0.0/4", "multicast"},
	{"255.255.255.255/32", "broadcast"},
	{"240.0.0.0/4", "reserved (class E)"},
	{"::/128", "unspecified"},
	{"::1/128", "loopback"},
	{"100::/64", "discard-only"},
	{"64:ff9b:1::/48", "local-use NAT64"},
	{"2001::/32", "Teredo (embeds an address the proxy cannot check)"},
	{"2001:2::/48", "benchmarking (RFC 5180)"},
	{"3fff::/20", "documentation (RFC 9637)"},
	{"2001:db8::/32", "documentation"},
	{"fc00::/7", "unique local (ULA)"},
	{"fe80::/10", "link-local"},
	{"fec0::/10", "site-local (deprecated)"},
	{"ff00::/8", "multicast"},
}

var deniedPrefixes = sync.OnceValue(func() []deniedRange {
	out := make([]deniedRange, len(deniedRanges))
	for i, r := range deniedRanges {
		out[i] = deniedRange{pfx(r.cidr), r.reason}
	}
	return out
})

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// embeddedV4 returns the IPv4 address an IPv6 address carries in a form
// that can reach it: v4-mapped, v4-compatible, NAT64 (64:ff9b::/96) and 6to4.
func embeddedV4(a netip.Addr) (netip.Addr, string, bool) {
	if !a.Is6() {
		return netip.Addr{}, "", false
	}
	b := a.As16()
	v4 := netip.AddrFrom4([4]byte(b[12:16]))
	switch {
	case a.Is4In6():
		return v4, "IPv4-mapped", true
	case isZero(b[:12]) && a != netip.IPv6Unspecified() && a != netip.IPv6Loopback():
		return v4, "IPv4-compatible", true
	case pfx("64:ff9b::/96").Contains(a):
		return v4, "NAT64", true
	case b[0] == 0x20 && b[1] == 0x02:
		return netip.AddrFrom4([4]byte(b[2:6])), "6to4", true
	}
	return netip.Addr{}, "", false
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// CheckAddr reports whether the proxy may dial a. Loopback, private,
// link-local, CGNAT, multicast, broadcast, reserved, documentation and
// cloud-metadata addresses are denied, and so is any IPv6 address that
// embeds a denied IPv4 address, unless a prefix in allowPrivate contains
// the address (or, for embedded forms, the embedded IPv4 address).
func CheckAddr(a netip.Addr, allowPrivate []netip.Prefix) (ok bool, reason string) {
	if !a.IsValid() {
		return false, "invalid address"
	}
	a = a.WithZone("")
	if allowed(a, allowPrivate) {
		return true, "allowed by allow_private"
	}
	if v4, form, ok := embeddedV4(a); ok {
		if ok, why := CheckAddr(v4, allowPrivate); !ok {
			return false, form + " address embedding " + v4.String() + ": " + why
		}
	}
	for _, r := range deniedPrefixes() {
		if r.prefix.Contains(a) {
			return false, r.reason + " (" + r.prefix.String() + ")"
		}
	}
	return true, "public address"
}

func allowed(a netip.Addr, prefixes []netip.Prefix) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ParseHostLiteral recognises every spelling of an IP address that a C
// library or a URL parser would accept as one, so that "2852039166",
// "0251.0376.0251.0376", "0xa9fea9fe", "127.1" and "[::ffff:a9fe:a9fe]"
// are all seen as the addresses they are, never as host names.
func ParseHostLiteral(s string) (netip.Addr, bool) {
	s = strings.TrimSuffix(s, ".")
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		s = s[1 : len(s)-1]
	}
	if s == "" {
		return netip.Addr{}, false
	}
	if strings.Contains(s, ":") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Addr{}, false
		}
		return a.WithZone(""), true
	}
	return parseInetAton(s)
}

// parseInetAton follows inet_aton(3): one to four parts, each decimal,
// octal (leading 0) or hex (0x); the last part fills the remaining bytes.
func parseInetAton(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		v, ok := parseAtonPart(p)
		if !ok {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	var out uint64
	for i, v := range vals[:len(vals)-1] {
		if v > 0xff {
			return netip.Addr{}, false
		}
		out |= v << (8 * (3 - i))
	}
	last := vals[len(vals)-1]
	if last >= 1<<(8*(5-len(vals))) {
		return netip.Addr{}, false
	}
	out |= last
	return netip.AddrFrom4([4]byte{byte(out >> 24), byte(out >> 16), byte(out >> 8), byte(out)}), true
}

func parseAtonPart(p string) (uint64, bool) {
	if p == "" {
		return 0, false
	}
	base := 10
	switch {
	case len(p) > 1 && (p[:2] == "0x" || p[:2] == "0X"):
		base, p = 16, p[2:]
		if p == "" {
			return 0, true // "0x" alone is 0 to inet_aton
		}
	case len(p) > 1 && p[0] == '0':
		base, p = 8, p[1:]
	}
	v, err := strconv.ParseUint(p, base, 32)
	if err != nil || strings.ContainsAny(p, "+-_") {
		return 0, false
	}
	return v, true
}
