package netwall

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/dns/dnsmessage"
)

// Fuzz targets for the resolver's wire handling, written as the pod would
// probe it: every byte of a query is the pod's. Run one with
//
//	go test ./internal/netwall/ -run XXX -fuzz FuzzQuestionName -fuzztime 3m

// fuzzAllowed is the fuzzed resolvers' policy, and fuzzAllowedName its
// independent restatement: allowed.test and its subdomains, in letters,
// digits, '-' and '_' only.
var fuzzAllowed = []string{"allowed.test", "*.allowed.test"}

func fuzzAllowedName(name string) bool {
	name = strings.TrimSuffix(name, ".")
	if name != "allowed.test" && !strings.HasSuffix(name, ".allowed.test") {
		return false
	}
	for _, l := range strings.Split(name, ".") {
		if l == "" || len(l) > 63 || strings.Trim(l, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			return false
		}
	}
	return len(name) <= 253
}

// lowerASCII lower-cases A-Z and nothing else, as DNS compares names
// (RFC 4343) and as a TLS server matches an SNI.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// packQuery packs a query the way dnsmessage does (the resolver's own
// library); rawQuery below writes names dnsmessage would refuse to pack.
func packQuery(tb testing.TB, name string, qtype dnsmessage.Type, edns int) []byte {
	tb.Helper()
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 0x1234, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: qtype, Class: dnsmessage.ClassINET}},
	}
	if edns > 0 {
		m.Additionals = []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("."), Type: dnsmessage.TypeOPT, Class: dnsmessage.Class(edns)},
			Body:   &dnsmessage.OPTResource{},
		}}
	}
	b, err := m.Pack()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// rawQuery is a query with one question whose name is the given labels
// followed by tail (nil: the root label), qtype A, class IN.
func rawQuery(labels []string, tail []byte) []byte {
	b := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, l := range labels {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	if tail == nil {
		tail = []byte{0}
	}
	b = append(b, tail...)
	return append(b, 0, 1, 0, 1)
}

// dnsSeeds are real queries (dnsmessage and miekg/dns) and the hostile
// names the wire code must read as the pod wrote them.
func dnsSeeds(tb testing.TB) [][]byte {
	m := new(dns.Msg).SetQuestion("Www.Allowed.Test.", dns.TypeAAAA)
	m.SetEdns0(4096, true)
	fromMiekg, _ := m.Pack()
	long := strings.Repeat("a", 63)
	return [][]byte{
		packQuery(tb, "allowed.test.", dnsmessage.TypeA, 0),
		packQuery(tb, "WWW.allowed.test.", dnsmessage.TypeAAAA, ednsSize),
		packQuery(tb, "evil.test.", dnsmessage.TypeTXT, 512),
		packQuery(tb, ".", dnsmessage.TypeNS, 0),
		packQuery(tb, "_sip._tcp.allowed.test.", dnsmessage.TypeSRV, 0),
		packQuery(tb, "7.0.114.203.in-addr.arpa.", dnsmessage.TypePTR, 0),
		packQuery(tb, "allowed.test.", dnsmessage.Type(65), 1232),
		fromMiekg,
		rawQuery([]string{"x.allowed", "test"}, nil),                                            // a dot inside a label
		rawQuery([]string{"x\\", "allowed", "test"}, nil),                                       // a backslash ending a label
		rawQuery([]string{"evil\x00", "allowed", "test"}, nil),                                  // a NUL inside a label
		rawQuery([]string{"\tx", "allowed", "test"}, nil),                                       // leading white space
		rawQuery([]string{"\u212aey", "allowed", "test"}, nil),                                  // a Kelvin sign, which Unicode lower-cases to k
		rawQuery([]string{"allowed", "test\u00a0"}, nil),                                        // a trailing no-break space
		rawQuery([]string{"allowed", "test"}, []byte{0xc0, 0x0c}),                               // a pointer to itself: a loop
		rawQuery(nil, []byte{0xc0, 0x0c}),                                                       // a pointer as the whole name
		rawQuery([]string{"a"}, []byte{0x40, 0}),                                                // a reserved label type
		rawQuery([]string{long, long, long, long}, nil),                                         // 257 bytes on the wire
		rawQuery([]string{long, long, long, long[:61]}, nil),                                    // 255 bytes, the most there is
		rawQuery([]string{long + "a", "allowed", "test"}, nil)[:20],                             // a 64-byte label, cut short
		rawQuery([]string{"allowed", "test"}, nil)[:24],                                         // no type and class
		{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0},                                           // short header
		append(rawQuery([]string{"a", "allowed", "test"}, nil), 0xff),                           // trailing garbage
		func() []byte { b := rawQuery([]string{"allowed", "test"}, nil); b[5] = 0; return b }(), // QDCOUNT 0
		func() []byte { b := rawQuery([]string{"allowed", "test"}, nil); b[5] = 2; return b }(), // QDCOUNT 2
	}
}

// FuzzQuestionName: walkQuestionName, wireQuestionName and questionEnd
// never panic; agree with each other; accept only valid names (at most 255
// bytes on the wire, labels of 1 to 63 bytes, no pointer); write them so
// that the presentation form decodes back to exactly the wire labels; and
// read the same name, type and class as dnsmessage.Parser wherever both
// accept the question, refusing one dnsmessage reads only for a pointer.
func FuzzQuestionName(f *testing.F) {
	for _, b := range dnsSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		name, ok := wireQuestionName(b)
		var labels [][]byte
		end, wok := walkQuestionName(b, func(l []byte) { labels = append(labels, l) })
		qend, qok := questionEnd(b)
		switch {
		case ok != wok:
			t.Fatalf("wireQuestionName %v, walkQuestionName %v", ok, wok)
		case !ok && name != "":
			t.Fatalf("refused, yet named %q", name)
		case qok != (wok && end+4 <= len(b)):
			t.Fatalf("questionEnd %v for a name ending at %d (ok %v) of %d bytes", qok, end, wok, len(b))
		case qok && qend != end+4:
			t.Fatalf("questionEnd %d; the name ends at %d", qend, end)
		}
		if ok {
			wire := end - dnsHeaderLen
			if wire > 255 {
				t.Fatalf("accepted a %d-byte name (at most 255 on the wire)", wire)
			}
			n := 1
			for _, l := range labels {
				if len(l) == 0 || len(l) > 63 {
					t.Fatalf("accepted a label of %d bytes", len(l))
				}
				n += 1 + len(l)
			}
			if n != wire {
				t.Fatalf("labels add up to %d bytes; the name is %d (a pointer followed?)", n, wire)
			}
			if got := presentationLabels(name); !equalLabels(got, labels) {
				t.Fatalf("%q decodes to labels %q; the wire has %q", name, got, labels)
			}
		}

		var p dnsmessage.Parser
		if _, err := p.Start(b); err != nil {
			if ok {
				t.Fatalf("read a name %q from a message without a header", name)
			}
			return
		}
		q, err := p.Question()
		switch {
		case err == nil && !ok:
			if i, c := refusedAt(b); c < 0xc0 {
				t.Fatalf("refused a question dnsmessage reads as %q, at byte %d (%#x), not a pointer", q.Name, i, c)
			}
		case err == nil && ok:
			if got := unescape(name); got != q.Name.String() {
				t.Fatalf("read %q (%q unescaped); dnsmessage reads %q", name, got, q.Name.String())
			}
			if !qok {
				t.Fatalf("dnsmessage read type and class; questionEnd found none")
			}
			if typ, class := binary.BigEndian.Uint16(b[qend-4:]), binary.BigEndian.Uint16(b[qend-2:]); typ != uint16(q.Type) || class != uint16(q.Class) {
				t.Fatalf("type %d class %d; dnsmessage reads %d %d", typ, class, q.Type, q.Class)
			}
		case ok && !errors.Is(err, dnsmessage.ErrSectionDone):
			// dnsmessage refuses a question the wall reads: it must be one
			// the policy refuses anyway (a dot in a label), or lack its
			// type and class.
			if qok && !strings.Contains(name, `\.`) {
				t.Fatalf("read %q; dnsmessage refuses it: %v", name, err)
			}
		}
	})
}

// presentationLabels splits a wireQuestionName result at its unescaped
// dots and undoes the escapes.
func presentationLabels(s string) [][]byte {
	if s == "." {
		return nil
	}
	var out [][]byte
	var cur []byte
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s):
			i++
			cur = append(cur, s[i])
		case c == '.':
			out = append(out, cur)
			cur = nil
		default:
			cur = append(cur, c)
		}
	}
	if cur != nil {
		out = append(out, append(cur, "<no final dot>"...))
	}
	return out
}

func equalLabels(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// unescape drops wireQuestionName's escapes: the name as dnsmessage joins
// it.
func unescape(s string) string {
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		out = append(out, s[i])
	}
	return string(out)
}

// refusedAt walks the question name as walkQuestionName does and returns
// where and at which length byte it stops.
func refusedAt(b []byte) (int, int) {
	i := dnsHeaderLen
	for i < len(b) && b[i] != 0 && b[i] <= 63 && i+1+int(b[i]) <= len(b) {
		i += 1 + int(b[i])
	}
	if i >= len(b) {
		return i, -1
	}
	return i, int(b[i])
}

// fuzzUpstream is a resolver's upstream on loopback that records the wire
// name of every question it is asked, and answers with one public A
// record, or with reply (its ID set to the query's) when reply is set.
type fuzzUpstream struct {
	addr string
	mu   sync.Mutex
	seen []upstreamQuery
	rep  []byte
}

type upstreamQuery struct {
	wire  []byte // the question's name as packed, uncompressed at offset 12
	name  string // as miekg/dns reads it
	qtype uint16
}

func startFuzzUpstream(tb testing.TB) *fuzzUpstream {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pc.Close() })
	u := &fuzzUpstream{addr: pc.LocalAddr().String()}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			b := buf[:n]
			q := new(dns.Msg)
			if q.Unpack(b) != nil || len(q.Question) != 1 {
				continue
			}
			end, _ := walkQuestionName(b, func([]byte) {})
			u.mu.Lock()
			u.seen = append(u.seen, upstreamQuery{wire: bytes.Clone(b[dnsHeaderLen:max(end, dnsHeaderLen)]),
				name: q.Question[0].Name, qtype: q.Question[0].Qtype})
			out := bytes.Clone(u.rep)
			u.mu.Unlock()
			if out == nil {
				m := new(dns.Msg).SetReply(q)
				if q.Question[0].Qtype == dns.TypeA {
					rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 203.0.114.7")
					m.Answer = append(m.Answer, rr)
				}
				out, _ = m.Pack()
			} else if len(out) >= 3 {
				copy(out, b[:2])
				out[2] &^= 0x02 // no TC: the fuzzed reply is the whole answer
			}
			_, _ = pc.WriteTo(out, from)
		}
	}()
	return u
}

// take returns and forgets what the upstream was asked.
func (u *fuzzUpstream) take() []upstreamQuery {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.seen
	u.seen = nil
	return s
}

func (u *fuzzUpstream) setReply(b []byte) {
	u.mu.Lock()
	u.rep = b
	u.mu.Unlock()
}

// fuzzWall is a wall with only its resolver, the fuzz policy and u as its
// upstream; its events are appended to *events.
func fuzzWall(u *fuzzUpstream, events *[]Event) *Wall {
	w := &Wall{audit: func(ev Event) { *events = append(*events, ev) }}
	p := Policy{Mode: ModeFiltered, Allow: fuzzAllowed, Upstream: []string{u.addr}}.normalized()
	w.pol.Store(&p)
	w.res = newResolver(w)
	return w
}

// FuzzResolverServe feeds the pod's bytes to the resolver as its UDP and
// TCP services do (over TCP, as a length-prefixed stream through
// readTCPMsg and writeTCPMsg). Each query is answered in bounded time; a
// reply, when there is one, is a response to the query's ID, fits the UDP
// size the client asked for, and its TCP framing reads back whole. What
// reaches the upstream is exactly, byte for byte on the wire, the pod's
// question name lower-cased, of the pod's type, and a name the policy
// (restated independently) allows; the audit trail names it as sent. A
// name the policy refuses never reaches the upstream.
func FuzzResolverServe(f *testing.F) {
	for _, b := range dnsSeeds(f) {
		f.Add(b, false)
		f.Add(binary.BigEndian.AppendUint16(nil, uint16(len(b)))[:2:2], true)
		f.Add(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...), true)
	}
	two := append(binary.BigEndian.AppendUint16(nil, 30), packQuery(f, "allowed.test.", dnsmessage.TypeA, 0)...)
	f.Add(append(two, two...), true)
	u := startFuzzUpstream(f)
	var events []Event
	w := fuzzWall(u, &events)
	// The harness itself: an allowed name is asked upstream and answered.
	w.res.serve(packQuery(f, "Allowed.Test.", dnsmessage.TypeA, 0), true)
	if asked := u.take(); len(asked) != 1 || string(asked[0].wire) != "\x07allowed\x04test\x00" {
		f.Fatalf("the upstream was asked %+v; want allowed.test once", asked)
	}
	f.Fuzz(func(t *testing.T, in []byte, tcp bool) {
		if !tcp {
			checkServe(t, w, u, &events, in, true)
			return
		}
		r := bytes.NewReader(in)
		for range tcpQueries {
			off := len(in) - r.Len()
			req, err := readTCPMsg(r)
			if err != nil {
				if len(in)-off >= 2 && len(in)-off-2 >= int(binary.BigEndian.Uint16(in[off:])) {
					t.Fatalf("readTCPMsg at %d: %v, with a whole message there", off, err)
				}
				return
			}
			if n := int(binary.BigEndian.Uint16(in[off:])); len(req) != n || !bytes.Equal(req, in[off+2:off+2+n]) {
				t.Fatalf("readTCPMsg at %d read %d bytes; the prefix says %d", off, len(req), n)
			}
			out := checkServe(t, w, u, &events, req, false)
			if out == nil {
				return // serveDNSConn hangs up
			}
			var framed bytes.Buffer
			if err := writeTCPMsg(&framed, out); err != nil {
				t.Fatalf("writeTCPMsg of a %d-byte reply: %v", len(out), err)
			}
			if back, err := readTCPMsg(&framed); err != nil || !bytes.Equal(back, out) || framed.Len() != 0 {
				t.Fatalf("a %d-byte reply does not read back from its framing: %v", len(out), err)
			}
		}
	})
}

// checkServe serves one query and checks the reply, what the upstream was
// asked and the audit trail.
func checkServe(t *testing.T, w *Wall, u *fuzzUpstream, events *[]Event, b []byte, udp bool) []byte {
	t.Helper()
	w.res = newResolver(w) // nothing from the cache: every allowed name is asked
	*events = (*events)[:0]
	start := time.Now()
	out := w.res.serve(bytes.Clone(b), udp)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("serve took %v", d)
	}
	asked := u.take()

	var labels [][]byte
	end, named := walkQuestionName(b, func(l []byte) { labels = append(labels, l) })
	switch {
	case len(asked) > 1:
		t.Fatalf("one query, %d upstream questions", len(asked))
	case len(asked) == 1:
		a := asked[0]
		if !named {
			t.Fatalf("SECURITY: upstream asked %q for a question the wall cannot read", a.name)
		}
		if want := []byte(lowerASCII(string(b[dnsHeaderLen:end]))); !bytes.Equal(a.wire, want) {
			t.Fatalf("SECURITY: the pod asked %q, the upstream was asked %q", want, a.wire)
		}
		if !fuzzAllowedName(a.name) {
			t.Fatalf("SECURITY: a name the policy denies reached the upstream: %q", a.name)
		}
		if end+2 > len(b) {
			t.Fatalf("upstream asked %q for a question without a type", a.name)
		}
		if qt := binary.BigEndian.Uint16(b[end:]); a.qtype != qt {
			t.Fatalf("the pod asked type %d, the upstream type %d", qt, a.qtype)
		}
	}
	for _, ev := range *events {
		name, _ := ev.Details["name"].(string)
		if ev.Verdict == "allow" && (len(asked) != 1 || name+"." != asked[0].name) {
			t.Fatalf("audit: allowed %q; the upstream was asked %v", name, asked)
		}
	}
	if out == nil {
		return nil
	}
	if len(out) < dnsHeaderLen || out[0] != b[0] || out[1] != b[1] || out[2]&0x80 == 0 {
		t.Fatalf("reply %x is not a response to %x", out[:min(len(out), dnsHeaderLen)], b[:2])
	}
	limit := 0xffff
	var req dnsmessage.Message
	if udp {
		limit = minUDPSize
		if req.Unpack(b) == nil {
			limit = max(ednsUDPSize(&req), minUDPSize)
		}
	}
	if len(out) > limit {
		t.Fatalf("a %d-byte reply; the client takes %d", len(out), limit)
	}
	return out
}

// FuzzUpstreamReply: the upstream's reply to an allowed name is hostile
// (whoever runs the allowed name's servers writes it). It never panics or
// hangs the resolver; the pod gets a well-formed reply to its own ID and
// question, within its UDP size, with only the resolver's OPT record in
// the additional section, and with no A or AAAA record for an address the
// wall denies (loopback, private, link-local, metadata: DNS rebinding).
func FuzzUpstreamReply(f *testing.F) {
	reply := func(answers ...string) []byte {
		m := new(dns.Msg).SetQuestion("x.allowed.test.", dns.TypeA)
		m.Response, m.RecursionAvailable = true, true
		for _, s := range answers {
			rr, err := dns.NewRR(s)
			if err != nil {
				f.Fatal(err)
			}
			m.Answer = append(m.Answer, rr)
		}
		m.SetEdns0(4096, false)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	txt := make([]string, 40)
	for i := range txt {
		txt[i] = "x.allowed.test. 300 IN TXT \"" + strings.Repeat("t", 60) + "\""
	}
	one := reply("x.allowed.test. 60 IN A 203.0.114.7")
	for _, b := range [][]byte{
		one,
		reply("x.allowed.test. 60 IN A 127.0.0.1", "x.allowed.test. 60 IN A 169.254.169.254", "x.allowed.test. 60 IN A 203.0.114.8"),
		reply("x.allowed.test. 60 IN AAAA ::ffff:10.0.0.1", "x.allowed.test. 60 IN AAAA 64:ff9b::a9fe:a9fe"),
		reply("x.allowed.test. 60 IN CNAME evil.test.", "evil.test. 60 IN A 192.168.1.1"),
		reply(txt...),
		reply(),
	} {
		f.Add(b, true, uint16(0))
		f.Add(b, true, uint16(ednsSize))
		f.Add(b, false, uint16(0))
	}
	u := startFuzzUpstream(f)
	var events []Event
	w := fuzzWall(u, &events)
	// The harness itself: the upstream's reply reaches the pod.
	u.setReply(one)
	var m dnsmessage.Message
	if err := m.Unpack(w.res.serve(packQuery(f, "x.allowed.test.", dnsmessage.TypeA, 0), true)); err != nil || len(m.Answers) != 1 {
		f.Fatalf("the pod got %v (%v); want the upstream's one answer", m.Answers, err)
	}
	u.setReply(nil)
	u.take()
	f.Fuzz(func(t *testing.T, rep []byte, udp bool, edns uint16) {
		// Only a reply exchange takes reaches the pod; any other is skipped
		// until the upstream timeout, which a fuzzer cannot wait for.
		probe, err := newQuery("x.allowed.test", dnsmessage.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		patched := bytes.Clone(rep)
		if len(patched) >= 3 {
			binary.BigEndian.PutUint16(patched, probe.ID)
			patched[2] &^= 0x02
		}
		if _, ok := replyTo(probe, patched); !ok {
			return
		}
		u.setReply(rep)
		defer u.setReply(nil)
		q := packQuery(t, "x.allowed.test.", dnsmessage.TypeA, int(edns))
		out := checkServe(t, w, u, &events, q, udp)
		var m dnsmessage.Message
		if err := m.Unpack(out); err != nil {
			t.Fatalf("the pod's reply does not parse: %v", err)
		}
		if m.ID != 0x1234 || !m.Response || len(m.Questions) != 1 || m.Questions[0].Name.String() != "x.allowed.test." ||
			m.Questions[0].Type != dnsmessage.TypeA {
			t.Fatalf("reply header %+v, questions %v: not the reply to the pod's query", m.Header, m.Questions)
		}
		for _, rr := range m.Additionals {
			if rr.Header.Type != dnsmessage.TypeOPT || edns == 0 {
				t.Fatalf("additional record %v passed on from upstream", rr.Header)
			}
		}
		for _, rr := range m.Answers {
			if a, ok := rrAddr(rr); ok && rebinds(a) {
				t.Fatalf("SECURITY: the pod was handed %v", a)
			}
		}
	})
}

// rebinds is a restatement of the addresses a name must never point the
// pod at, written apart from CheckAddr.
func rebinds(a netip.Addr) bool {
	for _, b := range []netip.Addr{a, a.Unmap()} {
		if b.IsLoopback() || b.IsPrivate() || b.IsLinkLocalUnicast() || b.IsUnspecified() ||
			b.IsMulticast() || b == netip.MustParseAddr("169.254.169.254") {
			return true
		}
	}
	if a.Is6() && !a.Is4In6() && netip.MustParsePrefix("64:ff9b::/96").Contains(a) {
		return rebinds(netip.AddrFrom4([4]byte(a.AsSlice()[12:])))
	}
	return false
}
