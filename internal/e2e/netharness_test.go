package e2e

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inet is a test's own internet: a network namespace joined to the host's
// by a veth pair in a random /29 of 198.19.0.0/16 and a /64 of 2001:2::/48
// (the IPv4 and IPv6 benchmarking ranges, so nothing real is ever reached,
// and another package's test internet in 198.18.0.0/24 does not collide).
// It serves HTTP :80 and HTTPS :443 on web, web6 and other, an
// authoritative DNS server on web:53 that records every question it is
// asked, and counts what reaches it that no pod may send: anything on port
// 9999 and ICMP echo requests.
type inet struct {
	t          *testing.T
	host       netip.Addr // the host's side of the veth
	web, other netip.Addr // the internet's two servers
	host6      netip.Addr // the host's side of the veth, IPv6
	web6       netip.Addr // web's IPv6 address
	link       string
	certPEM    []byte

	work    chan func()
	nsFD    int
	closers []func()

	mu     sync.Mutex
	seen   []string // question names the DNS server received
	strays int      // UDP datagrams, TCP connections and pings the sinks received
}

// newInet builds the test internet and registers its teardown.
func newInet(t *testing.T) *inet {
	t.Helper()
	block := mrand.IntN(254) + 1
	n := &inet{
		t:     t,
		host:  netip.AddrFrom4([4]byte{198, 19, byte(block), 1}),
		web:   netip.AddrFrom4([4]byte{198, 19, byte(block), 2}),
		other: netip.AddrFrom4([4]byte{198, 19, byte(block), 3}),
		host6: netip.AddrFrom16([16]byte{0x20, 0x01, 0, 2, 0, byte(block), 14: 0, 15: 1}),
		web6:  netip.AddrFrom16([16]byte{0x20, 0x01, 0, 2, 0, byte(block), 14: 0, 15: 2}),
		link:  fmt.Sprintf("alnt%d", mrand.IntN(1_000_000)),
		work:  make(chan func()),
	}
	if err := n.enter(); err != nil {
		t.Fatalf("creating the test internet's namespace: %v", err)
	}
	t.Cleanup(n.close)
	if err := n.wire(); err != nil {
		t.Fatalf("wiring the test internet: %v", err)
	}
	if err := n.serve(); err != nil {
		t.Fatalf("starting the test internet's servers: %v", err)
	}
	return n
}

// enter parks a locked thread in a fresh network namespace. It never goes
// back: when the work channel closes its goroutine ends still locked and
// the runtime destroys the thread, so no goroutine runs in the wrong place.
func (n *inet) enter() error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		n.nsFD = fd
		errc <- nil
		for f := range n.work {
			f()
		}
	}()
	return <-errc
}

// inside runs f on the thread in the internet's namespace.
func (n *inet) inside(f func() error) error {
	errc := make(chan error, 1)
	n.work <- func() { errc <- f() }
	return <-errc
}

func (n *inet) wire() error {
	peer := n.link + "p"
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n.link}, PeerName: peer, PeerNamespace: netlink.NsFd(n.nsFD)}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("adding veth %s: %w", n.link, err)
	}
	hl, err := netlink.LinkByName(n.link)
	if err != nil {
		return err
	}
	for _, a := range []netip.Addr{n.host, n.host6} {
		if err := netlink.AddrAdd(hl, prefixAddr(a)); err != nil {
			return err
		}
	}
	if err := netlink.LinkSetUp(hl); err != nil {
		return err
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(n.nsFD))
	if err != nil {
		return err
	}
	defer h.Close()
	for _, name := range []string{"lo", peer} {
		l, err := h.LinkByName(name)
		if err != nil {
			return err
		}
		if name == peer {
			for _, a := range []netip.Addr{n.web, n.other, n.web6} {
				if err := h.AddrAdd(l, prefixAddr(a)); err != nil {
					return err
				}
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return err
		}
	}
	return nil
}

// prefixAddr is a in its /29 (IPv4) or /64 (IPv6, usable at once: no
// duplicate address detection).
func prefixAddr(a netip.Addr) *netlink.Addr {
	if a.Is6() {
		return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD}
	}
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(29, 32)}}
}

// listen opens a socket in the internet's namespace.
func (n *inet) listen(network, addr string) (l net.Listener, pc net.PacketConn, err error) {
	err = n.inside(func() error {
		if strings.HasPrefix(network, "udp") {
			pc, err = net.ListenPacket(network, addr)
		} else {
			l, err = net.Listen(network, addr)
		}
		return err
	})
	return l, pc, err
}

func (n *inet) serve() error {
	cert, err := n.selfSigned()
	if err != nil {
		return err
	}
	for _, a := range []netip.Addr{n.web, n.other, n.web6} {
		who := "web"
		if a == n.other {
			who = "other"
		}
		network := "tcp4"
		if a.Is6() {
			network = "tcp6"
		}
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello %s from %s\n", r.Host, who)
		})
		for _, port := range []string{"80", "443"} {
			l, _, err := n.listen(network, net.JoinHostPort(a.String(), port))
			if err != nil {
				return err
			}
			if port == "443" {
				l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}})
			}
			srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
			go func() { _ = srv.Serve(l) }()
			n.closers = append(n.closers, func() { _ = srv.Close() })
		}
	}
	if err := n.serveSinks(); err != nil {
		return err
	}
	return n.serveDNS()
}

// serveSinks counts whatever reaches web on UDP and TCP port 9999: a port
// no policy allows, so any arrival is a packet that got out of a pod.
func (n *inet) serveSinks() error {
	addr := net.JoinHostPort(n.web.String(), "9999")
	_, pc, err := n.listen("udp4", addr)
	if err != nil {
		return err
	}
	l, _, err := n.listen("tcp4", addr)
	if err != nil {
		return err
	}
	stopPings, err := n.pingSink()
	if err != nil {
		return err
	}
	n.closers = append(n.closers, func() { pc.Close() }, func() { l.Close() }, stopPings)
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			n.stray()
		}
	}()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.stray()
			c.Close()
		}
	}()
	return nil
}

// pingSink counts ICMP echo requests that reach the internet's namespace,
// from a raw socket whose reader polls a stop flag between 200 ms receive
// timeouts; the returned stop ends the reader, then closes the socket (so
// the descriptor cannot be reused under a running recv).
func (n *inet) pingSink() (func(), error) {
	var fd int
	err := n.inside(func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("opening the ping sink: %w", err)
	}
	tv := unix.Timeval{Usec: 200_000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, err
	}
	var stopping atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for !stopping.Load() {
			k, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue // timeout or EINTR: look at the flag again
			}
			// An IPv4 header (IHL words), then ICMP type 8: echo request.
			if ihl := int(buf[0]&15) * 4; k > ihl && buf[ihl] == 8 {
				n.stray()
			}
		}
	}()
	return func() { stopping.Store(true); <-done; unix.Close(fd) }, nil
}

func (n *inet) stray() {
	n.mu.Lock()
	n.strays++
	n.mu.Unlock()
}

func (n *inet) strayCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.strays
}

// zone is what the authoritative server answers; everything else is
// NXDOMAIN. The rebinding names are allowed by the tests' policy and
// resolve to addresses no pod may reach.
func (n *inet) zone(name string) (string, bool) {
	switch strings.TrimSuffix(name, ".") {
	case "allowed.test", "www.allowed.test", "evil.test", "live.test", "open.test":
		return "A " + n.web.String(), true
	case "loop.allowed.test":
		return "A 127.0.0.1", true
	case "ten.allowed.test":
		return "A 10.0.0.1", true
	case "meta.allowed.test":
		return "A 169.254.169.254", true
	case "six.allowed.test":
		return "AAAA ::1", true
	case "v6.allowed.test":
		return "AAAA " + n.web6.String(), true
	}
	return "", false
}

func (n *inet) serveDNS() error {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		m.Authoritative = true
		for _, q := range r.Question {
			name := strings.ToLower(q.Name)
			n.mu.Lock()
			n.seen = append(n.seen, name)
			n.mu.Unlock()
			rec, ok := n.zone(name)
			if !ok {
				m.Rcode = dns.RcodeNameError
				continue
			}
			if rr, err := dns.NewRR(q.Name + " 60 IN " + rec); err == nil && rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
		_ = w.WriteMsg(m)
	})
	addr := net.JoinHostPort(n.web.String(), "53")
	_, pc, err := n.listen("udp4", addr)
	if err != nil {
		return err
	}
	l, _, err := n.listen("tcp4", addr)
	if err != nil {
		return err
	}
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go func() { _ = s.ActivateAndServe() }()
		<-started
		n.closers = append(n.closers, func() { _ = s.Shutdown() })
	}
	return nil
}

// queries returns every question name the authoritative server received.
func (n *inet) queries() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.seen...)
}

func (n *inet) selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "airlock e2e test internet"},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"allowed.test", "*.allowed.test", "evil.test", "live.test", "open.test"},
		IsCA:     true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	n.certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func (n *inet) close() {
	for i := len(n.closers) - 1; i >= 0; i-- {
		n.closers[i]()
	}
	if l, err := netlink.LinkByName(n.link); err == nil {
		_ = netlink.LinkDel(l)
	}
	close(n.work)
	if n.nsFD > 0 {
		unix.Close(n.nsFD)
	}
}

// netConfig writes an airlock.yaml that allows names and reaches the test
// internet (whose range CheckAddr otherwise denies), plus the CA file.
func (e *env) netConfig(n *inet, extra string, allow ...string) {
	e.t.Helper()
	e.netConfigDNS(n, "allow", extra, allow...)
}

// netConfigDNS is netConfig with a DNS mode. The upstream is named without
// a port, as a user writes it.
func (e *env) netConfigDNS(n *inet, mode, extra string, allow ...string) {
	e.t.Helper()
	var b strings.Builder
	b.WriteString("version: 1\nnetwork:\n")
	fmt.Fprintf(&b, "  allow: [%s]\n", quoteAll(allow))
	b.WriteString("  allow_private: [198.18.0.0/15, 2001:2::/48]\n")
	fmt.Fprintf(&b, "  dns:\n    mode: %s\n    upstream: [\"%s\"]\n", mode, n.web)
	b.WriteString(extra)
	e.write("airlock.yaml", b.String())
	e.write("ca.pem", string(n.certPEM))
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, s := range names {
		q[i] = `"` + s + `"`
	}
	return strings.Join(q, ", ")
}

// auditEvent is one line of `airlock audit --json`.
type auditEvent struct {
	Action  string         `json:"action"`
	Outcome string         `json:"outcome"`
	Details map[string]any `json:"details"`
}

func (e *env) audit(pod string) []auditEvent {
	e.t.Helper()
	var evs []auditEvent
	out := e.must("audit", pod, "--json").stdout
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		e.t.Fatalf("audit --json: %v\n%s", err, out)
	}
	return evs
}

// findAudit reports whether an event of action with outcome has details
// mentioning every one of subs.
func findAudit(evs []auditEvent, action, outcome string, subs ...string) bool {
	for _, ev := range evs {
		if ev.Action != action || ev.Outcome != outcome {
			continue
		}
		text := fmt.Sprint(ev.Details)
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(text, s)
		}
		if ok {
			return true
		}
	}
	return false
}

// wantAudit fails the test unless the pod's trail has such an event.
func (e *env) wantAudit(evs []auditEvent, action, outcome string, subs ...string) {
	e.t.Helper()
	if !findAudit(evs, action, outcome, subs...) {
		var b strings.Builder
		for _, ev := range evs {
			if strings.HasPrefix(ev.Action, "net.") || strings.HasPrefix(ev.Action, "wall.") {
				fmt.Fprintf(&b, "  %s %s %v\n", ev.Action, ev.Outcome, ev.Details)
			}
		}
		e.t.Errorf("audit lacks %s %s %q; network events:\n%s", action, outcome, subs, b.String())
	}
}

// liveRun is an `airlock run` left running, fed lines on stdin; its
// stdout comes back line by line.
type liveRun struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan error
	errb  lockedWriter
}

func (e *env) start(args ...string) *liveRun {
	e.t.Helper()
	r := &liveRun{t: e.t, cmd: exec.Command(bin, args...), lines: make(chan string, 64), done: make(chan error, 1)}
	r.cmd.Dir = e.ws
	r.cmd.Env = append(os.Environ(), "AIRLOCK_HOME="+e.home)
	r.cmd.Stderr = &r.errb
	var err error
	if r.stdin, err = r.cmd.StdinPipe(); err != nil {
		e.t.Fatal(err)
	}
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		close(r.lines)
		r.done <- r.cmd.Wait()
	}()
	e.t.Cleanup(r.stop)
	return r
}

// next returns the next line of output, failing after 15 s.
func (r *liveRun) next() string {
	r.t.Helper()
	select {
	case l, ok := <-r.lines:
		if !ok {
			r.t.Fatalf("the pod's command ended early; stderr: %s", r.errb.String())
		}
		return l
	case <-time.After(15 * time.Second):
		r.t.Fatalf("no output from the pod within 15s; stderr: %s", r.errb.String())
	}
	return ""
}

// stop ends the run the way a user would: stdin closed, then SIGTERM
// (never SIGKILL: the supervisor must get to unmount and tear down).
func (r *liveRun) stop() {
	if r.stdin == nil {
		return
	}
	r.stdin.Close()
	r.stdin = nil
	select {
	case <-r.done:
		return
	case <-time.After(10 * time.Second):
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		r.t.Errorf("airlock run did not end after SIGTERM")
	}
}

// lockedWriter collects a child's stderr while the test reads it.
type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
