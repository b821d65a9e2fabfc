package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/airlock-dev/airlock/internal/cgroup"
	"github.com/airlock-dev/airlock/internal/config"
	"github.com/airlock-dev/airlock/internal/layer"
	"github.com/airlock-dev/airlock/internal/netwall"
	"github.com/airlock-dev/airlock/internal/pod"
	"github.com/airlock-dev/airlock/internal/sandbox"
)

// AuditFunc records one event in the pod's audit trail.
type AuditFunc func(action string, details map[string]any, outcome string)

// Options describe one run of a pod.
type Options struct {
	Pod     *pod.Pod
	Args    []string // the command; empty = run.command from config, else the user's shell
	Env     []string // -e KEY=VAL, applied last
	Workdir string   // -w; empty = the caller's place inside the workspace, else the workspace
	TTY     bool
	Stdin   *os.File
	Stdout  *os.File
	Stderr  *os.File
	// Downgrade lists walls the user accepts running without (--downgrade),
	// in addition to the config's security.downgrade.
	Downgrade []string
	Publish   []string
	Audit     AuditFunc
	// SyncAudit, when set, makes every record so far durable.
	SyncAudit func()
	// Warn prints a warning for the person at the terminal.
	Warn func(format string, args ...any)
	// Serve starts the pod with no command (airlock start): it keeps its
	// walls up and runs each command sent over the control socket
	// ("exec"), until it is stopped. Args, Env, Workdir, TTY and the
	// stdio are then per command.
	Serve bool
	// Ready, with Serve, is called once the pod is up and serving.
	Ready func()
}

// Wall names, as used in security.downgrade and status.
const (
	WallSeccomp  = "seccomp"
	WallLandlock = "landlock"
	WallCgroups  = "cgroups"
	WallNetwork  = "network"
)

// Run starts the pod, waits for the command and returns its exit status.
// The error is non-nil only when Airlock itself failed; the caller then
// exits 125 (or 126/127 as reported by the sandbox).
func Run(o Options) (int, error) {
	p := o.Pod
	release, err := p.AcquireRun()
	if err != nil {
		return 125, err
	}
	defer release()
	// The init execs and boots while the layer is prepared and the walls
	// are built; it waits for its spec.
	if o.Serve {
		o.TTY, o.Stdin, o.Stdout, o.Stderr = false, nil, nil, nil
	}
	early, err := sandbox.Spawn(sandbox.SpawnOptions{NewNet: wantsNetNS(p.Config.Network), TTY: o.TTY, Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr})
	if err == nil {
		defer early.Abort() // a no-op once the pod has started
	}
	// else early is nil: the walls are checked first and sandbox.Start
	// tries again, so a refusal names a missing wall before the
	// namespaces, as without the early start.
	r := &runner{o: o, cfg: p.Config, walls: map[string]string{}, early: early}
	if o.Audit == nil {
		r.o.Audit = func(string, map[string]any, string) {}
	}
	if o.Warn == nil {
		r.o.Warn = func(string, ...any) {}
	}
	// Every failure from here on returns through run, whose clean-up
	// takes down what is built ahead: the network wall of the early
	// init, and the cgroup, whose directories take a while to make.
	r.startWall()
	r.startCgroup()
	r.startSeccomp()
	defer r.dropCgroup() // a no-op once buildCgroup took the group
	return r.run()
}

type runner struct {
	o     Options
	cfg   *config.Config
	walls map[string]string // wall -> "up" | "downgraded: reason" | "off"
	spec  *sandbox.Spec
	early *sandbox.Pending // the init, spawned ahead of its spec
	// earlyWall delivers the network wall startWall builds for early.
	earlyWall *wallResult
	// seccompDone delivers the filter startSeccomp compiles.
	seccompDone chan seccompResult
	hooks       []func(pid int) error
	after       []func()
	// flushNotify writes the notify server's counted records. serveSeccomp
	// sets it before Start watches for the exit, so exitRecords sees it.
	flushNotify func()
	group       cgroup.Group
	// newGroup delivers the group startCgroup is making, until
	// buildCgroup takes it.
	newGroup chan groupResult
	wall     atomic.Pointer[netwall.Wall]
	initPID  atomic.Int64 // host pid of the pod's init, once started
	// wallEnv is what the walls set in the command's environment
	// (setWallEnv); a started pod's commands get it too.
	wallEnv []string
	// proc is a serving pod's init, once it serves (Options.Serve).
	proc atomic.Pointer[sandbox.Process]
	// stopping is set once a stop was asked for; stopKill kills the pod
	// if the stop's grace runs out, unless ended says it is gone.
	stopping atomic.Bool
	stopKill atomic.Pointer[time.Timer]
	ended    atomic.Bool
	// execs counts the commands in flight in a started pod; execMu
	// orders their start with the pod's end (execBegin, execsDone).
	execs  sync.WaitGroup
	execMu sync.Mutex
	// recorded is closed once run.start and the run state are written.
	recorded chan struct{}
	cleaned  sync.Once
	exitMu   sync.Mutex
	exited   chan struct{} // closed once run.exit and the run state are written
	// beside runs next to the hooks: steps that need only the init to
	// exist, and that no hook depends on.
	beside []func()
	// exitChecks run just before run.exit is written: records of what
	// the command did that must come before its end.
	exitChecks []func()
}

func (r *runner) downgraded(wall string) bool {
	return contains(r.cfg.Security.Downgrade, wall) || contains(r.o.Downgrade, wall)
}

// wallFailed applies the fail-closed rule to one wall that could not be built.
func (r *runner) wallFailed(wall string, err error) error {
	if !r.downgraded(wall) {
		return fmt.Errorf("%s wall: %w (to run without it anyway, pass --downgrade %s; the downgrade is audited)", wall, err, wall)
	}
	r.walls[wall] = "downgraded: " + err.Error()
	r.o.Audit("wall.downgrade", map[string]any{"wall": wall, "reason": err.Error()}, "accepted")
	r.o.Warn("running WITHOUT the %s wall: %v", wall, err)
	return nil
}

func (r *runner) run() (int, error) {
	start := time.Now()
	// The walls built before a failure come down too.
	defer r.cleanUp()
	if err := r.o.Pod.PrepareRoots(); err != nil {
		return 125, err
	}
	if err := r.buildSpec(); err != nil {
		r.o.Audit("run.start", map[string]any{"args": r.o.Args}, "error: "+err.Error())
		return 125, err
	}
	r.spec.OnStart = r.onStart
	r.spec.OnExit = func(code int) {
		<-r.recorded
		r.exitRecords(start, code, nil)
	}
	closeCtl, err := r.serveControl()
	if err != nil {
		return 125, err
	}
	defer closeCtl()
	// The start record (a durable audit line: the trail and its head are
	// fsynced, about 1 ms here) is written while the init execs; onStart
	// waits for it, so it is on disk before the agent starts.
	r.recorded = make(chan struct{})
	go func() {
		defer close(r.recorded)
		r.saveRunState(start, nil)
		details := map[string]any{"args": r.spec.Args, "dir": r.spec.Dir, "walls": r.walls}
		if r.o.Serve {
			details = map[string]any{"serve": true, "dir": r.spec.Dir, "walls": r.walls}
		}
		r.o.Audit("run.start", details, "ok")
	}()
	stopTimer := r.startTimeout()
	var code int
	if r.o.Serve {
		code, err = sandbox.Serve(r.spec, func(p *sandbox.Process) {
			r.proc.Store(p)
			if r.o.Ready != nil {
				r.o.Ready()
			}
		})
	} else {
		code, err = sandbox.Run(r.spec)
	}
	r.execsDone()
	if t := r.stopKill.Load(); t != nil {
		t.Stop()
	}
	stopTimer()
	r.finish(start, code, err)
	if err != nil {
		if code == 0 {
			code = 125
		}
		return code, err
	}
	return code, nil
}

// cleanUp runs the walls' clean-up steps, once. Each takes down its own
// wall (the network wall, the cgroup, the notify server) and none waits
// on another, so they run at once: one after the other they cost the end
// of every run 0.5-1 ms, the network wall's and the cgroup's the most.
func (r *runner) cleanUp() {
	r.cleaned.Do(func() {
		var wg sync.WaitGroup
		for _, step := range r.after {
			wg.Go(step)
		}
		wg.Wait()
	})
}

// onStart places the init in its walls before it may go on. On cgroup
// v1 the init joins its cgroup itself (sandbox.Spec.CgroupThreads): moving
// a whole process waits for an RCU grace period, 0.1 to 9 ms on a
// two-core VM. Where the supervisor must move it (v2), that runs beside
// the network and vault hooks, which do not depend on it, while the init,
// blocked until "go", does nothing.
func (r *runner) onStart(pid int) error {
	r.initPID.Store(int64(pid))
	joined := make(chan error, 1)
	go func() {
		if r.group == nil || len(r.spec.CgroupThreads) > 0 {
			joined <- nil
			return
		}
		joined <- r.group.Add(pid)
	}()
	var beside sync.WaitGroup
	for _, f := range r.beside {
		beside.Go(f)
	}
	err := r.runHooks(pid)
	beside.Wait()
	if jerr := <-joined; err == nil {
		err = jerr
	}
	<-r.recorded
	return err
}

func (r *runner) runHooks(pid int) error {
	for _, h := range r.hooks {
		if err := h(pid); err != nil {
			return err
		}
	}
	return nil
}

// saveRunState records the run in run/last.json (not synced: see
// pod.RunState). The run lock, held, orders it with every other write.
func (r *runner) saveRunState(start time.Time, exit *int) {
	_ = r.o.Pod.SaveRun(pod.RunState{Started: start, Exit: exit, Walls: r.walls, Serve: r.o.Serve})
}

// finish records what happened after the pod stopped: the exit, the
// conflict base of everything the pod copied, resource events. The
// records are independent files, each synced, so they are written at
// once (their fsyncs share journal commits) while the walls come down.
func (r *runner) finish(start time.Time, code int, runErr error) {
	<-r.recorded
	exited := r.exitRecords(start, code, runErr)
	roots := r.o.Pod.Roots()
	var wg sync.WaitGroup
	wg.Go(r.cleanUp)
	wg.Go(func() {
		if err := layer.RecordBase(roots, r.o.Pod.BasePath(), start); err != nil {
			r.o.Warn("recording the conflict base: %v", err)
		}
	})
	wg.Wait()
	<-exited
}

// exitRecords writes run.exit and the run state in the background, once:
// either when the init reports the command's exit (sandbox.Spec.OnExit,
// while the pod is still being torn down) or from finish.
func (r *runner) exitRecords(start time.Time, code int, runErr error) <-chan struct{} {
	r.exitMu.Lock()
	defer r.exitMu.Unlock()
	if r.exited != nil {
		return r.exited
	}
	done := make(chan struct{})
	r.exited = done
	details := map[string]any{"exit": code, "duration_ms": time.Since(start).Milliseconds()}
	outcome := "ok"
	if runErr != nil {
		outcome = "error: " + runErr.Error()
	}
	go func() {
		defer close(done)
		r.saveRunState(start, &code)
		for _, check := range r.exitChecks {
			check()
		}
		if r.flushNotify != nil {
			r.flushNotify() // what the pod tried while it ran comes first
		}
		r.o.Audit("run.exit", details, outcome)
	}()
	return done
}

// buildSpec turns the config into a sandbox spec, wall by wall.
func (r *runner) buildSpec() error {
	p := r.o.Pod
	home := p.State.Home
	if home == "" {
		home = homeDir()
	}
	var args []string
	dir := p.State.Workspace
	if !r.o.Serve {
		var err error
		if args, err = r.command(r.o.Args, os.Getenv("SHELL")); err != nil {
			return err
		}
		dir = r.workdir(r.o.Workdir, cwd())
	}
	inv := pod.InvokerFor(p.State.Workspace)
	r.spec = &sandbox.Spec{
		Hostname: r.hostname(),
		Args:     args,
		Env:      BuildEnv(identityEnv(os.Environ(), inv, p.State.Home), r.cfg.Run.Env, r.o.Env, p.Name),
		Dir:      dir,
		UID:      inv.UID,
		GID:      inv.GID,
		RootDir:  p.RootfsDir(),
		TTY:      r.o.TTY,
		Stdin:    r.o.Stdin,
		Stdout:   r.o.Stdout,
		Stderr:   r.o.Stderr,
		Early:    r.early,
		Serve:    r.o.Serve,
	}
	view := sandbox.ViewConfig{Roots: p.Roots()}
	fs := r.cfg.Filesystem
	for _, d := range fs.Readonly {
		view.ReadOnly = append(view.ReadOnly, expandPath(d, home, p.State.Workspace))
	}
	for _, d := range fs.Hide {
		view.Hide = append(view.Hide, expandPath(d, home, p.State.Workspace))
	}
	for _, d := range fs.Tmpfs {
		view.Tmpfs = append(view.Tmpfs, expandPath(d, home, p.State.Workspace))
	}
	for _, d := range fs.Writable {
		view.Writable = append(view.Writable, expandPath(d, home, p.State.Workspace))
	}
	for _, d := range fs.Sockets {
		view.Sockets = append(view.Sockets, expandPath(d, home, p.State.Workspace))
	}
	mounts, err := sandbox.PlanView(view)
	if err != nil {
		return err
	}
	r.spec.Mounts = mounts
	// The cgroup last: its directories are made in the background since
	// Run began, and each step before it is time they have.
	for _, build := range []func(*sandbox.ViewConfig) error{r.buildSeccomp, r.buildLandlock, r.buildNetwork, r.buildVault, r.buildCgroup} {
		if err := build(&view); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) hostname() string {
	if r.cfg.Run.Hostname != "" {
		return r.cfg.Run.Hostname
	}
	return r.o.Pod.Name
}

// command is what to run: the given arguments, else run.command, else
// the caller's shell.
func (r *runner) command(given []string, sh string) ([]string, error) {
	if len(given) > 0 {
		return given, nil
	}
	if len(r.cfg.Run.Command) > 0 {
		return r.cfg.Run.Command, nil
	}
	if sh == "" {
		sh = "/bin/sh"
	}
	return []string{sh}, nil
}

// workdir keeps the caller's place: run from ws/src and the agent starts
// in ws/src inside the pod too. given is -w; cwd the caller's directory.
func (r *runner) workdir(given, cwd string) string {
	ws := r.o.Pod.State.Workspace
	if given != "" {
		d := given
		if !filepath.IsAbs(d) {
			d = filepath.Join(ws, d)
		}
		return filepath.Clean(d)
	}
	if r.cfg.Run.Workdir != "" {
		return expandPath(r.cfg.Run.Workdir, homeDir(), ws)
	}
	if cwd != "" {
		if real, err := filepath.EvalSymlinks(cwd); err == nil && (real == ws || strings.HasPrefix(real, ws+"/")) {
			return real
		}
	}
	return ws
}

func cwd() string {
	d, _ := os.Getwd()
	return d
}

// startTimeout enforces resources.timeout: a warning in the audit trail
// ahead of time, then the pod is killed.
func (r *runner) startTimeout() (stop func()) {
	limit := time.Duration(r.cfg.Resources.Timeout)
	if limit <= 0 {
		return func() {}
	}
	lead := limit / 10
	if lead > 5*time.Minute {
		lead = 5 * time.Minute
	}
	warn := time.AfterFunc(limit-lead, func() {
		r.o.Audit("timeout.warning", map[string]any{"remaining": lead.String(), "timeout": limit.String()}, "warning")
		r.o.Warn("pod %s will be stopped in %s (resources.timeout %s)", r.o.Pod.Name, lead, limit)
	})
	kill := time.AfterFunc(limit, func() {
		r.o.Audit("timeout", map[string]any{"timeout": limit.String()}, "killed")
		r.killAll()
	})
	return func() { warn.Stop(); kill.Stop() }
}
