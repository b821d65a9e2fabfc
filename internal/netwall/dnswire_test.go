package netwall

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
	"golang.org/x/net/dns/dnsmessage"
)

// wireUpstream is an authoritative server on loopback, written with a
// different DNS library from the resolver's: big.test has more TXT than
// fits in UDP (its UDP answers are truncated, as a real server's are),
// a.test has one public address and one the resolver must filter out.
type wireUpstream struct {
	addr string
	mu   sync.Mutex
	seen []string // "udp big.test." ...
}

// queries is a copy of what the upstream has seen so far.
func (u *wireUpstream) queries() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.seen...)
}

func startWireUpstream(t *testing.T) *wireUpstream {
	u := &wireUpstream{}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		q := r.Question[0]
		u.mu.Lock()
		u.seen = append(u.seen, w.RemoteAddr().Network()+" "+q.Name)
		u.mu.Unlock()
		m := new(dns.Msg).SetReply(r)
		switch strings.ToLower(q.Name) {
		case "big.test.":
			for i := range 40 {
				rr, _ := dns.NewRR(fmt.Sprintf("big.test. 300 IN TXT \"record %02d %s\"", i, strings.Repeat("x", 40)))
				m.Answer = append(m.Answer, rr)
			}
		case "a.test.":
			for _, s := range []string{"a.test. 60 IN A 203.0.114.7", "a.test. 60 IN A 127.0.0.1"} {
				rr, _ := dns.NewRR(s)
				m.Answer = append(m.Answer, rr)
			}
		default:
			m.Rcode = dns.RcodeNameError
		}
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			m.Truncate(udpSize(r))
		}
		_ = w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = pc.LocalAddr().String()
	l, err := net.Listen("tcp4", u.addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go func() { _ = s.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	return u
}

func udpSize(r *dns.Msg) int {
	if o := r.IsEdns0(); o != nil {
		return int(o.UDPSize())
	}
	return dns.MinMsgSize
}

func wireResolver(t *testing.T, u *wireUpstream) (*resolver, *[]Event) {
	var events []Event
	w := &Wall{audit: func(ev Event) { events = append(events, ev) }}
	p := Policy{Mode: ModeFiltered, Allow: []string{"big.test", "a.test", "*.a.test"}, Upstream: []string{u.addr}}.normalized()
	w.pol.Store(&p)
	w.res = newResolver(w)
	return w.res, &events
}

// query packs a query as a pod's client would, with EDNS when edns > 0.
func query(t *testing.T, name string, qtype uint16, edns uint16) []byte {
	m := new(dns.Msg).SetQuestion(name, qtype)
	m.Id = 0x1234
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func unpackReply(t *testing.T, b []byte) *dns.Msg {
	t.Helper()
	if b == nil {
		t.Fatal("no reply")
	}
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	if !m.Response || m.Id != 0x1234 {
		t.Fatalf("reply header: response %v id %#x", m.Response, m.Id)
	}
	return m
}

// A UDP answer the upstream truncated is asked again over TCP; the pod
// gets it whole over TCP and cut to its own size, with TC, over UDP.
func TestResolverWireSizes(t *testing.T) {
	u := startWireUpstream(t)
	r, _ := wireResolver(t, u)
	whole := unpackReply(t, r.serve(query(t, "big.test.", dns.TypeTXT, 0), false))
	if len(whole.Answer) != 40 || whole.Truncated {
		t.Fatalf("over TCP: %d answers, TC %v; want all 40", len(whole.Answer), whole.Truncated)
	}
	if seen := u.queries(); !strings.Contains(strings.Join(seen, ","), "tcp big.test.") {
		t.Errorf("upstream saw %v; want the truncated UDP answer retried over TCP", seen)
	}
	for _, c := range []struct {
		edns uint16
		max  int
	}{{0, 512}, {1232, 1232}} {
		b := r.serve(query(t, "big.test.", dns.TypeTXT, c.edns), true)
		m := unpackReply(t, b)
		if len(b) > c.max || !m.Truncated || len(m.Answer) == 0 || len(m.Answer) >= 40 {
			t.Errorf("UDP, EDNS %d: %d bytes, TC %v, %d answers; want a truncated reply of at most %d bytes",
				c.edns, len(b), m.Truncated, len(m.Answer), c.max)
		}
		if (m.IsEdns0() != nil) != (c.edns > 0) {
			t.Errorf("UDP, EDNS %d: reply EDNS %v; want it exactly when the query had it", c.edns, m.IsEdns0())
		}
	}
}

// Filtering, denial and the cases the resolver does not answer.
func TestResolverWireVerdicts(t *testing.T) {
	u := startWireUpstream(t)
	r, events := wireResolver(t, u)
	m := unpackReply(t, r.serve(query(t, "A.Test.", dns.TypeA, 1232), true))
	if len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "203.0.114.7" || !m.RecursionAvailable || !m.RecursionDesired {
		t.Errorf("a.test: %v; want only the public address, RA and RD set", m)
	}
	if m.Question[0].Name != "A.Test." {
		t.Errorf("question %q; want the pod's own spelling", m.Question[0].Name)
	}
	ev := (*events)[len(*events)-1]
	if ev.Details["type"] != "A" || ev.Details["rcode"] != "NOERROR" || ev.Details["name"] != "a.test" || len(ev.Details["removed"].([]string)) != 1 {
		t.Errorf("event %+v", ev)
	}
	before := len(u.queries())
	if m := unpackReply(t, r.serve(query(t, "secret.example.", dns.TypeTXT, 0), true)); m.Rcode != dns.RcodeNameError {
		t.Errorf("denied name: rcode %d; want NXDOMAIN", m.Rcode)
	}
	if seen := u.queries(); len(seen) != before {
		t.Errorf("a denied name reached the upstream: %v", seen[before:])
	}
	// One label "x.a" under "test": the wire form has no subdomain of
	// a.test, whatever the joined text says.
	if m := unpackReply(t, r.serve(query(t, `x\.a.test.`, dns.TypeA, 0), true)); m.Rcode != dns.RcodeNameError {
		t.Errorf("a dot inside a label: rcode %d; want NXDOMAIN", m.Rcode)
	}
	if ev := (*events)[len(*events)-1]; ev.Verdict != "deny" || ev.Details["name"] != `x\.a.test` {
		t.Errorf("a dot inside a label: event %+v; want a denied, escaped name", ev)
	}
	if seen := u.queries(); len(seen) != before {
		t.Errorf("SECURITY: a name with a dot inside a label reached the upstream: %v", seen[before:])
	}
	st := new(dns.Msg).SetQuestion("a.test.", dns.TypeA)
	st.Id, st.Opcode = 0x1234, dns.OpcodeStatus
	b, _ := st.Pack()
	if m := unpackReply(t, r.serve(b, true)); m.Rcode != dns.RcodeNotImplemented {
		t.Errorf("status opcode: rcode %d; want NOTIMP", m.Rcode)
	}
	st.Opcode, st.Response = dns.OpcodeQuery, true
	b, _ = st.Pack()
	if out := r.serve(b, true); out != nil {
		t.Errorf("a reply sent to the resolver was answered: %x", out)
	}
	if out := r.serve([]byte{0x12, 0x34, 0x01}, true); out != nil {
		t.Errorf("garbage was answered: %x", out)
	}
}

// The client skips replies that do not match its query: another ID, or
// another question, as a spoofer's guesses would be.
func TestExchangeSkipsUnmatchedReplies(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 512)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var q dnsmessage.Message
		if q.Unpack(buf[:n]) != nil {
			return
		}
		send := func(id uint16, name string, addr [4]byte) {
			m := dnsmessage.Message{Header: dnsmessage.Header{ID: id, Response: true},
				Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
				Answers: []dnsmessage.Resource{{Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
					Body: &dnsmessage.AResource{A: addr}}}}
			b, _ := m.Pack()
			_, _ = pc.WriteTo(b, from)
		}
		send(q.ID+1, "a.test.", [4]byte{6, 6, 6, 6})
		send(q.ID, "evil.test.", [4]byte{6, 6, 6, 7})
		send(q.ID, "A.TEST.", [4]byte{203, 0, 114, 7})
	}()
	q, err := newQuery("a.test", dnsmessage.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	m, err := exchange("udp", q, pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := rrAddr(m.Answers[0]); a.String() != "203.0.114.7" {
		t.Errorf("exchange took %v; want the matching reply", a)
	}
}
