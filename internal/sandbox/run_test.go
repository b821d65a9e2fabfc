package sandbox_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/sandbox"
)

func TestExitCodes(t *testing.T) {
	f := newFixture(t, "ws")
	mustWrite(t, filepath.Join(f.ws, "notexec"), "#!/bin/sh\necho no\n")
	cases := []struct {
		name    string
		args    []string
		code    int
		wantErr error
	}{
		{"true", []string{"true"}, 0, nil},
		{"exit 3", []string{"sh", "-c", "exit 3"}, 3, nil},
		{"not found", []string{"airlock-no-such-command"}, 127, errdefs.ErrNotFound},
		{"missing path", []string{"./missing"}, 127, errdefs.ErrNotFound},
		{"not executable", []string{"./notexec"}, 126, nil},
		{"killed", []string{"sh", "-c", "kill -9 $$"}, 128 + 9, nil},
		{"orphans reaped", []string{"sh", "-c", "sleep 977 & sleep 0.05; exit 4"}, 4, nil},
	}
	before := len(children(t))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, err := run(t, f.spec(t, c.args...))
			if code != c.code {
				t.Errorf("code %d, want %d (err %v, output %q)", code, c.code, err, out)
			}
			if c.code >= 126 && c.code <= 127 && err == nil {
				t.Errorf("no error for a command that cannot run")
			}
			if c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Errorf("err %v, want %v", err, c.wantErr)
			}
		})
	}
	if n := len(children(t)); n != before {
		t.Errorf("%d child processes left behind", n-before)
	}
	if leftover(t, "977") {
		t.Errorf("the pod's background sleep survived its init")
	}
}

// leftover reports whether any process runs "sleep <arg>".
func leftover(t *testing.T, arg string) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && string(b) == "sleep\x00"+arg+"\x00" {
			return true
		}
	}
	return false
}

func TestFailClosed(t *testing.T) {
	f := newFixture(t, "ws")
	marker := filepath.Join(f.ws, "ran")
	spec := f.spec(t, "sh", "-c", "touch "+marker)
	spec.Mounts = append(spec.Mounts, sandbox.Mount{Kind: sandbox.KindBind, Source: "/nonexistent-airlock", Target: "/opt/x", Reason: "test entry"})
	code, _, err := run(t, spec)
	if code != 125 || err == nil {
		t.Fatalf("code %d err %v, want 125 and an error", code, err)
	}
	if !strings.Contains(err.Error(), "/opt/x (test entry)") || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q does not name the entry on one line", err)
	}
	spec = f.spec(t, "sh", "-c", "touch "+marker)
	spec.Mounts = append(spec.Mounts, sandbox.Mount{Kind: sandbox.KindOverlay, Target: "/opt/y", Lower: "/usr", Upper: "/nonexistent-upper", Work: "/nonexistent-work", Reason: "bad overlay"})
	if code, _, err = run(t, spec); code != 125 || err == nil || !strings.Contains(err.Error(), "mounting overlay on /opt/y") {
		t.Errorf("code %d err %v, want 125 mounting overlay", code, err)
	}
	assertMissing(t, marker)
	assertMissing(t, filepath.Join(f.state, "ws/upper/ran"))
}

func TestOnStartFailureAborts(t *testing.T) {
	f := newFixture(t, "ws")
	spec := f.spec(t, "sh", "-c", "touch "+filepath.Join(f.ws, "ran"))
	spec.OnStart = func(pid int) error {
		if pid <= 1 {
			t.Errorf("OnStart got pid %d", pid)
		}
		return errors.New("cgroup refused")
	}
	before := len(children(t))
	if code, _, err := run(t, spec); code != 125 || err == nil || err.Error() != "cgroup refused" {
		t.Errorf("code %d err %v", code, err)
	}
	if n := len(children(t)); n != before {
		t.Errorf("%d child processes left behind", n-before)
	}
	assertMissing(t, filepath.Join(f.state, "ws/upper/ran"))
}

func TestPipes(t *testing.T) {
	f := newFixture(t, "ws")
	spec := f.spec(t, "cat")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() {
		io.WriteString(w, "x\nline two\n")
		w.Close()
	}()
	spec.Stdin = r
	code, out, err := run(t, spec)
	if code != 0 || err != nil || out != "x\nline two\n" {
		t.Errorf("code %d err %v out %q", code, err, out)
	}
}

func TestSignalForwarding(t *testing.T) {
	f := newFixture(t, "ws")
	spec := f.spec(t, "sh", "-c", "trap 'exit 42' TERM; while :; do sleep 0.01; done")
	p, err := sandbox.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let sh install its trap
	if err := p.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(); code != 42 || err != nil {
		t.Errorf("code %d err %v, want 42 from the trap", code, err)
	}
}

func TestSeccompInstalledOnAllThreads(t *testing.T) {
	f := newFixture(t, "ws")
	spec := f.probeSpec(t, "getpid:", "threads:1", "threads:self")
	spec.Seccomp = denyGetpid()
	res := probes(t, spec)
	expect(t, res, "getpid:", "err EPERM")
	for _, op := range []string{"threads:1", "threads:self"} {
		got := res[op]
		if !strings.HasPrefix(got, "ok ") || strings.Contains(got, "Seccomp=0") || !strings.Contains(got, "Seccomp=2") {
			t.Errorf("%s => %q, want every thread in filter mode", op, got)
		}
	}
}

// denyGetpid is a hand-written filter: getpid fails with EPERM.
func denyGetpid() []unix.SockFilter {
	return []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.SYS_GETPID},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
}

func TestLandlockReadOnlyDir(t *testing.T) {
	f := newFixture(t, "ws")
	mustWrite(t, filepath.Join(f.ws, "rw", "a"), "a")
	exe, _ := os.Executable()
	mustWrite(t, filepath.Join(f.ws, "ro", "open.txt"), "open")
	spec := f.probeSpec(t, "write:"+f.ws+"/rw/b", "write:"+f.ws+"/ro/b", "read:"+f.ws+"/ro/keep.txt", "write:/run/x",
		"write:"+f.ws+"/ro/open.txt", "write:"+f.ws+"/ro/keep.txt")
	spec.Landlock = &sandbox.LandlockSpec{
		Required: true,
		ReadOnly: []string{"/usr", "/etc", "/proc", f.ws, filepath.Dir(exe), "/no/such/path"},
		// not /tmp: the workspace is under it. A file gets the file
		// rights of its rule (a directory's would be refused).
		ReadWrite: []string{f.ws + "/rw", "/dev", f.ws + "/ro/open.txt"},
		Exec:      []string{"/usr", filepath.Dir(exe)},
	}
	res := probes(t, spec)
	expect(t, res, "write:"+f.ws+"/rw/b", "ok")
	expect(t, res, "write:"+f.ws+"/ro/b", "err EACCES")
	expect(t, res, "read:"+f.ws+"/ro/keep.txt", "ok keep")
	expect(t, res, "write:/run/x", "err EACCES")
	expect(t, res, "write:"+f.ws+"/ro/open.txt", "ok")
	expect(t, res, "write:"+f.ws+"/ro/keep.txt", "err EACCES")
}

// TestTTY drives Run the way a person at a terminal does: the window size
// reaches the pod, Ctrl-C interrupts it, and the terminal is restored.
func TestTTY(t *testing.T) {
	f := newFixture(t, "ws")
	term, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	defer tty.Close()
	if err := pty.Setsize(term, &pty.Winsize{Rows: 33, Cols: 77}); err != nil {
		t.Fatal(err)
	}
	before, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen strings.Builder
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 512)
		for {
			n, err := term.Read(buf) // EIO once the test closes tty
			mu.Lock()
			seen.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	output := func() string {
		mu.Lock()
		defer mu.Unlock()
		return seen.String()
	}

	spec := f.spec(t, "sh", "-c", "stty size; echo ready; exec sleep 30")
	spec.TTY = true
	spec.Stdin, spec.Stdout, spec.Stderr = tty, tty, tty
	done := make(chan int, 1)
	go func() {
		code, err := sandbox.Run(spec)
		if err != nil {
			t.Errorf("run: %v", err)
		}
		done <- code
	}()
	var code int
	deadline := time.After(10 * time.Second)
loop:
	for {
		select {
		case code = <-done:
			break loop
		case <-time.After(100 * time.Millisecond):
			if strings.Contains(output(), "ready") {
				term.Write([]byte{3}) // Ctrl-C, once the pod is past stty
			}
		case <-deadline:
			t.Fatalf("Ctrl-C did not stop the pod; output %q", output())
		}
	}
	if code != 128+2 {
		t.Errorf("code %d, want 130 (SIGINT)", code)
	}
	after, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if *after != *before {
		t.Errorf("terminal mode not restored")
	}
	tty.Close()
	<-readDone
	out := output()
	if !strings.Contains(out, "33 77") {
		t.Errorf("stty size in the pod did not show 33 77: %q", out)
	}
}
