package e2e

import (
	"bufio"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/internal/testutil/netlab"
)

// inet is a test's own internet (package netlab): a network namespace
// joined to the host's by a veth pair in a random /29 of 198.19.0.0/16 and
// a /64 of 2001:2::/48 (the IPv4 and IPv6 benchmarking ranges, so nothing
// real is ever reached, and another package's test internet in
// 198.18.0.0/24 does not collide). It serves HTTP :80 and HTTPS :443 on
// web, web6 and other, an authoritative DNS server on web:53 that records
// every question it is asked, and counts what reaches it that no pod may
// send: anything on port 9999 of web and ICMP echo requests.
type inet struct {
	*netlab.Net
	host, web, other netip.Addr // the host's side of the veth; the internet's two servers
	host6, web6      netip.Addr // the host's side and web, IPv6
}

// newInet builds the test internet and registers its teardown.
func newInet(t *testing.T) *inet {
	t.Helper()
	block := byte(mrand.IntN(254) + 1)
	n := &inet{
		host:  netip.AddrFrom4([4]byte{198, 19, block, 1}),
		web:   netip.AddrFrom4([4]byte{198, 19, block, 2}),
		other: netip.AddrFrom4([4]byte{198, 19, block, 3}),
		host6: netip.AddrFrom16([16]byte{0x20, 0x01, 0, 2, 0, block, 14: 0, 15: 1}),
		web6:  netip.AddrFrom16([16]byte{0x20, 0x01, 0, 2, 0, block, 14: 0, 15: 2}),
	}
	p29 := func(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, 29) }
	p64 := func(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, 64) }
	n.Net = netlab.New(t, netlab.Config{
		Link:      fmt.Sprintf("alnt%d", mrand.IntN(1_000_000)),
		Host:      []netip.Prefix{p29(n.host), p64(n.host6)},
		Inet:      []netip.Prefix{p29(n.web), p29(n.other), p64(n.web6)},
		Web:       []netlab.Site{{Addr: n.web, Handler: hello("web")}, {Addr: n.other, Handler: hello("other")}, {Addr: n.web6, Handler: hello("web")}},
		DNS:       n.web,
		Zone:      n.zone,
		TTL:       60,
		CertNames: []string{"allowed.test", "*.allowed.test", "evil.test", "live.test", "open.test"},
		Sinks:     []netip.AddrPort{netip.AddrPortFrom(n.web, 9999)},
		PingSink:  true,
	})
	return n
}

// hello answers with the name asked for and which server answered.
func hello(who string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s from %s\n", r.Host, who)
	})
}

// zone is what the authoritative server answers; everything else is
// NXDOMAIN. The rebinding names are allowed by the tests' policy and
// resolve to addresses no pod may reach.
func (n *inet) zone(name string) []string {
	switch strings.TrimSuffix(name, ".") {
	case "allowed.test", "www.allowed.test", "evil.test", "live.test", "open.test":
		return []string{"A " + n.web.String()}
	case "loop.allowed.test":
		return []string{"A 127.0.0.1"}
	case "ten.allowed.test":
		return []string{"A 10.0.0.1"}
	case "meta.allowed.test":
		return []string{"A 169.254.169.254"}
	case "six.allowed.test":
		return []string{"AAAA ::1"}
	case "v6.allowed.test":
		return []string{"AAAA " + n.web6.String()}
	}
	return nil
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
	e.write("ca.pem", string(n.Cert.PEM))
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
	return mustJSON[[]auditEvent](e, "audit", pod, "--json")
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
