package netwall

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
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
	qtype dnsmessage.Type
}

type cacheEntry struct {
	msg     *dnsmessage.Message
	stored  time.Time
	expires time.Time
}

// resolver answers the pod's queries and the proxy's own lookups. It never
// sends a denied name upstream; allowed answers are cached by TTL, and the
// addresses it hands out are remembered so the transparent proxy can tell
// which name a connection to an address belongs to.
type resolver struct {
	w *Wall

	mu     sync.Mutex
	cache  map[cacheKey]cacheEntry
	handed map[string]map[netip.Addr]time.Time
}

func newResolver(w *Wall) *resolver {
	return &resolver{
		w:      w,
		cache:  map[cacheKey]cacheEntry{},
		handed: map[string]map[netip.Addr]time.Time{},
	}
}

// serve answers one query from inside the pod, packed as it arrived, and
// returns the packed reply (nil: no reply). Over UDP the reply is cut to
// what the client said it can take.
func (r *resolver) serve(b []byte, udp bool) []byte {
	var req dnsmessage.Message
	if err := req.Unpack(b); err != nil {
		return r.unparsed(b)
	}
	if req.Response {
		return nil // a reply sent to the resolver: drop it
	}
	name, _ := wireQuestionName(b) // "" when refused: not a valid name, denied
	reply := r.reply(&req, name)
	size := 0xffff
	if udp {
		size = max(ednsUDPSize(&req), minUDPSize)
	}
	out, err := packFitting(reply, size)
	if err != nil {
		return nil
	}
	return out
}

// unparsed answers a query dnsmessage refuses to unpack (it refuses, for
// one, a dot inside a label) straight from the wire: NXDOMAIN, reported as
// denied, when its name is one the policy refuses, else FORMERR; nothing
// when not even the header and question can be read. The reply echoes the
// header and question as sent, without records.
func (r *resolver) unparsed(b []byte) []byte {
	end, ok := questionEnd(b)
	if !ok || b[2]&0x80 != 0 || binary.BigEndian.Uint16(b[4:6]) != 1 {
		return nil
	}
	rcode := dnsmessage.RCodeFormatError
	name, _ := wireQuestionName(b)
	name = normName(name)
	if ok, reason := r.w.policy().nameVerdict(name); !ok {
		rcode = dnsmessage.RCodeNameError
		qtype := dnsmessage.Type(binary.BigEndian.Uint16(b[end-4:]))
		r.w.report(Event{Kind: "dns", Verdict: "deny", Reason: reason,
			Details: map[string]any{"name": name, "type": typeName(qtype)}})
	}
	out := append([]byte(nil), b[:end]...)
	out[2] = 0x80 | b[2]&0x79 // QR; the opcode and RD as asked; no AA, no TC
	out[3] = 0x80 | byte(rcode)
	clear(out[6:12]) // no answer, authority or additional records
	return out
}

// reply builds the answer to req, whose question names name (in
// presentation form, see wireQuestionName), and reports the query.
func (r *resolver) reply(req *dnsmessage.Message, name string) *dnsmessage.Message {
	if len(req.Questions) != 1 || req.OpCode != 0 {
		return replyHeader(req, &dnsmessage.Message{Header: dnsmessage.Header{RCode: dnsmessage.RCodeNotImplemented}})
	}
	q := req.Questions[0]
	name = normName(name)
	p := r.w.policy()
	ev := Event{Kind: "dns", Details: map[string]any{"name": name, "type": typeName(q.Type)}}
	reply, err := r.answer(p, name, q.Type, &ev)
	if err != nil {
		reply = &dnsmessage.Message{Header: dnsmessage.Header{RCode: dnsmessage.RCodeServerFailure}}
	}
	reply = replyHeader(req, reply)
	reply.Additionals = nil // upstream OPT and glue are not ours to pass on
	if ednsUDPSize(req) > 0 {
		reply.Additionals = []dnsmessage.Resource{ednsRecord()}
	}
	r.w.report(ev)
	return reply
}

// replyHeader makes m the reply to req: req's ID, opcode, RD and CD bits
// and question, recursion available, m's rcode and records.
func replyHeader(req, m *dnsmessage.Message) *dnsmessage.Message {
	m.Header = dnsmessage.Header{
		ID: req.ID, Response: true, OpCode: req.OpCode,
		RecursionDesired: req.RecursionDesired, CheckingDisabled: req.CheckingDisabled,
		RecursionAvailable: true, RCode: m.RCode,
	}
	m.Questions = req.Questions
	return m
}

// answer builds the reply for one question and fills in ev. A denied name
// is answered NXDOMAIN here, without a packet leaving the supervisor.
func (r *resolver) answer(p *Policy, name string, qtype dnsmessage.Type, ev *Event) (*dnsmessage.Message, error) {
	ok, reason := p.nameVerdict(name)
	if _, lit := ParseHostLiteral(name); lit && !strings.HasSuffix(name, ".arpa") {
		ok, reason = false, "IP literal is not a name"
	}
	if !ok {
		ev.Verdict, ev.Reason = "deny", reason
		return &dnsmessage.Message{Header: dnsmessage.Header{RCode: dnsmessage.RCodeNameError}}, nil
	}
	up, err := r.exchange(p, name, qtype)
	if err != nil {
		ev.Verdict, ev.Reason = "error", err.Error()
		return nil, err
	}
	m := copyMsg(up)
	removed := r.filterAnswers(p, m)
	answers := r.remember(name, m.Answers)
	ev.Verdict, ev.Reason = "allow", reason
	ev.Details["answers"] = answers
	ev.Details["rcode"] = rcodeName(m.RCode)
	if len(removed) > 0 {
		ev.Details["removed"] = removed
		ev.Reason += "; removed answers with denied addresses"
	}
	return m, nil
}

// copyMsg copies m's header and record lists; the record bodies, which
// nothing changes, are shared.
func copyMsg(m *dnsmessage.Message) *dnsmessage.Message {
	c := *m
	c.Questions = slices.Clone(m.Questions)
	c.Answers = slices.Clone(m.Answers)
	c.Authorities = slices.Clone(m.Authorities)
	c.Additionals = slices.Clone(m.Additionals)
	return &c
}

// filterAnswers drops A/AAAA records whose address CheckAddr denies, so a
// name cannot point the pod at loopback, the LAN or a metadata service
// (DNS rebinding). The proxy checks again when it dials.
func (r *resolver) filterAnswers(p *Policy, m *dnsmessage.Message) []string {
	var removed []string
	kept := m.Answers[:0]
	for _, rr := range m.Answers {
		if a, ok := rrAddr(rr); ok {
			if ok, why := CheckAddr(a, p.AllowPrivate); !ok {
				removed = append(removed, a.String()+": "+why)
				continue
			}
		}
		kept = append(kept, rr)
	}
	m.Answers = kept
	return removed
}

func rrAddr(rr dnsmessage.Resource) (netip.Addr, bool) {
	switch v := rr.Body.(type) {
	case *dnsmessage.AResource:
		return netip.AddrFrom4(v.A), true
	case *dnsmessage.AAAAResource:
		return netip.AddrFrom16(v.AAAA), true
	}
	return netip.Addr{}, false
}

// remember records handed-out addresses under the queried name and returns
// them as strings for the audit trail.
func (r *resolver) remember(name string, answer []dnsmessage.Resource) []string {
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
		set[a.Unmap()] = time.Now().Add(time.Duration(rr.Header.TTL)*time.Second + handedOutGrace)
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
	for _, qt := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
		m, err := r.exchange(p, name, qt)
		if err != nil {
			firstErr = err
			continue
		}
		for _, rr := range m.Answers {
			if a, ok := rrAddr(rr); ok && rr.Header.Type == qt {
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
func (r *resolver) exchange(p *Policy, name string, qtype dnsmessage.Type) (*dnsmessage.Message, error) {
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
func agedCopy(e cacheEntry, now time.Time) *dnsmessage.Message {
	m := copyMsg(e.msg)
	age := uint32(now.Sub(e.stored) / time.Second)
	for _, sec := range [][]dnsmessage.Resource{m.Answers, m.Authorities, m.Additionals} {
		for i := range sec {
			if h := &sec[i].Header; h.Type != dnsmessage.TypeOPT && h.TTL > age {
				h.TTL -= age
			} else if h.Type != dnsmessage.TypeOPT {
				h.TTL = 0
			}
		}
	}
	return m
}

func cacheTTL(m *dnsmessage.Message) time.Duration {
	if m.RCode != dnsmessage.RCodeSuccess && m.RCode != dnsmessage.RCodeNameError {
		return 0
	}
	if len(m.Answers) == 0 {
		return negativeTTL
	}
	ttl := maxCacheTTL
	for _, rr := range m.Answers {
		if d := time.Duration(rr.Header.TTL) * time.Second; d < ttl {
			ttl = d
		}
	}
	return ttl
}

// ask sends one query to the upstream servers in turn, over TCP when the
// UDP answer was truncated.
func (r *resolver) ask(upstream []string, name string, qtype dnsmessage.Type) (*dnsmessage.Message, error) {
	q, err := newQuery(name, qtype)
	if err != nil {
		return nil, fmt.Errorf("asking for %s: %w", name, err)
	}
	var last error = errors.New("no upstream resolver configured")
	for _, srv := range upstream {
		m, err := exchange("udp", q, srv)
		if err == nil && m.Truncated {
			m, err = exchange("tcp", q, srv)
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
