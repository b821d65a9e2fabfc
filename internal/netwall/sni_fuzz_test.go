package netwall

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

// Fuzz targets for the proxy's reading of a client's first bytes, with
// crypto/tls's server side as the oracle of what a real TLS stack makes of
// the same bytes. Run one with
//
//	go test ./internal/netwall/ -run XXX -fuzz FuzzPeekFirst -fuzztime 3m

// memConn is a client that sends in and then EOF; what the server writes
// is dropped. A handshake over it ends when the input does.
type memConn struct{ r *bytes.Reader }

func (c memConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c memConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c memConn) Close() error                     { return nil }
func (c memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c memConn) SetDeadline(time.Time) error      { return nil }
func (c memConn) SetReadDeadline(time.Time) error  { return nil }
func (c memConn) SetWriteDeadline(time.Time) error { return nil }

var errSeenHello = errors.New("seen the ClientHello")

// tlsServerName is what crypto/tls's server reads as the SNI of a client
// that sends stream: ok is false when it finds no ClientHello it accepts.
func tlsServerName(stream []byte) (name string, ok bool) {
	srv := tls.Server(memConn{bytes.NewReader(stream)}, &tls.Config{
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			name, ok = chi.ServerName, true
			return nil, errSeenHello
		},
	})
	_ = srv.Handshake()
	return name, ok
}

// captureHello is the first record crypto/tls's client sends with cfg.
func captureHello(tb testing.TB, cfg *tls.Config) []byte {
	tb.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() { _ = tls.Client(a, cfg).Handshake() }()
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReaderSize(b, bufSize)
	head, err := br.Peek(5)
	if err != nil {
		tb.Fatal(err)
	}
	rec, err := br.Peek(5 + int(binary.BigEndian.Uint16(head[3:])))
	if err != nil {
		tb.Fatal(err)
	}
	return bytes.Clone(rec)
}

// record wraps a handshake record body in a TLS 1.0 record header, as
// clients send their first record.
func record(body []byte) []byte {
	return append([]byte{0x16, 3, 1, byte(len(body) >> 8), byte(len(body))}, body...)
}

func vec16(b []byte) []byte { return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...) }

func ext(typ uint16, data []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, typ), vec16(data)...)
}

// sniExt is a server_name extension listing names, each a host_name (0)
// unless written with a one-byte type prefix "\x01...".
func sniExt(names ...string) []byte {
	var list []byte
	for _, n := range names {
		typ := byte(0)
		if len(n) > 0 && n[0] < 8 {
			typ, n = n[0], n[1:]
		}
		list = append(append(list, typ), vec16([]byte(n))...)
	}
	return ext(0, vec16(list))
}

// helloBody is a minimal TLS 1.2 ClientHello handshake message with exts
// (nil: no extensions block at all).
func helloBody(exts []byte) []byte {
	b := []byte{3, 3}
	b = append(b, make([]byte, 32)...)
	b = append(b, 0)                      // session id
	b = append(b, 0, 2, 0xc0, 0x2f, 1, 0) // one suite, null compression
	if exts != nil {
		b = append(b, vec16(exts)...)
	}
	return append([]byte{1, byte(len(b) >> 16), byte(len(b) >> 8), byte(len(b))}, b...)
}

// helloSeeds are record bodies: crypto/tls's own ClientHellos and
// hand-written ones with the server_name tricks a hostile client would
// try (several names, several extensions, a name type other than
// host_name first, a trailing dot, a NUL, a port, trailing bytes).
func helloSeeds(tb testing.TB) [][]byte {
	var out [][]byte
	for _, cfg := range []*tls.Config{
		{ServerName: "allowed.test"},
		{ServerName: "Www.Allowed.Test", MaxVersion: tls.VersionTLS12},
		{ServerName: "x.allowed.test", NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS13},
		{ServerName: "allowed.test", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10},
		{InsecureSkipVerify: true},                            // no SNI
		{ServerName: "203.0.114.7", InsecureSkipVerify: true}, // an IP: no SNI either
	} {
		out = append(out, captureHello(tb, cfg)[5:])
	}
	pad := ext(21, make([]byte, 40))
	sni := func(names ...string) []byte { return helloBody(sniExt(names...)) }
	return append(out,
		helloBody(nil),
		helloBody([]byte{}),
		sni("allowed.test"),
		sni("ALLOWED.test"),
		helloBody(append(append(pad, sniExt("allowed.test")...), ext(16, []byte{0, 3, 2, 'h', '2'})...)),
		sni("allowed.test", "evil.test"),
		sni("\x01evil.test", "allowed.test"),
		sni("\x01allowed.test"),
		helloBody(append(sniExt("allowed.test"), sniExt("evil.test")...)),
		sni("allowed.test."),
		sni("allowed.test\x00.evil.test"),
		sni("allowed.test:443"),
		sni(" allowed.test"),
		sni("allowed.test\u00a0"),
		sni("\u212aey.allowed.test"),
		sni(""),
		helloBody(ext(0, append(vec16(append([]byte{0}, vec16([]byte("allowed.test"))...)), 0, 0, 0, 9, 'e'))),
		helloBody(ext(0, nil)),
		append(sni("allowed.test"), 0xff),
		sni("allowed.test")[:40],
	)
}

// sniOnly rebuilds the ClientHello in body as a minimal hello that keeps
// exactly its server_name extensions, in order and byte for byte, and
// nothing else: crypto/tls's verdict on it is its verdict on the SNI alone.
// ok is false when body's extensions cannot be walked.
func sniOnly(body []byte) ([]byte, bool) {
	r := reader(body)
	if _, ok := r.u8(); !ok {
		return nil, false
	}
	h, ok := r.vec(3)
	if !ok || !h.skip(2+32) || !h.skipVec(1) || !h.skipVec(2) || !h.skipVec(1) {
		return nil, false
	}
	exts, ok := h.vec(2)
	if !ok {
		return nil, false
	}
	var keep []byte
	for len(exts) > 0 {
		start := exts
		typ, ok1 := exts.u16()
		_, ok2 := exts.vec(2)
		if !ok1 || !ok2 {
			return nil, false
		}
		if typ == 0 {
			keep = append(keep, start[:len(start)-len(exts)]...)
		}
	}
	return record(helloBody(keep)), true
}

// FuzzClientHelloSNI: parseClientHelloSNI never panics and never returns
// a name with an error. Whenever crypto/tls's server accepts the same
// ClientHello (in one record), the parser reads the name it reads, or
// refuses. A name the parser returns is one crypto/tls accepts: the same
// server_name extensions alone, in a hello of their own, give crypto/tls
// exactly that name (not a second name, a second extension, an empty name
// or a trailing dot, which another stack might read otherwise).
func FuzzClientHelloSNI(f *testing.F) {
	for _, b := range helloSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		start := time.Now()
		name, err := parseClientHelloSNI(body)
		if err != nil && name != "" {
			t.Fatalf("%q with an error: %v", name, err)
		}
		if len(body) <= 16384 { // what one record holds
			if tname, ok := tlsServerName(record(body)); ok && err == nil && name != tname {
				t.Fatalf("SECURITY: the parser reads SNI %q, crypto/tls %q", name, tname)
			}
		}
		if name != "" {
			if skel, ok := sniOnly(body); ok {
				if tname, ok := tlsServerName(skel); !ok || tname != name {
					t.Fatalf("SECURITY: the parser reads SNI %q; crypto/tls, from the same server_name extensions, reads %q (accepted %v)",
						name, tname, ok)
				}
			}
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("took %v", d)
		}
	})
}

// FuzzPeekFirst: the client's whole first bytes, record layer included,
// against crypto/tls's server and against the proxy's own decisions.
// peekFirst never panics or returns a name with an error. A stream
// crypto/tls reads a ClientHello from is classified as TLS (else a CONNECT
// tunnel would pass it unread) and named as crypto/tls names it, or
// refused. A CONNECT tunnel to allowed.test (tunnelMatches) and a
// transparent connection to an address of allowed names
// (checkTransparent) let a TLS stream through only when the SNI
// crypto/tls reads is allowed.test, respectively an allowed name.
func FuzzPeekFirst(f *testing.F) {
	for _, b := range helloSeeds(f) {
		if len(b) <= 0xffff {
			f.Add(record(b))
		}
	}
	evil := record(helloBody(sniExt("evil.test")))
	f.Add(append([]byte{0x16, 0, 1}, evil[3:]...))          // record version 0.1
	f.Add(append([]byte{0x15, 3, 1, 0, 2, 1, 90}, evil...)) // a warning alert (user_canceled) first
	f.Add(append([]byte("\x15\x03\x03\x00\x02\x02\x28"), evil...))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"))
	f.Add([]byte("CONNECT evil.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\r\n"))
	f.Add([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
	u := startFuzzUpstream(f)
	var events []Event
	w := fuzzWall(u, &events)
	dst := netip.MustParseAddrPort("203.0.114.7:443") // what u resolves every name to
	f.Fuzz(func(t *testing.T, stream []byte) {
		start := time.Now()
		fb, err := peekFirst(bufio.NewReaderSize(bytes.NewReader(stream), bufSize))
		if err != nil && fb.name != "" {
			t.Fatalf("%+v with an error: %v", fb, err)
		}
		tname, tok := tlsServerName(stream)
		switch {
		case tok && !fb.tls:
			t.Fatalf("SECURITY: crypto/tls reads a ClientHello naming %q; the wall reads %+v, not TLS", tname, fb)
		case tok && err == nil && fb.name != lowerASCII(tname):
			t.Fatalf("SECURITY: the wall reads SNI %q, crypto/tls %q", fb.name, tname)
		}
		if _, ok := tunnelMatches(fb, err, "allowed.test"); ok && tok && lowerASCII(tname) != "allowed.test" {
			t.Fatalf("SECURITY: a tunnel to allowed.test passes a ClientHello crypto/tls reads as %q (wall: %+v, %v)", tname, fb, err)
		}
		if why, ok := w.checkTransparent(w.policy(), fb, err, dst); ok && tok && !fuzzAllowedName(lowerASCII(tname)) {
			t.Fatalf("SECURITY: a transparent connection passes (%s) with SNI %q as crypto/tls reads it (wall: %+v)", why, tname, fb)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("took %v", d)
		}
	})
}
