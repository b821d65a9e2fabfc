package netwall

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/internal/testutil"
	"github.com/airlock-dev/airlock/internal/testutil/netlab"
)

const (
	injValue = "canary-real-value-7c1e9a"
	injPH    = "airlock-placeholder-API_KEY-0123456789abcdef"
	injPH2   = "airlock-placeholder-TEMPLATED-fedcba9876543210"
)

// recorder is the bound host's HTTPS server: it keeps what it received.
type recorder struct {
	mu  sync.Mutex
	got []string // "header|query|body" per request
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path == "/echo-big" { // the same, streamed, past the in-memory limit
		pad := strings.Repeat("x", 300<<10)
		fmt.Fprintf(w, "%s[%s]", pad, req.Header.Get("Authorization"))
		w.(http.Flusher).Flush()
		fmt.Fprintf(w, "[%s]%s", req.Header.Get("Authorization"), pad)
		return
	}
	if req.URL.Path == "/echo" { // a bound host that reflects what it was sent
		w.Header().Set("X-Echo", req.Header.Get("Authorization"))
		fmt.Fprintf(w, "you sent: %s %s\n", req.Header.Get("Authorization"), req.URL.RawQuery)
		return
	}
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.got = append(r.got, req.Host+"|"+req.Header.Get("Authorization")+"|"+req.Header.Get("X-Api-Key")+"|"+req.URL.RawQuery+"|"+string(body))
	r.mu.Unlock()
	io.WriteString(w, "ok\n")
}

func (r *recorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.got, "\n")
}

func newTestCA(t testing.TB) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "test pod CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

type injEnv struct {
	inet   *internet
	pod    *testPod
	wall   *Wall
	log    *auditLog
	rec    *recorder
	podCAs *x509.CertPool // what the pod trusts: its CA only
	upPool *x509.CertPool // the upstream server's root
}

// newInjEnv serves the recorder on 198.18.0.2:8443 (allowed.test and
// www.allowed.test resolve there) and binds API_KEY to allowed.test.
func newInjEnv(t testing.TB, trustUpstream bool) *injEnv {
	testutil.RequireRoot(t)
	e := &injEnv{inet: newInternet(t), pod: startPod(t), log: &auditLog{}, rec: &recorder{}}
	up, err := netlab.SelfSigned(certNames...)
	if err != nil {
		t.Fatal(err)
	}
	cert, upPool := up.TLS, up.Pool
	l, _, err := e.inet.Listen("tcp4", "198.18.0.2:8443")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: e.rec, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	go srv.Serve(tls.NewListener(l, srv.TLSConfig))
	t.Cleanup(func() { srv.Close() })
	pol := testPolicy()
	pol.Ports = []int{80, 443, 8443}
	if e.wall, err = Setup(e.pod.pid(), pol, e.log.add); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.wall.Close() })
	e.upPool = upPool
	if !trustUpstream {
		upPool = x509.NewCertPool()
	}
	ca, caKey := newTestCA(t)
	e.podCAs = x509.NewCertPool()
	e.podCAs.AddCert(ca)
	err = e.wall.SetInjection(&Injection{CACert: ca, CAKey: caKey, Roots: upPool, Secrets: []Secret{
		{Name: "API_KEY", Placeholder: injPH, Value: []byte(injValue), Hosts: []string{"allowed.test"}},
		{Name: "TEMPLATED", Placeholder: injPH2, Value: []byte(injValue + "-2"), Hosts: []string{"allowed.test"}, Header: "X-Api-Key: k={}"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *injEnv) do(t *testing.T, method, url, body string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for i := 0; i+1 < len(hdr) && hdr[i] != ""; i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.pod.client(e.podCAs, true).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestInjectionSwapsOnlyForBoundHost(t *testing.T) {
	e := newInjEnv(t, true)
	code, body := e.do(t, "GET", "https://allowed.test:8443/x?key="+injPH, "", "Authorization", "Bearer "+injPH)
	if code != 200 {
		t.Fatalf("bound request: %d %s\n%s", code, body, e.log.dump())
	}
	// A templated secret goes only into its template: its placeholder
	// elsewhere (here the query, which a host may store) stays one.
	code, body = e.do(t, "GET", "https://allowed.test:8443/x?t="+injPH2, "")
	if code != 200 {
		t.Fatalf("bound request: %d %s\n%s", code, body, e.log.dump())
	}
	got := e.rec.all()
	want := "allowed.test:8443|Bearer " + injValue + "|k=" + injValue + "-2|key=" + injValue + "|\n" +
		"allowed.test:8443||k=" + injValue + "-2|t=" + injPH2 + "|"
	if got != want {
		t.Fatalf("server received %q, want %q", got, want)
	}
	if _, ok := e.log.find("secret", "allow", "API_KEY", "allowed.test"); !ok {
		t.Errorf("use of API_KEY not audited:\n%s", e.log.dump())
	}
	// The attacker sends the placeholder to another allowed host: in a
	// header, in the URL, in the body, and over plain http.
	for _, c := range []struct{ method, url, body, hk, hv string }{
		{"GET", "https://www.allowed.test:8443/", "", "Authorization", "Bearer " + injPH},
		{"GET", "https://www.allowed.test:8443/?q=" + injPH, "", "", ""},
		{"POST", "https://www.allowed.test:8443/", "token=" + injPH, "", ""},
		{"GET", "http://allowed.test/", "", "X-Token", injPH},
	} {
		code, body := e.do(t, c.method, c.url, c.body, c.hk, c.hv)
		if code != http.StatusForbidden {
			t.Errorf("%s %s with placeholder: status %d %q, want 403", c.method, c.url, code, body)
		}
	}
	if got2 := e.rec.all(); got2 != got {
		t.Errorf("a blocked request reached the server: %q", got2)
	}
	if _, ok := e.log.find("leak", "deny", "API_KEY", "www.allowed.test"); !ok {
		t.Errorf("leak not audited:\n%s", e.log.dump())
	}
	if strings.Contains(e.log.dump(), injValue) {
		t.Errorf("secret value in the audit events:\n%s", e.log.dump())
	}
}

func TestInjectionRefusesUntrustedUpstream(t *testing.T) {
	e := newInjEnv(t, false)
	code, body := e.do(t, "GET", "https://allowed.test:8443/", "", "Authorization", "Bearer "+injPH)
	if code != http.StatusBadGateway || !strings.Contains(body, "not trusted") {
		t.Fatalf("untrusted upstream: %d %q, want 502", code, body)
	}
	if got := e.rec.all(); got != "" {
		t.Fatalf("request reached an unverified server: %q", got)
	}
}

func TestInjectionPassesCleanTrafficAndBoundsHeaders(t *testing.T) {
	e := newInjEnv(t, true)
	// Traffic without a placeholder to an unbound host still flows
	// through interception, and gets no secret.
	if code, body := e.do(t, "GET", "https://www.allowed.test:8443/plain", ""); code != 200 {
		t.Fatalf("clean request to an unbound host: %d %q", code, body)
	}
	if got := e.rec.all(); got != "www.allowed.test:8443||||" {
		t.Fatalf("unbound host received %q, want no secret", got)
	}
	// A pod cannot make the supervisor buffer an endless header.
	code, _ := e.do(t, "GET", "https://www.allowed.test:8443/big", "", "X-Big", strings.Repeat("a", 2<<20))
	if code != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("2 MiB header: status %d, want 431", code)
	}
	if got := e.rec.all(); strings.Count(got, "\n") != 0 {
		t.Fatalf("oversized request reached the server: %q", got)
	}
}

// A bound host that reflects the request must not hand the value back:
// the proxy turns it into the placeholder again, in headers and body, and
// audits the attempt.
func TestInjectionRedactsEchoedValue(t *testing.T) {
	e := newInjEnv(t, true)
	req, _ := http.NewRequest("GET", "https://allowed.test:8443/echo?k="+injPH, nil)
	req.Header.Set("Authorization", "Bearer "+injPH)
	resp, err := e.pod.client(e.podCAs, true).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	all := resp.Header.Get("X-Echo") + string(body)
	if strings.Contains(all, injValue) || !strings.Contains(string(body), "you sent: Bearer "+injPH+" k="+injPH) ||
		resp.Header.Get("X-Echo") != "Bearer "+injPH {
		t.Fatalf("SECURITY: echoed response %q / %q", resp.Header.Get("X-Echo"), body)
	}
	if _, ok := e.log.find("leak", "deny", "API_KEY", "allowed.test", "response"); !ok {
		t.Errorf("echo not audited:\n%s", e.log.dump())
	}
	req, _ = http.NewRequest("GET", "https://allowed.test:8443/echo-big", nil)
	req.Header.Set("Authorization", "Bearer "+injPH)
	resp, err = e.pod.client(e.podCAs, true).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	pad := strings.Repeat("x", 300<<10)
	if want := pad + "[Bearer " + injPH + "][Bearer " + injPH + "]" + pad; err != nil || string(body) != want {
		t.Fatalf("SECURITY: streamed echo: %v, %d bytes, value inside: %v", err, len(body), strings.Contains(string(body), injValue))
	}
}

// The redactor finds a value split across reads and holds back nothing
// that cannot start one: a streamed event reaches the client at once.
func TestRedactorStreams(t *testing.T) {
	secrets := []Secret{{Name: "K", Placeholder: "PH-K", Value: []byte("s3cr3t")}}
	hits := 0
	in := "a s3cr3t b s3c"
	d := &redactor{r: &oneByte{s: in}, secrets: secrets, hit: func(*Secret) { hits++ }}
	out, err := io.ReadAll(d)
	if err != nil || string(out) != "a PH-K b s3c" || hits != 1 {
		t.Fatalf("redacted %q (%v), %d hits", out, err, hits)
	}
	pr, pw := io.Pipe()
	d = &redactor{r: pr, secrets: secrets, hit: func(*Secret) {}}
	go pw.Write([]byte("data: one\n\n"))
	buf := make([]byte, 64)
	n, _ := d.Read(buf)
	if string(buf[:n]) != "data: one\n\n" {
		t.Fatalf("first event held back: got %q", buf[:n])
	}
	pw.Close()
}

type oneByte struct{ s string }

func (o *oneByte) Read(p []byte) (int, error) {
	if o.s == "" {
		return 0, io.EOF
	}
	p[0], o.s = o.s[0], o.s[1:]
	return 1, nil
}

// BenchmarkInjection compares one HTTPS GET through a plain CONNECT tunnel
// (no secrets: the proxy relays bytes) with the same GET through the
// injecting proxy (agent TLS terminated with the pod CA's leaf, request
// parsed, placeholder swapped, upstream TLS verified), side by side:
//   - keepalive: one request per op on a reused connection, the per-request
//     cost once both TLS sessions are up;
//   - newconn: a new connection per op (CONNECT, TLS handshakes, one
//     request), what a client without keep-alive pays.
func BenchmarkInjection(b *testing.B) {
	for _, conn := range []string{"keepalive", "newconn"} {
		for _, mode := range []string{"connect-tunnel", "inject"} {
			b.Run(conn+"/"+mode, func(b *testing.B) { benchInjection(b, mode, conn == "keepalive") })
		}
	}
}

func benchInjection(b *testing.B, mode string, keepAlive bool) {
	e := newInjEnv(b, true)
	pool := e.podCAs
	if mode == "connect-tunnel" {
		e.wall.SetInjection(nil)
		pool = e.upPool
	}
	c := e.pod.client(pool, true)
	c.Transport.(*http.Transport).DisableKeepAlives = !keepAlive
	get := func() {
		req, _ := http.NewRequest("GET", "https://allowed.test:8443/x", nil)
		req.Header.Set("Authorization", "Bearer "+injPH)
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	get() // warm: the leaf is issued, keep-alive sessions are up
	for b.Loop() {
		get()
	}
}
