package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/airlock-dev/airlock/internal/config"
	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/pod"
	"github.com/airlock-dev/airlock/internal/supervisor"
)

type runFlags struct {
	workspace, config, workdir string
	env, downgrade, publish    []string
	noTTY, tty                 bool
	memory, swap, timeout      string
	cpus                       float64
	pids                       int64
}

func newRunCmd() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [POD] [flags] [-- CMD ARGS...]",
		Short: "Run a command (default: your shell) inside a pod",
		Long: `Run a command inside a pod. Every write lands in the pod's copy-on-write layer;
review it with 'airlock diff'. Without POD, the pod of the workspace is used,
and created with built-in defaults (or the workspace's airlock.yaml) if there
is none yet.

The exit status is the command's; 125 when airlock fails before the command
starts, 126 when it is not executable, 127 when it is not found.`,
		Example: `  airlock run -- claude
  airlock run mypod --memory 2GiB -- make test
  echo hi | airlock run -- cat`,
		Args: argsError(func(cmd *cobra.Command, args []string) error {
			if n := before(cmd, args); n > 1 {
				return fmt.Errorf("takes at most one POD before --, got %d arguments (put the command after --)", n)
			}
			return nil
		}),
		RunE: func(cmd *cobra.Command, args []string) error {
			n := before(cmd, args)
			name := ""
			if n == 1 {
				name = args[0]
			}
			return runPod(cmd, &f, name, args[n:])
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.workspace, "workspace", "", "workspace directory (default: the current directory)")
	fl.StringVar(&f.config, "config", "", "config file when creating the pod (default: WORKSPACE/airlock.yaml, else built-in defaults)")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "set KEY=VAL in the command's environment (repeatable)")
	fl.StringVarP(&f.workdir, "workdir", "w", "", "working directory inside the pod (default: your place in the workspace)")
	fl.BoolVarP(&f.tty, "tty", "t", false, "allocate a pseudo-terminal even when stdin is not a terminal")
	fl.BoolVarP(&f.noTTY, "no-tty", "T", false, "never allocate a pseudo-terminal")
	addWallFlags(cmd, &f)
	return cmd
}

// addWallFlags adds the flags that shape a pod's walls for as long as it
// runs (run, start).
func addWallFlags(cmd *cobra.Command, f *runFlags) {
	fl := cmd.Flags()
	fl.StringVar(&f.memory, "memory", "", "memory limit for this run, e.g. 2GiB")
	fl.StringVar(&f.swap, "swap", "", "swap limit for this run")
	fl.Float64Var(&f.cpus, "cpus", 0, "CPU limit for this run, e.g. 1.5")
	fl.Int64Var(&f.pids, "pids", 0, "process limit for this run")
	fl.StringVar(&f.timeout, "timeout", "", "stop the pod after this long, e.g. 4h")
	fl.StringArrayVar(&f.downgrade, "downgrade", nil, "run without this wall if it cannot be built (seccomp, landlock, cgroups, network); audited")
	fl.StringArrayVarP(&f.publish, "publish", "p", nil, "publish a pod port: [HOST_IP:]HOST_PORT:POD_PORT (host side binds 127.0.0.1 unless given)")
}

// wallFlagSet names the first wall flag given, if any.
func wallFlagSet(f *runFlags) string {
	switch {
	case f.memory != "":
		return "--memory"
	case f.swap != "":
		return "--swap"
	case f.cpus != 0:
		return "--cpus"
	case f.pids != 0:
		return "--pids"
	case f.timeout != "":
		return "--timeout"
	case len(f.downgrade) > 0:
		return "--downgrade"
	case len(f.publish) > 0:
		return "--publish"
	}
	return ""
}

func checkPublish(publish []string) error {
	for _, pub := range publish {
		if _, _, err := config.ParsePublish(pub); err != nil {
			return errdefs.Invalid("-p: %v", err)
		}
	}
	return nil
}

// before counts the positional arguments before "--".
func before(cmd *cobra.Command, args []string) int {
	if d := cmd.ArgsLenAtDash(); d >= 0 {
		return d
	}
	return len(args)
}

func runPod(cmd *cobra.Command, f *runFlags, name string, argv []string) error {
	s, err := openStore()
	if err != nil {
		return &exitError{125, err.Error()}
	}
	p, created, err := podForRun(s, name, f.workspace, f.config)
	if err != nil {
		return &exitError{exitFor(err), err.Error()}
	}
	if created {
		record(p, "pod.create", map[string]any{"workspace": p.State.Workspace}, "ok")
	} else if f.config != "" {
		fmt.Fprintf(os.Stderr, "airlock: warning: --config is read only when a pod is created; pod %s keeps its own config (%s)\n", p.Name, p.ConfigPath())
	}
	for _, kv := range f.env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return &exitError{exitUsage, fmt.Sprintf("-e %q: expected KEY=VALUE", kv)}
		}
	}
	if pid, running := p.Running(); running {
		// A started pod runs the command beside its others (exec.go).
		return execInPod(p, pid, f, argv)
	}
	if err := recoverPod(p); err != nil {
		return &exitError{125, err.Error()}
	}
	if err := applyRunFlags(p.Config, f); err != nil {
		return &exitError{exitUsage, err.Error()}
	}
	if err := checkPublish(f.publish); err != nil {
		return &exitError{exitUsage, err.Error()}
	}
	tr := &trail{p: p}
	defer tr.close()
	tr.prepare() // beside the start: run.start must be durable before the agent runs
	code, err := supervisor.Run(supervisor.Options{
		Pod: p, Args: argv, Env: f.env, Workdir: f.workdir, TTY: wantTTY(f),
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		Downgrade: f.downgrade, Publish: f.publish,
		Audit: tr.record,
		Warn: func(format string, args ...any) {
			fmt.Fprintln(os.Stderr, "airlock: warning: "+oneLine(fmt.Sprintf(format, args...)))
		},
	})
	if err != nil {
		return &exitError{code, err.Error()}
	}
	if code != 0 {
		return &exitError{code, ""}
	}
	return nil
}

// exitFor maps a pre-start failure of run: usage problems keep exit 2 so
// scripts can tell a typo from a broken kernel; everything else is 125.
func exitFor(err error) int {
	if errors.Is(err, errdefs.ErrInvalid) {
		return exitUsage
	}
	return 125
}

func wantTTY(f *runFlags) bool {
	if f.noTTY {
		return false
	}
	if f.tty {
		return true
	}
	return term.IsTerminal(int(os.Stdin.Fd())) && term.IsTerminal(int(os.Stdout.Fd()))
}

func applyRunFlags(c *config.Config, f *runFlags) error {
	r := &c.Resources
	if f.memory != "" {
		b, err := config.ParseByteSize(f.memory)
		if err != nil {
			return fmt.Errorf("--memory: %w", err)
		}
		r.Memory = b
	}
	if f.swap != "" {
		b, err := config.ParseByteSize(f.swap)
		if err != nil {
			return fmt.Errorf("--swap: %w", err)
		}
		r.Swap = b
	}
	if f.cpus < 0 || f.pids < 0 {
		return errdefs.Invalid("--cpus and --pids must not be negative")
	}
	if f.cpus > 0 {
		r.CPUs = f.cpus
	}
	if f.pids > 0 {
		r.Pids = f.pids
	}
	if f.timeout != "" {
		d, err := time.ParseDuration(f.timeout)
		if err != nil || d <= 0 {
			return errdefs.Invalid("--timeout %q: expected a positive duration such as 90m or 4h", f.timeout)
		}
		r.Timeout = config.Duration(d)
	}
	return c.Validate()
}

// podForRun finds or creates the pod to run.
func podForRun(s *pod.Store, name, workspace, cfgPath string) (*pod.Pod, bool, error) {
	if name != "" {
		if err := pod.ValidateName(name); err != nil {
			return nil, false, err
		}
		p, err := s.Get(name)
		if err == nil {
			return p, false, nil
		}
		if !errors.Is(err, errdefs.ErrNotFound) {
			return nil, false, err
		}
	}
	ws, err := workspaceDir(workspace)
	if err != nil {
		return nil, false, err
	}
	if name == "" {
		// Run from a directory inside a pod's workspace uses that pod (the
		// command starts in the same subdirectory), as diff and commit do;
		// an explicit --workspace names the workspace exactly.
		find := s.ForWorkspace
		if workspace == "" {
			find = func(dir string) (*pod.Pod, error) { return podForDir(s, dir) }
		}
		if p, err := find(ws); err == nil {
			return p, false, nil
		}
		name = pod.DefaultName(ws)
	}
	p, err := createPod(s, name, ws, cfgPath)
	return p, err == nil, err
}

func workspaceDir(dir string) (string, error) {
	if dir == "" {
		var err error
		if dir, err = os.Getwd(); err != nil {
			return "", fmt.Errorf("finding the current directory: %w", err)
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", errdefs.Invalid("workspace %s: %v", dir, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", errdefs.Invalid("workspace %s does not exist", abs)
	}
	if st, err := os.Stat(real); err != nil || !st.IsDir() {
		return "", errdefs.Invalid("workspace %s is not a directory", abs)
	}
	return real, nil
}

// createPod creates a pod from --config, the workspace's airlock.yaml, or defaults.
func createPod(s *pod.Store, name, ws, cfgPath string) (*pod.Pod, error) {
	cfg := config.Default()
	if cfgPath == "" {
		if found, ok := config.FindInWorkspace(ws); ok {
			cfgPath = found
		}
	}
	if cfgPath != "" {
		c, err := config.Load(cfgPath)
		if err != nil {
			return nil, err
		}
		cfg = c
	}
	return s.Create(name, ws, cfg)
}
