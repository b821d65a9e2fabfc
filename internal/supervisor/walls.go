package supervisor

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/cgroup"
	"github.com/airlock-dev/airlock/internal/config"
	"github.com/airlock-dev/airlock/internal/netwall"
	"github.com/airlock-dev/airlock/internal/sandbox"
	"github.com/airlock-dev/airlock/internal/seccomp"
)

// seccompResult is the compiled filter startSeccomp delivers.
type seccompResult struct {
	prog   []unix.SockFilter
	status string
	notify bool // the program has notify rules: serve its listener
	err    error
}

// startSeccomp loads and compiles the pod's seccomp profile in the
// background (0.2-0.5 ms, all CPU, on the way to the init's spec);
// buildSeccomp takes the result. It touches nothing of the runner but
// what it reads.
func (r *runner) startSeccomp() {
	profile := r.cfg.Security.Seccomp
	if strings.HasPrefix(profile, "~/") {
		// Validation accepts ~/policy.yaml; the file is the user's, not the pod's.
		home := r.o.Pod.State.Home
		if home == "" {
			home = homeDir()
		}
		profile = expandPath(profile, home, r.o.Pod.State.Workspace)
	}
	name := r.cfg.Security.Seccomp
	ch := make(chan seccompResult, 1)
	r.seccompDone = ch
	go func() { ch <- compileSeccomp(profile, name) }()
}

func compileSeccomp(profile, name string) seccompResult {
	pol, err := seccomp.Profile(profile)
	if err != nil {
		return seccompResult{err: err}
	}
	res := seccompResult{status: "up (" + name + ")"}
	switch {
	case !builtinProfile(profile) || !pol.Watches():
		// A policy file's notify rules take their fallbacks: the
		// notify server knows only the built-in profiles' rules.
		res.prog, res.err = seccomp.Compile(pol)
	case !seccomp.NotifySupported():
		res.prog, res.err = seccomp.Compile(pol)
		res.status = "up (" + name + "; raw and packet sockets and abstract-socket connects fail unaudited: this kernel has no seccomp user notification with TSYNC, Linux 5.7)"
	default:
		res.prog, res.err = seccomp.CompileNotify(pol)
		res.notify = true
	}
	return res
}

func (r *runner) buildSeccomp(*sandbox.ViewConfig) error {
	res := <-r.seccompDone
	if res.err != nil {
		return r.wallFailed(WallSeccomp, res.err)
	}
	if res.notify {
		r.spec.SeccompListener = r.serveSeccomp
	}
	r.spec.Seccomp = res.prog
	r.walls[WallSeccomp] = res.status
	return nil
}

func builtinProfile(name string) bool {
	return name == "" || name == "default" || name == "strict"
}

// serveSeccomp serves the pod's seccomp listener (notify.go) until the
// walls come down. Start calls it from the goroutine that runs the pod,
// before the clean-up steps can run.
func (r *runner) serveSeccomp(f *os.File) {
	stop, flush, err := serveNotify(f, r.o.Audit)
	if err != nil {
		// The listener is closed: the watched calls fail with ENOSYS.
		r.o.Audit("seccomp.notify", map[string]any{"reason": err.Error()}, "error")
		return
	}
	r.flushNotify = flush
	r.after = append(r.after, stop)
}

func (r *runner) buildLandlock(v *sandbox.ViewConfig) error {
	if !r.cfg.Security.Landlock {
		r.walls[WallLandlock] = "off (security.landlock: false)"
		return nil
	}
	ll := &sandbox.LandlockSpec{Required: !r.downgraded(WallLandlock)}
	ll.ReadOnly = append(ll.ReadOnly, v.ReadOnly...)
	ll.ReadOnly = append(ll.ReadOnly, "/proc", "/sys")
	for _, root := range v.Roots {
		ll.ReadWrite = append(ll.ReadWrite, root.Host)
	}
	ll.ReadWrite = append(ll.ReadWrite, v.Tmpfs...)
	ll.ReadWrite = append(ll.ReadWrite, v.Writable...)
	ll.ReadWrite = append(ll.ReadWrite, "/dev")
	ll.Exec = append(append([]string{}, ll.ReadOnly...), ll.ReadWrite...)
	r.spec.Landlock = ll
	r.walls[WallLandlock] = "up"
	return nil
}

type groupResult struct {
	g   cgroup.Group
	err error
}

// startCgroup creates the pod's group in the background: its directories
// and limits (v1: two mkdirs per hierarchy and a few writes, 0.4-0.7 ms)
// are made while the spec is built. buildCgroup takes the group, or
// dropCgroup removes it when the spec is not finished.
func (r *runner) startCgroup() {
	res := r.cfg.Resources
	lim := cgroup.Limits{
		Memory:   int64(res.Memory),
		Swap:     int64(res.Swap),
		CPUs:     res.CPUs,
		Pids:     int64(res.Pids),
		ReadBPS:  int64(res.IO.ReadBPS),
		WriteBPS: int64(res.IO.WriteBPS),
	}
	name := cgroup.GroupName(r.o.Pod.Name, r.o.Pod.Dir)
	ch := make(chan groupResult, 1)
	go func() {
		g, err := cgroup.New(name, lim)
		ch <- groupResult{g, err}
	}()
	r.newGroup = ch
}

// dropCgroup removes a group startCgroup made that buildCgroup never took.
func (r *runner) dropCgroup() {
	if r.newGroup == nil {
		return
	}
	if ng := <-r.newGroup; ng.err == nil {
		_ = ng.g.Destroy()
	}
	r.newGroup = nil
}

func (r *runner) buildCgroup(*sandbox.ViewConfig) error {
	r.diskQuotaStatus(r.cfg.Resources.Disk)
	ng := <-r.newGroup
	r.newGroup = nil
	g, err := ng.g, ng.err
	if err != nil {
		return r.wallFailed(WallCgroups, err)
	}
	r.group = g
	r.spec.CgroupThreads = g.ThreadFiles()
	r.walls[WallCgroups] = fmt.Sprintf("up (cgroup v%d)", g.Version())
	// The init joins r.group itself (v1, CgroupThreads) or onStart moves
	// it there beside the other hooks (v2); this hook only starts the
	// watch on the group's event counters.
	ev := &resourceEvents{audit: r.o.Audit, stats: g.Stats}
	// The pod's directory is on the host file system that holds its layer
	// (or the image file of a capped layer, which may be sparse): that is
	// the disk to protect, whatever the cap.
	ev.guard = &diskGuard{dir: r.o.Pod.Dir, freeze: g.Freeze, warn: r.o.Warn, pod: r.o.Pod.Name}
	stop, done := make(chan struct{}), make(chan struct{})
	var started atomic.Bool
	r.hooks = append(r.hooks, func(int) error {
		started.Store(true)
		go func() { defer close(done); ev.watch(stop, eventPoll) }()
		return nil
	})
	// An OOM kill of the command's last moments is on the trail before
	// its run.exit, not after it (the watch reads the counters only every
	// eventPoll).
	r.exitChecks = append(r.exitChecks, ev.counters)
	r.after = append(r.after, func() {
		close(stop)
		if started.Load() {
			<-done
		}
		ev.mu.Lock()
		ev.guard = nil // nothing left to freeze
		ev.mu.Unlock()
		ev.check() // the last events, once the pod has stopped
		_ = g.Destroy()
	})
	return nil
}

// eventPoll is how often a running pod's resource counters (a few small
// cgroup files) and the free space under its layer are read, so that an
// OOM kill or a PID-limit hit is in the audit trail at once, not only when
// the run ends, and a layer filling the host's disk is stopped early.
const eventPoll = 250 * time.Millisecond

// resourceEvents turns growth of a group's OOM-kill and PID-limit
// counters into audit events, and runs the disk guard.
type resourceEvents struct {
	mu                sync.Mutex // check runs from the watch, the exit records and the clean-up
	audit             AuditFunc
	stats             func() (cgroup.Stats, error)
	oomSeen, pidsSeen uint64
	guard             *diskGuard
}

// diskGuard protects the host's disk whether or not the layer is capped
// (an uncapped layer, or a capped one whose sparse image the host cannot
// back in full): when the file system holding the pod's directory runs low
// on free space or inodes, the pod is frozen and the event audited. It
// polls, so a fast writer can use part of the reserve before it is
// stopped.
type diskGuard struct {
	dir    string
	pod    string
	freeze func() error
	warn   func(format string, args ...any)
	fired  bool
}

// reserve is what the guard keeps free: a tenth of the file system, at
// most 2 GiB and 50,000 inodes.
func reserve(st *unix.Statfs_t) (bytes, inodes uint64) {
	bytes = min(st.Blocks*uint64(st.Bsize)/10, 2<<30)
	inodes = min(st.Files/10, 50_000)
	return bytes, inodes
}

// check freezes the pod once, when the reserve is reached; a resumed pod
// that is still short of space is frozen again.
func (d *diskGuard) check(audit AuditFunc) {
	var st unix.Statfs_t
	if err := unix.Statfs(d.dir, &st); err != nil {
		return
	}
	freeBytes, freeInodes := st.Bavail*uint64(st.Bsize), st.Ffree
	rb, ri := reserve(&st)
	low := freeBytes < rb || (st.Files > 0 && freeInodes < ri)
	if !low {
		d.fired = false
		return
	}
	if d.fired {
		return
	}
	d.fired = true
	err := d.freeze()
	outcome := "frozen"
	if err != nil {
		outcome = "error: " + err.Error()
	}
	audit("disk-guard", map[string]any{"dir": d.dir, "free_bytes": freeBytes, "free_inodes": freeInodes, "reserve_bytes": rb, "reserve_inodes": ri}, outcome)
	d.warn("pod %s FROZEN: the file system holding its layer (%s) is down to %d MiB and %d inodes free; free space, then `airlock resume %s`, or `airlock kill %s`",
		d.pod, d.dir, freeBytes>>20, freeInodes, d.pod, d.pod)
}

func (e *resourceEvents) watch(stop <-chan struct{}, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			e.check()
		}
	}
}

// check audits what happened since the last call.
func (e *resourceEvents) check() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.guard != nil {
		e.guard.check(e.audit)
	}
	e.countersLocked()
}

// counters audits growth of the OOM-kill and PID-limit counters alone.
func (e *resourceEvents) counters() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.countersLocked()
}

func (e *resourceEvents) countersLocked() {
	st, err := e.stats()
	if err != nil {
		return
	}
	if st.OOMKills > e.oomSeen {
		e.audit("oom-kill", map[string]any{"count": st.OOMKills - e.oomSeen, "total": st.OOMKills, "memory_limit": st.MemoryLimit, "memory_peak": st.MemoryPeak}, "killed")
		e.oomSeen = st.OOMKills
	}
	if st.PidsMaxHits > e.pidsSeen {
		e.audit("pids-limit", map[string]any{"count": st.PidsMaxHits - e.pidsSeen, "total": st.PidsMaxHits, "pids_limit": st.PidsLimit}, "denied")
		e.pidsSeen = st.PidsMaxHits
	}
}

// WallDiskQuota is the layer's size cap (resources.disk).
const WallDiskQuota = "disk-quota"

// diskQuotaStatus says in status (and in run.start's audited walls)
// whether the layer is capped: a pod created with resources.disk keeps its
// layer in an ext4 image of that size (pod/disk.go); one created without,
// or downgraded, is only guarded by freezing when the host runs low.
func (r *runner) diskQuotaStatus(d config.Disk) {
	if c := r.o.Pod.DiskCap(); c != "" {
		r.walls[WallDiskQuota] = fmt.Sprintf("up (%s / %d inodes: %s)", d.Bytes, d.Inodes, c)
		return
	}
	if d.Bytes <= 0 && d.Inodes <= 0 {
		r.walls[WallDiskQuota] = "off (resources.disk: 0); guard: the pod is frozen when the file system holding its layer runs low"
		return
	}
	r.walls[WallDiskQuota] = fmt.Sprintf("NOT ENFORCED (resources.disk %s / %d inodes set, but the pod was created without a capped layer: downgraded, or made before the cap existed; recreate it to cap); guard: the pod is frozen when the file system holding its layer runs low", d.Bytes, d.Inodes)
}

// wantsNetNS says whether a pod of this network config gets a network
// namespace of its own: every mode but host.
func wantsNetNS(n config.Network) bool { return n.Mode != "host" }

func (r *runner) buildNetwork(v *sandbox.ViewConfig) error {
	n := r.cfg.Network
	switch {
	case !wantsNetNS(n):
		r.walls[WallNetwork] = "OFF (network.mode: host — the pod shares the host's network)"
		r.o.Warn("network.mode is host: the pod can reach every address the host can")
		r.o.Audit("wall.network", map[string]any{"mode": "host"}, "warning")
		if len(r.o.Publish) > 0 {
			r.o.Warn("-p is ignored in network.mode host: the pod's servers are already on the host's network")
		}
		return nil
	}
	r.spec.NewNet = true
	pol := PolicyFromConfig(n)
	type publication struct {
		host    netip.AddrPort
		podPort int
	}
	var pubs []publication
	for _, spec := range append(append([]string{}, n.Publish...), r.o.Publish...) {
		host, podPort, err := config.ParsePublish(spec)
		if err != nil {
			return err
		}
		pubs = append(pubs, publication{host, podPort})
	}
	resolv := filepath.Join(r.o.Pod.RunDir(), "resolv.conf")
	if err := writeIfChanged(resolv, netwall.ResolvConf()); err != nil {
		return fmt.Errorf("writing the pod's resolv.conf: %w", err)
	}
	r.spec.Mounts = append(r.spec.Mounts, sandbox.Mount{Kind: "bind", Source: resolv, Target: "/etc/resolv.conf", ReadOnly: true, Reason: "the pod's resolver"})
	early := r.earlyWall
	r.hooks = append(r.hooks, func(pid int) error {
		var w *netwall.Wall
		var err error
		if early != nil {
			<-early.done
			w, err = early.w, early.err
		} else {
			w, err = netwall.Setup(pid, pol, r.netEvent)
		}
		if w != nil {
			r.wall.Store(w)
		}
		if err != nil {
			return fmt.Errorf("network wall: %w", err)
		}
		for _, pub := range pubs {
			if err := w.Publish(pub.host.String(), pub.podPort); err != nil {
				return err
			}
		}
		return nil
	})
	if n.Mode == "filtered" {
		// Set, not appended: a -e HTTPS_PROXY would otherwise come first
		// in the list and win for C programs (getenv takes the first),
		// pointing them at a proxy the wall does not let them reach.
		for _, kv := range netwall.ProxyEnv() {
			k, v, _ := strings.Cut(kv, "=")
			r.setWallEnv(k, v)
		}
	}
	r.after = append(r.after, func() {
		if w := r.wall.Load(); w != nil {
			_ = w.Close()
		}
	})
	r.walls[WallNetwork] = "up (" + n.Mode + ")"
	return nil
}

// startWall builds the network wall of an init spawned ahead (Spawn):
// its network namespace exists from the spawn on, so the wall (1-2 ms of
// netlink, sockets and nftables) is built beside the spec instead of on
// the way to "go". buildNetwork's hook takes the result.
func (r *runner) startWall() {
	n := r.cfg.Network
	if r.early == nil || !wantsNetNS(n) {
		return
	}
	pol, pid := PolicyFromConfig(n), r.early.Pid()
	res := &wallResult{done: make(chan struct{})}
	r.earlyWall = res
	go func() {
		res.w, res.err = netwall.Setup(pid, pol, r.netEvent)
		close(res.done)
	}()
	// A wall the hook took is in r.wall, and buildNetwork's step closes
	// it; one no hook took (the run failed before) is closed here.
	r.after = append(r.after, func() {
		<-res.done
		if res.w != nil && r.wall.Load() != res.w {
			_ = res.w.Close()
		}
	})
}

// writeIfChanged makes path (mode 0644) hold data, writing only when it
// does not already: rewriting a file in place makes ext4 write it out at
// close (auto_da_alloc), 0.3-0.5 ms on every run's way to its spec.
func writeIfChanged(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		if fi, err := os.Lstat(path); err == nil && fi.Mode() == 0o644 {
			return nil
		}
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return err
	}
	return os.Chmod(path, 0o644) // WriteFile keeps an existing file's mode
}

// wallResult is a network wall built in the background: w and err are
// set when done is closed.
type wallResult struct {
	done chan struct{}
	w    *netwall.Wall
	err  error
}

func (r *runner) netEvent(e netwall.Event) {
	d := map[string]any{}
	for k, v := range e.Details {
		d[k] = v
	}
	if e.Reason != "" {
		d["reason"] = e.Reason
	}
	r.o.Audit("net."+e.Kind, d, e.Verdict)
}

// PolicyFromConfig converts the config's network section to the wall's policy.
func PolicyFromConfig(n config.Network) netwall.Policy {
	p := netwall.Policy{Mode: n.Mode, Allow: ExpandPresets(n.Presets, n.Allow), Deny: n.Deny, Ports: n.Ports, DNSMode: n.DNS.Mode, Upstream: n.DNS.Upstream}
	for _, c := range n.AllowPrivate {
		if pfx, err := netip.ParsePrefix(c); err == nil {
			p.AllowPrivate = append(p.AllowPrivate, pfx)
		}
	}
	return p
}

// killAll stops every process of the pod.
func (r *runner) killAll() {
	if r.group != nil {
		_ = r.group.Kill()
	}
	// Killing the pod's init ends its PID namespace: the kernel kills
	// every process in it. This also covers a pod without a cgroup.
	if pid := r.initPID.Load(); pid > 0 {
		_ = syscall.Kill(int(pid), syscall.SIGKILL)
	}
}
