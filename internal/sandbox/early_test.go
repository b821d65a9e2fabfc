package sandbox_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/sandbox"
)

// untilAwaitingGo waits, from inside OnStart, until the init has done
// everything it does before "go" and blocks for it; it fails at once when
// the init reports (or exits) instead.
func untilAwaitingGo(t *testing.T, pd *sandbox.Pending) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !sandbox.AwaitingGo(pd) {
		if sandbox.StatusSent(pd) {
			t.Fatalf("the init reported (or exited) before go")
		}
		if time.Now().After(deadline) {
			t.Fatalf("the init never came to wait for go")
		}
		time.Sleep(time.Millisecond)
	}
}

// The init builds its view and looks the command up while OnStart runs,
// and a failure of that is reported only after go, as the same error the
// step gave when it ran after go: OnStart always finds the init alive and
// waiting, never a dying one whose status is already on the socket.
func TestFailureBeforeGoWaitsForGo(t *testing.T) {
	f := newFixture(t, "ws")
	mustWrite(t, filepath.Join(f.ws, "notexec"), "#!/bin/sh\necho no\n")
	badMount := f.spec(t, "true")
	badMount.Mounts = append(badMount.Mounts, sandbox.Mount{Kind: sandbox.KindBind, Source: "/nonexistent-airlock", Target: "/opt/x", Reason: "test entry"})
	badDir := f.spec(t, "true")
	badDir.Dir = filepath.Join(f.ws, "no-such-dir")
	cases := []struct {
		name    string
		spec    *sandbox.Spec
		code    int
		msg     string
		wantErr error
	}{
		{"not found", f.spec(t, "airlock-no-such-command"), 127, "airlock-no-such-command: command not found", errdefs.ErrNotFound},
		{"not executable", f.spec(t, "./notexec"), 126, "./notexec: permission denied", nil},
		{"mount", badMount, 125, "mounting bind on /opt/x (test entry): open_tree /nonexistent-airlock: no such file or directory", nil},
		{"working directory", badDir, 125, "working directory " + badDir.Dir + " does not exist", errdefs.ErrNotFound},
	}
	before := len(children(t))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pd, err := sandbox.Spawn(sandbox.SpawnOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer pd.Abort()
			c.spec.Early = pd
			ranOnStart := false
			c.spec.OnStart = func(pid int) error {
				ranOnStart = true
				untilAwaitingGo(t, pd)
				time.Sleep(20 * time.Millisecond) // room for a wrong init to report and exit
				if sandbox.StatusSent(pd) {
					t.Errorf("the init reported before go")
				}
				if !sandbox.AwaitingGo(pd) {
					t.Errorf("the init stopped waiting for go before it came")
				}
				return nil
			}
			p, err := sandbox.Start(c.spec)
			if err == nil {
				p.Wait()
				t.Fatalf("the command started")
			}
			if !ranOnStart {
				t.Fatalf("OnStart did not run")
			}
			var se *sandbox.SetupError
			if !errors.As(err, &se) || se.Code != c.code || !strings.HasPrefix(se.Msg, c.msg) {
				t.Errorf("err %#v, want code %d and %q", err, c.code, c.msg)
			}
			if c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Errorf("err %v is not %v", err, c.wantErr)
			}
		})
	}
	if n := len(children(t)); n != before {
		t.Errorf("%d child processes left behind", n-before)
	}
}

// When OnStart fails the supervisor aborts: a failure the init holds is
// never reported, the start fails with OnStart's error, and nothing of the
// pod is left.
func TestFailureBeforeGoThenAbort(t *testing.T) {
	f := newFixture(t, "ws")
	spec := f.spec(t, "airlock-no-such-command")
	before := len(children(t))
	pd, err := sandbox.Spawn(sandbox.SpawnOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec.Early = pd
	spec.OnStart = func(int) error {
		untilAwaitingGo(t, pd)
		return errors.New("network wall refused")
	}
	if _, err := sandbox.Start(spec); err == nil || err.Error() != "network wall refused" {
		t.Errorf("err %v, want OnStart's", err)
	}
	if n := len(children(t)); n != before {
		t.Errorf("%d child processes left behind", n-before)
	}
}

// What the init does before go is done by the time it waits for go: the
// view is mounted and it is in it (pivot_root), and the command starts
// after go with the status it sends then.
func TestViewBuiltBeforeGo(t *testing.T) {
	f := newFixture(t, "ws")
	spec := f.spec(t, "sh", "-c", "test -f "+f.ws+"/file.txt")
	pd, err := sandbox.Spawn(sandbox.SpawnOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer pd.Abort()
	spec.Early = pd
	spec.OnStart = func(pid int) error {
		untilAwaitingGo(t, pd)
		mi, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(mi), " "+f.ws+" ") || !strings.Contains(string(mi), " / / ") {
			t.Errorf("before go the init's mounts lack the view (the workspace at %s, the pod's root at /):\n%s", f.ws, mi)
		}
		if sandbox.StatusSent(pd) {
			t.Errorf("the init reported before go")
		}
		return nil
	}
	p, err := sandbox.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(); code != 0 || err != nil {
		t.Errorf("code %d err %v", code, err)
	}
}
