// Package netwall is the pod's network wall: the only way out of a pod's
// network namespace is the supervisor's resolver and proxy.
//
// The pod runs in its own network namespace. Setup enters it from one
// locked OS thread of the supervisor, brings lo up, gives it default
// routes, installs nftables rules that redirect every TCP connection and
// every DNS packet to the wall's services and drop everything else, and
// opens the services' listening sockets there. The sockets stay in the
// pod's namespace while the supervisor dials out from the host's: no veth,
// no host NAT, nothing on the host to clean up.
//
// Invariants:
//   - Setup refuses the supervisor's own network namespace; it never
//     changes the host's network.
//   - The resolver never forwards a denied name (or an IP literal) upstream.
//   - The proxy resolves names itself, checks every address with CheckAddr,
//     and dials only the address it checked (never re-resolves).
//   - IP-literal targets are denied unless the literal is explicitly allowed.
//   - A TLS tunnel's SNI (or a plain request's Host) must name the host the
//     connection was allowed for; no client byte is forwarded before that
//     check. A transparent connection's destination must be an address the
//     wall itself resolved for that name.
//   - Policy reads are lock-free snapshots: SetPolicy applies to every new
//     query and connection at once.
package netwall

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"golang.org/x/sys/unix"
)

// Event is one audited network decision.
type Event struct {
	Kind    string         // "dns" | "connect" | "leak" (a direct connection that tried to bypass the proxy and was denied) | "drop" (a packet the rules dropped)
	Details map[string]any // name, type, answers / host, addr, port, path, bytes_up, bytes_down / proto, addr, port, count
	Verdict string         // "allow" | "deny" | "error"
	Reason  string
}

// Wall is the network wall of one running pod.
type Wall struct {
	pol    atomic.Pointer[Policy]
	inj    atomic.Pointer[injector] // the vault's secrets (inject.go); nil = no interception
	audit  func(Event)
	thread *nsThread
	res    *resolver
	drops  *dropLog // nil when the kernel offers no NFLOG
	dialer net.Dialer

	mu        sync.Mutex
	closed    bool
	listeners []net.Listener
	dnsConns  []net.PacketConn // the resolver's UDP sockets (its TCP ones are in listeners)
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Setup builds the wall for the pod whose init has host pid pid. It must
// run before the agent starts. Mode "none" leaves the pod with lo only.
func Setup(pid int, p Policy, audit func(Event)) (*Wall, error) {
	q := p.normalized()
	if q.Mode != ModeFiltered && q.Mode != ModeNone {
		return nil, errdefs.Invalid("network mode %q: use %q or %q", q.Mode, ModeFiltered, ModeNone)
	}
	if len(q.Upstream) == 0 {
		q.Upstream = hostUpstream()
	}
	nsFD, err := openPodNetns(pid)
	if err != nil {
		return nil, err
	}
	defer unix.Close(nsFD)
	w := &Wall{audit: audit, conns: map[net.Conn]struct{}{}}
	w.pol.Store(&q)
	w.res = newResolver(w)
	w.dialer.Timeout = dialTimeout
	// The rules (nftables) and the links (rtnetlink) are independent: they
	// are written at the same time. Both are in place before Setup returns,
	// so before the agent starts.
	filtered := q.Mode == ModeFiltered
	rules := make(chan error, 1)
	if filtered {
		go func() { rules <- installRules(nsFD) }()
	} else {
		rules <- nil
	}
	err = configureLinks(nsFD, filtered)
	if err == nil {
		w.thread, err = startNSThread(nsFD)
	}
	if rerr := <-rules; err == nil {
		err = rerr
	}
	if err == nil && filtered {
		err = w.startFiltered()
	}
	if err != nil {
		if w.thread != nil {
			w.Close()
		}
		return nil, err
	}
	return w, nil
}

// openPodNetns opens the pod's network namespace and refuses the
// supervisor's own: rules meant for the pod must never land on the host.
func openPodNetns(pid int) (int, error) {
	if pid <= 0 {
		return -1, errdefs.Invalid("pod pid %d: pass the host pid of the pod init", pid)
	}
	path := "/proc/" + strconv.Itoa(pid) + "/ns/net"
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("opening the pod network namespace %s (is the pod init running?): %w", path, &os.PathError{Op: "open", Path: path, Err: err})
	}
	var pod, self unix.Stat_t
	if err := unix.Fstat(fd, &pod); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("fstat", err)
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &self); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("stat", err)
	}
	if pod.Dev == self.Dev && pod.Ino == self.Ino {
		unix.Close(fd)
		return -1, errdefs.Invalid("pid %d shares the supervisor's network namespace: start the pod with CLONE_NEWNET", pid)
	}
	return fd, nil
}

// dialInPod connects to addr from a socket inside the pod's namespace.
func (w *Wall) dialInPod(addr string) (*net.TCPConn, error) {
	var c net.Conn
	err := w.thread.run(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, dialTimeout)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

func (w *Wall) goServe(f func()) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		f()
	}()
}

// track registers a live connection so Close can end it; it reports false
// once the wall is closed.
func (w *Wall) track(c net.Conn) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	w.conns[c] = struct{}{}
	return true
}

func (w *Wall) untrack(c net.Conn) {
	w.mu.Lock()
	delete(w.conns, c)
	w.mu.Unlock()
}

func (w *Wall) policy() *Policy { return w.pol.Load() }

// SetPolicy replaces the policy; new queries and connections see it at once.
func (w *Wall) SetPolicy(p Policy) {
	q := p.normalized()
	old := w.policy()
	if len(q.Upstream) == 0 {
		q.Upstream = old.Upstream
	}
	q.Mode = old.Mode // the namespace was built for the old mode; it cannot change live
	w.pol.Store(&q)
}

// Policy returns the policy in force, defaults filled in.
func (w *Wall) Policy() Policy { return w.policy().clone() }

// Env returns the proxy variables for the agent's environment.
func (w *Wall) Env() []string {
	if w.policy().Mode != ModeFiltered {
		return nil
	}
	proxy := "http://127.0.0.1:" + strconv.Itoa(proxyPort)
	var env []string
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"} {
		env = append(env, k+"="+proxy)
	}
	return append(env, "NO_PROXY=localhost,127.0.0.1,::1", "no_proxy=localhost,127.0.0.1,::1")
}

// ResolvConf is the /etc/resolv.conf the sandbox binds into the pod.
func ResolvConf() []byte {
	return []byte("nameserver 127.0.0.1\nnameserver ::1\noptions edns0 timeout:2 attempts:2\n")
}

func (w *Wall) report(ev Event) {
	if w.audit != nil {
		w.audit(ev)
	}
}

// Close stops the services, ends live connections and retires the thread
// inside the pod's namespace. The pod's namespace and its rules go away
// with the pod; there is nothing on the host to remove.
func (w *Wall) Close() error {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closed = true
		for _, l := range w.listeners {
			l.Close()
		}
		for c := range w.conns {
			c.Close()
		}
		for _, pc := range w.dnsConns {
			pc.Close()
		}
		w.mu.Unlock()
		if w.drops != nil {
			w.drops.close()
		}
		w.wg.Wait()
		if w.thread != nil {
			w.thread.stop()
		}
		w.forgetSecrets()
	})
	return w.closeErr
}

// ProxyEnv is the environment that points proxy-aware programs in a
// filtered pod at the wall's proxy: what Env returns, known before the pod
// starts so the sandbox spec can carry it.
func ProxyEnv() []string {
	w := &Wall{}
	w.pol.Store(&Policy{Mode: ModeFiltered})
	return w.Env()
}
