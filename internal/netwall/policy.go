package netwall

import (
	"net/netip"
	"slices"
	"strings"
)

// Policy is the pod's network policy. The zero value of each field means
// its default: Mode "filtered", DNSMode "allow", Ports 80 and 443, Upstream
// from the host's /etc/resolv.conf.
type Policy struct {
	Mode         string         // "filtered" (resolver + proxy) | "none" (loopback only)
	Allow, Deny  []string       // exact names and "*.example.com" (subdomains only)
	Ports        []int          // destination ports the proxy dials; default 80, 443
	AllowPrivate []netip.Prefix // address blocks exempt from CheckAddr
	DNSMode      string         // "allow" (only allowed names) | "deny" (all but denied) | "monitor" (all, logged)
	Upstream     []string       // "ip:port" resolvers the supervisor asks; default: host resolv.conf
}

// Modes and DNS modes.
const (
	ModeFiltered = "filtered"
	ModeNone     = "none"
	DNSAllow     = "allow"
	DNSDeny      = "deny"
	DNSMonitor   = "monitor"
)

// normalized returns a copy with defaults filled in and names lower-cased,
// so the hot path never mutates or re-derives anything.
func (p Policy) normalized() Policy {
	q := Policy{
		Mode:         p.Mode,
		DNSMode:      p.DNSMode,
		Ports:        slices.Clone(p.Ports),
		AllowPrivate: slices.Clone(p.AllowPrivate),
	}
	for _, u := range p.Upstream {
		q.Upstream = append(q.Upstream, upstreamAddr(u))
	}
	if q.Mode == "" {
		q.Mode = ModeFiltered
	}
	if q.DNSMode == "" {
		q.DNSMode = DNSAllow
	}
	if len(q.Ports) == 0 {
		q.Ports = []int{80, 443}
	}
	for _, n := range p.Allow {
		q.Allow = append(q.Allow, normName(strings.TrimSpace(n)))
	}
	for _, n := range p.Deny {
		q.Deny = append(q.Deny, normName(strings.TrimSpace(n)))
	}
	return q
}

// upstreamAddr gives a resolver named without a port (as config and
// resolv.conf name them) the DNS port: "192.0.2.53" -> "192.0.2.53:53".
func upstreamAddr(s string) string {
	if a, err := netip.ParseAddr(strings.TrimSpace(s)); err == nil {
		return netip.AddrPortFrom(a, 53).String()
	}
	return strings.TrimSpace(s)
}

// normName lower-cases a host name and drops one trailing dot, the two
// spellings that must not let a name slip past a list. Only A-Z are
// lowered and nothing is trimmed: names from the wire (a DNS question, an
// SNI) pass here, and strings.ToLower made a Kelvin sign (U+212A) a k,
// strings.TrimSpace dropped white space, so that a name no server reads
// as key.allowed.test was checked as it, and "allowed.test\t", whose
// trailing dot protected the tab from the first trim, was checked as
// allowed.test by nameVerdict's second one and then asked upstream as
// sent. Names from the configuration are trimmed where they are read.
func normName(s string) string {
	b := []byte(strings.TrimSuffix(s, "."))
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// validName accepts letters, digits, '-' and '_' in non-empty labels of at
// most 63 bytes. Anything else is refused before a list is consulted: the
// resolver sees names in presentation form, where "a\\.allowed.test" is
// one label "a.allowed" under "test", not a subdomain of allowed.test, and
// a byte-wise suffix match would take it for one.
func validName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// matchName reports whether name matches one list entry: exactly, or as a
// subdomain of a "*.suffix" entry.
func matchName(entry, name string) bool {
	if suffix, ok := strings.CutPrefix(entry, "*."); ok {
		return strings.HasSuffix(name, "."+suffix)
	}
	return entry == name
}

func matchAny(list []string, name string) bool {
	for _, e := range list {
		if matchName(e, name) {
			return true
		}
	}
	return false
}

// nameVerdict decides one host name for both the resolver and the proxy,
// so the two can never disagree.
func (p *Policy) nameVerdict(name string) (ok bool, reason string) {
	name = normName(name)
	switch {
	case !validName(name):
		return false, "not a valid host name"
	case p.DNSMode == DNSMonitor:
		return true, "monitor mode"
	case matchAny(p.Deny, name):
		return false, "name denied by policy"
	case p.DNSMode == DNSDeny:
		return true, "not in deny list"
	case matchAny(p.Allow, name):
		return true, "name allowed by policy"
	}
	return false, "name not in allow list"
}

func (p *Policy) portAllowed(port int) bool { return slices.Contains(p.Ports, port) }

// literalAllowed reports whether an IP literal target is explicitly listed
// in Allow: literals never pass by DNS mode alone.
func (p *Policy) literalAllowed(a netip.Addr) bool {
	for _, e := range p.Allow {
		if b, ok := ParseHostLiteral(e); ok && b.Unmap() == a.Unmap() {
			return true
		}
	}
	return false
}

// clone returns a deep copy for callers of Wall.Policy.
func (p Policy) clone() Policy {
	p.Allow = slices.Clone(p.Allow)
	p.Deny = slices.Clone(p.Deny)
	p.Ports = slices.Clone(p.Ports)
	p.AllowPrivate = slices.Clone(p.AllowPrivate)
	p.Upstream = slices.Clone(p.Upstream)
	return p
}
