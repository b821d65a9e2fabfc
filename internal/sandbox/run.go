package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// forwarded are the signals the supervisor passes on to the pod instead of
// dying of them. In TTY mode the terminal's own keys (Ctrl-C, Ctrl-\) reach
// the pod through the pty; these cover kill(1) sent to the supervisor.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}

// Run starts the pod, waits for it and returns the command's exit code.
// With spec.TTY the command gets a pty of its own, the host terminal
// (spec.Stdin) is put in raw mode and restored on every exit path, and
// window size changes follow the host terminal. The code is 125 (or 126,
// 127 for a command that cannot be run) when err is non-nil.
func Run(spec *Spec) (int, error) {
	if spec.TTY {
		return runTTY(spec)
	}
	return runPlain(spec)
}

func runPlain(spec *Spec) (int, error) {
	sigs, stop := notify(forwarded)
	defer stop()
	p, err := Start(spec)
	if err != nil {
		return startCode(err), err
	}
	return waitForwarding(p, sigs, nil)
}

// notify registers sigs for forwarding beside the start of the pod:
// signal.Notify costs a round trip to the runtime's signal-mask thread
// per signal (0.3-0.4 ms for four). A signal that arrives before the
// registration is done acts as one that arrived before Run: it stops the
// supervisor, and with it the pod (Pdeathsig).
func notify(sigs []os.Signal) (<-chan os.Signal, func()) {
	ch := make(chan os.Signal, 4)
	done := make(chan struct{})
	go func() {
		signal.Notify(ch, sigs...)
		close(done)
	}()
	return ch, func() {
		<-done
		signal.Stop(ch)
	}
}

// waitForwarding waits for p while passing signals from sigs to it; a
// SIGWINCH calls winch instead.
func waitForwarding(p *Process, sigs <-chan os.Signal, winch func()) (int, error) {
	Forward(p.done, sigs, func(s os.Signal) { _ = p.Signal(s) }, winch)
	return p.Wait()
}

// Forward passes each signal from sigs to pass until done is closed; a
// SIGWINCH calls winch instead (nothing, if winch is nil).
func Forward(done <-chan struct{}, sigs <-chan os.Signal, pass func(os.Signal), winch func()) {
	for {
		select {
		case <-done:
			return
		case s := <-sigs:
			if s == syscall.SIGWINCH {
				if winch != nil {
					winch()
				}
				continue
			}
			pass(s)
		}
	}
}

func startCode(err error) int {
	var se *SetupError
	if errors.As(err, &se) && se.Code != 0 {
		return se.Code
	}
	return ExitSetup
}

func runTTY(spec *Spec) (int, error) {
	host := spec.Stdin
	if host == nil {
		host = os.Stdin
	}
	out := spec.Stdout
	if out == nil {
		out = os.Stdout
	}
	// The init allocates the agent's pty in the pod's devpts and hands
	// the master back; the host terminal itself never enters the pod
	// (Spawn gives the init /dev/null in TTY mode).
	inner := *spec
	if ws, err := unix.IoctlGetWinsize(int(host.Fd()), unix.TIOCGWINSZ); err == nil {
		inner.Rows, inner.Cols = ws.Row, ws.Col
	}
	if term.IsTerminal(int(host.Fd())) {
		old, err := term.MakeRaw(int(host.Fd()))
		if err != nil {
			return ExitSetup, fmt.Errorf("putting the terminal in raw mode: %w", err)
		}
		defer func() { _ = term.Restore(int(host.Fd()), old) }()
	}
	sigs, stop := notify(append(forwarded, syscall.SIGWINCH))
	defer stop()
	p, err := Start(&inner)
	if err != nil {
		return startCode(err), err
	}
	kill := func() {
		_ = p.Signal(syscall.SIGKILL)
		p.Wait()
	}
	ptmx := p.Files[FileTerminal]
	if ptmx == nil {
		kill()
		return ExitSetup, fmt.Errorf("the pod's init handed back no terminal")
	}
	defer ptmx.Close()
	// The pod's end closes every slave of the pty: the copy ends with EIO.
	return RelayTerminal(host, out, ptmx, 0, kill, func(resize func()) (int, error) {
		return waitForwarding(p, sigs, resize)
	})
}

// RelayTerminal copies between the host terminal (in raw mode, the
// caller's job) and a pty master of the pod while wait runs, the window
// size following the host's (wait gets the resize to call on SIGWINCH).
// After wait, the output is read until the pty is closed, or for at most
// linger (a non-blocking ptmx only) when something may keep it open. If
// the relay cannot be set up, abort is called instead of wait.
func RelayTerminal(host, out, ptmx *os.File, linger time.Duration, abort func(), wait func(resize func()) (int, error)) (int, error) {
	resize := func() { _ = pty.InheritSize(host, ptmx) }
	resize() // the size may have changed while the pod started
	stopR, stopW, err := os.Pipe()
	if err != nil {
		abort()
		return ExitSetup, fmt.Errorf("creating a pipe: %w", err)
	}
	defer stopR.Close()
	input := make(chan struct{})
	go func() {
		CopyInput(ptmx, host, stopR)
		close(input)
	}()
	copied := make(chan struct{})
	go func() {
		_, _ = io.Copy(out, ptmx) // ends with EIO once no process holds the pty
		close(copied)
	}()
	code, err := wait(resize)
	if linger > 0 {
		select {
		case <-copied:
		case <-time.After(linger):
			_ = ptmx.SetReadDeadline(time.Now())
			<-copied
		}
	} else {
		<-copied
	}
	stopW.Close()
	<-input
	return code, err
}

// CopyInput copies the host terminal to the pod until stop becomes
// readable (closed). It reads only when poll says input is there, so it
// never sits in a read that would hold the terminal or swallow a key
// typed after the pod ended.
func CopyInput(dst io.Writer, src, stop *os.File) {
	buf := make([]byte, 4096)
	fds := []unix.PollFd{{Fd: int32(src.Fd()), Events: unix.POLLIN}, {Fd: int32(stop.Fd()), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
			return
		}
		if fds[1].Revents != 0 {
			return
		}
		if fds[0].Revents&(unix.POLLIN|unix.POLLHUP|unix.POLLERR) == 0 {
			continue
		}
		n, err := unix.Read(int(src.Fd()), buf)
		if n <= 0 || err != nil {
			return
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// DefaultGrace is how long a stop gives a pod's processes after SIGTERM
// before the kernel kills what is left.
const DefaultGrace = 10 * time.Second

// Serve starts a serving pod (spec.Serve), calls ready with it once every
// wall is up, and waits until it stops: by Process.Stop, a signal to the
// supervisor (SIGINT, SIGTERM, SIGHUP, SIGQUIT stop it with DefaultGrace;
// a second one kills it), or the pod's end. The code is the init's.
func Serve(spec *Spec, ready func(*Process)) (int, error) {
	sigs, stop := notify(forwarded)
	defer stop()
	p, err := Start(spec)
	if err != nil {
		return startCode(err), err
	}
	ready(p)
	done := make(chan struct{})
	go func() {
		<-p.done
		close(done)
	}()
	stopping := false
	for {
		select {
		case <-done:
			return p.Wait()
		case <-sigs:
			if stopping {
				_ = p.Signal(syscall.SIGKILL)
				continue
			}
			stopping = true
			_ = p.Stop(DefaultGrace)
		}
	}
}
