package netwall

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Cache and hand-out bounds.
const (
	maxCacheTTL     = time.Hour
	negativeTTL     = 30 * time.Second
	handedOutGrace  = 10 * time.Minute // a client may use an address after its TTL
	upstreamTimeout = 2 * time.Second
	maxCacheEntries = 10000
)

type cacheKey struct {
	name  string
	qtype uint16
}

type cacheEntry struct {
	msg     *dns.Msg
	stored  time.Time
	expires time.Time
}

// resolver answers the pod's queries and the proxy's own lookups. It never
// sends a denied name upstream; allowed answers are cached by TTL, and the
// addresses it hands out are remembered so the transparent proxy can tell
// which name a connection to an address belongs to.
type resolver struct {
	w      *Wall
	client *dns.Client
	tcp    *dns.Client

	mu     sync.Mutex
	cache  map[cacheKey]cacheEntry
	handed map[string]map[netip.Addr]time.Time
}

func newResolver(w *Wall) *resolver {
	return &resolver{
		w:      w,
		client: &dns.Client{Net: "udp", Timeout: upstreamTimeout, UDPSize: 1232},
		tcp:    &dns.Client{Net: "tcp", Timeout: upstreamTimeout},
		cache:  map[cacheKey]cacheEntry{},
		handed: map[string]map[netip.Addr]time.Time{},
	}
}

// ServeDNS answers one query from inside the pod.
func (r *resolver) ServeDNS(rw dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		reply := new(dns.Msg).SetRcode(req, dns.RcodeNotImplemented)
		_ = rw.WriteMsg(reply)
		return
	}
	q := req.Question[0]
	name := normName(q.Name)
	p := r.w.policy()
	ev := Event{Kind: "dns", Details: map[string]any{"name": name, "type": dns.TypeToString[q.Qtype]}}
	reply, err := r.answer(p, name, q.Qtype, &ev)
	if err != nil {
		reply = new(dns.Msg)
		reply.Rcode = dns.RcodeServerFailure
	}
	rcode := reply.Rcode
	reply.SetReply(req)
	reply.Rcode = rcode
	reply.RecursionAvailable = true
	reply.Extra = nil // upstream OPT and glue are not ours to pass on
	if req.IsEdns0() != nil {
		reply.SetEdns0(1232, false)
	}
	if _, udp := rw.RemoteAddr().(*net.UDPAddr); udp {
		reply.Truncate(udpSize(req))
	}
	r.w.report(ev)
	_ = rw.WriteMsg(reply)
}

func udpSize(req *dns.Msg) int {
	if o := req.IsEdns0(); o != nil && o.UDPSize() > dns.MinMsgSize {
		return int(o.UDPSize())
	}
	return dns.MinMsgSize
}

// answer builds the reply for one question and fills in ev. A denied name
// is answered NXDOMAIN here, without a packet leaving the supervisor.
func (r *resolver) answer(p *Policy, name string, qtype uint16, ev *Event) (*dns.Msg, error) {
	ok, reason := p.nameVerdict(name)
	if _, lit := ParseHostLiteral(name); lit && !strings.HasSuffix(name, ".arpa") {
		ok, reason = false, "IP literal is not a name"
	}
	if !ok {
		ev.Verdict, ev.Reason = "deny", reason
		m := new(dns.Msg)
		m.Rcode = dns.RcodeNameError
		return m, nil
	}
	up, err := r.exchange(p, name, qtype)
	if err != nil {
		ev.Verdict, ev.Reason = "error", err.Error()
		return nil, err
	}
	m := up.Copy()
	removed := r.filterAnswers(p, m)
	answers := r.remember(name, m.Answer)
	ev.Verdict, ev.Reason = "allow", reason
	ev.Details["answers"] = answers
	ev.Details["rcode"] = dns.RcodeToString[m.Rcode]
	if len(removed) > 0 {
		ev.Details["removed"] = removed
		ev.Reason += "; removed answers with denied addresses"
	}
	return m, nil
}

// filterAnswers drops A/AAAA records whose address CheckAddr denies, so a
// name cannot point the pod at loopback, the LAN or a metadata service
// (DNS rebinding). The proxy checks again when it dials.
func (r *resolver) filterAnswers(p *Policy, m *dns.Msg) []string {
	var removed []string
	kept := m.Answer[:0]
	for _, rr := range m.Answer {
		if a, ok := rrAddr(rr); ok {
			if ok, why := CheckAddr(a, p.AllowPrivate); !ok {
				removed = append(removed, a.String()+": "+why)
				continue
			}
		}
		kept = append(kept, rr)
	}
	m.Answer = kept
	return removed
}

func rrAddr(rr dns.RR) (netip.Addr, bool) {
	switch v := rr.(type) {
	case *dns.A:
		a, ok := netip.AddrFromSlice(v.A.To4())
		return a, ok
	case *dns.AAAA:
		a, ok := netip.AddrFromSlice(v.AAAA.To16())
		return a, ok
	}
	return netip.Addr{}, false
}

// remember records handed-out addresses under the queried name and returns
// them as strings for the audit trail.
func (r *resolver) remember(name string, answer []dns.RR) []string {
	var out []string
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rr := range answer {
		a, ok := rrAddr(rr)
		if !ok {
			continue
		}
		set := r.handed[name]
		if set == nil {
			set = map[netip.Addr]time.Time{}
			r.handed[name] = set
		}
		set[a.Unmap()] = time.Now().Add(time.Duration(rr.Header().Ttl)*time.Second + handedOutGrace)
		out = append(out, a.String())
	}
	return out
}

// handedOut reports whether the resolver gave a to the pod for name
// recently enough that the pod may still connect to it.
func (r *resolver) handedOut(name string, a netip.Addr) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	exp, ok := r.handed[name][a.Unmap()]
	return ok && time.Now().Before(exp)
}

// lookup resolves name to its A and AAAA addresses (IPv4 first) for the
// proxy, through the same cache the pod's queries use.
func (r *resolver) lookup(p *Policy, name string) ([]netip.Addr, error) {
	var out []netip.Addr
	var firstErr error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		m, err := r.exchange(p, name, qt)
		if err != nil {
			firstErr = err
			continue
		}
		for _, rr := range m.Answer {
			if a, ok := rrAddr(rr); ok && rr.Header().Rrtype == qt {
				out = append(out, a.Unmap())
			}
		}
	}
	if len(out) == 0 {
		if firstErr == nil {
			firstErr = fmt.Errorf("%s has no A or AAAA records", name)
		}
		return nil, firstErr
	}
	return out, nil
}

// exchange returns the upstream answer for (name, qtype), from the cache
// while its TTL lasts. Returned messages are shared: callers copy before
// changing them.
func (r *resolver) exchange(p *Policy, name string, qtype uint16) (*dns.Msg, error) {
	key := cacheKey{name, qtype}
	now := time.Now()
	r.mu.Lock()
	e, ok := r.cache[key]
	r.mu.Unlock()
	if ok && now.Before(e.expires) {
		return agedCopy(e, now), nil
	}
	m, err := r.ask(p.Upstream, name, qtype)
	if err != nil {
		return nil, err
	}
	if ttl := cacheTTL(m); ttl > 0 {
		r.mu.Lock()
		if len(r.cache) >= maxCacheEntries {
			clear(r.cache)
		}
		r.cache[key] = cacheEntry{msg: m, stored: now, expires: now.Add(ttl)}
		r.mu.Unlock()
	}
	return m, nil
}

// agedCopy returns a cached answer with its TTLs reduced by its age.
func agedCopy(e cacheEntry, now time.Time) *dns.Msg {
	m := e.msg.Copy()
	age := uint32(now.Sub(e.stored) / time.Second)
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if h := rr.Header(); h.Rrtype != dns.TypeOPT && h.Ttl > age {
				h.Ttl -= age
			} else if h.Rrtype != dns.TypeOPT {
				h.Ttl = 0
			}
		}
	}
	return m
}

func cacheTTL(m *dns.Msg) time.Duration {
	if m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError {
		return 0
	}
	if len(m.Answer) == 0 {
		return negativeTTL
	}
	ttl := maxCacheTTL
	for _, rr := range m.Answer {
		if d := time.Duration(rr.Header().Ttl) * time.Second; d < ttl {
			ttl = d
		}
	}
	return ttl
}

// ask sends one query to the upstream servers in turn, over TCP when the
// UDP answer was truncated.
func (r *resolver) ask(upstream []string, name string, qtype uint16) (*dns.Msg, error) {
	q := new(dns.Msg).SetQuestion(dns.Fqdn(name), qtype)
	q.SetEdns0(1232, false)
	var last error = errors.New("no upstream resolver configured")
	for _, srv := range upstream {
		m, _, err := r.client.ExchangeContext(context.Background(), q, srv)
		if err == nil && m.Truncated {
			m, _, err = r.tcp.ExchangeContext(context.Background(), q, srv)
		}
		if err == nil {
			return m, nil
		}
		last = err
	}
	return nil, fmt.Errorf("asking upstream resolvers %v for %s: %w", upstream, name, last)
}

// hostUpstream reads the nameservers of the host's /etc/resolv.conf, the
// default upstream when the policy names none.
func hostUpstream() []string {
	f, err := os.Open("/etc/resolv.conf")
	if err != nil {
		return nil
	}
	defer f.Close()
	return parseResolvConf(f)
}

// parseResolvConf returns the "nameserver" addresses of a resolv.conf as
// ip:53.
func parseResolvConf(r io.Reader) []string {
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if a, err := netip.ParseAddr(fields[1]); err == nil {
				out = append(out, netip.AddrPortFrom(a, 53).String())
			}
		}
	}
	return out
}
