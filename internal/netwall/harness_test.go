package netwall

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/internal/testutil/netlab"
	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The test internet: a network namespace made by the test, joined to the
// host's by a veth pair from the benchmarking range 198.18.0.0/15.
var (
	hostSide = netip.MustParseAddr("198.18.0.1")
	inetAddr = netip.MustParseAddr("198.18.0.2")
	testNet  = netip.MustParsePrefix("198.18.0.0/15")
)

const (
	podEnv  = "NETWALL_TEST_POD"
	hostEnv = "NETWALL_TEST_HOST"
)

// TestMain runs the tests (as root) in a network namespace of their own
// that stands in for the host: the test internet's veth and its fixed
// addresses live there, so test runs at the same time (another package,
// another engineer's benchmark) never share a route, and nothing can be
// left on the real host.
func TestMain(m *testing.M) {
	switch {
	case os.Getenv(podEnv) == "1":
		// The pod init stand-in: wait in its own network namespace until
		// the test closes stdin.
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	case os.Geteuid() == 0 && os.Getenv(hostEnv) == "":
		os.Exit(runInOwnHost())
	case os.Getenv(hostEnv) == "1":
		if lo, err := netlink.LinkByName("lo"); err != nil || netlink.LinkSetUp(lo) != nil {
			fmt.Fprintln(os.Stderr, "bringing lo up in the tests' host namespace:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// runInOwnHost re-executes the test binary in a new network namespace and
// returns its exit status.
func runInOwnHost() int {
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Env = append(os.Environ(), hostEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode()
	case err != nil:
		fmt.Fprintln(os.Stderr, "re-running the tests in their own network namespace:", err)
		return 1
	}
	return 0
}

// zone is what the test internet's authoritative server answers.
var zone = map[string][]string{
	"allowed.test.":        {"A 198.18.0.2"},
	"www.allowed.test.":    {"A 198.18.0.2"},
	"evil.test.":           {"A 198.18.0.2"},
	"other.allowed.test.":  {"A 198.18.0.3"},
	"loop.allowed.test.":   {"A 127.0.0.1"},
	"ten.allowed.test.":    {"A 10.0.0.1"},
	"meta.allowed.test.":   {"A 169.254.169.254"},
	"six.allowed.test.":    {"AAAA ::1"},
	"mapped.allowed.test.": {"AAAA ::ffff:169.254.169.254"},
}

// certNames are the names of the test internet's certificate.
var certNames = []string{"allowed.test", "*.allowed.test", "evil.test"}

// internet is the test internet (package netlab) in the tests' own host
// namespace: HTTP :80, HTTPS :443 and DNS :53 on 198.18.0.2.
type internet = netlab.Net

// newInternet builds the test internet and registers its teardown.
func newInternet(t testing.TB) *internet {
	t.Helper()
	return netlab.New(t, netlab.Config{
		Link:      fmt.Sprintf("nwt%d", os.Getpid()%100000),
		Host:      []netip.Prefix{netip.PrefixFrom(hostSide, 30)},
		Inet:      []netip.Prefix{netip.PrefixFrom(inetAddr, 30)},
		Web:       []netlab.Site{{Addr: inetAddr, Handler: http.HandlerFunc(webHandler)}},
		DNS:       inetAddr,
		Zone:      func(name string) []string { return zone[name] },
		TTL:       300,
		CertNames: certNames,
	})
}

// webHandler answers "/" with the Host it was asked for and "/big?n=N"
// with N zero bytes.
func webHandler(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/big" {
		size, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		buf := make([]byte, 256*1024)
		for size > 0 {
			k := min(size, int64(len(buf)))
			if _, err := w.Write(buf[:k]); err != nil {
				return
			}
			size -= k
		}
		return
	}
	fmt.Fprintf(w, "hello %s", r.Host)
}

// testPod is the pod stand-in: a child in a fresh network namespace, and a
// thread of the test parked in that namespace from which attacks are made
// (sockets belong to the namespace of the thread that creates them).
type testPod struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	thread *nsThread
}

func startPod(t testing.TB) *testPod {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), podEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the pod stand-in: %v", err)
	}
	p := &testPod{cmd: cmd, stdin: stdin}
	t.Cleanup(p.stop)
	fd, err := unix.Open("/proc/"+strconv.Itoa(cmd.Process.Pid)+"/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if p.thread, err = startNSThread(fd); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *testPod) pid() int { return p.cmd.Process.Pid }

func (p *testPod) stop() {
	if p.thread != nil {
		p.thread.stop()
		p.thread = nil
	}
	if p.stdin != nil {
		p.stdin.Close()
		_ = p.cmd.Wait()
		p.stdin = nil
	}
}

// dial connects from inside the pod to a literal address.
func (p *testPod) dial(network, addr string) (net.Conn, error) {
	var c net.Conn
	err := p.thread.run(func() (err error) {
		c, err = net.DialTimeout(network, addr, 3*time.Second)
		return err
	})
	return c, err
}

// resolver asks the pod's resolver (the wall) from inside the pod.
func (p *testPod) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return p.dial(network, "127.0.0.1:53")
	}}
}

// dialContext resolves through the pod's resolver, then dials from the pod,
// the way a program that ignores the proxy variables does.
func (p *testPod) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return p.dial(network, addr)
	}
	ips, err := p.resolver().LookupNetIP(ctx, "ip4", host)
	if err != nil {
		return nil, err
	}
	return p.dial(network, net.JoinHostPort(ips[0].String(), port))
}

// client returns an HTTP client inside the pod, honouring the proxy
// variables or not.
func (p *testPod) client(pool *x509.CertPool, viaProxy bool) *http.Client {
	tr := &http.Transport{DialContext: p.dialContext, TLSClientConfig: &tls.Config{RootCAs: pool},
		DisableKeepAlives: true}
	if viaProxy {
		tr.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(proxyPort)})
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// dnsQuery sends one query from inside the pod to server.
func (p *testPod) dnsQuery(network, server, name string, qtype uint16) (*dns.Msg, error) {
	c, err := p.dial(network, server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	co := &dns.Conn{Conn: c}
	if err := co.WriteMsg(new(dns.Msg).SetQuestion(dns.Fqdn(name), qtype)); err != nil {
		return nil, err
	}
	return co.ReadMsg()
}

// auditLog collects a wall's events.
type auditLog struct {
	mu  sync.Mutex
	evs []Event
}

func (a *auditLog) add(e Event) {
	a.mu.Lock()
	a.evs = append(a.evs, e)
	a.mu.Unlock()
}

// find returns the first event of kind with verdict whose details or
// reason mention every one of subs.
func (a *auditLog) find(kind, verdict string, subs ...string) (Event, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.evs {
		if e.Kind != kind || e.Verdict != verdict {
			continue
		}
		text := fmt.Sprint(e.Details) + " " + e.Reason
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(text, s)
		}
		if ok {
			return e, true
		}
	}
	return Event{}, false
}

func (a *auditLog) dump() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var b strings.Builder
	for _, e := range a.evs {
		fmt.Fprintf(&b, "%s %s %v %s\n", e.Kind, e.Verdict, e.Details, e.Reason)
	}
	return b.String()
}

// testPolicy allows allowed.test and its subdomains and reaches the test
// internet's range, which CheckAddr otherwise denies.
func testPolicy() Policy {
	return Policy{
		Allow:        []string{"allowed.test", "*.allowed.test"},
		AllowPrivate: []netip.Prefix{testNet},
		Upstream:     []string{net.JoinHostPort(inetAddr.String(), "53")},
	}
}

// hostLinks lists the host's interfaces, to prove nothing is left behind.
func hostLinks(t testing.TB) string {
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return strings.Join(names, ",")
}
