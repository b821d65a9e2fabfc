package supervisor

import (
	"errors"
	"strings"
	"syscall"
	"time"

	"github.com/airlock-dev/airlock/internal/control"
	"github.com/airlock-dev/airlock/internal/pod"
	"github.com/airlock-dev/airlock/internal/sandbox"
)

// exec runs one command sent by airlock run into a started pod. It gets
// the walls the pod was started with (they are the pod's, not the
// command's); the command line, environment, working directory and
// terminal are its own, chosen as airlock run chooses them. Like a run,
// it is on the audit trail before it starts (exec.start, durable) and
// when it ends (exec.exit).
func (r *runner) exec(s *control.ExecSession) {
	p := r.proc.Load()
	if !r.o.Serve {
		s.Fail(sandbox.ExitSetup, "pod "+r.o.Pod.Name+" is running one command and serves no other; wait for it, or stop it with airlock stop "+r.o.Pod.Name)
		return
	}
	if p == nil || r.stopping.Load() || !r.execBegin() {
		s.Fail(sandbox.ExitSetup, "pod "+r.o.Pod.Name+" is starting or stopping; try again")
		return
	}
	defer r.execs.Done()
	req := s.Req
	args, err := r.command(req.Args, getenv(req.Environ, "SHELL"))
	if err != nil {
		s.Fail(sandbox.ExitSetup, err.Error())
		return
	}
	dir := r.workdir(req.Workdir, req.Cwd)
	pd := r.o.Pod
	env := BuildEnv(identityEnv(req.Environ, pod.InvokerFor(pd.State.Workspace), pd.State.Home), r.cfg.Run.Env, req.Env, pd.Name)
	for _, kv := range r.wallEnv {
		k, v, _ := strings.Cut(kv, "=")
		env = setEnv(env, k, v)
	}
	start := time.Now()
	r.o.Audit("exec.start", map[string]any{"args": args, "dir": dir, "tty": req.TTY}, "ok")
	o := sandbox.ExecOptions{Args: args, Env: env, Dir: dir, TTY: req.TTY, Rows: req.Rows, Cols: req.Cols}
	if !req.TTY {
		if len(s.Stdio) != 3 {
			r.execEnd(start, sandbox.ExitSetup, "error: no stdio")
			s.Fail(sandbox.ExitSetup, "the exec request carried no stdio")
			return
		}
		o.Stdin, o.Stdout, o.Stderr = s.Stdio[0], s.Stdio[1], s.Stdio[2]
	}
	e, err := p.Exec(o)
	if err != nil {
		code := sandbox.ExitSetup
		var se *sandbox.SetupError
		if errors.As(err, &se) && se.Code != 0 {
			code = se.Code
		}
		r.execEnd(start, code, "error: "+err.Error())
		s.Fail(code, err.Error())
		return
	}
	for _, f := range s.Stdio {
		f.Close() // the command has them; the supervisor needs none
	}
	s.Stdio = nil
	err = s.Started(e.Pid, e.Terminal)
	if e.Terminal != nil {
		e.Terminal.Close()
	}
	if err != nil {
		_ = e.Hangup() // the client went away before it learnt of the start
	}
	go func() {
		for sig := range s.Signals() {
			_ = e.Signal(syscall.Signal(sig))
		}
		select {
		case <-e.Done():
		default:
			_ = e.Hangup() // the client is gone
		}
	}()
	code := e.Wait()
	// The end is on the trail (written, not yet synced) before the
	// person learns of it, and on disk just after.
	r.execEnd(start, code, "ok")
	s.Exit(code)
	if r.o.SyncAudit != nil {
		r.o.SyncAudit()
	}
}

// execBegin counts one more command in flight, unless the pod has
// ended: Run waits for those in flight to report their end (to the
// trail and to their callers) before it writes run.exit and returns.
func (r *runner) execBegin() bool {
	r.execMu.Lock()
	defer r.execMu.Unlock()
	if r.ended.Load() {
		return false
	}
	r.execs.Add(1)
	return true
}

// execsDone marks the pod ended for execBegin and waits for the
// commands in flight; each ends at once when the pod has (its Wait
// returns 137), so the bound only guards against a caller that stopped
// reading.
func (r *runner) execsDone() {
	r.execMu.Lock()
	r.ended.Store(true)
	r.execMu.Unlock()
	done := make(chan struct{})
	go func() {
		r.execs.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		r.o.Warn("commands still reporting their end after the pod stopped; not waiting for them")
	}
}

func (r *runner) execEnd(start time.Time, code int, outcome string) {
	r.o.Audit("exec.exit", map[string]any{"exit": code, "duration_ms": time.Since(start).Milliseconds()}, outcome)
}

// stop ends the pod: a started one through its init (SIGTERM to every
// process, SIGKILL after grace), a one-command one by SIGTERM to its
// command, then the same.
func (r *runner) stop(grace time.Duration) control.Response {
	if grace <= 0 {
		grace = sandbox.DefaultGrace
	}
	if !r.stopping.CompareAndSwap(false, true) {
		return control.Response{OK: true}
	}
	r.o.Audit("stop", map[string]any{"grace": grace.String()}, "ok")
	if p := r.proc.Load(); p != nil {
		if err := p.Stop(grace); err != nil {
			return control.Response{Error: err.Error()}
		}
	} else if pid := r.initPID.Load(); pid > 0 {
		_ = syscall.Kill(int(pid), syscall.SIGTERM) // the init passes it on to the command
	}
	r.stopKill.Store(time.AfterFunc(grace+time.Second, func() {
		if !r.ended.Load() {
			r.killAll()
		}
	}))
	return control.Response{OK: true}
}

// getenv is key's last value in env, as a shell would take it.
func getenv(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}
