package cli

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/airlock-dev/airlock/internal/control"
	"github.com/airlock-dev/airlock/internal/pod"
	"github.com/airlock-dev/airlock/internal/sandbox"
)

// execInPod runs argv in a pod that is already running, through its
// supervisor: beside the pod's other commands, inside the walls it was
// started with. Only a pod started with airlock start takes commands; a
// pod running one command says so. Without a TTY the command gets this
// process's own fds 0-2; with one, a pty of the pod's devpts whose master
// this process copies to and from the terminal.
func execInPod(p *pod.Pod, pid int, f *runFlags, argv []string) error {
	if fl := wallFlagSet(f); fl != "" {
		return &exitError{exitUsage, fmt.Sprintf("pod %s is running (supervisor pid %d); %s shapes the whole pod: give it to airlock start, or stop the pod first", p.Name, pid, fl)}
	}
	dir, _ := os.Getwd()
	req := control.ExecRequest{Args: argv, Env: f.env, Environ: os.Environ(), Cwd: dir, Workdir: f.workdir, TTY: wantTTY(f)}
	if req.TTY {
		if ws, err := unix.IoctlGetWinsize(int(os.Stdin.Fd()), unix.TIOCGWINSZ); err == nil {
			req.Rows, req.Cols = ws.Row, ws.Col
		}
	}
	// The signals are taken before the command exists, so that none sent
	// as it starts ends this process instead of reaching the command;
	// what comes before the start is passed on once it runs.
	list := forwarded
	if req.TTY {
		list = append(list, syscall.SIGWINCH)
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, list...)
	defer signal.Stop(sigs)
	x, err := control.Exec(p.ControlSocket(), req, []*os.File{os.Stdin, os.Stdout, os.Stderr})
	if err != nil {
		var ee *control.ExecError
		if errors.As(err, &ee) {
			return &exitError{ee.Code, ee.Msg}
		}
		return &exitError{sandbox.ExitSetup, err.Error()}
	}
	var code int
	if req.TTY {
		code, err = relayTerminal(x, sigs)
	} else {
		code, err = waitForwarding(x, sigs, nil)
	}
	if err != nil {
		return &exitError{code, err.Error()}
	}
	if code != 0 {
		return &exitError{code, ""}
	}
	return nil
}

// forwarded are the signals passed on to the command instead of ending
// this process; in TTY mode the terminal's keys reach it through the pty.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}

// waitForwarding waits for the command's end, passing the signals from
// sigs on; winch, if set, is called on SIGWINCH.
func waitForwarding(x *control.ExecClient, sigs <-chan os.Signal, winch func()) (int, error) {
	var code int
	var err error
	done := make(chan struct{})
	go func() {
		code, err = x.Wait()
		close(done)
	}()
	sandbox.Forward(done, sigs, func(s os.Signal) { _ = x.Signal(int(s.(syscall.Signal))) }, winch)
	return code, err
}

// relayTerminal copies between this terminal (raw while the command runs,
// restored on every path) and the command's pty.
func relayTerminal(x *control.ExecClient, sigs <-chan os.Signal) (int, error) {
	ptmx := x.Terminal
	if ptmx == nil {
		x.Close()
		return sandbox.ExitSetup, errors.New("the pod's supervisor handed back no terminal")
	}
	defer ptmx.Close()
	host := os.Stdin
	if term.IsTerminal(int(host.Fd())) {
		old, err := term.MakeRaw(int(host.Fd()))
		if err != nil {
			x.Close()
			return sandbox.ExitSetup, fmt.Errorf("putting the terminal in raw mode: %w", err)
		}
		defer func() { _ = term.Restore(int(host.Fd()), old) }()
	}
	// What the command wrote last may still be in the pty after its exit
	// (a background process can keep the pty open): read it briefly.
	return sandbox.RelayTerminal(host, os.Stdout, ptmx, 200*time.Millisecond, func() { x.Close() }, func(resize func()) (int, error) {
		return waitForwarding(x, sigs, resize)
	})
}
