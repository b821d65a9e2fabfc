// Package netlab builds a test internet for Airlock's privileged tests: a
// network namespace of its own, joined to the caller's by a veth pair, that
// serves HTTP :80 and HTTPS :443 on chosen addresses, answers DNS
// authoritatively from a zone the test supplies (recording every question),
// and can count what reaches it that no pod may send.
//
// Only tests import netlab, so the airlock binary never links it (nor
// netlink or miekg/dns, which it uses). Invariants: every socket of the
// internet is made on one locked thread that never leaves the namespace
// (it is destroyed when the internet closes, so no other goroutine ever
// runs there), and Close, registered with t.Cleanup, stops every server
// and removes the veth, which takes the namespace with it.
package netlab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Config is what differs from one test internet to another.
type Config struct {
	Link string         // the caller's end of the veth; the internet's end is Link+"p"
	Host []netip.Prefix // addresses of the caller's end
	Inet []netip.Prefix // addresses of the internet's end
	Web  []Site         // HTTP :80 and HTTPS :443 servers, on addresses of Inet

	// DNS is where the authoritative server listens (UDP and TCP :53).
	// Zone returns its records for a lower-case, fully qualified name, in
	// zone-file form ("A 198.18.0.2"); none is NXDOMAIN. Answers carry TTL.
	DNS  netip.Addr
	Zone func(name string) []string
	TTL  uint32

	CertNames []string // the names of the HTTPS servers' certificate

	// Sinks count every UDP datagram and TCP connection that reaches
	// them; PingSink counts ICMP echo requests (IPv4) reaching the
	// namespace. Strays reports the total.
	Sinks    []netip.AddrPort
	PingSink bool
}

// Site is one address's web server.
type Site struct {
	Addr    netip.Addr
	Handler http.Handler
}

// Net is a running test internet.
type Net struct {
	Cert Cert // the HTTPS servers' certificate, its own root

	cfg     Config
	work    chan func()
	done    chan struct{}
	nsFD    int
	closers []func()
	once    sync.Once

	mu     sync.Mutex
	seen   []string // question names the DNS server received
	strays int
}

// New builds the test internet and registers its teardown.
func New(t testing.TB, cfg Config) *Net {
	t.Helper()
	n := &Net{cfg: cfg, work: make(chan func()), done: make(chan struct{})}
	if err := n.enter(); err != nil {
		t.Fatalf("creating the test internet's namespace: %v", err)
	}
	t.Cleanup(n.Close)
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
// the runtime destroys the thread.
func (n *Net) enter() error {
	errc := make(chan error, 1)
	go func() {
		defer close(n.done)
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
func (n *Net) inside(f func() error) error {
	errc := make(chan error, 1)
	n.work <- func() { errc <- f() }
	return <-errc
}

func (n *Net) wire() error {
	peer := n.cfg.Link + "p"
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n.cfg.Link}, PeerName: peer, PeerNamespace: netlink.NsFd(n.nsFD)}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("adding veth %s: %w", n.cfg.Link, err)
	}
	hl, err := netlink.LinkByName(n.cfg.Link)
	if err != nil {
		return err
	}
	for _, p := range n.cfg.Host {
		if err := netlink.AddrAdd(hl, linkAddr(p)); err != nil {
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
			for _, p := range n.cfg.Inet {
				if err := h.AddrAdd(l, linkAddr(p)); err != nil {
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

// linkAddr is p as an interface address; an IPv6 one is usable at once (no
// duplicate address detection).
func linkAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// family is the suffix of a's network names: "4" or "6".
func family(a netip.Addr) string {
	if a.Is6() {
		return "6"
	}
	return "4"
}

// Listen opens a socket in the internet's namespace ("udp…" networks give
// the PacketConn); Close closes it.
func (n *Net) Listen(network, addr string) (l net.Listener, pc net.PacketConn, err error) {
	err = n.inside(func() error {
		if strings.HasPrefix(network, "udp") {
			pc, err = net.ListenPacket(network, addr)
		} else {
			l, err = net.Listen(network, addr)
		}
		return err
	})
	if l != nil {
		n.closers = append(n.closers, func() { l.Close() })
	}
	if pc != nil {
		n.closers = append(n.closers, func() { pc.Close() })
	}
	return l, pc, err
}

func (n *Net) serve() error {
	var err error
	if n.Cert, err = SelfSigned(n.cfg.CertNames...); err != nil {
		return err
	}
	for _, s := range n.cfg.Web {
		if err := n.serveWeb(s); err != nil {
			return err
		}
	}
	if err := n.serveSinks(); err != nil {
		return err
	}
	return n.serveDNS()
}

func (n *Net) serveWeb(s Site) error {
	for _, port := range []string{"80", "443"} {
		l, _, err := n.Listen("tcp"+family(s.Addr), net.JoinHostPort(s.Addr.String(), port))
		if err != nil {
			return err
		}
		if port == "443" {
			l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{n.Cert.TLS}})
		}
		srv := &http.Server{Handler: s.Handler, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
		go func() { _ = srv.Serve(l) }()
		n.closers = append(n.closers, func() { _ = srv.Close() })
	}
	return nil
}

// serveSinks counts whatever reaches the sinks and, with PingSink, the
// pings that reach the namespace.
func (n *Net) serveSinks() error {
	for _, ap := range n.cfg.Sinks {
		_, pc, err := n.Listen("udp"+family(ap.Addr()), ap.String())
		if err != nil {
			return err
		}
		l, _, err := n.Listen("tcp"+family(ap.Addr()), ap.String())
		if err != nil {
			return err
		}
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
	}
	if !n.cfg.PingSink {
		return nil
	}
	stop, err := n.pingSink()
	if err != nil {
		return err
	}
	n.closers = append(n.closers, stop)
	return nil
}

// pingSink counts ICMP echo requests that reach the internet's namespace,
// from a raw socket whose reader polls a stop flag between 200 ms receive
// timeouts; the returned stop ends the reader, then closes the socket (so
// the descriptor cannot be reused under a running recv).
func (n *Net) pingSink() (func(), error) {
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

func (n *Net) stray() {
	n.mu.Lock()
	n.strays++
	n.mu.Unlock()
}

// Strays counts the datagrams, connections and pings the sinks received.
func (n *Net) Strays() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.strays
}

func (n *Net) serveDNS() error {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		m.Authoritative = true
		for _, q := range r.Question {
			name := strings.ToLower(q.Name)
			n.mu.Lock()
			n.seen = append(n.seen, name)
			n.mu.Unlock()
			recs := n.cfg.Zone(name)
			if len(recs) == 0 {
				m.Rcode = dns.RcodeNameError
			}
			for _, rec := range recs {
				rr, err := dns.NewRR(fmt.Sprintf("%s %d IN %s", q.Name, n.cfg.TTL, rec))
				if err == nil && rr.Header().Rrtype == q.Qtype {
					m.Answer = append(m.Answer, rr)
				}
			}
		}
		_ = w.WriteMsg(m)
	})
	addr := net.JoinHostPort(n.cfg.DNS.String(), "53")
	_, pc, err := n.Listen("udp"+family(n.cfg.DNS), addr)
	if err != nil {
		return err
	}
	l, _, err := n.Listen("tcp"+family(n.cfg.DNS), addr)
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

// Queries returns every question name the authoritative server received,
// lower case and fully qualified.
func (n *Net) Queries() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.seen...)
}

// Close stops the servers, removes the veth and ends the namespace's
// thread. It may be called more than once.
func (n *Net) Close() {
	n.once.Do(func() {
		for i := len(n.closers) - 1; i >= 0; i-- {
			n.closers[i]()
		}
		if l, err := netlink.LinkByName(n.cfg.Link); err == nil {
			_ = netlink.LinkDel(l)
		}
		close(n.work)
		<-n.done
		if n.nsFD > 0 {
			unix.Close(n.nsFD)
		}
	})
}

// Cert is a self-signed certificate that is its own root.
type Cert struct {
	TLS  tls.Certificate
	PEM  []byte         // the certificate, for a CA file
	Pool *x509.CertPool // a pool holding only it
}

// SelfSigned makes a certificate for names, valid from an hour ago for a
// day.
func SelfSigned(names ...string) (Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Cert{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "airlock test internet"},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: names,
		IsCA:     true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return Cert{}, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return Cert{}, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return Cert{
		TLS:  tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		PEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Pool: pool,
	}, nil
}
