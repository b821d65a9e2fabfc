package cli

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/control"
	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/pod"
	"github.com/airlock-dev/airlock/internal/sandbox"
	"github.com/airlock-dev/airlock/internal/supervisor"
)

// superviseArg is the hidden verb under which airlock start re-executes
// the binary as a started pod's detached supervisor.
const superviseArg = "__airlock_supervise"

// readyFD is the pipe on which the detached supervisor says "ok" once the
// pod serves, or "error CODE MESSAGE".
const readyFD = 3

func newStartCmd() *cobra.Command {
	var f runFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "start [POD] [flags]",
		Short: "Start a pod that keeps its walls up and runs each airlock run in it",
		Long: `Start a pod in the background with no command: its namespaces, copy-on-write
view, cgroup, network wall and seccomp and Landlock rules are built once and
stay up. Each 'airlock run POD -- CMD' then runs CMD inside it, beside any
other, with the same walls, and in a few milliseconds instead of building
them again. Background processes a command leaves live until the pod stops.

Without POD, the pod of the workspace is used, and created as by airlock run.
The wall flags (--memory, --cpus, ...) are the pod's for as long as it runs.
While the pod is started, commit, rollback and undo are refused: stop it
first with 'airlock stop'. The supervisor's own messages go to
pods/<name>/run/supervisor.log.`,
		Example: `  airlock start mypod
  airlock run mypod -- make test
  airlock stop mypod`,
		Args: argsError(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			return startPod(cmd, &f, name, asJSON)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.workspace, "workspace", "", "workspace directory (default: the current directory)")
	fl.StringVar(&f.config, "config", "", "config file when creating the pod (default: WORKSPACE/airlock.yaml, else built-in defaults)")
	addWallFlags(cmd, &f)
	fl.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func startPod(cmd *cobra.Command, f *runFlags, name string, asJSON bool) error {
	s, err := openStore()
	if err != nil {
		return err
	}
	p, created, err := podForRun(s, name, f.workspace, f.config)
	if err != nil {
		return err
	}
	if created {
		record(p, "pod.create", map[string]any{"workspace": p.State.Workspace}, "ok")
	} else if f.config != "" {
		fmt.Fprintf(os.Stderr, "airlock: warning: --config is read only when a pod is created; pod %s keeps its own config (%s)\n", p.Name, p.ConfigPath())
	}
	if pid, running := p.Running(); running {
		if rs, ok := p.LastRun(); ok && rs.Serve && rs.Exit == nil {
			return errdefs.Busy("pod %s is already running (started, supervisor pid %d); run commands in it with airlock run %s -- CMD, or stop it with airlock stop %s", p.Name, pid, p.Name, p.Name)
		}
		return errdefs.Busy("pod %s is already running a command (supervisor pid %d); wait for it, or stop it with airlock stop %s, then start it", p.Name, pid, p.Name)
	}
	// The flags are checked here, where the person sees the error; the
	// supervisor applies them again.
	if err := checkRunFlags(p, f); err != nil {
		return err
	}
	pid, err := spawnSupervisor(p, f)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(cmd.OutOrStdout(), map[string]any{"pod": p.Name, "supervisor_pid": pid, "workspace": p.State.Workspace})
	}
	fmt.Fprintf(cmd.OutOrStdout(), "started pod %s (supervisor pid %d)\n  run a command in it: airlock run %s -- CMD\n  stop it:             airlock stop %s\n", p.Name, pid, p.Name, p.Name)
	return nil
}

// checkRunFlags applies the wall flags to a copy of the pod's config and
// checks -p.
func checkRunFlags(p *pod.Pod, f *runFlags) error {
	cfg := *p.Config
	if err := applyRunFlags(&cfg, f); err != nil {
		return errdefs.Invalid("%v", err)
	}
	return checkPublish(f.publish)
}

// wallArgs turns the wall flags back into arguments for the supervisor.
func wallArgs(f *runFlags) []string {
	var a []string
	for _, kv := range [][2]string{{"--memory", f.memory}, {"--swap", f.swap}, {"--timeout", f.timeout}} {
		if kv[1] != "" {
			a = append(a, kv[0], kv[1])
		}
	}
	if f.cpus > 0 {
		a = append(a, "--cpus", strconv.FormatFloat(f.cpus, 'g', -1, 64))
	}
	if f.pids > 0 {
		a = append(a, "--pids", strconv.FormatInt(f.pids, 10))
	}
	for _, d := range f.downgrade {
		a = append(a, "--downgrade", d)
	}
	for _, p := range f.publish {
		a = append(a, "--publish", p)
	}
	return a
}

// spawnSupervisor starts the detached supervisor of p and waits until the
// pod serves, or for why it could not.
func spawnSupervisor(p *pod.Pod, f *runFlags) (int, error) {
	logPath := p.RunDir() + "/supervisor.log"
	if err := os.MkdirAll(p.RunDir(), 0o700); err != nil {
		return 0, fmt.Errorf("preparing %s: %w", p.RunDir(), err)
	}
	rotateLog(logPath)
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("opening the supervisor's log: %w", err)
	}
	defer log.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer readyR.Close()
	c := exec.Command("/proc/self/exe", append([]string{superviseArg, p.Name}, wallArgs(f)...)...)
	c.Stdout, c.Stderr = log, log
	c.ExtraFiles = []*os.File{readyW} // readyFD
	// A session of its own: the terminal that started it can close.
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.Start(); err != nil {
		readyW.Close()
		return 0, fmt.Errorf("starting the pod's supervisor: %w", err)
	}
	readyW.Close()
	pid := c.Process.Pid
	// The supervisor writes lines: "warn MESSAGE" for each warning
	// before the pod is up (a downgraded wall: the person must see it),
	// then "ok" or "error CODE MESSAGE". EOF without either: it died.
	got := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(readyR)
		for sc.Scan() {
			line := sc.Text()
			if msg, ok := strings.CutPrefix(line, "warn "); ok {
				fmt.Fprintln(os.Stderr, "airlock: warning: "+oneLine(msg))
				continue
			}
			got <- line
			return
		}
		got <- ""
	}()
	var msg string
	select {
	case msg = <-got:
	case <-time.After(2 * time.Minute):
		_ = c.Process.Kill()
		_ = c.Wait()
		return 0, fmt.Errorf("the pod's supervisor did not come up within 2 minutes (see %s)", logPath)
	}
	if msg == "ok" {
		_ = c.Process.Release() // it outlives this command
		return pid, nil
	}
	_ = c.Wait()
	if code, text, ok := strings.Cut(strings.TrimPrefix(msg, "error "), " "); ok && strings.HasPrefix(msg, "error ") {
		n, _ := strconv.Atoi(code)
		if n == 0 {
			n = exitFailure
		}
		return 0, &exitError{n, text}
	}
	return 0, fmt.Errorf("the pod's supervisor exited before the pod was up (see %s)", logPath)
}

// maxLog is the size past which the supervisor's log is moved to
// supervisor.log.1 at the next start.
const maxLog = 1 << 20

func rotateLog(path string) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().IsRegular() && fi.Size() > maxLog {
		_ = os.Rename(path, path+".1")
	}
}

// newSuperviseCmd is the detached supervisor itself (hidden).
func newSuperviseCmd() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:    superviseArg + " POD",
		Hidden: true,
		Args:   argsError(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return supervise(&f, args[0])
		},
	}
	addWallFlags(cmd, &f)
	return cmd
}

func supervise(f *runFlags, name string) error {
	// The ready pipe must not reach the pod's init, which is spawned
	// from this process.
	unix.CloseOnExec(readyFD)
	ready := os.NewFile(readyFD, "ready")
	var mu sync.Mutex
	answered := false
	answer := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		if !answered {
			answered = true
			_, _ = io.WriteString(ready, s+"\n")
			ready.Close()
		}
	}
	// Until the pod is up, a warning goes to the person too.
	tell := func(msg string) {
		mu.Lock()
		defer mu.Unlock()
		if !answered {
			_, _ = io.WriteString(ready, "warn "+oneLine(msg)+"\n")
		}
	}
	fail := func(code int, err error) error {
		answer("error " + strconv.Itoa(code) + " " + oneLine(err.Error()))
		return &exitError{code, err.Error()}
	}
	s, err := openStore()
	if err != nil {
		return fail(exitCode(err), err)
	}
	p, err := s.Get(name)
	if err != nil {
		return fail(exitCode(err), err)
	}
	if err := recoverPod(p); err != nil {
		return fail(exitCode(err), err)
	}
	if err := applyRunFlags(p.Config, f); err != nil {
		return fail(exitUsage, err)
	}
	tr := &trail{p: p}
	defer tr.close()
	tr.prepare()
	warn := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		tell(msg)
		fmt.Fprintln(os.Stderr, time.Now().UTC().Format(time.RFC3339)+" airlock: warning: "+oneLine(msg))
	}
	fmt.Fprintln(os.Stderr, time.Now().UTC().Format(time.RFC3339)+" airlock: supervising pod "+p.Name)
	_, err = supervisor.Run(supervisor.Options{
		Pod: p, Serve: true, Downgrade: f.downgrade, Publish: f.publish,
		Audit: tr.record, SyncAudit: tr.sync, Warn: warn,
		Ready: func() { answer("ok") },
	})
	if err != nil {
		// start reports the exit codes of every verb but run (5 busy, 6
		// unsupported, ...), not run's 125.
		return fail(exitCode(err), err)
	}
	answer("error 1 the pod stopped before it was up")
	fmt.Fprintln(os.Stderr, time.Now().UTC().Format(time.RFC3339)+" airlock: pod "+p.Name+" stopped")
	return nil
}

func newStopCmd() *cobra.Command {
	var grace time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stop POD... [--time DURATION]",
		Short: "Stop a running pod: SIGTERM to its processes, SIGKILL after --time",
		Long: `Stop a pod started with airlock start (or one running a command): every
process in it gets SIGTERM, and what is still there after --time is killed.
The pod's layer stays as it is, for diff, commit or rollback.`,
		Args: argsError(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if grace <= 0 {
				return errdefs.Invalid("--time %s: expected a positive duration such as 10s", grace)
			}
			s, err := openStore()
			if err != nil {
				return err
			}
			var stopped []string
			for _, name := range args {
				p, err := resolvePod(s, name)
				if err != nil {
					return err
				}
				if err := stopPod(p, grace); err != nil {
					return err
				}
				stopped = append(stopped, p.Name)
				if !asJSON {
					fmt.Fprintf(cmd.OutOrStdout(), "stopped %s\n", p.Name)
				}
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), map[string]any{"stopped": stopped})
			}
			return nil
		},
	}
	cmd.Flags().DurationVarP(&grace, "time", "t", sandbox.DefaultGrace, "how long the pod's processes get after SIGTERM")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// stopPod asks p's supervisor to stop it and waits until it has.
func stopPod(p *pod.Pod, grace time.Duration) error {
	if _, running := p.Running(); !running {
		return errdefs.Conflict("pod %s is not running", p.Name)
	}
	if _, err := control.Call(p.ControlSocket(), control.Request{Op: "stop", GraceMS: grace.Milliseconds()}); err != nil {
		if _, running := p.Running(); !running {
			return nil // it ended meanwhile
		}
		return fmt.Errorf("stopping pod %s: %w", p.Name, err)
	}
	deadline := time.Now().Add(grace + 10*time.Second)
	for time.Now().Before(deadline) {
		if _, running := p.Running(); !running {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("pod %s did not stop within %s; airlock kill %s ends it at once", p.Name, grace+10*time.Second, p.Name)
}
