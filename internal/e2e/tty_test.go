package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// ttySession is airlock running on a pseudo-terminal, as in a person's
// terminal emulator.
type ttySession struct {
	t    *testing.T
	ptmx *os.File
	mu   sync.Mutex
	out  bytes.Buffer
	seen int // output before this offset was already matched
	done chan struct{}
}

func startTTY(t *testing.T, e *env, rows, cols uint16, args ...string) (*ttySession, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = e.ws
	cmd.Env = append(os.Environ(), "AIRLOCK_HOME="+e.home, "TERM=xterm", "PS1=$ ")
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: rows, Cols: cols})
	if err != nil {
		t.Fatal(err)
	}
	s := &ttySession{t: t, ptmx: ptmx, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			s.mu.Lock()
			s.out.Write(buf[:n])
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		ptmx.Close()
	})
	return s, cmd
}

func (s *ttySession) send(keys string) {
	s.t.Helper()
	if _, err := s.ptmx.WriteString(keys); err != nil {
		s.t.Fatalf("typing %q: %v", keys, err)
	}
}

// expect waits until the output after the last match holds want.
func (s *ttySession) expect(want string) {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		i := strings.Index(s.out.String()[s.seen:], want)
		if i >= 0 {
			s.seen += i + len(want)
		}
		out := s.out.String()
		s.mu.Unlock()
		if i >= 0 {
			return
		}
		select {
		case <-s.done:
			s.t.Fatalf("airlock ended before printing %q; output:\n%q", want, out)
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.t.Fatalf("no %q within 10s; output:\n%q", want, s.out.String())
}

// An interactive shell in a pod behaves like one on the host: it has a
// terminal of the right size that follows resizes, Ctrl-C interrupts the
// foreground command (not airlock), Ctrl-Z stops it and job control works,
// and the shell's exit status is airlock's. The host terminal is left in
// the mode it was in.
func TestInteractiveTerminal(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	s, cmd := startTTY(t, e, 30, 100, "run", "p", "--", "/bin/bash", "--norc", "--noprofile", "-i")
	s.send("stty size; test -t 0 && echo IS-A-TTY\n")
	s.expect("30 100")
	s.expect("IS-A-TTY")
	// The terminal is the pod's own: ttyname finds it in the pod's
	// devpts (a host pty would read "not a tty"), /dev/tty opens it, and
	// no other pty is visible there.
	s.send("echo TTY=$(tty) PTS=$(ls /dev/pts | tr '\\n' ,); echo via-dev-tty >/dev/tty && echo DEVTTY-OK\n")
	s.expect("TTY=/dev/pts/0 PTS=0,ptmx,")
	s.expect("DEVTTY-OK")

	resizeAndInterrupt(t, s)

	s.send("sh -c 'echo STAR''TED; exec sleep 101'\n")
	s.expect("STARTED")
	time.Sleep(100 * time.Millisecond)
	s.send("\x1a") // Ctrl-Z
	s.expect("Stopped")
	s.send("jobs; bg %1; jobs\n")
	s.expect("Running")
	s.send("kill %1; wait; echo jobs''-done\n")
	s.expect("jobs-done")

	s.send("exit 3\n")
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("airlock did not end after the shell exited")
	}
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("airlock exit = %v, want the shell's 3", err)
	}
	// airlock put the terminal in raw mode; it must be cooked again.
	tio, err := unix.IoctlGetTermios(int(s.ptmx.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tio.Lflag&(unix.ICANON|unix.ECHO) != unix.ICANON|unix.ECHO {
		t.Errorf("terminal left in raw mode: lflag %#x", tio.Lflag)
	}
}

// resizeAndInterrupt checks, in an interactive shell of the pod behind
// s, that a new window size reaches the pod's terminal and that Ctrl-C
// interrupts the foreground command (130), leaving the shell.
func resizeAndInterrupt(t *testing.T, s *ttySession) {
	t.Helper()
	if err := pty.Setsize(s.ptmx, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // SIGWINCH reaches airlock, which resizes the pod's terminal
	s.send("stty size\n")
	s.expect("40 120")
	// Each key goes to a command that has started: the marker is printed
	// just before the exec.
	s.send("sh -c 'echo RUN''NING; exec sleep 100'\n")
	s.expect("RUNNING")
	time.Sleep(100 * time.Millisecond)
	s.send("\x03") // Ctrl-C
	s.send("echo after-interrupt=$?\n")
	s.expect("after-interrupt=130")
}
