package control

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// The exec conversation: the client's files reach the server, the start
// and the exit come back, signals pass on, and a client that goes away
// closes the server's signal channel (the hangup).
func TestExecConversation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	got := make(chan *ExecSession, 1)
	release := make(chan struct{})
	hungUp := make(chan struct{})
	s, err := ListenExec(path, func(Request) Response { return Response{OK: true} }, func(x *ExecSession) {
		got <- x
		if x.Req.Args[0] == "fail" {
			x.Fail(127, "fail: command not found")
			return
		}
		if err := x.Started(42, nil); err != nil {
			t.Error(err)
		}
		for sig := range x.Signals() {
			if sig == int(syscall.SIGTERM) {
				<-release
				x.Exit(143)
			}
		}
		close(hungUp)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	x, err := Exec(path, ExecRequest{Args: []string{"sleep"}, Env: []string{"A=1"}, Cwd: "/w"}, []*os.File{r, w, w})
	if err != nil {
		t.Fatal(err)
	}
	sess := <-got
	if x.Pid != 42 || len(sess.Stdio) != 3 || sess.Req.Cwd != "/w" || sess.Req.Env[0] != "A=1" {
		t.Fatalf("pid %d, %d files, request %+v", x.Pid, len(sess.Stdio), sess.Req)
	}
	// The passed write end is the client's pipe: what the server writes
	// through it, the client reads.
	if _, err := sess.Stdio[1].Write([]byte("via passed fd")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32)
	if n, _ := r.Read(buf); string(buf[:n]) != "via passed fd" {
		t.Fatalf("read %q through the passed fd", buf[:n])
	}
	if err := x.Signal(int(syscall.SIGTERM)); err != nil {
		t.Fatal(err)
	}
	close(release)
	if code, err := x.Wait(); code != 143 || err != nil {
		t.Fatalf("exit %d %v", code, err)
	}
	select {
	case <-hungUp:
	case <-time.After(5 * time.Second):
		t.Fatal("the server never saw the client go")
	}

	_, err = Exec(path, ExecRequest{Args: []string{"fail"}}, []*os.File{r, w, w})
	var ee *ExecError
	if !errors.As(err, &ee) || ee.Code != 127 || ee.Msg != "fail: command not found" {
		t.Fatalf("failed start: %v", err)
	}
	<-got
}

// A supervisor without an exec server (one running a single command)
// refuses exec with 125 and says why.
func TestExecRefusedWithoutServer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	s, err := Listen(path, func(Request) Response { return Response{OK: true} })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = Exec(path, ExecRequest{Args: []string{"true"}}, nil)
	var ee *ExecError
	if !errors.As(err, &ee) || ee.Code != 125 || ee.Msg == "" {
		t.Fatalf("exec without a server: %v", err)
	}
	// Plain requests still work on the same socket.
	if _, err := Call(path, Request{Op: "ping"}); err != nil {
		t.Fatal(err)
	}
}
