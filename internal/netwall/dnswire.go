package netwall

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// DNS on the wire: the pod's resolver serves UDP and TCP and asks its
// upstreams over both, with golang.org/x/net/dns/dnsmessage doing the
// parsing and packing. (A general DNS library cost every start of the
// binary its package init and 300 KB of code, for what fits here.)

const (
	// ednsSize is the UDP payload size the resolver advertises and asks
	// for, the DNS flag day 2020 value.
	ednsSize = 1232
	// minUDPSize is the payload every DNS client accepts (RFC 1035).
	minUDPSize = 512
	// tcpIdle bounds a pod's idle TCP connection to the resolver, and
	// tcpQueries the queries one connection may carry.
	tcpIdle    = 8 * time.Second
	tcpQueries = 128
)

// serveDNSPackets answers the queries that arrive on pc until it is closed.
func (w *Wall) serveDNSPackets(pc net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		req := append([]byte(nil), buf[:n]...)
		w.goServe(func() {
			if out := w.res.serve(req, true); out != nil {
				_, _ = pc.WriteTo(out, from)
			}
		})
	}
}

// serveDNSConn answers length-prefixed queries on one TCP connection.
func (w *Wall) serveDNSConn(c *net.TCPConn) {
	for range tcpQueries {
		_ = c.SetReadDeadline(time.Now().Add(tcpIdle))
		req, err := readTCPMsg(c)
		if err != nil {
			return
		}
		out := w.res.serve(req, false)
		if out == nil {
			return
		}
		if err := writeTCPMsg(c, out); err != nil {
			return
		}
	}
}

func readTCPMsg(r io.Reader) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(n[:]))
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

func writeTCPMsg(w io.Writer, m []byte) error {
	if len(m) > 0xffff {
		return errors.New("DNS message longer than 64 KiB")
	}
	_, err := w.Write(append(binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(m)), uint16(len(m))), m...))
	return err
}

// wireQuestionName returns the first question's name of the packed
// message b in presentation form, a dot inside a label written "\.":
// dnsmessage joins labels with unescaped dots, so the one label
// "escaped.allowed" under "test" would read as a subdomain of allowed.test.
// The policy then sees the name as the pod sent it, and refuses it. A
// compressed question name (no client sends one) is refused.
func wireQuestionName(b []byte) (string, bool) {
	var out []byte
	end, ok := walkQuestionName(b, func(label []byte) {
		for _, c := range label {
			if c == '.' || c == '\\' {
				out = append(out, '\\')
			}
			out = append(out, c)
		}
		out = append(out, '.')
	})
	switch {
	case !ok:
		return "", false
	case end == dnsHeaderLen+1:
		return ".", true
	}
	return string(out), true
}

const (
	dnsHeaderLen = 12
	maxWireName  = 255 // RFC 1035 2.3.4: a name's wire form, length bytes and root label included
)

// walkQuestionName calls label for each label of the first question's
// name and returns the offset just past the name. A name longer than
// maxWireName is refused: dnsmessage refuses it, so it would reach
// unparsed, whose reply echoes the question and whose audit event holds
// the name, up to 64 KiB of the pod's bytes for each query.
func walkQuestionName(b []byte, label func([]byte)) (int, bool) {
	for i := dnsHeaderLen; i < len(b); {
		n := int(b[i])
		switch {
		case n == 0:
			return i + 1, true
		case n > 63 || i+1+n > len(b) || i+1+n+1-dnsHeaderLen > maxWireName: // +1: the root label to come
			return 0, false
		}
		label(b[i+1 : i+1+n])
		i += 1 + n
	}
	return 0, false
}

// questionEnd is the offset just past the first question (name, type and
// class).
func questionEnd(b []byte) (int, bool) {
	end, ok := walkQuestionName(b, func([]byte) {})
	if !ok || end+4 > len(b) {
		return 0, false
	}
	return end + 4, true
}

// exchange sends q to srv over network ("udp" or "tcp") and returns the
// reply that carries q's ID and question.
func exchange(network string, q *dnsmessage.Message, srv string) (*dnsmessage.Message, error) {
	b, err := q.Pack()
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: upstreamTimeout}
	c, err := d.DialContext(context.Background(), network, srv)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(upstreamTimeout))
	if network == "tcp" {
		return exchangeTCP(c, q, b)
	}
	if _, err := c.Write(b); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		// Replies that are not to this query (late, or forged by a guess)
		// are skipped until the deadline.
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		if m, ok := replyTo(q, buf[:n]); ok {
			return m, nil
		}
	}
}

func exchangeTCP(c net.Conn, q *dnsmessage.Message, b []byte) (*dnsmessage.Message, error) {
	if err := writeTCPMsg(c, b); err != nil {
		return nil, err
	}
	for {
		r, err := readTCPMsg(c)
		if err != nil {
			return nil, err
		}
		if m, ok := replyTo(q, r); ok {
			return m, nil
		}
	}
}

func replyTo(q *dnsmessage.Message, b []byte) (*dnsmessage.Message, bool) {
	var m dnsmessage.Message
	if m.Unpack(b) != nil || !m.Response || m.ID != q.ID ||
		len(m.Questions) != 1 || !sameQuestion(m.Questions[0], q.Questions[0]) {
		return nil, false
	}
	return &m, true
}

func sameQuestion(a, b dnsmessage.Question) bool {
	return a.Type == b.Type && a.Class == b.Class && normName(a.Name.String()) == normName(b.Name.String())
}

// newQuery is a recursive query for (name, qtype) with a random ID and an
// EDNS0 record advertising ednsSize.
func newQuery(name string, qtype dnsmessage.Type) (*dnsmessage.Message, error) {
	n, err := dnsmessage.NewName(fqdn(name))
	if err != nil {
		return nil, err
	}
	var id [2]byte
	_, _ = rand.Read(id[:])
	return &dnsmessage.Message{
		Header:      dnsmessage.Header{ID: binary.BigEndian.Uint16(id[:]), RecursionDesired: true},
		Questions:   []dnsmessage.Question{{Name: n, Type: qtype, Class: dnsmessage.ClassINET}},
		Additionals: []dnsmessage.Resource{ednsRecord()},
	}, nil
}

func fqdn(name string) string {
	if len(name) == 0 || name[len(name)-1] != '.' {
		return name + "."
	}
	return name
}

// ednsRecord is an OPT record for ednsSize, no extended flags.
func ednsRecord() dnsmessage.Resource {
	return dnsmessage.Resource{
		Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("."), Type: dnsmessage.TypeOPT, Class: ednsSize},
		Body:   &dnsmessage.OPTResource{},
	}
}

// ednsUDPSize is the UDP payload size the query's OPT record advertises,
// or 0 without one.
func ednsUDPSize(m *dnsmessage.Message) int {
	for _, r := range m.Additionals {
		if r.Header.Type == dnsmessage.TypeOPT {
			return int(r.Header.Class)
		}
	}
	return 0
}

// packFitting packs m into at most size bytes, dropping answer and
// authority records from the end (and setting TC) until it fits, then the
// questions: a query may carry hundreds (QDCOUNT is the pod's to set),
// which its reply echoes. The OPT record stays.
func packFitting(m *dnsmessage.Message, size int) ([]byte, error) {
	b, err := m.Pack()
	if err != nil || len(b) <= size {
		return b, err
	}
	t := *m
	t.Truncated = true
	for len(t.Answers)+len(t.Authorities) > 0 {
		if n := len(t.Authorities); n > 0 {
			t.Authorities = t.Authorities[:n-1]
		} else {
			t.Answers = t.Answers[:len(t.Answers)-1]
		}
		if b, err = t.Pack(); err != nil || len(b) <= size {
			return b, err
		}
	}
	if b, err = t.Pack(); err != nil || len(b) <= size {
		return b, err
	}
	t.Questions = nil
	return t.Pack()
}

// typeNames are the presentation names the audit trail uses for query
// types; others are written TYPEn (RFC 3597).
var typeNames = [...]string{
	1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT", 17: "RP",
	18: "AFSDB", 24: "SIG", 25: "KEY", 28: "AAAA", 29: "LOC", 33: "SRV", 35: "NAPTR", 36: "KX",
	37: "CERT", 39: "DNAME", 41: "OPT", 42: "APL", 43: "DS", 44: "SSHFP", 45: "IPSECKEY", 46: "RRSIG",
	47: "NSEC", 48: "DNSKEY", 49: "DHCID", 50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA", 53: "SMIMEA",
	55: "HIP", 59: "CDS", 60: "CDNSKEY", 61: "OPENPGPKEY", 62: "CSYNC", 63: "ZONEMD", 64: "SVCB",
	65: "HTTPS", 99: "SPF", 108: "EUI48", 109: "EUI64", 249: "TKEY", 250: "TSIG", 251: "IXFR",
	252: "AXFR", 255: "ANY", 256: "URI", 257: "CAA",
}

func typeName(t dnsmessage.Type) string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return "TYPE" + strconv.Itoa(int(t))
}

var rcodeNames = [...]string{"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
	"YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE"}

func rcodeName(c dnsmessage.RCode) string {
	if int(c) < len(rcodeNames) {
		return rcodeNames[c]
	}
	return "RCODE" + strconv.Itoa(int(c))
}
