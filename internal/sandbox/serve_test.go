package sandbox_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/sandbox"
)

// startServing starts a pod that serves commands, and stops it at the end.
func startServing(t *testing.T, f *fixture) *sandbox.Process {
	t.Helper()
	spec := f.spec(t)
	spec.Args, spec.Serve = nil, true
	p, err := sandbox.Start(spec)
	if err != nil {
		t.Fatalf("starting a serving pod: %v", err)
	}
	t.Cleanup(func() {
		_ = p.Signal(syscall.SIGKILL)
		p.Wait()
	})
	return p
}

// execOut runs one command in p with its output captured.
func execOut(t *testing.T, p *sandbox.Process, f *fixture, args ...string) (int, string, error) {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	e, err := p.Exec(sandbox.ExecOptions{Args: args, Env: []string{"PATH=/usr/bin:/bin"}, Dir: f.ws, Stdout: out, Stderr: out})
	if err != nil {
		var se *sandbox.SetupError
		if errors.As(err, &se) {
			return se.Code, "", err
		}
		return -1, "", err
	}
	code := e.Wait()
	b, _ := os.ReadFile(out.Name())
	return code, string(b), nil
}

func TestServeExitCodes(t *testing.T) {
	f := newFixture(t, "ws")
	mustWrite(t, filepath.Join(f.ws, "notexec"), "#!/bin/sh\necho no\n")
	p := startServing(t, f)
	cases := []struct {
		name string
		args []string
		code int
		err  error
	}{
		{"true", []string{"true"}, 0, nil},
		{"exit 3", []string{"sh", "-c", "exit 3"}, 3, nil},
		{"not found", []string{"airlock-no-such-command"}, 127, errdefs.ErrNotFound},
		{"not executable", []string{"./notexec"}, 126, nil},
		{"empty name", []string{""}, 127, errdefs.ErrNotFound},
		{"killed", []string{"sh", "-c", "kill -9 $$"}, 137, nil},
	}
	for _, c := range cases {
		code, out, err := execOut(t, p, f, c.args...)
		if code != c.code {
			t.Errorf("%s: code %d, want %d (err %v, output %q)", c.name, code, c.code, err, out)
		}
		if c.err != nil && !errors.Is(err, c.err) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.err)
		}
	}
	// The pod is still up after all of them, and a write lands in the layer.
	if code, out, err := execOut(t, p, f, "sh", "-c", "echo new > added.txt; hostname; cat file.txt"); code != 0 || out != "pod-test\nhost content" {
		t.Fatalf("code %d out %q err %v", code, out, err)
	}
	if b, err := os.ReadFile(filepath.Join(f.state, "ws/upper/added.txt")); err != nil || string(b) != "new\n" {
		t.Errorf("the write is not in the layer: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(f.ws, "added.txt")); !os.IsNotExist(err) {
		t.Errorf("the write reached the host workspace: %v", err)
	}
}

// The commands of one pod share its PID namespace: one runs beside
// another, a background process outlives the command that started it, and
// Stop ends them all.
func TestServeConcurrentAndStop(t *testing.T) {
	f := newFixture(t, "ws")
	p := startServing(t, f)
	long, err := p.Exec(sandbox.ExecOptions{Args: []string{"sleep", "979"}, Env: []string{"PATH=/usr/bin:/bin"}, Dir: f.ws})
	if err != nil {
		t.Fatal(err)
	}
	if code, out, err := execOut(t, p, f, "sh", "-c", "sleep 980 & echo started"); code != 0 || out != "started\n" {
		t.Fatalf("code %d out %q err %v", code, out, err)
	}
	// The shell may end before its background child has exec'd sleep.
	for deadline := time.Now().Add(10 * time.Second); !leftover(t, "980"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a background process did not outlive its command")
		}
	}
	if err := long.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := long.Wait(); code != 128+int(syscall.SIGTERM) {
		t.Errorf("signalled command: code %d", code)
	}
	hup, err := p.Exec(sandbox.ExecOptions{Args: []string{"sleep", "981"}, Env: []string{"PATH=/usr/bin:/bin"}, Dir: f.ws})
	if err != nil {
		t.Fatal(err)
	}
	if err := hup.Hangup(); err != nil {
		t.Fatal(err)
	}
	if code := hup.Wait(); code != 128+int(syscall.SIGHUP) {
		t.Errorf("hung-up command: code %d", code)
	}
	if err := p.Stop(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { p.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the pod did not stop")
	}
	if leftover(t, "980") {
		t.Errorf("the background process survived the stop")
	}
	if _, err := p.Exec(sandbox.ExecOptions{Args: []string{"true"}}); !errors.Is(err, sandbox.ErrPodStopped) {
		t.Errorf("exec after stop: %v, want ErrPodStopped", err)
	}
}

// A command with a TTY gets a new pty of the pod's own devpts, owned by
// the pod's user, as its controlling terminal.
func TestServeTTY(t *testing.T) {
	f := newFixture(t, "ws")
	p := startServing(t, f)
	e, err := p.Exec(sandbox.ExecOptions{Args: []string{"sh", "-c", "tty; stat -c %u /proc/self/fd/0; test -t 1 && echo isatty"}, Env: []string{"PATH=/usr/bin:/bin"}, Dir: f.ws, TTY: true, Rows: 30, Cols: 100})
	if err != nil {
		t.Fatal(err)
	}
	if e.Terminal == nil {
		t.Fatal("no terminal handed back")
	}
	defer e.Terminal.Close()
	got := make(chan string)
	go func() {
		b, _ := io.ReadAll(e.Terminal) // EIO once the command is gone
		got <- string(b)
	}()
	if code := e.Wait(); code != 0 {
		t.Errorf("code %d", code)
	}
	out := strings.ReplaceAll(<-got, "\r", "")
	if !strings.HasPrefix(out, "/dev/pts/") || !strings.Contains(out, "\n0\nisatty") {
		t.Errorf("output %q", out)
	}
}

// The walls of a served command are those of a one-command pod's agent.
func TestServeWallsMatchRun(t *testing.T) {
	f := newFixture(t, "ws")
	ops := []string{"status:NoNewPrivs,CapEff,CapBnd,CapPrm,Seccomp", "rlimit:", "hostname:", "getpid:", "read:" + filepath.Join(f.home, ".ssh", "id_rsa")}
	one := probes(t, f.probeSpec(t, ops...))
	p := startServing(t, f)
	exe, _ := os.Executable()
	code, out, err := execOut(t, p, f, append([]string{exe, probeArg}, ops...)...)
	if code != 0 || err != nil {
		t.Fatalf("code %d err %v out %q", code, err, out)
	}
	for _, op := range ops {
		want, ok := one[op]
		if !ok {
			t.Fatalf("%s did not run in the one-command pod", op)
		}
		if !strings.Contains(out, op+" => "+want+"\n") {
			t.Errorf("%s: one-command pod %q, served command output %q", op, want, out)
		}
	}
}

// A host directory (or an O_PATH descriptor) as a command's stdio would
// be a way out of the pod's view: openat and fchdir from it walk the
// host's tree. Neither a one-command pod nor a served command takes one.
func TestStdioDirectoryRefused(t *testing.T) {
	f := newFixture(t, "ws")
	dir, err := os.Open("/")
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	opath, err := os.OpenFile("/etc", unix.O_PATH, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer opath.Close()
	for _, bad := range []*os.File{dir, opath} {
		spec := f.spec(t, "sh", "-c", "ls /proc/self/fd/0/ && touch /proc/self/fd/0/tmp/airlock-escaped")
		spec.Stdin = bad
		if code, _, err := run(t, spec); code != 125 || !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("one-command pod with %s as stdin: code %d, err %v", bad.Name(), code, err)
		}
	}
	p := startServing(t, f)
	for _, bad := range []*os.File{dir, opath} {
		_, err := p.Exec(sandbox.ExecOptions{Args: []string{"true"}, Env: []string{"PATH=/usr/bin:/bin"}, Dir: f.ws, Stdout: bad})
		if !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("served command with %s as stdout: err %v", bad.Name(), err)
		}
	}
	if _, err := os.Stat("/tmp/airlock-escaped"); err == nil {
		os.Remove("/tmp/airlock-escaped")
		t.Fatal("a command escaped through a directory fd")
	}
}

// The agent signals the init with every signal on which the Go runtime
// would crash a process that did not ask for it: the init (and with it
// the pod) lives on, in a one-command pod and in a serving one.
func TestInitSurvivesFatalSignals(t *testing.T) {
	f := newFixture(t, "ws")
	// By number (asm-generic: SEGV BUS FPE ILL ABRT TRAP SYS STKFLT): dash knows no STKFLT.
	script := "for s in 11 7 8 4 6 5 31 16; do kill -$s 1 || echo cannot $s; done; sleep 0.2; echo alive"
	code, out, err := run(t, f.spec(t, "sh", "-c", script))
	if code != 0 || out != "alive\n" {
		t.Errorf("one-command pod: code %d, output %q, err %v", code, out, err)
	}
	p := startServing(t, f)
	if code, out, err := execOut(t, p, f, "sh", "-c", script); code != 0 || out != "alive\n" {
		t.Errorf("serving pod: code %d, output %q, err %v", code, out, err)
	}
	if code, _, err := execOut(t, p, f, "true"); code != 0 {
		t.Errorf("the serving pod did not survive: code %d, err %v", code, err)
	}
}
