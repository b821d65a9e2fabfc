// Package e2e drives the built airlock binary the way a person does, as
// root, against real namespaces and overlays. Every test gets its own
// AIRLOCK_HOME and workspace and must leave nothing mounted or running.
package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/internal/cgroup"
	"github.com/airlock-dev/airlock/internal/testutil"
)

var bin string

func TestMain(m *testing.M) {
	// Started through sudo, every pod would act for the sudo user
	// (pod.InvokerFor); the tests that want that set the variables.
	for _, v := range []string{"SUDO_UID", "SUDO_GID", "SUDO_USER", "SUDO_COMMAND"} {
		os.Unsetenv(v)
	}
	bin = os.Getenv("AIRLOCK_BIN")
	if bin == "" {
		dir, err := os.MkdirTemp("", "airlock-e2e-bin")
		if err != nil {
			panic(err)
		}
		bin = filepath.Join(dir, "airlock")
		build := exec.Command("go", "build", "-o", bin, "../../cmd/airlock")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building airlock: %v\n%s", err, out)
			os.Exit(2)
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// settle outlasts the window (two coarse-clock ticks) in which a host
// change before a run counts as made during it.
const settle = 25 * time.Millisecond

// env is one test's private world: a state dir and a workspace.
type env struct {
	t    *testing.T
	home string
	ws   string
	vars []string // extra environment for airlock, e.g. HOME=...
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testutil.RequireRoot(t)
	e := &env{t: t, home: t.TempDir(), ws: filepath.Join(t.TempDir(), "project")}
	if err := os.MkdirAll(filepath.Join(e.ws, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.write("README.md", "hello\n")
	e.write("src/main.c", "int main(void) { return 0; }\n")
	// A host file changed within two ticks of the kernel's coarse clock
	// before a run's start counts as changed during the run (file times
	// come from that clock), and commit would report a conflict: let the
	// set-up age past that.
	time.Sleep(settle)
	t.Cleanup(func() {
		e.destroyAll() // a disk-capped pod's layer stays mounted until destroy
		if testutil.Mounted(e.home) || testutil.Mounted(e.ws) {
			t.Errorf("mounts left behind under %s or %s", e.home, e.ws)
		}
	})
	return e
}

// destroyAll removes the test's pods as a person would (destroy --force),
// which also unmounts their layers and takes down the control group of a
// supervisor the test killed, and checks that no group is left.
func (e *env) destroyAll() {
	ents, _ := os.ReadDir(filepath.Join(e.home, "pods"))
	var names []string
	for _, d := range ents {
		if d.IsDir() && !strings.HasPrefix(d.Name(), ".") {
			names = append(names, d.Name())
		}
	}
	if len(names) == 0 {
		return
	}
	_ = e.run("", append([]string{"destroy", "--force"}, names...)...)
	for _, n := range names {
		if _, err := cgroup.Load(cgroup.GroupName(n, filepath.Join(e.home, "pods", n))); err == nil {
			e.t.Errorf("pod %s: its control group is left on the host after destroy", n)
		}
	}
}

func (e *env) write(rel, content string) {
	e.t.Helper()
	p := filepath.Join(e.ws, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) read(rel string) string {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.ws, rel))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

type result struct {
	code           int
	stdout, stderr string
}

// run executes airlock with args in the workspace, stdin from in.
func (e *env) run(in string, args ...string) result {
	e.t.Helper()
	return e.exec(e.ws, in, args...)
}

// runIn executes airlock with args in dir.
func (e *env) runIn(dir string, args ...string) result {
	e.t.Helper()
	return e.exec(dir, "", args...)
}

func (e *env) exec(dir, in string, args ...string) result {
	e.t.Helper()
	return e.execVars(dir, in, e.vars, args...)
}

// execVars executes airlock in dir with vars added to its environment
// (later entries win), stdin from in.
func (e *env) execVars(dir, in string, vars []string, args ...string) result {
	e.t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "AIRLOCK_HOME="+e.home), vars...)
	cmd.Stdin = strings.NewReader(in)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("running airlock %v: %v", args, err)
	}
	return result{code, out.String(), errb.String()}
}

// must runs airlock and fails the test unless it exits 0.
func (e *env) must(args ...string) result {
	e.t.Helper()
	r := e.run("", args...)
	if r.code != 0 {
		e.t.Fatalf("airlock %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// expect runs airlock and checks the exit code and that stderr holds want.
func (e *env) expect(code int, want string, args ...string) result {
	e.t.Helper()
	r := e.run("", args...)
	if r.code != code {
		e.t.Fatalf("airlock %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		e.t.Fatalf("airlock %s: stderr %q does not contain %q", strings.Join(args, " "), r.stderr, want)
	}
	if strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 && code != 0 {
		e.t.Errorf("airlock %s: error is not one line: %q", strings.Join(args, " "), r.stderr)
	}
	return r
}
