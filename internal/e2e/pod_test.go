package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The whole life of a pod: the agent writes, the host is untouched, diff
// shows it, commit applies part, undo restores, rollback discards.
func TestRunDiffCommitUndoRollback(t *testing.T) {
	e := newEnv(t)
	e.must("init", "proj")
	script := `set -e
echo changed > README.md
echo new > src/new.c
rm src/main.c
mkdir -p docs && echo doc > docs/guide.md
chmod 0755 README.md`
	e.must("run", "proj", "--", "sh", "-c", script)
	if got := e.read("README.md"); got != "hello\n" {
		t.Fatalf("host README.md changed before commit: %q", got)
	}
	if _, err := os.Stat(filepath.Join(e.ws, "src/new.c")); !os.IsNotExist(err) {
		t.Fatalf("host got src/new.c before commit: %v", err)
	}
	diff := e.must("diff", "proj").stdout
	for _, want := range []string{"M  README.md", "A  src/new.c", "D  src/main.c", "A  docs/"} {
		if !strings.Contains(diff, want) {
			t.Errorf("diff lacks %q:\n%s", want, diff)
		}
	}
	var js struct {
		Changes []struct{ Path, Kind string }
	}
	if err := json.Unmarshal([]byte(e.must("diff", "proj", "--json").stdout), &js); err != nil {
		t.Fatalf("diff --json: %v", err)
	}
	if len(js.Changes) < 5 {
		t.Errorf("diff --json has %d changes, want at least 5: %+v", len(js.Changes), js.Changes)
	}

	out := e.must("commit", "proj", "README.md", "src").stdout
	if got := e.read("README.md"); got != "changed\n" {
		t.Fatalf("README.md after commit = %q", got)
	}
	if st, _ := os.Stat(filepath.Join(e.ws, "README.md")); st.Mode().Perm() != 0o755 {
		t.Errorf("README.md mode after commit = %v, want 0755", st.Mode().Perm())
	}
	if got := e.read("src/new.c"); got != "new\n" {
		t.Fatalf("src/new.c after commit = %q", got)
	}
	if _, err := os.Stat(filepath.Join(e.ws, "src/main.c")); !os.IsNotExist(err) {
		t.Fatalf("src/main.c still on host after committed deletion")
	}
	if _, err := os.Stat(filepath.Join(e.ws, "docs")); !os.IsNotExist(err) {
		t.Fatalf("docs/ reached the host though it was not selected")
	}
	if !strings.Contains(out, "commit ") {
		t.Errorf("commit output lacks an id: %s", out)
	}
	// Committed changes leave the layer; the rest stays.
	diff = e.must("diff", "proj").stdout
	if strings.Contains(diff, "README.md") || !strings.Contains(diff, "docs/") {
		t.Errorf("diff after partial commit:\n%s", diff)
	}

	out = e.must("undo", "proj").stdout
	if got := e.read("README.md"); got != "hello\n" {
		t.Fatalf("undo did not restore README.md: %q", got)
	}
	// The undone changes are back in the layer, for another look.
	diff = e.must("diff", "proj").stdout
	for _, want := range []string{"M  README.md", "A  src/new.c", "D  src/main.c", "A  docs/"} {
		if !strings.Contains(diff, want) {
			t.Errorf("after undo, diff lacks %q:\n%s", want, diff)
		}
	}
	if !strings.Contains(out, "back in the layer") {
		t.Errorf("undo does not say the changes are back in the layer: %s", out)
	}
	if got := e.read("src/main.c"); got != "int main(void) { return 0; }\n" {
		t.Fatalf("undo did not restore src/main.c: %q", got)
	}
	if _, err := os.Stat(filepath.Join(e.ws, "src/new.c")); !os.IsNotExist(err) {
		t.Fatalf("undo left src/new.c on the host")
	}

	e.must("rollback", "proj")
	if diff := e.must("diff", "proj").stdout; !strings.Contains(diff, "no changes") {
		t.Errorf("diff after rollback:\n%s", diff)
	}
	e.must("audit", "verify", "proj")
	audit := e.must("audit", "proj").stdout
	for _, action := range []string{"pod.create", "run.start", "run.exit", "commit", "undo", "rollback"} {
		if !strings.Contains(audit, action) {
			t.Errorf("audit trail lacks %s:\n%s", action, audit)
		}
	}
	e.must("destroy", "proj")
}

// A pod is created on first run for the current directory with no config.
func TestRunCreatesPodForWorkspace(t *testing.T) {
	e := newEnv(t)
	r := e.must("run", "--", "sh", "-c", "echo in-pod; hostname")
	if !strings.Contains(r.stdout, "in-pod") {
		t.Fatalf("stdout %q", r.stdout)
	}
	ls := e.must("ls", "--json").stdout
	var pods []struct{ Name, Workspace string }
	if err := json.Unmarshal([]byte(ls), &pods); err != nil || len(pods) != 1 {
		t.Fatalf("ls --json: %v %s", err, ls)
	}
	if !strings.Contains(r.stdout, pods[0].Name) {
		t.Errorf("hostname in pod is not the pod name %q: %q", pods[0].Name, r.stdout)
	}
	st := e.must("status", "--json").stdout
	if !strings.Contains(st, `"stopped"`) {
		t.Errorf("status: %s", st)
	}
	// From a subdirectory, run uses the workspace's pod and starts there.
	sub := e.runIn(filepath.Join(e.ws, "src"), "run", "--", "pwd")
	if sub.code != 0 || strings.TrimSpace(sub.stdout) != filepath.Join(e.ws, "src") {
		t.Errorf("run from src: exit %d, pwd %q, stderr %s", sub.code, sub.stdout, sub.stderr)
	}
	if err := json.Unmarshal([]byte(e.must("ls", "--json").stdout), &pods); err != nil || len(pods) != 1 {
		t.Errorf("run from a subdirectory made another pod: %+v", pods)
	}
}

func TestExitCodesAndPipes(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	if r := e.run("", "run", "p", "--", "sh", "-c", "exit 3"); r.code != 3 {
		t.Errorf("exit 3: got %d (%s)", r.code, r.stderr)
	}
	if r := e.run("", "run", "p", "--", "no-such-command-xyz"); r.code != 127 {
		t.Errorf("not found: got %d (%s)", r.code, r.stderr)
	}
	e.write("notexec.sh", "#!/bin/sh\n")
	if r := e.run("", "run", "p", "--", "./notexec.sh"); r.code != 126 {
		t.Errorf("not executable: got %d (%s)", r.code, r.stderr)
	}
	if r := e.run("", "run", "p", "--", "sh", "-c", "kill -9 $$"); r.code != 137 {
		t.Errorf("killed by SIGKILL: got %d", r.code)
	}
	r := e.run("piped input\n", "run", "p", "--", "cat")
	if r.code != 0 || r.stdout != "piped input\n" {
		t.Errorf("pipe: code %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = e.run("", "run", "p", "-e", "FOO=bar baz", "--", "sh", "-c", `printf %s "$FOO"`)
	if r.stdout != "bar baz" {
		t.Errorf("-e: %q", r.stdout)
	}
}

// Bad input: one line, the right exit code, nothing lost.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	e.expect(2, "invalid", "init", "Bad_Name")
	e.expect(3, "no pod named", "status", "nosuchpod")
	e.expect(3, "no pod named", "destroy", "nosuchpod")
	e.must("init", "p")
	e.expect(4, "", "init", "p")
	e.must("run", "p", "--", "sh", "-c", "echo x > a.txt")
	for _, bad := range []string{"../x", "/etc/passwd", "", "a\nb", "src/../../x"} {
		r := e.run("", "commit", "p", bad)
		if r.code != 2 {
			t.Errorf("commit %q: exit %d, want 2 (%s)", bad, r.code, r.stderr)
		}
	}
	e.expect(3, "no change", "commit", "p", "not-changed.txt")
	if got := e.read("a.txt"); !strings.HasPrefix(got, "<") {
		t.Fatalf("a rejected commit applied a.txt: %q", got)
	}
	e.expect(2, "", "run", "--workspace", "/no/such/dir", "--", "true")
	e.expect(2, "not a directory", "init", "q0", "--workspace", filepath.Join(e.ws, "README.md"))
	e.expect(2, "invalid pod name", "init", strings.Repeat("a", 64))
	e.expect(2, "invalid pod name", "run", "UPPER", "--", "true")
	e.expect(2, "invalid pod name", "status", "a/b")
	e.expect(2, "leaves the workspace", "commit", "p", "--exclude", "../x")
	e.expect(2, "unknown command", "frobnicate")
	e.write("v2.yaml", "version: 2\n")
	e.expect(2, "v2.yaml:1: version 2 is not supported", "init", "q4", "--config", filepath.Join(e.ws, "v2.yaml"))
	e.write("tilde.yaml", "version: 1\nfilesystem:\n  cow: ~\n")
	e.expect(2, "tilde.yaml:3: filesystem.cow", "init", "q5", "--config", filepath.Join(e.ws, "tilde.yaml"))
	// Broken configs name the line; nothing is created.
	e.write("bad1.yaml", "version: 1\nfilesystem:\n  hidee: [x]\n")
	e.expect(2, "bad1.yaml:3: unknown field", "init", "q1", "--config", filepath.Join(e.ws, "bad1.yaml"))
	e.write("bad2.yaml", "version: 1\nresources:\n  memory: lots\n")
	e.expect(2, "bad2.yaml:3:", "init", "q2", "--config", filepath.Join(e.ws, "bad2.yaml"))
	bomb := "version: 1\na: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
	e.write("bomb.yaml", bomb)
	e.expect(2, "", "init", "q3", "--config", filepath.Join(e.ws, "bomb.yaml"))
	if out := e.must("ls").stdout; strings.Contains(out, "q0") || strings.Contains(out, "q1") || strings.Contains(out, "q2") || strings.Contains(out, "q3") || strings.Contains(out, "q4") || strings.Contains(out, "q5") {
		t.Errorf("a broken config created a pod:\n%s", out)
	}
}

func TestAuditVerifyDetectsTampering(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	e.must("run", "p", "--", "true")
	e.must("run", "p", "--", "true")
	e.must("audit", "verify", "p")
	path := filepath.Join(e.home, "pods", "p", "audit.jsonl")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	tampered := strings.Replace(lines[1], `"ok"`, `"denied"`, 1)
	if tampered == lines[1] {
		t.Fatalf("line 2 has no outcome to edit: %s", lines[1])
	}
	lines[1] = tampered
	if err := os.WriteFile(path, []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	r := e.run("", "audit", "verify", "p")
	if r.code != 1 || !strings.Contains(r.stderr, "line 2") {
		t.Fatalf("verify after edit: exit %d, stderr %q", r.code, r.stderr)
	}
	orig := strings.SplitAfter(string(data), "\n")
	orig = orig[:len(orig)-1] // the empty string after the last newline
	if len(orig) < 4 {
		t.Fatalf("want at least 4 events, got %d", len(orig))
	}
	swap := append([]string{}, orig...)
	swap[1], swap[2] = swap[2], swap[1]
	for name, c := range map[string]struct {
		lines []string
		line  string
	}{
		"middle line removed": {append(append([]string{}, orig[:1]...), orig[2:]...), "line 2"},
		"two lines swapped":   {swap, "line 2"},
		"last line removed":   {orig[:len(orig)-1], "line " + fmt.Sprint(len(orig))},
		"first line removed":  {orig[1:], "line 1"},
	} {
		if err := os.WriteFile(path, []byte(strings.Join(c.lines, "")), 0o600); err != nil {
			t.Fatal(err)
		}
		r := e.run("", "audit", "verify", "p", "--json")
		if r.code != 1 || !strings.Contains(r.stderr, c.line) || !strings.Contains(r.stdout, `"intact": false`) {
			t.Errorf("%s: verify exit %d, stderr %q, stdout %s; want exit 1 naming %s", name, r.code, r.stderr, r.stdout, c.line)
		}
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if r := e.run("", "audit", "verify", "p"); r.code != 1 {
		t.Errorf("verify of a deleted trail: exit %d, want 1", r.code)
	}
}

// lp names a pod that runs long enough to meet another test process's pod
// of the same name: the cgroup wall names cgroups by pod name alone, so
// two AIRLOCK_HOMEs (other packages' tests, another person's runs) with a
// pod "p" share one cgroup and kill each other's processes.
func lp() string { return fmt.Sprintf("p%d", os.Getpid()) }

// While the pod runs its layer is mounted: commit and rollback refuse.
func TestCommitRefusedWhileRunning(t *testing.T) {
	e := newEnv(t)
	p := lp() // runs for a while: see lp
	e.must("init", p)
	done := make(chan result, 1)
	go func() {
		done <- e.run("", "run", p, "-w", "/", "--", "sh", "-c", "echo x > "+e.ws+"/f; sleep 3")
	}()
	waitFor(t, func() bool { return strings.Contains(e.run("", "status", p).stdout, "running") })
	e.expect(5, "running", "commit", p)
	e.expect(5, "running", "rollback", p)
	e.expect(5, "running", "undo", p)
	if a := e.must("audit", p, "--action", "commit").stdout; !strings.Contains(a, "refused: pod running") {
		t.Errorf("a refused commit is not in the audit trail:\n%s", a)
	}
	if got := e.read("f"); !strings.HasPrefix(got, "<") {
		t.Errorf("a refused commit reached the host: %q", got)
	}
	if r := <-done; r.code != 0 {
		t.Fatalf("run: %d %s", r.code, r.stderr)
	}
	e.must("commit", p)
}

// A person inside the pod lists / and finds the host's layout; the root
// stays read-only.
func TestListRootInsidePod(t *testing.T) {
	e := newEnv(t)
	r := e.run("", "run", "--", "sh", "-c", "ls /; touch /x 2>/dev/null && echo WROTE-ROOT; true")
	if r.code != 0 {
		t.Fatalf("ls /: exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"usr\n", "tmp\n", "etc\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("ls / lacks %q:\nstdout: %s\nstderr: %s", want, r.stdout, r.stderr)
		}
	}
	if strings.Contains(r.stdout, "WROTE-ROOT") {
		t.Errorf("the pod could create a file in /")
	}
}

// The host file changed after the pod copied it: commit reports the
// conflict and applies nothing, not even the other paths; --force applies
// all, and undo brings back the host's own edit.
func TestCommitConflictWithHostEdit(t *testing.T) {
	e := newEnv(t)
	p := lp() // runs for a while: see lp
	e.must("init", p)
	e.must("run", p, "--", "sh", "-c", "echo pod > README.md; echo new > other.txt")
	e.write("README.md", "edited on the host\n")
	r := e.run("", "commit", p)
	if r.code != 4 || !strings.Contains(r.stdout, "conflict README.md") || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("commit over a host edit: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if e.read("README.md") != "edited on the host\n" || !strings.HasPrefix(e.read("other.txt"), "<") {
		t.Fatalf("a refused commit changed the host")
	}
	// A host edit while the pod runs is a conflict too.
	done := make(chan result, 1)
	go func() { done <- e.run("", "run", p, "--", "sh", "-c", "echo pod2 > src/main.c; sleep 1") }()
	// "running" shows from the moment the run holds the pod, a little
	// before its start time is taken and long before the pod writes:
	// wait for the pod's own change, so the host edit surely comes after
	// the pod's copy.
	waitFor(t, func() bool { return strings.Contains(e.run("", "diff", p, "src/main.c").stdout, "src/main.c") })
	e.write("src/main.c", "host during run\n")
	if r := <-done; r.code != 0 {
		t.Fatalf("run: %d %s", r.code, r.stderr)
	}
	if r := e.run("", "commit", p, "src/main.c"); r.code != 4 {
		t.Errorf("commit of a file the host changed during the run: exit %d, want 4", r.code)
	}
	e.must("commit", p, "--force")
	if e.read("README.md") != "pod\n" || e.read("other.txt") != "new\n" || e.read("src/main.c") != "pod2\n" {
		t.Fatalf("commit --force did not apply everything")
	}
	e.must("undo", p)
	if e.read("README.md") != "edited on the host\n" || e.read("src/main.c") != "host during run\n" {
		t.Errorf("undo did not restore the host's edits: %q %q", e.read("README.md"), e.read("src/main.c"))
	}
}

// The workspace keeps its host owner and mode inside the pod (the overlay
// root takes them from the upper directory, which airlock creates as
// root's, mode 0700), also when they change on the host between runs.
func TestWorkspaceRootKeepsOwnerAndMode(t *testing.T) {
	e := newEnv(t)
	if err := os.Chown(e.ws, 0, 1000); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(e.ws, 0o751); err != nil {
		t.Fatal(err)
	}
	e.must("init", "p")
	if got := strings.TrimSpace(e.must("run", "p", "--", "stat", "-c", "%a %u:%g", e.ws).stdout); got != "751 0:1000" {
		t.Errorf("workspace inside the pod: %s, want 751 0:1000", got)
	}
	if err := os.Chmod(e.ws, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(e.must("run", "p", "--", "stat", "-c", "%a", e.ws).stdout); got != "755" {
		t.Errorf("workspace inside the pod after a host chmod: %s, want 755", got)
	}
	if out := e.must("diff", "p").stdout; !strings.Contains(out, "no changes") {
		t.Errorf("mirroring the root's attributes shows as a change:\n%s", out)
	}
}

// A host file written just before a run (a checkout, a copy) is not a
// conflict once the coarse clock has moved on: the "changed during the
// run" window is two clock ticks, not tens of milliseconds.
func TestHostEditJustBeforeRunIsNoConflict(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	e.write("README.md", "fresh checkout\n")
	time.Sleep(15 * time.Millisecond)
	e.must("run", "p", "--", "sh", "-c", "echo pod >> README.md")
	if r := e.run("", "commit", "p"); r.code != 0 {
		t.Fatalf("commit after a host write 15 ms before the run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got := e.read("README.md"); got != "fresh checkout\npod\n" {
		t.Errorf("README.md = %q", got)
	}
}

// A directory the agent replaced wholesale (rm -rf, then mkdir) reaches
// the host as the new directory only: the opaque directory is honoured,
// the old children go. Undo brings them back and the replacement returns
// to the layer.
func TestCommitReplacedDirectory(t *testing.T) {
	e := newEnv(t)
	e.write("lib/a.txt", "a\n")
	e.write("lib/sub/b.txt", "b\n")
	time.Sleep(settle)
	e.must("init", "p")
	e.must("run", "p", "--", "sh", "-c", "rm -rf lib && mkdir lib && echo c > lib/c.txt")
	e.must("commit", "p")
	ents, err := os.ReadDir(filepath.Join(e.ws, "lib"))
	if err != nil || len(ents) != 1 || ents[0].Name() != "c.txt" {
		t.Fatalf("host lib after commit: %v %v; want only c.txt", ents, err)
	}
	e.must("undo", "p")
	if e.read("lib/a.txt") != "a\n" || e.read("lib/sub/b.txt") != "b\n" || !strings.HasPrefix(e.read("lib/c.txt"), "<") {
		t.Fatalf("undo did not restore lib")
	}
	r := e.must("run", "p", "--", "sh", "-c", "ls -A lib")
	if strings.TrimSpace(r.stdout) != "c.txt" {
		t.Errorf("after undo the pod sees lib as %q, want only c.txt", r.stdout)
	}
}

// Root reached through sudo acts for the person who ran sudo, in a
// workspace that person owns: the agent runs as them (root without
// capabilities could not write a directory they own), and what it wrote
// is theirs on the host after commit. In a workspace root owns, root
// stays root whatever sudo's variables say.
func TestSudoRunsAgentAsInvoker(t *testing.T) {
	e := newEnv(t)
	const uid, gid = 4321, 4322
	if err := os.Chmod(filepath.Dir(e.ws), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := filepath.Walk(e.ws, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	}); err != nil {
		t.Fatal(err)
	}
	sudo := []string{"SUDO_UID=4321", "SUDO_GID=4322", "SUDO_USER=alice-test"}
	r := e.runEnv(sudo, "", "run", "-T", "--", "sh", "-c", "id -u; id -g; echo made > by-agent.txt && echo WROTE")
	if r.code != 0 || r.stdout != "4321\n4322\nWROTE\n" {
		t.Fatalf("agent under sudo: exit %d, stdout %q (want uid 4321, gid 4322, a write), stderr %s", r.code, r.stdout, r.stderr)
	}
	if r := e.runEnv(sudo, "", "commit"); r.code != 0 {
		t.Fatalf("commit: exit %d: %s", r.code, r.stderr)
	}
	fi, err := os.Stat(filepath.Join(e.ws, "by-agent.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid || st.Gid != gid {
		t.Errorf("the agent's file is owned by %d:%d on the host, want the invoker's %d:%d", st.Uid, st.Gid, uid, gid)
	}
	if out := e.read("by-agent.txt"); out != "made\n" {
		t.Errorf("committed file holds %q", out)
	}

	other := newEnv(t) // root-owned workspace
	r = other.runEnv(sudo, "", "run", "-T", "--", "id", "-u")
	if r.code != 0 || r.stdout != "0\n" {
		t.Errorf("in a root-owned workspace under sudo: exit %d, stdout %q, want root (0)", r.code, r.stdout)
	}
}
