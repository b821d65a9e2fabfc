package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// withHome gives the test's pods a home directory of their own, so that
// a commit of ~/... never touches the real one.
func (e *env) withHome() string {
	e.t.Helper()
	home := filepath.Join(e.t.TempDir(), "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		e.t.Fatal(err)
	}
	e.vars = append(e.vars, "HOME="+home)
	return home
}

// Every verb that reports something has --json, and prints exactly one
// JSON value on stdout.
func TestJSONEverywhere(t *testing.T) {
	e := newEnv(t)
	e.withHome()
	decode := func(args ...string) any {
		t.Helper()
		r := e.must(append(args, "--json")...)
		var v any
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
			t.Fatalf("airlock %s --json: not JSON (%v):\n%s", strings.Join(args, " "), err, r.stdout)
		}
		return v
	}
	decode("init", "p")
	e.must("run", "p", "--", "sh", "-c", "echo x > x.txt; echo y > y.txt")
	decode("ls")
	decode("status", "p")
	decode("diff", "p")
	decode("commit", "p", "x.txt", "--dry-run")
	c := decode("commit", "p", "x.txt").(map[string]any)
	if id, _ := c["id"].(string); id == "" {
		t.Errorf("commit --json has no id: %v", c)
	}
	decode("undo", "p", "--list")
	decode("undo", "p")
	decode("rollback", "p", "y.txt")
	decode("audit", "p")
	v := decode("audit", "verify", "p").(map[string]any)
	if v["intact"] != true {
		t.Errorf("audit verify --json on an intact trail: %v", v)
	}
	d := decode("destroy", "p").(map[string]any)
	if got, _ := json.Marshal(d["destroyed"]); string(got) != `["p"]` {
		t.Errorf("destroy --json: %v", d)
	}
}

// A typo in the verb is a usage error like any other.
func TestUnknownVerbIsUsage(t *testing.T) {
	e := newEnv(t)
	e.expect(2, "unknown command", "comit")
	e.expect(2, "unknown flag", "diff", "--stats")
}

// The shell expands ~ and completes absolute paths: commit, diff and
// rollback take them when they lie inside the workspace or the home
// directory, and refuse anything else as invalid input.
func TestAbsoluteAndHomePaths(t *testing.T) {
	e := newEnv(t)
	home := e.withHome()
	e.must("init", "p")
	e.must("run", "p", "--", "sh", "-c", "echo a > src/a.txt; echo b > b.txt; echo rc > ~/.toolrc")
	if out := e.must("diff", "p", filepath.Join(home, ".toolrc")).stdout; !strings.Contains(out, "~/.toolrc") {
		t.Errorf("diff of an expanded ~ path: %q", out)
	}
	// Without paths, commit takes the workspace only, and says what it left.
	out := e.must("commit", "p", filepath.Join(e.ws, "src")).stdout
	if !strings.Contains(out, "src/a.txt") || e.read("src/a.txt") != "a\n" {
		t.Fatalf("commit of an absolute workspace path: %s", out)
	}
	out = e.must("commit", "p").stdout
	if !strings.Contains(out, "b.txt") || !strings.Contains(out, "1 change outside the workspace") {
		t.Errorf("commit without paths does not say what it left in the layer:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(home, ".toolrc")); !os.IsNotExist(err) {
		t.Fatalf("commit without paths wrote the home directory: %v", err)
	}
	for _, bad := range []string{"/etc/passwd", e.ws + "/../x", filepath.Dir(e.ws)} {
		r := e.run("", "commit", "p", bad)
		if r.code != 2 || !strings.Contains(r.stderr, "outside") {
			t.Errorf("commit %s: exit %d, stderr %q; want 2 and 'outside'", bad, r.code, r.stderr)
		}
	}
	e.must("commit", "p", filepath.Join(home, ".toolrc"))
	if b, err := os.ReadFile(filepath.Join(home, ".toolrc")); err != nil || string(b) != "rc\n" {
		t.Fatalf("~/.toolrc after commit by absolute path: %q %v", b, err)
	}
	e.must("undo", "p")
	if _, err := os.Stat(filepath.Join(home, ".toolrc")); !os.IsNotExist(err) {
		t.Fatalf("undo left ~/.toolrc: %v", err)
	}
}

// A pod whose state was damaged is listed as broken; it does not stop ls,
// nor the pods of other workspaces, and destroy removes it.
func TestBrokenPodDoesNotBlockOthers(t *testing.T) {
	e := newEnv(t)
	e.must("init", "good")
	other := t.TempDir()
	e.must("init", "bad", "--workspace", other)
	if err := os.WriteFile(filepath.Join(e.home, "pods", "bad", "state.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	ls := e.must("ls").stdout
	if !strings.Contains(ls, "good") || !strings.Contains(ls, "broken") {
		t.Errorf("ls beside a broken pod:\n%s", ls)
	}
	e.must("run", "--", "true") // finds "good" through the workspace
	if r := e.must("ls", "--json"); strings.Count(r.stdout, `"name"`) != 2 {
		t.Errorf("ls --json: %s", r.stdout)
	}
	e.must("destroy", "bad")
}

// A state directory on a file system that cannot hold an overlay upper
// (ramfs keeps no trusted.* xattrs) is refused before anything is made:
// init exits 6, run 125, and no half-built pod is left.
func TestStateDirCannotHoldUpper(t *testing.T) {
	e := newEnv(t)
	mnt := t.TempDir()
	if err := unix.Mount("none", mnt, "ramfs", 0, ""); err != nil {
		t.Fatalf("mounting ramfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	e.home = filepath.Join(mnt, "state")
	e.expect(6, "AIRLOCK_HOME", "init", "p")
	r := e.run("", "run", "--", "true")
	if r.code != 125 || !strings.Contains(r.stderr, "extended attributes") {
		t.Errorf("run on ramfs: exit %d, stderr %q", r.code, r.stderr)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.home, "pods")); len(ents) != 0 {
		t.Errorf("refused pods left %d entries in pods/", len(ents))
	}
}

// Fail closed: inside a pod, a second airlock finds no capabilities, no
// cgroups and no way to create namespaces, as on a kernel or in a
// container without them. It must refuse, say what is missing, and run
// nothing, even when every wall that may be downgraded is.
func TestMissingKernelFeaturesFailClosed(t *testing.T) {
	e := newEnv(t)
	inner := filepath.Join(e.ws, "airlock-inner")
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(inner, data, 0o755); err != nil {
		t.Fatal(err)
	}
	// The inner pod's state lives in the outer pod's copy-on-write view.
	if err := os.Mkdir(filepath.Join(e.ws, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	innerHome := filepath.Join(e.ws, "inner")
	// No disk cap: its layer image would need loop devices, which the pod
	// lacks too, and this test is about the namespaces.
	cfg := filepath.Join(t.TempDir(), "airlock.yaml")
	if err := os.WriteFile(cfg, []byte("version: 1\nresources:\n  disk:\n    bytes: 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	setup := exec.Command(bin, "init", "ix", "--workspace", filepath.Join(e.ws, "x"), "--config", cfg)
	setup.Env = append(os.Environ(), "AIRLOCK_HOME="+innerHome)
	if out, err := setup.CombinedOutput(); err != nil {
		t.Fatalf("creating the inner pod: %v %s", err, out)
	}
	e.must("init", "outer")
	script := `cd x
AIRLOCK_HOME=/tmp/h ../airlock-inner init other; echo "init=$?"
AIRLOCK_HOME=` + innerHome + ` ../airlock-inner run ix -- touch RAN; echo "run=$?"
AIRLOCK_HOME=` + innerHome + ` ../airlock-inner run ix --downgrade seccomp --downgrade landlock --downgrade cgroups --downgrade network -- touch RAN; echo "downgraded=$?"`
	r := e.must("run", "outer", "--", "sh", "-c", script)
	for _, want := range []string{"init=7", "run=125", "downgraded=125"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("nested airlock: want %s\nstdout: %s\nstderr: %s", want, r.stdout, r.stderr)
		}
	}
	// Each refusal names what is missing: privilege for the layer, a wall
	// (cgroups, or loop devices for a disk cap, whichever is checked
	// first), and, with every wall downgraded, the namespaces themselves.
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if len(lines) < 3 || !strings.Contains(lines[0], "CAP_SYS_ADMIN") || !strings.Contains(lines[len(lines)-1], "namespaces") {
		t.Errorf("nested airlock does not say what is missing:\n%s", r.stderr)
	}
	if !strings.Contains(r.stderr, "cgroup") && !strings.Contains(r.stderr, "loop devices") {
		t.Errorf("the run without downgrades does not name the missing wall:\n%s", r.stderr)
	}
	if strings.Contains(e.must("diff", "outer").stdout, "RAN") {
		t.Errorf("the command ran although its walls could not be built")
	}
}
