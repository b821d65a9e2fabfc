package netwall

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"net/http"
	"strings"
)

// firstBytes classifies what a client sent first without consuming it.
type firstBytes struct {
	tls  bool   // a TLS handshake record
	http bool   // an HTTP/1 request line
	name string // SNI (tls) or Host header (http), normalised; "" if absent
}

var errNoHello = errors.New("malformed TLS ClientHello")

// peekFirst looks at the start of a client stream. TLS is recognised by its
// record header and its SNI read from the ClientHello (the wall never
// terminates TLS); HTTP by a request line, and its Host header read.
func peekFirst(br *bufio.Reader) (firstBytes, error) {
	head, err := br.Peek(5)
	if err != nil {
		return firstBytes{}, err
	}
	// TLS is what crypto/tls's server takes for it (readRecordOrCCS): a
	// first record of type handshake or alert and any version below 16.0,
	// not only 3.x. Else a ClientHello in a record of version 0x0430, or
	// after a warning alert (which it skips), would pass a CONNECT tunnel
	// as "not TLS", its SNI unread. No client sends an alert first.
	if (head[0] == 0x16 || head[0] == 0x15) && head[1] < 0x10 {
		if head[0] == 0x15 {
			return firstBytes{tls: true}, errors.New("TLS stream begins with an alert, not a ClientHello")
		}
		n := int(binary.BigEndian.Uint16(head[3:5]))
		rec, err := br.Peek(5 + n)
		if err != nil {
			return firstBytes{tls: true}, err
		}
		name, err := parseClientHelloSNI(rec[5:])
		return firstBytes{tls: true, name: normName(name)}, err
	}
	if looksLikeHTTP(head) {
		host, err := peekHTTPHost(br)
		return firstBytes{http: true, name: host}, err
	}
	return firstBytes{}, nil
}

func looksLikeHTTP(head []byte) bool {
	for _, m := range []string{"GET ", "POST", "PUT ", "HEAD", "DELE", "OPTI", "PATC", "CONN", "TRAC"} {
		if strings.HasPrefix(string(head), m) {
			return true
		}
	}
	return false
}

// peekHTTPHost returns the Host header of the request at the head of br.
// It looks only at bytes already sent, asking for one more byte at a time,
// so a short request is never held waiting for a fuller buffer.
func peekHTTPHost(br *bufio.Reader) (string, error) {
	for want := 1; ; want = br.Buffered() + 1 {
		if want > br.Size() {
			return "", errors.New("HTTP request header too large")
		}
		if _, err := br.Peek(want); err != nil {
			return "", err
		}
		buf, _ := br.Peek(br.Buffered())
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(buf[:i+4])))
			if err != nil {
				return "", err
			}
			return normName(hostOnly(req.Host)), nil
		}
	}
}

// parseClientHelloSNI returns the host_name of the server_name extension
// of a TLS handshake record body holding a ClientHello ("" if none).
func parseClientHelloSNI(b []byte) (string, error) {
	r := reader(b)
	if typ, ok := r.u8(); !ok || typ != 1 { // client_hello
		return "", errNoHello
	}
	body, ok := r.vec(3)
	if !ok {
		return "", errors.New("TLS ClientHello spans several records; not supported")
	}
	r = body
	if !r.skip(2+32) || !r.skipVec(1) || !r.skipVec(2) || !r.skipVec(1) {
		return "", errNoHello
	}
	if len(r) == 0 {
		return "", nil // no extensions at all
	}
	exts, ok := r.vec(2)
	if !ok {
		return "", errNoHello
	}
	// Every extension is walked: a second server_name extension is
	// refused, not skipped, as crypto/tls and OpenSSL refuse it. Taking
	// the first would let a hello name allowed.test to the wall and
	// another name to a server that takes the last.
	var name string
	seen := false
	for len(exts) > 0 {
		typ, ok1 := exts.u16()
		data, ok2 := exts.vec(2)
		if !ok1 || !ok2 || typ == 0 && seen {
			return "", errNoHello
		}
		if typ == 0 {
			seen = true
			var err error
			if name, err = parseServerName(data); err != nil {
				return "", err
			}
		}
	}
	return name, nil
}

// parseServerName reads a server_name extension as crypto/tls does
// (RFC 6066 section 3), refusing what it refuses: an empty list, an empty
// name, a second host_name, a host_name with a trailing dot (the wall
// would check the name without it, the server see it with it), bytes
// after the list. Only then is the name one every server reads alike.
func parseServerName(data reader) (string, error) {
	list, ok := data.vec(2)
	if !ok || len(list) == 0 || len(data) != 0 {
		return "", errNoHello
	}
	var host []byte
	for len(list) > 0 {
		typ, ok1 := list.u8()
		name, ok2 := list.vec(2)
		switch {
		case !ok1 || !ok2 || len(name) == 0:
			return "", errNoHello
		case typ != 0: // not a host_name: crypto/tls skips it too
		case host != nil || name[len(name)-1] == '.':
			return "", errNoHello
		default:
			host = name
		}
	}
	return string(host), nil
}

// reader is a cursor over TLS wire data.
type reader []byte

func (r *reader) u8() (byte, bool) {
	if len(*r) < 1 {
		return 0, false
	}
	v := (*r)[0]
	*r = (*r)[1:]
	return v, true
}

func (r *reader) u16() (uint16, bool) {
	if len(*r) < 2 {
		return 0, false
	}
	v := binary.BigEndian.Uint16(*r)
	*r = (*r)[2:]
	return v, true
}

func (r *reader) skip(n int) bool {
	if len(*r) < n {
		return false
	}
	*r = (*r)[n:]
	return true
}

// vec reads a vector with an lenBytes-byte big-endian length prefix.
func (r *reader) vec(lenBytes int) (reader, bool) {
	if len(*r) < lenBytes {
		return nil, false
	}
	n := 0
	for _, c := range (*r)[:lenBytes] {
		n = n<<8 | int(c)
	}
	*r = (*r)[lenBytes:]
	if len(*r) < n {
		return nil, false
	}
	v := (*r)[:n]
	*r = (*r)[n:]
	return v, true
}

func (r *reader) skipVec(lenBytes int) bool {
	_, ok := r.vec(lenBytes)
	return ok
}
