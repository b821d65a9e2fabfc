package netwall

// Secret injection for the vault (invariant 4): the agent holds only
// placeholders; the proxy terminates the agent's TLS with the pod's CA,
// swaps a placeholder for its value in requests to the hosts the secret
// is bound to, verifies the real server against the host's trust store,
// and blocks (and reports as a leak) a placeholder going anywhere else.
//
// Invariants:
//   - A value is sent only over TLS verified for a host the secret is
//     bound to: never over plain HTTP, never to another host.
//   - Events name the secret and the host, never the value.

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// Secret is one proxy-mode secret.
type Secret struct {
	Name        string
	Placeholder string   // what the agent holds instead of Value
	Value       []byte   // cleared by Wall.Close
	Hosts       []string // exact host names the value may go to
	Header      string   // optional "Name: text with {}", set on every request to Hosts
}

// Injection switches on TLS interception for a pod with proxy-mode
// secrets. Every TLS connection through the proxy is then terminated, so
// a placeholder cannot slip to an unbound host inside a tunnel.
type Injection struct {
	Secrets []Secret
	CACert  *x509.Certificate
	CAKey   crypto.Signer
	// Roots verifies the real servers; nil means the host's system pool
	// (which honours SSL_CERT_FILE / SSL_CERT_DIR).
	Roots *x509.CertPool
}

const (
	bodyScanLimit    = 16 * 1024
	handshakeTimeout = 10 * time.Second
	leafLifetime     = 7 * 24 * time.Hour
	// maxHeaderBytes bounds what the proxy reads of one request's line
	// and headers: a pod cannot grow the supervisor without limit.
	maxHeaderBytes = 1 << 20
	// maxLeaves bounds the leaf cache (a wildcard policy admits any
	// number of names); past it the cache starts over.
	maxLeaves = 1024
)

type injector struct {
	secrets []Secret
	caCert  *x509.Certificate
	caKey   crypto.Signer
	roots   *x509.CertPool
	leafKey *ecdsa.PrivateKey
	// upSessions resumes TLS sessions with the real servers: a new agent
	// connection then costs no second certificate verification.
	upSessions tls.ClientSessionCache

	mu     sync.Mutex
	leaves map[string]*tls.Certificate
}

// SetInjection installs the secrets and CA; nil or no secrets turns
// interception off.
func (w *Wall) SetInjection(in *Injection) error {
	if in == nil || len(in.Secrets) == 0 {
		w.inj.Store(nil)
		return nil
	}
	if in.CACert == nil || in.CAKey == nil {
		return errdefs.Invalid("secret injection needs the pod's CA certificate and key")
	}
	inj := &injector{caCert: in.CACert, caKey: in.CAKey, roots: in.Roots, leaves: map[string]*tls.Certificate{},
		upSessions: tls.NewLRUClientSessionCache(256)}
	if inj.roots == nil {
		pool, err := x509.SystemCertPool()
		if err != nil {
			return fmt.Errorf("loading the host's trust store for secret injection: %w", err)
		}
		inj.roots = pool
	}
	for _, s := range in.Secrets {
		if s.Name == "" || len(s.Placeholder) < 16 || len(s.Value) == 0 {
			return errdefs.Invalid("secret %q: needs a name, a placeholder of 16+ bytes and a value", s.Name)
		}
		s.Hosts = append([]string(nil), s.Hosts...)
		for i := range s.Hosts {
			s.Hosts[i] = normName(strings.TrimSpace(s.Hosts[i]))
		}
		inj.secrets = append(inj.secrets, s)
	}
	var err error
	if inj.leafKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return err
	}
	w.inj.Store(inj)
	return nil
}

// forgetSecrets clears the values when the wall closes.
func (w *Wall) forgetSecrets() {
	if inj := w.inj.Swap(nil); inj != nil {
		for _, s := range inj.secrets {
			clear(s.Value)
		}
	}
}

// boundHost reports whether a secret may go to host.
func (inj *injector) boundHost(host string) bool {
	for i := range inj.secrets {
		if inj.secrets[i].boundTo(host) {
			return true
		}
	}
	return false
}

func (s *Secret) boundTo(host string) bool {
	for _, h := range s.Hosts {
		if h == host {
			return true
		}
	}
	return false
}

// leaf returns a certificate for host signed by the pod's CA, cached.
func (inj *injector) leaf(host string) (*tls.Certificate, error) {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	if c, ok := inj.leaves[host]; ok && time.Until(c.Leaf.NotAfter) > time.Hour {
		return c, nil
	}
	if len(inj.leaves) >= maxLeaves {
		clear(inj.leaves)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(leafLifetime)
	if notAfter.After(inj.caCert.NotAfter) {
		notAfter = inj.caCert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, inj.caCert, &inj.leafKey.PublicKey, inj.caKey)
	if err != nil {
		return nil, fmt.Errorf("issuing a certificate for %s: %w", host, err)
	}
	leaf, _ := x509.ParseCertificate(der)
	c := &tls.Certificate{Certificate: [][]byte{der, inj.caCert.Raw}, PrivateKey: inj.leafKey, Leaf: leaf}
	inj.leaves[host] = c
	return c, nil
}

// peekedConn reads through the bufio.Reader that already holds the
// client's first bytes.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// serveTunnel takes over a checked connection (CONNECT tunnel or
// transparent) to host whose upstream up is already dialed to a checked
// address. It fills ev's verdict.
func (w *Wall) serveTunnel(inj *injector, c *net.TCPConn, br *bufio.Reader, up *net.TCPConn, host string, ev *Event, reason string) {
	_ = c.SetReadDeadline(time.Now().Add(firstBytesTimeout))
	fb, perr := peekFirst(br)
	_ = c.SetReadDeadline(time.Time{})
	if why, ok := tunnelMatches(fb, perr, host); !ok {
		ev.Verdict, ev.Reason = "deny", why
		return
	}
	ev.Verdict, ev.Reason = "allow", reason
	switch {
	case fb.tls:
		w.serveTLS(inj, c, br, up, host, ev)
	case fb.http:
		ev.Details["requests"] = w.serveHTTP(inj, c, br, up, bufio.NewReader(up), host, false, ev)
	default:
		head, _ := br.Peek(br.Buffered())
		if s, _ := inj.scanBytes(head, host, false); s != nil {
			w.reportLeak(ev, s, host, "stream")
			return
		}
		startRelay(c, up).finish(br, ev, reason)
	}
}

// serveTLS terminates the agent's TLS with a leaf for host and opens a
// verified TLS connection to the real server over up.
func (w *Wall) serveTLS(inj *injector, c *net.TCPConn, br *bufio.Reader, up *net.TCPConn, host string, ev *Event) {
	cert, err := inj.leaf(host)
	if err != nil {
		ev.Verdict, ev.Reason = "error", err.Error()
		return
	}
	tc := tls.Server(&peekedConn{Conn: c, r: br}, &tls.Config{
		Certificates: []tls.Certificate{*cert}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12,
	})
	_ = tc.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := tc.Handshake(); err != nil {
		ev.Verdict, ev.Reason = "error", "TLS handshake with the agent: "+err.Error()
		return
	}
	_ = tc.SetDeadline(time.Time{})
	uc := tls.Client(up, &tls.Config{ServerName: host, RootCAs: inj.roots, NextProtos: []string{"http/1.1"},
		MinVersion: tls.VersionTLS12, ClientSessionCache: inj.upSessions})
	_ = uc.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := uc.Handshake(); err != nil {
		ev.Verdict, ev.Reason = "deny", "upstream TLS of "+host+" not trusted: "+err.Error()
		writeStatus(tc, http.StatusBadGateway, ev.Reason)
		return
	}
	_ = uc.SetDeadline(time.Time{})
	defer uc.Close()
	ev.Details["intercepted"] = true
	ev.Details["requests"] = w.serveHTTP(inj, tc, tc, uc, bufio.NewReader(uc), host, true, ev)
}

// serveHTTP relays HTTP/1.1 requests read from src one at a time,
// rewriting each; it returns how many went upstream.
func (w *Wall) serveHTTP(inj *injector, client io.Writer, src io.Reader, up io.ReadWriter, ubr *bufio.Reader, host string, verified bool, ev *Event) int {
	lim := &capReader{r: src}
	cbr := bufio.NewReader(lim)
	n := 0
	for {
		lim.left = maxHeaderBytes
		req, err := http.ReadRequest(cbr)
		if err != nil {
			if errors.Is(err, errHeaderTooLarge) {
				ev.Verdict, ev.Reason = "deny", "request headers larger than 1 MiB"
				writeStatus(client, http.StatusRequestHeaderFieldsTooLarge, ev.Reason)
			}
			return n
		}
		lim.left = math.MaxInt64
		if normName(hostOnly(req.Host)) != host {
			ev.Verdict, ev.Reason = "deny", "HTTP Host "+fmt.Sprintf("%q", req.Host)+" does not match "+host
			writeStatus(client, http.StatusForbidden, ev.Reason)
			return n
		}
		if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
			_, _ = io.WriteString(client, "HTTP/1.1 100 Continue\r\n\r\n")
			req.Header.Del("Expect")
		}
		used, leak, where := inj.rewrite(req, host, verified)
		if leak != nil {
			w.reportLeak(ev, leak, host, where)
			writeStatus(client, http.StatusForbidden, "request blocked: it carries the placeholder of a secret that is not bound to "+host)
			return n
		}
		for _, s := range used {
			w.report(Event{Kind: "secret", Verdict: "allow", Reason: "bound host",
				Details: map[string]any{"secret": s, "host": host, "method": req.Method}})
		}
		body := verified && inj.boundHost(host)
		if !inj.forwardRequest(client, up, ubr, req, body, func(s *Secret) { w.reportLeak(nil, s, host, "response") }) {
			return n + 1
		}
		n++
	}
}

// forwardRequest sends req upstream and its response back, with any
// secret value in the response turned back into its placeholder (a host
// that echoes what it was sent must not hand the value to the agent);
// false ends the connection.
func (inj *injector) forwardRequest(client, up io.Writer, ubr *bufio.Reader, req *http.Request, scanBody bool, echoed func(*Secret)) bool {
	for _, h := range hopHeaders {
		req.Header.Del(h)
	}
	if err := req.Write(up); err != nil {
		writeStatus(client, http.StatusBadGateway, "sending the request upstream failed")
		return false
	}
	resp, err := http.ReadResponse(ubr, req)
	if err != nil {
		writeStatus(client, http.StatusBadGateway, "reading the upstream response: "+err.Error())
		return false
	}
	defer resp.Body.Close()
	unknownLen := resp.ContentLength < 0 && len(resp.TransferEncoding) == 0
	inj.redactResponse(resp, scanBody, echoed)
	// Response.Write does not buffer: a small answer of known length goes
	// out in one TLS record and syscall instead of one per header line.
	// Open-ended answers stay unbuffered so that streamed events flow.
	if resp.ContentLength >= 0 && resp.ContentLength <= redactBufferLimit {
		bw := respWriters.Get().(*bufio.Writer)
		bw.Reset(client)
		err := resp.Write(bw)
		if err == nil {
			err = bw.Flush()
		}
		bw.Reset(nil)
		respWriters.Put(bw)
		if err != nil {
			return false
		}
	} else if resp.Write(client) != nil {
		return false
	}
	return !(req.Close || resp.Close || unknownLen)
}

var respWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

// redactResponse replaces secret values in the response's headers and, if
// scanBody and it is not content-encoded, in its body (streamed, re-framed
// as chunked). Bodies are scanned for the hosts that receive values, whose
// requests go without Accept-Encoding so that their answers come plain.
func (inj *injector) redactResponse(resp *http.Response, scanBody bool, echoed func(*Secret)) {
	once := map[string]bool{}
	hit := func(s *Secret) {
		if !once[s.Name] {
			once[s.Name] = true
			echoed(s)
		}
	}
	for i := range inj.secrets {
		s := &inj.secrets[i]
		if replaceHeaders(resp.Header, string(s.Value), s.Placeholder) {
			hit(s)
		}
	}
	if !scanBody {
		return
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return // compressed: see the known gaps in docs/vault.md
	}
	if resp.Body == nil || resp.Body == http.NoBody || resp.ContentLength == 0 {
		return
	}
	d := &redactor{r: resp.Body, secrets: inj.secrets, hit: hit}
	if resp.ContentLength > 0 && resp.ContentLength <= redactBufferLimit {
		// A small answer of known length (the usual API reply) is read
		// whole and keeps an exact Content-Length.
		b := make([]byte, resp.ContentLength)
		n, err := io.ReadFull(resp.Body, b)
		b = d.replace(b[:n])
		resp.Body = readCloser{io.MultiReader(bytes.NewReader(b), errReader{err}), resp.Body}
		resp.ContentLength = int64(len(b))
		return
	}
	resp.Body = readCloser{d, resp.Body}
	resp.ContentLength = -1
	resp.Header.Del("Content-Length")
	resp.TransferEncoding = []string{"chunked"}
	resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.1", 1, 1 // chunked needs 1.1
}

// redactBufferLimit is the largest answer redacted in memory.
const redactBufferLimit = 256 << 10

// errReader returns err (or EOF) once the buffered body is used up.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	return 0, io.EOF
}

// redactor streams r with every secret value replaced by its placeholder.
// It holds back only a tail that could be the start of a value, so a
// streamed response (server-sent events) is not delayed.
type redactor struct {
	r       io.Reader
	secrets []Secret
	hit     func(*Secret)
	pending []byte // read, not yet safe to return
	out     []byte // ready to return
	buf     []byte
	err     error
}

func (d *redactor) Read(p []byte) (int, error) {
	for len(d.out) == 0 {
		if d.err != nil {
			if len(d.pending) == 0 {
				return 0, d.err
			}
			d.out, d.pending = d.pending, nil
			break
		}
		if d.buf == nil {
			d.buf = make([]byte, 16<<10)
		}
		n, err := d.r.Read(d.buf)
		d.err = err
		d.pending = d.replace(append(d.pending, d.buf[:n]...))
		keep := 0
		if d.err == nil {
			keep = d.partialTail(d.pending)
		}
		cut := len(d.pending) - keep
		d.out = d.pending[:cut:cut]
		d.pending = append([]byte(nil), d.pending[cut:]...)
	}
	n := copy(p, d.out)
	d.out = d.out[n:]
	return n, nil
}

func (d *redactor) replace(b []byte) []byte {
	for i := range d.secrets {
		s := &d.secrets[i]
		if bytes.Contains(b, s.Value) {
			b = bytes.ReplaceAll(b, s.Value, []byte(s.Placeholder))
			d.hit(s)
		}
	}
	return b
}

// partialTail is the length of the longest end of b that begins a value.
func (d *redactor) partialTail(b []byte) int {
	best := 0
	for i := range d.secrets {
		v := d.secrets[i].Value
		for k := min(len(v)-1, len(b)); k > best; k-- {
			if bytes.HasSuffix(b, v[:k]) {
				best = k
				break
			}
		}
	}
	return best
}

// rewrite, for a secret bound to host (over verified TLS only), sets its
// header template or, without one, swaps its placeholder in header values,
// path and query; it reports the first placeholder that would reach a host
// it is not bound to. It returns the names of the secrets used.
func (inj *injector) rewrite(req *http.Request, host string, verified bool) (used []string, leak *Secret, where string) {
	if s, w := inj.scanRequest(req, host, verified); s != nil {
		return nil, s, w
	}
	if verified && inj.boundHost(host) {
		req.Header.Del("Accept-Encoding") // plain answers, so that echoes can be redacted
	}
	for i := range inj.secrets {
		s := &inj.secrets[i]
		if !verified || !s.boundTo(host) {
			continue
		}
		val := string(s.Value)
		if name, tmpl, ok := strings.Cut(s.Header, ":"); ok {
			// A template is the only place the value goes: a placeholder
			// the agent put in a path, query or other header (where the
			// host might store and publish it) stays a placeholder.
			req.Header.Set(strings.TrimSpace(name), strings.ReplaceAll(strings.TrimSpace(tmpl), "{}", val))
			used = append(used, s.Name)
			continue
		}
		hit := replaceHeaders(req.Header, s.Placeholder, val)
		if replaceURL(req.URL, s.Placeholder, val) || hit {
			used = append(used, s.Name)
		}
	}
	return used, nil, ""
}

// scanRequest finds a placeholder in the request line, headers or the
// first bytes of the body that may not go to host.
func (inj *injector) scanRequest(req *http.Request, host string, verified bool) (*Secret, string) {
	if s, _ := inj.scanBytes([]byte(req.RequestURI+" "+req.URL.String()), host, verified); s != nil {
		return s, "url"
	}
	var hb bytes.Buffer
	_ = req.Header.Write(&hb)
	hb.WriteString(req.Host)
	if s, _ := inj.scanBytes(hb.Bytes(), host, verified); s != nil {
		return s, "header"
	}
	if req.Body == nil || req.Body == http.NoBody {
		return nil, ""
	}
	head := make([]byte, bodyScanLimit)
	n, _ := io.ReadFull(req.Body, head)
	head = head[:n]
	req.Body = readCloser{io.MultiReader(bytes.NewReader(head), req.Body), req.Body}
	if s, _ := inj.scanBytes(head, host, verified); s != nil {
		return s, "body"
	}
	return nil, ""
}

// scanBytes returns the first secret whose placeholder is in b but may not
// go to host. Bound placeholders may, over verified TLS.
func (inj *injector) scanBytes(b []byte, host string, verified bool) (*Secret, bool) {
	for i := range inj.secrets {
		s := &inj.secrets[i]
		if verified && s.boundTo(host) {
			continue
		}
		if bytes.Contains(b, []byte(s.Placeholder)) {
			return s, true
		}
	}
	return nil, false
}

// capReader fails once left bytes have been read.
type capReader struct {
	r    io.Reader
	left int64
}

var errHeaderTooLarge = errors.New("request header too large")

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

type readCloser struct {
	io.Reader
	io.Closer
}

func replaceHeaders(h http.Header, old, val string) bool {
	hit := false
	for k, vs := range h {
		for i, v := range vs {
			if strings.Contains(v, old) {
				h[k][i] = strings.ReplaceAll(v, old, val)
				hit = true
			}
		}
	}
	return hit
}

func replaceURL(u *url.URL, old, val string) bool {
	hit := false
	if strings.Contains(u.RawQuery, old) {
		u.RawQuery = strings.ReplaceAll(u.RawQuery, old, url.QueryEscape(val))
		hit = true
	}
	if strings.Contains(u.Path, old) {
		u.Path = strings.ReplaceAll(u.Path, old, val)
		u.RawPath = ""
		hit = true
	}
	return hit
}

// reportLeak records an attempted leak of s; ev, the connection's event,
// is marked denied unless nil (a value redacted from a response: the
// connection goes on).
func (w *Wall) reportLeak(ev *Event, s *Secret, host, where string) {
	reason := "placeholder of secret " + s.Name + " blocked on its way to " + host
	details := map[string]any{"secret": s.Name, "host": host, "where": where}
	if ev == nil {
		reason = "value of secret " + s.Name + " in a response from " + host + " replaced by its placeholder"
	} else {
		ev.Verdict, ev.Reason = "deny", reason
		details["path"] = ev.Details["path"]
	}
	w.report(Event{Kind: "leak", Verdict: "deny", Reason: reason, Details: details})
}
