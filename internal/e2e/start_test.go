package e2e

// Started pods, end to end: airlock start keeps a pod's walls up, each
// airlock run into it is a command sent to its supervisor ("exec"), and
// airlock stop takes it down. The tests drive the built binary as a
// demanding user and as an attacker would, and check after each that
// nothing of the pod is left running on the host.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/cgroup"
)

// startedPod is a pod brought up by airlock start for one test.
type startedPod struct {
	e     *env
	name  string
	pid   int    // the detached supervisor's host pid
	group string // the pod's control group
}

// startPod runs airlock start [NAME] --json ARGS and registers a clean-up
// that stops the pod (unless the test did) and checks that neither the
// supervisor nor any process of the pod is left on the host.
func (e *env) startPod(name string, args ...string) *startedPod {
	e.t.Helper()
	argv := []string{"start"}
	if name != "" {
		argv = append(argv, name)
	}
	argv = append(append(argv, "--json"), args...)
	r := e.must(argv...)
	var out struct {
		Pod           string `json:"pod"`
		SupervisorPID int    `json:"supervisor_pid"`
		Workspace     string `json:"workspace"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.Pod == "" || out.SupervisorPID <= 0 {
		e.t.Fatalf("airlock start --json: %v, want pod and supervisor_pid:\n%s", err, r.stdout)
	}
	if name != "" && out.Pod != name {
		e.t.Fatalf("airlock start %s --json names pod %q", name, out.Pod)
	}
	if out.Workspace != e.ws {
		e.t.Errorf("airlock start --json: workspace %q, want %q", out.Workspace, e.ws)
	}
	sp := &startedPod{e: e, name: out.Pod, pid: out.SupervisorPID,
		group: cgroup.GroupName(out.Pod, filepath.Join(e.home, "pods", out.Pod))}
	if !alive(sp.pid) {
		e.t.Fatalf("airlock start returned, but its supervisor (pid %d) is not running", sp.pid)
	}
	e.t.Cleanup(func() {
		if alive(sp.pid) {
			if r := e.run("", "stop", sp.name, "--time", "2s"); r.code != 0 && r.code != 4 {
				e.t.Errorf("clean-up: airlock stop %s: exit %d: %s", sp.name, r.code, r.stderr)
			}
		}
		sp.checkGone()
	})
	return sp
}

// checkGone waits until the supervisor and every process of the pod's
// control group have left the host, and fails the test if they do not.
func (sp *startedPod) checkGone() {
	t := sp.e.t
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		procs := sp.procs()
		if !alive(sp.pid) && len(procs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("pod %s is not gone from the host: supervisor %d alive %v, processes left %v", sp.name, sp.pid, alive(sp.pid), procs)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procs lists the host's processes in the pod's control group, as
// "PID COMMAND LINE".
func (sp *startedPod) procs() []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, d := range ents {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		cg, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cgroup"))
		if err != nil || !inGroup(string(cg), sp.group) || !alive(atoi(d.Name())) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		out = append(out, d.Name()+" "+strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " ")))
	}
	return out
}

// running reports whether a process of the pod has marker in its command
// line (the airlock client that started it, outside the pod, does not
// count).
func (sp *startedPod) running(marker string) bool {
	for _, p := range sp.procs() {
		if strings.Contains(p, marker) {
			return true
		}
	}
	return false
}

func inGroup(cgroupFile, group string) bool {
	for _, line := range strings.Split(cgroupFile, "\n") {
		if strings.HasSuffix(line, "/airlock/"+group) || strings.Contains(line, "/airlock/"+group+"/") {
			return true
		}
	}
	return false
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// alive reports whether pid is a live process (not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// marker is a string unique to this test run, for finding its processes.
func marker() string { return fmt.Sprintf("airlock-e2e-%d", rand.Int64()) }

// sleeper is a sleep duration unique to this test run (sleep takes a
// fraction), so that the pod's sleep can be told from any other.
func sleeper() string { return fmt.Sprintf("%d.%09d", 900+rand.IntN(99), rand.IntN(1e9)) }

// waitInPod waits until a process of the pod carries marker.
func (sp *startedPod) waitInPod(marker string) {
	sp.e.t.Helper()
	waitFor(sp.e.t, func() bool { return sp.running(marker) })
}

// podStatus is the part of airlock status --json the tests read.
type podStatus struct {
	State         string `json:"state"`
	Serving       bool   `json:"serving"`
	SupervisorPID int    `json:"supervisor_pid"`
}

func (e *env) status(pod string) podStatus {
	e.t.Helper()
	return mustJSON[podStatus](e, "status", pod, "--json")
}

// The life of a started pod: commands write to the layer only (diff shows
// it, the host is untouched, the next command sees it), commit, rollback
// and undo are refused while it is up, and after stop commit applies it.
func TestStartRunDiffCommit(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	sp := e.startPod("p")
	if st := e.status("p"); st.State != "running" || !st.Serving || st.SupervisorPID != sp.pid {
		t.Errorf("status of a started pod: %+v, want running, serving, supervisor %d", st, sp.pid)
	}
	e.must("run", "p", "--", "sh", "-c", "set -e; echo changed > README.md; echo new > src/new.c; rm src/main.c; mkdir docs; echo doc > docs/guide.md")
	if got := e.read("README.md"); got != "hello\n" {
		t.Fatalf("the host's README.md changed under a started pod: %q", got)
	}
	if _, err := os.Stat(filepath.Join(e.ws, "src/new.c")); !os.IsNotExist(err) {
		t.Fatalf("src/new.c reached the host before commit: %v", err)
	}
	if got := e.read("src/main.c"); got != "int main(void) { return 0; }\n" {
		t.Fatalf("the pod's rm reached the host: %q", got)
	}
	// The next command sees the first one's writes: one layer, one view.
	if r := e.must("run", "p", "--", "sh", "-c", "cat README.md src/new.c; test -e src/main.c || echo main-gone"); r.stdout != "changed\nnew\nmain-gone\n" {
		t.Errorf("a second command in the started pod sees %q", r.stdout)
	}
	diff := e.must("diff", "p").stdout
	for _, want := range []string{"M  README.md", "A  src/new.c", "D  src/main.c", "A  docs/"} {
		if !strings.Contains(diff, want) {
			t.Errorf("diff of a started pod lacks %q:\n%s", want, diff)
		}
	}
	e.expect(5, "airlock stop p", "commit", "p")
	e.expect(5, "running", "commit", "p", "README.md")
	e.expect(5, "running", "rollback", "p")
	e.expect(5, "running", "undo", "p")
	if a := e.must("audit", "p", "--action", "commit").stdout; !strings.Contains(a, "refused") {
		t.Errorf("the refused commit is not in the audit trail:\n%s", a)
	}
	if got := e.read("README.md"); got != "hello\n" {
		t.Fatalf("a refused commit reached the host: %q", got)
	}
	// The layer lived through the refusals.
	if r := e.must("run", "p", "--", "cat", "README.md"); r.stdout != "changed\n" {
		t.Errorf("after the refused rollback the pod reads %q", r.stdout)
	}

	if r := e.must("stop", "p"); !strings.Contains(r.stdout, "stopped p") {
		t.Errorf("stop says %q", r.stdout)
	}
	if alive(sp.pid) {
		t.Errorf("airlock stop returned while the supervisor %d still runs", sp.pid)
	}
	sp.checkGone()
	if st := e.status("p"); st.State != "stopped" || st.Serving {
		t.Errorf("status after stop: %+v", st)
	}
	// The layer is kept for review after stop.
	if diff := e.must("diff", "p").stdout; !strings.Contains(diff, "M  README.md") {
		t.Errorf("stop lost the layer:\n%s", diff)
	}
	e.must("commit", "p")
	if got := e.read("README.md"); got != "changed\n" {
		t.Errorf("README.md after commit: %q", got)
	}
	if got := e.read("src/new.c"); got != "new\n" {
		t.Errorf("src/new.c after commit: %q", got)
	}
	if got := e.read("docs/guide.md"); got != "doc\n" {
		t.Errorf("docs/guide.md after commit: %q", got)
	}
	if _, err := os.Stat(filepath.Join(e.ws, "src/main.c")); !os.IsNotExist(err) {
		t.Errorf("src/main.c survived a committed deletion: %v", err)
	}
	// And the pod starts again, on the committed workspace.
	e.startPod("p")
	if r := e.must("run", "p", "--", "cat", "README.md"); r.stdout != "changed\n" {
		t.Errorf("restarted pod reads %q", r.stdout)
	}
}

// Exit statuses, stdio, environment and working directory of a command in
// a started pod are those of an ordinary run.
func TestExecExitCodesAndStdio(t *testing.T) {
	e := newEnv(t)
	e.write("notexec.sh", "#!/bin/sh\necho ran\n")
	e.must("init", "p")
	e.startPod("p")
	for _, c := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"true", []string{"true"}, 0, ""},
		{"exit 3", []string{"sh", "-c", "exit 3"}, 3, ""},
		{"not found", []string{"no-such-command-xyz"}, 127, "no-such-command-xyz"},
		{"not executable", []string{"./notexec.sh"}, 126, "notexec.sh"},
		{"directory", []string{"./src"}, 126, "src"},
		{"SIGKILL", []string{"sh", "-c", "kill -9 $$"}, 137, ""},
		{"SIGTERM", []string{"sh", "-c", "kill -TERM $$"}, 143, ""},
		{"exit 255", []string{"sh", "-c", "exit 255"}, 255, ""},
	} {
		r := e.run("", append([]string{"run", "p", "--"}, c.args...)...)
		if r.code != c.code {
			t.Errorf("%s: exit %d, want %d (stderr %q)", c.name, r.code, c.code, r.stderr)
		}
		if c.msg != "" && (!strings.Contains(r.stderr, c.msg) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0) {
			t.Errorf("%s: stderr %q, want one line naming %q", c.name, r.stderr, c.msg)
		}
		if c.code < 126 && r.stderr != "" {
			t.Errorf("%s: airlock wrote to stderr: %q", c.name, r.stderr)
		}
	}
	if r := e.run("", "run", "p", "--", "./notexec.sh"); strings.Contains(r.stdout, "ran") {
		t.Errorf("a file without x bit ran: %q", r.stdout)
	}

	// stdin, stdout and stderr are the caller's own, each its own.
	r := e.run("piped input\n", "run", "p", "--", "cat")
	if r.code != 0 || r.stdout != "piped input\n" {
		t.Errorf("echo x | airlock run p -- cat: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	if r := e.run(big, "run", "p", "--", "cat"); r.stdout != big {
		t.Errorf("1 MiB through cat in a started pod: got %d bytes back (exit %d)", len(r.stdout), r.code)
	}
	if r := e.run("", "run", "p", "--", "cat"); r.code != 0 || r.stdout != "" {
		t.Errorf("cat of an empty stdin: exit %d stdout %q", r.code, r.stdout)
	}
	r = e.run("", "run", "p", "--", "sh", "-c", "echo out; echo err >&2; echo out2")
	if r.code != 0 || r.stdout != "out\nout2\n" || r.stderr != "err\n" {
		t.Errorf("stdout and stderr are not kept apart: stdout %q stderr %q", r.stdout, r.stderr)
	}
	if r := e.run("", "run", "p", "--", "sh", "-c", "test -t 0 || test -t 1 || echo no-tty"); r.stdout != "no-tty\n" {
		t.Errorf("a command with piped stdio has a terminal: %q", r.stdout)
	}

	// -e, also with spaces and = in the value, and several.
	r = e.run("", "run", "p", "-e", "FOO=bar baz", "-e", "EQ=a=b", "--", "sh", "-c", `printf '%s|%s' "$FOO" "$EQ"`)
	if r.stdout != "bar baz|a=b" {
		t.Errorf("-e in a started pod: %q (stderr %q)", r.stdout, r.stderr)
	}
	e.expect(2, "KEY=VALUE", "run", "p", "-e", "NOEQUALS", "--", "true")
	// Arguments and values arrive byte for byte: spaces, newlines, empty
	// strings, UTF-8, a leading dash.
	r = e.run("", "run", "p", "-e", "NL=l1\nl2", "--", "sh", "-c", `printf '%s|' "$@"; printf '%s' "$NL"`, "sh", "a b", "c\nd", "", "é", "-n", "$HOME")
	if r.stdout != "a b|c\nd||é|-n|$HOME|l1\nl2" {
		t.Errorf("arguments through exec: %q (stderr %q)", r.stdout, r.stderr)
	}
	// The caller's environment does not reach the pod beyond the fixed
	// list an ordinary run passes.
	canary := marker()
	r = e.execVars(e.ws, "", []string{"AIRLOCK_E2E_CANARY=" + canary}, "run", "p", "--", "env")
	if strings.Contains(r.stdout, canary) {
		t.Errorf("SECURITY: the caller's environment reached the started pod: %s", r.stdout)
	}
	if !strings.Contains(r.stdout, "AIRLOCK_POD=p\n") {
		t.Errorf("AIRLOCK_POD missing from a started pod's command:\n%s", r.stdout)
	}

	// -w: relative to the workspace, absolute, and a directory only the
	// layer has.
	if r := e.must("run", "p", "-w", "src", "--", "pwd"); strings.TrimSpace(r.stdout) != filepath.Join(e.ws, "src") {
		t.Errorf("-w src: pwd %q", r.stdout)
	}
	if r := e.must("run", "p", "-w", "/", "--", "pwd"); strings.TrimSpace(r.stdout) != "/" {
		t.Errorf("-w /: pwd %q", r.stdout)
	}
	e.must("run", "p", "--", "mkdir", "-p", "only/in/layer")
	if r := e.must("run", "p", "-w", "only/in/layer", "--", "pwd"); strings.TrimSpace(r.stdout) != filepath.Join(e.ws, "only/in/layer") {
		t.Errorf("-w into a directory made by an earlier command: pwd %q", r.stdout)
	}
	e.expect(125, "does not exist inside the pod", "run", "p", "-w", "no/such/dir", "--", "pwd")
	// The caller's place inside the workspace is kept, with or without
	// the pod's name; outside it the command starts at the workspace.
	sub := filepath.Join(e.ws, "src")
	if r := e.runIn(sub, "run", "p", "--", "pwd"); strings.TrimSpace(r.stdout) != sub {
		t.Errorf("run from src: pwd %q (exit %d %s)", r.stdout, r.code, r.stderr)
	}
	if r := e.runIn(sub, "run", "--", "pwd"); strings.TrimSpace(r.stdout) != sub {
		t.Errorf("run (no pod named) from src: pwd %q (exit %d %s)", r.stdout, r.code, r.stderr)
	}
	if r := e.runIn(t.TempDir(), "run", "p", "--", "pwd"); strings.TrimSpace(r.stdout) != e.ws {
		t.Errorf("run from outside the workspace: pwd %q, want the workspace", r.stdout)
	}
	// No command: the caller's shell, reading the piped script.
	r = e.execVars(e.ws, "echo via-$0-shell; exit 4\n", []string{"SHELL=/bin/sh"}, "run", "p")
	if r.code != 4 || !strings.Contains(r.stdout, "-shell") {
		t.Errorf("run p with no command (SHELL=/bin/sh): exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}

	// A background process that keeps stdout open does not hold airlock
	// up: it returns with the command.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	s := sleeper()
	c := exec.Command(bin, "run", "p", "--", "sh", "-c", "sleep "+s+" & echo bg-started")
	c.Dir, c.Env, c.Stdout = e.ws, append(os.Environ(), "AIRLOCK_HOME="+e.home), pw
	start := time.Now()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	waited := make(chan error, 1)
	go func() { waited <- c.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("run with a background child: %v", err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("airlock waited %v for a background child holding stdout", took)
		}
	case <-time.After(15 * time.Second):
		_ = c.Process.Kill()
		<-waited
		t.Errorf("airlock did not return while a background child holds its stdout")
	}
}

// parseAttack reads the output of attackScript (walls_test.go): the NAME=
// and NAME: lines, and the pod's processes.
func parseAttack(t *testing.T, out string) (map[string]string, []string) {
	t.Helper()
	status := map[string]string{}
	var procs []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "proc" {
			procs = append(procs, strings.Join(f[1:], " "))
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && !strings.Contains(k, " ") {
			status[k] = v
		}
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.Contains(k, " ") {
			status[k] = strings.TrimSpace(v)
		}
	}
	if len(status) < 20 {
		t.Fatalf("the attack script did not run to the end:\n%s", out)
	}
	return status, procs
}

// hiddenScript looks for the canary in the secret-bearing paths, and
// tries the namespace calls an escape starts with.
const hiddenScript = `
for f in "$HOME/.ssh/id_rsa" "$HOME/.aws/credentials" "$HOME/.netrc" .env; do
  if grep -qs CANARY "$f"; then echo "$f=VISIBLE"; else echo "$f=hidden"; fi
done
echo "ssh-entries=$(ls -A "$HOME/.ssh" 2>/dev/null | wc -l)"
unshare -m true 2>/dev/null && echo unshare-m=OK || echo unshare-m=FAIL
mount -t tmpfs x /tmp 2>/dev/null && echo mount=OK || echo mount=FAIL
nsenter -t 1 -m true 2>/dev/null && echo nsenter=OK || echo nsenter=FAIL
echo "fds=$(ls /proc/self/fd | tr '\n' ' ')"
echo "uid=$(id -u)"
`

// A command in a started pod stands behind the same walls as an ordinary
// run's: the attack script of TestAttackEscapeTools gives the same answers
// (hostname, seccomp mode 2, no_new_privs, no capabilities, no mount or
// unshare, host processes invisible), secret-bearing paths are hidden, the
// caller's extra descriptors do not reach it, denied syscalls fail with
// EPERM, and the pod survives the attack.
func TestExecWallsAsRun(t *testing.T) {
	e := newEnv(t)
	home := e.withHome()
	for _, f := range []string{".ssh/id_rsa", ".aws/credentials", ".netrc"} {
		p := filepath.Join(home, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("CANARY secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e.write(".env", "TOKEN=CANARY\n")
	e.write("attack.sh", attackScript)
	e.write("hidden.sh", hiddenScript)
	sys := compileAttack(t, e, "syscalls")
	pt := compileAttack(t, e, "ptrace")
	e.must("init", "p")

	// The same scripts in an ordinary run first, for comparison.
	ord := e.run("", "run", "p", "--", "sh", filepath.Join(e.ws, "attack.sh"))
	if ord.code != 0 {
		t.Fatalf("ordinary attack run: exit %d: %s", ord.code, ord.stderr)
	}
	ordHidden := e.must("run", "p", "--", "sh", filepath.Join(e.ws, "hidden.sh")).stdout

	sp := e.startPod("p")
	r := e.run("", "run", "p", "--", "sh", filepath.Join(e.ws, "attack.sh"))
	if r.code != 0 {
		t.Fatalf("attack in the started pod: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	t.Logf("attack transcript (started pod):\n%s", r.stdout)
	want, _ := parseAttack(t, ord.stdout)
	got, procs := parseAttack(t, r.stdout)
	for k, v := range got {
		if v == "OK" {
			t.Errorf("ATTACK SUCCEEDED in a started pod: %s", k)
		}
	}
	for k, v := range want {
		if k == "session" {
			continue
		}
		if got[k] != v {
			t.Errorf("%s: %q in the started pod, %q in an ordinary run", k, got[k], v)
		}
	}
	if got["hostname-now"] != "p" {
		t.Errorf("hostname in the started pod: %q, want p", got["hostname-now"])
	}
	for _, k := range []string{"CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"} {
		if got[k] != "0000000000000000" {
			t.Errorf("%s = %q in the started pod, want 0", k, got[k])
		}
	}
	if got["NoNewPrivs"] != "1" || got["Seccomp"] != "2" {
		t.Errorf("started pod: NoNewPrivs %q Seccomp %q, want 1 and 2", got["NoNewPrivs"], got["Seccomp"])
	}
	if sid := got["session"]; sid == "" || sid == "0" || sid == "1" {
		t.Errorf("the command is not in a session of its own (sid %q)", sid)
	}
	if got["init-survives-kill"] != "yes" {
		t.Errorf("kill -KILL 1 from a command ended the started pod")
	}
	// The pod's own few: its init, the script, the loop's cat. Never a
	// host process, never the supervisor or this test.
	if len(procs) == 0 || len(procs) > 6 {
		t.Errorf("the started pod sees %d processes, want its own few: %v", len(procs), procs)
	}
	for _, p := range procs {
		f := strings.Fields(p)
		if len(f) < 2 {
			continue
		}
		if n := atoi(f[0]); n == os.Getpid() || n == sp.pid || f[1] == "e2e.test" || f[1] == "go" {
			t.Errorf("a host process is visible in the started pod: %s", p)
		}
	}

	hidden := e.must("run", "p", "--", "sh", filepath.Join(e.ws, "hidden.sh")).stdout
	t.Logf("hidden paths (started pod):\n%s", hidden)
	if strings.Contains(hidden, "VISIBLE") || strings.Contains(hidden, "=OK") {
		t.Errorf("SECURITY: a secret or an escape call in the started pod:\n%s", hidden)
	}
	if hidden != ordHidden {
		t.Errorf("the started pod's view differs from an ordinary run's:\nstarted:\n%s\nordinary:\n%s", hidden, ordHidden)
	}

	// Descriptors leaked into the client stay with it.
	secret := filepath.Join(t.TempDir(), "host-secret")
	if err := os.WriteFile(secret, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(secret)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, "run", "p", "--", "sh", "-c", "ls /proc/self/fd | tr '\\n' ' '; cat <&3 2>/dev/null; cat <&4 2>/dev/null; true")
	cmd.Dir, cmd.Env = e.ws, append(os.Environ(), "AIRLOCK_HOME="+e.home)
	cmd.ExtraFiles = []*os.File{f, f}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("run with leaked fds: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "s3cret") {
		t.Fatalf("ATTACK SUCCEEDED: a started pod's command read a descriptor leaked by its caller: %q", out)
	}
	if got := strings.TrimSpace(string(out)); got != "0 1 2 3" {
		t.Errorf("fds of a started pod's command: %q, want \"0 1 2 3\" (3 is ls's own listing)", got)
	}

	// The syscall and ptrace attackers, as in TestAttackDeniedSyscalls.
	r = e.run("", "run", "p", "--", "sh", "-c", sys+"; echo ===; "+pt)
	if r.code != 0 {
		t.Fatalf("syscall attack in the started pod: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	parts := strings.SplitN(r.stdout, "===", 2)
	if len(parts) != 2 {
		t.Fatalf("syscall attack output: %s", r.stdout)
	}
	checkAllEPERM(t, parts[0], 28*3-1)
	checkAllEPERM(t, parts[1], 6)

	// After all of it the pod still serves and has the same name.
	if r := e.must("run", "p", "--", "hostname"); strings.TrimSpace(r.stdout) != "p" {
		t.Errorf("after the attacks the started pod's hostname is %q", r.stdout)
	}
	if h, _ := os.Hostname(); h == "evil" {
		t.Fatalf("the started pod renamed the host")
	}
}

// envMap runs env in the pod and returns its environment.
func envMap(t *testing.T, out string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// A command in a started pod gets the environment an ordinary run's
// command gets: what the walls add to it (the proxy variables of the
// network wall, vault secrets handed over in env mode) included, so that
// tools reach the network the same way and the agent has its secrets.
func TestExecEnvAsRun(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	canary := marker()
	if r := e.run(canary, "vault", "p", "set", "K"); r.code != 0 {
		t.Fatalf("vault set: exit %d %s", r.code, r.stderr)
	}
	e.must("vault", "p", "bind", "K", "--mode", "env")
	vars := []string{"AIRLOCK_E2E_HOST_ONLY=" + canary + "-host"}
	ord := e.execVars(e.ws, "", vars, "run", "p", "--", "env")
	if ord.code != 0 {
		t.Fatalf("ordinary run env: exit %d %s", ord.code, ord.stderr)
	}
	want := envMap(t, ord.stdout)
	if want["K"] != canary || want["HTTP_PROXY"] == "" {
		t.Fatalf("the ordinary run lacks the secret or the proxy: %v", want)
	}
	e.startPod("p")
	r := e.execVars(e.ws, "", vars, "run", "p", "--", "env")
	if r.code != 0 {
		t.Fatalf("env in the started pod: exit %d %s", r.code, r.stderr)
	}
	got := envMap(t, r.stdout)
	if strings.Contains(r.stdout, canary+"-host") {
		t.Errorf("SECURITY: the caller's environment reached the started pod")
	}
	var diffs []string
	for k, v := range want {
		if got[k] != v {
			diffs = append(diffs, fmt.Sprintf("%s: %q in the started pod, %q in an ordinary run", k, got[k], v))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s=%q only in the started pod", k, v))
		}
	}
	sort.Strings(diffs)
	for _, d := range diffs {
		t.Errorf("environment: %s", d)
	}
}

// The network wall of a started pod: allowed names work, denied names,
// IP literals and raw UDP do not, and each attempt is audited, as in
// TestNetAllowedNames and TestNetLiteralsAndRebinding.
func TestExecNetworkWall(t *testing.T) {
	requirePython(t)
	e := newEnv(t)
	n := newInet(t)
	e.netConfig(n, "", "allowed.test", "*.allowed.test")
	e.must("init", np)
	e.startPod(np)
	web, other := n.web.String(), n.other.String()
	got := e.runProbes(np, fmt.Sprintf(`
c proxy-http --proxy http://127.0.0.1:3128 http://allowed.test/
c direct-http --noproxy '*' http://allowed.test/
c direct-https --noproxy '*' --cacert ca.pem https://www.allowed.test/
c denied-name --noproxy '*' http://evil.test/
c denied-name-proxy --proxy http://127.0.0.1:3128 http://evil.test/
c lit-direct --noproxy '*' http://%[1]s/
p raw-lit direct %[1]s 80 %[1]s
p raw-lit-allowedhost direct %[2]s 80 allowed.test
p meta pconnect 169.254.169.254:80
p port direct %[1]s 9999 allowed.test
p udp udp %[1]s 9999
c rebind-meta --proxy http://127.0.0.1:3128 http://meta.allowed.test/
`, web, other))
	wantOK(t, got, "proxy-http", "hello allowed.test from web")
	wantOK(t, got, "direct-http", "hello allowed.test from web")
	wantOK(t, got, "direct-https", "hello www.allowed.test from web")
	for _, l := range []string{"denied-name", "denied-name-proxy", "lit-direct", "rebind-meta"} {
		wantCurlFail(t, got, l)
	}
	for _, l := range []string{"raw-lit", "raw-lit-allowedhost", "meta", "port"} {
		wantProbeFail(t, got, l)
	}
	time.Sleep(200 * time.Millisecond) // the UDP datagram, had it got out
	if k := n.Strays(); k != 0 {
		t.Errorf("SECURITY: %d packets from the started pod reached port 9999 of the test internet", k)
	}
	evs := e.audit(np)
	e.wantAudit(evs, "net.connect", "allow", "path:transparent", "host:allowed.test")
	e.wantAudit(evs, "net.dns", "deny", "name:evil.test")
	e.wantAudit(evs, "net.leak", "deny", "addr:"+web, "port:80")
	e.wantAudit(evs, "net.connect", "deny", "host:meta.allowed.test")
	e.must("audit", "verify", np)
}

// Commands in one started pod run side by side: a quick one finishes while
// a slow one runs, many at once each get their own output and status, a
// background process one leaves is seen by the next, and stop ends every
// one of them, leaving nothing on the host.
func TestExecConcurrentAndBackground(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	sp := e.startPod("p")
	slowS := sleeper()
	slow := e.background("run", "p", "--", "sh", "-c", "sleep "+slowS+"; echo done > slow-finished")
	sp.waitInPod(slowS)
	start := time.Now()
	if r := e.must("run", "p", "--", "echo", "quick"); r.stdout != "quick\n" {
		t.Errorf("quick command beside a slow one: %q", r.stdout)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a quick command beside a slow one took %v", took)
	}
	select {
	case <-slow.done:
		t.Fatalf("the slow command ended when the quick one did")
	default:
	}

	// Many at once, each with its own stdio and status.
	const n = 16
	type out struct {
		code           int
		stdout, stderr string
	}
	outs := make([]out, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := exec.Command(bin, "run", "p", "--", "sh", "-c", fmt.Sprintf("echo out-%d; echo err-%d >&2; sleep 0.$(( %d %% 3 )); exit %d", i, i, i, i%8))
			c.Dir, c.Env = e.ws, append(os.Environ(), "AIRLOCK_HOME="+e.home)
			c.Stdin = strings.NewReader(fmt.Sprintf("in-%d\n", i))
			var so, se bytes.Buffer
			c.Stdout, c.Stderr = &so, &se
			err := c.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				code = -1
			}
			outs[i] = out{code, so.String(), se.String()}
		}(i)
	}
	wg.Wait()
	for i, o := range outs {
		if o.code != i%8 || o.stdout != fmt.Sprintf("out-%d\n", i) || o.stderr != fmt.Sprintf("err-%d\n", i) {
			t.Errorf("concurrent command %d: exit %d (want %d), stdout %q, stderr %q", i, o.code, i%8, o.stdout, o.stderr)
		}
	}

	// What one command leaves in the background, the next one sees; the
	// pod's /tmp is one for all its commands.
	mk := marker()
	e.must("run", "p", "--", "sh", "-c", "sh -c 'while :; do sleep 1; done' "+mk+" >/dev/null 2>&1 & echo $! > /tmp/bg.pid")
	if !sp.running(mk) {
		t.Fatalf("the background process did not outlive its command: %v", sp.procs())
	}
	r := e.must("run", "p", "--", "sh", "-c", `pid=$(cat /tmp/bg.pid); kill -0 "$pid" && echo alive; tr '\0' ' ' < /proc/$pid/cmdline`)
	if !strings.HasPrefix(r.stdout, "alive\n") || !strings.Contains(r.stdout, mk) {
		t.Errorf("the next command does not see the background process in the pod's /proc: %q", r.stdout)
	}
	if len(processesWith(mk)) == 0 {
		t.Fatalf("no host process carries the marker")
	}

	start = time.Now()
	e.must("stop", "p")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("stop of processes that die on SIGTERM took %v", took)
	}
	if code := slow.exitCode(t); code != 143 {
		t.Errorf("the slow command, ended by stop: exit %d, want 143 (SIGTERM)", code)
	}
	sp.checkGone()
	if left := processesWith(mk); len(left) != 0 {
		t.Errorf("the background process outlived stop: %v", left)
	}
	if got := e.read("slow-finished"); !strings.HasPrefix(got, "<") {
		t.Errorf("the slow command ran to its end: %q", got)
	}
}

// A client that disappears (kill -9) hangs its command up: SIGHUP to the
// command's process group, as a terminal that closes; exec.exit is on the
// trail and the pod lives on.
func TestExecClientKilled(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	sp := e.startPod("p")

	// A command with a HUP handler: it runs the handler and decides.
	s := sleeper()
	c := e.background("run", "p", "--", "sh", "-c", `trap "echo hup > /tmp/hup; exit 0" HUP; sleep `+s+` & wait`)
	sp.waitInPod(s)
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-c.done
	waitFor(t, func() bool { return e.run("", "run", "p", "--", "cat", "/tmp/hup").stdout == "hup\n" })
	// SIGHUP went to the whole group: the sleep is gone too.
	waitFor(t, func() bool { return !sp.running(s) })

	// A plain command dies of the hangup: exec.exit says 129.
	s2 := sleeper()
	c2 := e.background("run", "p", "--", "sleep", s2)
	sp.waitInPod(s2)
	if err := c2.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c2.done
	waitFor(t, func() bool { return !sp.running(s2) })
	// Its exec.exit (the next one after its exec.start: nothing else ran
	// meanwhile) says it died of SIGHUP.
	exitOf := func() string {
		evs := e.audit("p")
		for i, ev := range evs {
			if ev.Action != "exec.start" || !strings.Contains(fmt.Sprint(ev.Details["args"]), s2) {
				continue
			}
			for _, ev2 := range evs[i+1:] {
				if ev2.Action == "exec.exit" {
					return fmt.Sprint(ev2.Details["exit"])
				}
			}
		}
		return ""
	}
	waitFor(t, func() bool { return exitOf() != "" })
	if got := exitOf(); got != "129" {
		t.Errorf("exec.exit of a command whose client was killed: exit %s, want 129 (SIGHUP)", got)
	}

	// A client killed with a TTY: the command is hung up too.
	s3 := sleeper()
	_, tc := startTTY(t, e, 24, 80, "run", "p", "-t", "--", "sleep", s3)
	sp.waitInPod(s3)
	if err := tc.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = tc.Wait()
	waitFor(t, func() bool { return !sp.running(s3) })

	if r := e.must("run", "p", "--", "echo", "alive"); r.stdout != "alive\n" {
		t.Errorf("the pod after its clients were killed: %q", r.stdout)
	}
	if !alive(sp.pid) {
		t.Errorf("the supervisor died with a client")
	}
}

// Signals the client gets are passed on to the command: INT, TERM, HUP and
// QUIT end a plain sleep with 128+n; a handler of the command's own
// decides the status.
func TestExecSignals(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	sp := e.startPod("p")
	for _, c := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGTERM, 143}, {syscall.SIGINT, 130}, {syscall.SIGHUP, 129}, {syscall.SIGQUIT, 131}} {
		s := sleeper()
		r := e.background("run", "p", "--", "sleep", s)
		sp.waitInPod(s)
		// Give airlock time to hear that it started: a signal in that
		// window is TestExecSignalRightAfterStart's.
		time.Sleep(100 * time.Millisecond)
		if err := r.cmd.Process.Signal(c.sig); err != nil {
			t.Fatal(err)
		}
		if code := r.exitCode(t); code != c.code {
			t.Errorf("%v to the client: exit %d, want %d", c.sig, code, c.code)
		}
		if sp.running(s) {
			t.Errorf("%v to the client left the command running", c.sig)
		}
	}
	// The sleep runs once the trap is set; wait returns for the signal.
	s := sleeper()
	r := e.background("run", "p", "--", "sh", "-c", `trap 'kill $!; echo got-term > /tmp/term; exit 7' TERM; sleep `+s+` & wait`)
	sp.waitInPod(s)
	time.Sleep(100 * time.Millisecond)
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := r.exitCode(t); code != 7 {
		t.Errorf("SIGTERM to a command with a TERM handler: exit %d, want the handler's 7", code)
	}
	if out := e.must("run", "p", "--", "cat", "/tmp/term").stdout; out != "got-term\n" {
		t.Errorf("the TERM handler did not run: %q", out)
	}
	if !alive(sp.pid) {
		t.Errorf("the supervisor did not survive its clients' signals")
	}
}

// What a started pod refuses, with the right exit status and one clear
// line: wall flags on run (and the command does not run), a second start,
// a stop of a stopped pod; and a pod running an ordinary one-command run
// takes no command, but stop ends it too.
func TestStartRefusals(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	sp := e.startPod("p")
	for i, fl := range [][]string{
		{"--memory", "64MiB"}, {"--swap", "0"}, {"--cpus", "1"}, {"--pids", "10"},
		{"--timeout", "1s"}, {"--downgrade", "seccomp"}, {"-p", "18080:80"},
	} {
		args := append(append([]string{"run", "p"}, fl...), "--", "touch", fmt.Sprintf("ran-%d", i))
		r := e.expect(2, fl[0], args...)
		if !strings.Contains(r.stderr, "airlock start") {
			t.Errorf("%s refused without saying where it goes: %q", fl[0], r.stderr)
		}
	}
	if diff := e.must("diff", "p").stdout; strings.Contains(diff, "ran-") {
		t.Errorf("a refused run ran its command:\n%s", diff)
	}
	e.expect(5, "already running", "start", "p")
	e.expect(5, "already running", "start", "p", "--memory", "64MiB")
	e.expect(2, "--time", "stop", "p", "--time", "0s")
	e.expect(3, "no pod named", "stop", "nosuchpod")
	e.must("stop", "p")
	sp.checkGone()
	e.expect(4, "not running", "stop", "p")

	// An ordinary run holds the pod: no command goes in beside it.
	s := sleeper()
	ord := e.background("run", "p", "--", "sleep", s)
	waitFor(t, func() bool {
		r := e.run("", "status", "p", "--json")
		var st podStatus
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil && st.State == "running"
	})
	if st := e.status("p"); st.Serving {
		t.Errorf("an ordinary run's pod says it is serving: %+v", st)
	}
	r := e.expect(125, "running one command", "run", "p", "--", "touch", "beside")
	if !strings.Contains(r.stderr, "airlock stop p") {
		t.Errorf("the refusal does not say how to stop the pod: %q", r.stderr)
	}
	e.expect(2, "--memory", "run", "p", "--memory", "64MiB", "--", "touch", "beside")
	e.expect(5, "already running", "start", "p")
	if diff := e.must("diff", "p").stdout; strings.Contains(diff, "beside") {
		t.Errorf("a refused command ran beside the ordinary run:\n%s", diff)
	}
	e.must("stop", "p")
	if code := ord.exitCode(t); code != 143 {
		t.Errorf("the ordinary run ended by stop: exit %d, want 143", code)
	}
	e.expect(4, "not running", "stop", "p")
	if st := e.status("p"); st.State != "stopped" {
		t.Errorf("status after stop of the ordinary run: %+v", st)
	}
}

// stop gives the pod's processes --time after SIGTERM, then kills them;
// a command that ignores TERM gets 137; stop takes several pods and says
// which it stopped.
func TestStopGraceAndSeveral(t *testing.T) {
	e := newEnv(t)
	e.must("init", "a")
	e.must("init", "b")
	sa := e.startPod("a")
	mk := marker()
	stubborn := e.background("run", "a", "--", "sh", "-c", `trap "" TERM; while :; do sleep 0.05; done`, mk)
	sa.waitInPod(mk)
	start := time.Now()
	e.must("stop", "a", "--time", "1s")
	took := time.Since(start)
	if took < 900*time.Millisecond || took > 6*time.Second {
		t.Errorf("stop --time 1s of a command ignoring SIGTERM took %v", took)
	}
	if code := stubborn.exitCode(t); code != 137 {
		t.Errorf("a command that ignored SIGTERM, after the grace: exit %d, want 137", code)
	}
	sa.checkGone()

	sa = e.startPod("a")
	sb := e.startPod("b")
	var out struct{ Stopped []string }
	r := e.must("stop", "a", "b", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || strings.Join(out.Stopped, ",") != "a,b" {
		t.Errorf("stop a b --json: %v %s", err, r.stdout)
	}
	sa.checkGone()
	sb.checkGone()
}

// The audit trail of a started pod: run.start with serve, for each command
// exec.start (with its command line and directory) before its exec.exit
// (with its status and duration), stop, run.exit; and it verifies.
func TestExecAuditTrail(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	e.startPod("p")
	cmds := [][]string{{"true"}, {"sh", "-c", "exit 3"}, {"no-such-command-xyz"}}
	codes := []int{0, 3, 127}
	for i, c := range cmds {
		if r := e.run("", append([]string{"run", "p", "-w", "src", "--"}, c...)...); r.code != codes[i] {
			t.Fatalf("%v: exit %d", c, r.code)
		}
	}
	e.expect(2, "--memory", "run", "p", "--memory", "64MiB", "--", "refused-cmd")
	e.must("stop", "p")
	evs := e.audit("p")
	var acts []string
	for _, ev := range evs {
		acts = append(acts, ev.Action)
	}
	t.Logf("trail: %v", acts)
	rs := indexOf(acts, "run.start")
	if rs < 0 || evs[rs].Details["serve"] != true {
		t.Fatalf("no run.start with serve:true: %v", evs)
	}
	i := rs + 1
	for k, c := range cmds {
		for i < len(evs) && evs[i].Action != "exec.start" {
			i++
		}
		if i == len(evs) {
			t.Fatalf("no exec.start for %v: %v", c, acts)
		}
		st := evs[i]
		if got := fmt.Sprint(st.Details["args"]); got != fmt.Sprint(c) {
			t.Errorf("exec.start args %s, want %v", got, c)
		}
		if st.Details["dir"] != filepath.Join(e.ws, "src") {
			t.Errorf("exec.start dir %v, want the -w directory", st.Details["dir"])
		}
		j := i + 1
		for j < len(evs) && evs[j].Action != "exec.exit" {
			if evs[j].Action == "exec.start" {
				t.Errorf("exec.start of the next command before exec.exit of %v", c)
			}
			j++
		}
		if j == len(evs) {
			t.Fatalf("no exec.exit after exec.start of %v: %v", c, acts)
		}
		ex := evs[j]
		if code, _ := ex.Details["exit"].(float64); int(code) != codes[k] {
			t.Errorf("exec.exit of %v: exit %v, want %d", c, ex.Details["exit"], codes[k])
		}
		if _, ok := ex.Details["duration_ms"].(float64); !ok {
			t.Errorf("exec.exit of %v has no duration_ms: %v", c, ex.Details)
		}
		i = j + 1
	}
	if strings.Contains(fmt.Sprint(evs), "refused-cmd") {
		t.Errorf("a refused run is on the trail as a command: %v", evs)
	}
	stop, exit := indexOf(acts, "stop"), indexOf(acts, "run.exit")
	if stop < i || exit < stop {
		t.Errorf("want stop then run.exit after the commands: %v", acts)
	}
	if n := strings.Count(strings.Join(acts, " "), "run.start"); n != 1 {
		t.Errorf("%d run.start events for one start", n)
	}
	e.must("audit", "verify", "p")
}

var ptsRE = regexp.MustCompile(`/dev/pts/\d+`)

// finish waits for a short command on the terminal to end and returns all
// it printed (ttySession.expect cannot tell a command that has ended
// from one that ended before printing).
func (s *ttySession) finish(cmd *exec.Cmd) (string, error) {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		s.t.Fatalf("airlock on the terminal did not end")
	}
	err := cmd.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String(), err
}

// A command in a started pod can have a terminal: -t gives it a pty of the
// pod's devpts at the caller's window size, following resizes; an
// interactive shell works as on the host (Ctrl-C reaches the foreground
// command, its exit status is airlock's, the caller's terminal is left
// cooked); TIOCSTI is refused there too.
func TestExecTTY(t *testing.T) {
	e := newEnv(t)
	prog := compileAttack(t, e, "tiocsti")
	e.must("init", "p")
	e.startPod("p")

	s, cmd := startTTY(t, e, 30, 100, "run", "p", "-t", "--", "sh", "-c", "tty; stty size; test -t 0 && echo IS-A-TTY")
	out, err := s.finish(cmd)
	if err != nil || !regexp.MustCompile(`^/dev/pts/\d+\r\n30 100\r\nIS-A-TTY\r\n$`).MatchString(out) {
		t.Errorf("run -t -- sh -c 'tty; stty size' in a started pod: %v, output %q", err, out)
	}

	// -t with stdin not a terminal still gets one; -T never gets a pty of
	// the pod's (its fds are the caller's, as in an ordinary run -T).
	r := e.run("", "run", "p", "-t", "--", "sh", "-c", "tty")
	if !ptsRE.MatchString(r.stdout) {
		t.Errorf("run -t with piped stdio: %q (exit %d, %s)", r.stdout, r.code, r.stderr)
	}
	s, cmd = startTTY(t, e, 30, 100, "run", "p", "-T", "--", "tty")
	if out, err := s.finish(cmd); strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "not a tty") {
		t.Errorf("run -T on a terminal: %v, output %q", err, out)
	}

	s, cmd = startTTY(t, e, 30, 100, "run", "p", "--", "/bin/bash", "--norc", "--noprofile", "-i")
	s.send("stty size; echo TTY=$(tty)\n")
	s.expect("30 100")
	s.expect("TTY=/dev/pts/")
	resizeAndInterrupt(t, s)
	s.send("exit 3\n")
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("airlock did not end after the shell in the started pod exited")
	}
	if ee, ok := cmd.Wait().(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Errorf("airlock exit = %v, want the shell's 3", ee)
	}
	tio, err := unix.IoctlGetTermios(int(s.ptmx.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tio.Lflag&(unix.ICANON|unix.ECHO) != unix.ICANON|unix.ECHO {
		t.Errorf("terminal left in raw mode: lflag %#x", tio.Lflag)
	}

	// TIOCSTI under the pod's terminal, as in TestAttackTIOCSTI.
	s, cmd = startTTY(t, e, 24, 80, "run", "p", "-t", "--", prog)
	out, err = s.finish(cmd)
	if err != nil {
		t.Errorf("the TIOCSTI attacker: %v", err)
	}
	got := strings.ReplaceAll(out, "\r", "")
	t.Logf("attack transcript:\n%s", got)
	checkAllEPERM(t, got, 4)
	if strings.Contains(got, "uid=") {
		t.Errorf("ATTACK SUCCEEDED: the injected command ran:\n%s", got)
	}
}

// airlock start in a workspace with no pod creates one, as run does; run
// with no pod name then goes into it; destroy --force takes a started pod
// down and leaves nothing; plain destroy refuses it.
func TestStartFreshWorkspace(t *testing.T) {
	e := newEnv(t)
	sp := e.startPod("")
	var pods []struct{ Name, Workspace string }
	if err := json.Unmarshal([]byte(e.must("ls", "--json").stdout), &pods); err != nil || len(pods) != 1 {
		t.Fatalf("ls --json after start in a fresh workspace: %v %+v", err, pods)
	}
	if pods[0].Name != sp.name || pods[0].Workspace != e.ws {
		t.Errorf("start created %+v, want pod %s for %s", pods[0], sp.name, e.ws)
	}
	if r := e.must("run", "--", "hostname"); strings.TrimSpace(r.stdout) != sp.name {
		t.Errorf("run with no pod name: hostname %q, want %s", r.stdout, sp.name)
	}
	if r := e.runIn(filepath.Join(e.ws, "src"), "run", "--", "pwd"); strings.TrimSpace(r.stdout) != filepath.Join(e.ws, "src") {
		t.Errorf("run from src with no pod name: %q (exit %d %s)", r.stdout, r.code, r.stderr)
	}
	if n := strings.Count(strings.Join(auditActions(e, sp.name), " "), "exec.start"); n != 2 {
		t.Errorf("the runs did not go into the started pod: %d exec.start", n)
	}
	if acts := auditActions(e, sp.name); indexOf(acts, "pod.create") != 0 {
		t.Errorf("the trail does not open with pod.create: %v", acts)
	}
	mk := marker()
	e.must("run", "--", "sh", "-c", "sh -c 'while :; do sleep 1; done' "+mk+" >/dev/null 2>&1 &")
	sp.waitInPod(mk)

	e.expect(5, "--force", "destroy", sp.name)
	if !alive(sp.pid) || !sp.running(mk) {
		t.Fatalf("a refused destroy took the pod down")
	}
	e.must("destroy", "--force", sp.name)
	sp.checkGone()
	if left := processesWith(mk); len(left) != 0 {
		t.Errorf("destroy --force left the pod's processes: %v", left)
	}
	if _, err := cgroup.Load(sp.group); err == nil {
		t.Errorf("destroy --force of a started pod left its control group")
	}
	if _, err := os.Stat(filepath.Join(e.home, "pods", sp.name)); !os.IsNotExist(err) {
		t.Errorf("the pod's directory is left: %v", err)
	}
	if out := e.must("ls", "--json").stdout; strings.Contains(out, sp.name) {
		t.Errorf("ls after destroy: %s", out)
	}
}

// The wall flags given to start are the pod's for as long as it runs: the
// limits show in stats, an OOM in one command takes only that command
// (audited while the pod runs), and --timeout stops the pod.
func TestStartWallFlags(t *testing.T) {
	requirePython(t)
	e := newEnv(t)
	e.must("init", "p")
	sp := e.startPod("p", "--memory", "64MiB", "--pids", "64")
	if s := e.stats("p"); s.MemoryLimit != 64<<20 {
		t.Errorf("stats of a pod started with --memory 64MiB: %+v", s)
	}
	var lim struct {
		PidsLimit int64 `json:"pids_limit"`
	}
	if err := json.Unmarshal([]byte(e.must("stats", "p", "--json").stdout), &lim); err != nil || lim.PidsLimit != 64 {
		t.Errorf("pids_limit of a pod started with --pids 64: %d (%v)", lim.PidsLimit, err)
	}
	balloon := "a = []\nwhile len(a) < 64:\n    a.append(b'x' * (16 << 20))\nprint('ALLOCATED 1GiB')\n"
	r := e.run("", "run", "p", "--", podPython, "-c", balloon)
	if r.code == 0 || strings.Contains(r.stdout, "ALLOCATED") {
		t.Fatalf("ATTACK SUCCEEDED: 1 GiB under a started pod's 64 MiB: exit %d %s", r.code, r.stdout)
	}
	waitFor(t, func() bool { return indexOf(auditActions(e, "p"), "oom-kill") >= 0 })
	if r := e.must("run", "p", "--", "echo", "alive"); r.stdout != "alive\n" || !alive(sp.pid) {
		t.Errorf("the OOM kill took more than the balloon: %q", r.stdout)
	}
	// A fork bomb meets --pids; stop still takes everything down.
	e.must("run", "p", "--", "sh", "-c", "(f() { f | f & }; f) >/dev/null 2>&1 &")
	time.Sleep(500 * time.Millisecond)
	if s := e.stats("p"); s.Pids > 64 {
		t.Errorf("the bomb got past --pids 64: %d", s.Pids)
	}
	e.must("stop", "p", "--time", "1s")
	sp.checkGone()

	// --timeout: the pod stops by itself, on time.
	start := time.Now()
	sp = e.startPod("p", "--timeout", "2s")
	e.background("run", "p", "--", "sleep", sleeper())
	deadline := time.Now().Add(15 * time.Second)
	for alive(sp.pid) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	if alive(sp.pid) {
		t.Fatalf("a pod started with --timeout 2s still runs after %v", took)
	}
	if took < 1800*time.Millisecond || took > 10*time.Second {
		t.Errorf("a pod started with --timeout 2s stopped after %v", took)
	}
	sp.checkGone()
	if acts := auditActions(e, "p"); indexOf(acts, "timeout") < 0 {
		t.Errorf("no timeout event on the trail: %v", acts)
	}
	if st := e.status("p"); st.State != "stopped" {
		t.Errorf("status after the timeout: %+v", st)
	}
}

// A supervisor killed with SIGKILL takes its pod with it: every process of
// the pod ends, the waiting client says so (125), status says stopped,
// destroy --force clears what is left, and the pod starts again.
func TestStartSupervisorKilled(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	sp := e.startPod("p")
	mk := marker()
	e.must("run", "p", "--", "sh", "-c", "sh -c 'while :; do sleep 1; done' "+mk+" >/dev/null 2>&1 &")
	s := sleeper()
	client := e.background("run", "p", "--", "sleep", s)
	sp.waitInPod(s)
	sp.waitInPod(mk)
	if err := syscall.Kill(sp.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := client.exitCode(t); code != 125 && code != 137 {
		t.Errorf("a client whose supervisor was killed: exit %d, want 125 or 137", code)
	}
	waitFor(t, func() bool { return len(sp.procs()) == 0 && !alive(sp.pid) })
	if left := processesWith(mk); len(left) != 0 {
		t.Errorf("the pod's processes outlived its supervisor: %v", left)
	}
	if st := e.status("p"); st.State != "stopped" {
		t.Errorf("status after the supervisor was killed: %+v", st)
	}
	e.expect(4, "not running", "stop", "p")
	sp2 := e.startPod("p")
	if r := e.must("run", "p", "--", "echo", "again"); r.stdout != "again\n" {
		t.Errorf("the restarted pod: %q", r.stdout)
	}
	e.must("stop", "p")
	sp2.checkGone()
	e.must("audit", "verify", "p")
}

// A signal that comes as soon as the command shows it runs (its first
// line of output) is passed on like any other: the command dies of it and
// airlock exits 128+n, instead of airlock dying of it and the command
// being hung up.
func TestExecSignalRightAfterStart(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	sp := e.startPod("p")
	const rounds = 100
	var bad []string
	for i := 0; i < rounds; i++ {
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		s := sleeper()
		c := exec.Command(bin, "run", "p", "--", "sh", "-c", "echo ready; exec sleep "+s)
		c.Dir, c.Env, c.Stdout = e.ws, append(os.Environ(), "AIRLOCK_HOME="+e.home), pw
		var errb bytes.Buffer
		c.Stderr = &errb
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		pw.Close()
		buf := make([]byte, 6)
		if _, err := pr.Read(buf); err != nil || string(buf) != "ready\n" {
			t.Fatalf("round %d: the command did not start: %q %v", i, buf, err)
		}
		if err := c.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		err = c.Wait()
		pr.Close()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = -int(ws.Signal())
			}
		}
		if code != 143 {
			bad = append(bad, fmt.Sprintf("round %d: airlock exit %d (negative: killed by that signal), stderr %q", i, code, errb.String()))
		}
		waitFor(t, func() bool { return !sp.running(s) })
	}
	if len(bad) > 0 {
		exits := map[string]int{}
		for _, ev := range e.audit("p") {
			if ev.Action == "exec.exit" {
				exits[fmt.Sprint(ev.Details["exit"])]++
			}
		}
		t.Errorf("SIGTERM to airlock just after its command printed was not passed on in %d of %d rounds (want airlock and the command to exit 143); the commands' exec.exit statuses: %v; first: %s",
			len(bad), rounds, exits, bad[0])
	}
}

// Every command that stop ends reports how it ended: each of many
// commands killed by stop's SIGTERM exits 143, on its client and on the
// trail, none "killed with the pod" (137) for having ended last.
func TestStopReportsEachCommand(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	const rounds, n = 8, 96
	var wrong []string
	for round := 0; round < rounds; round++ {
		sp := e.startPod("p")
		var runs []*podRun
		var errs []*lockedWriter
		var marks []string
		for i := 0; i < n; i++ {
			s := sleeper()
			marks = append(marks, s)
			r := &podRun{cmd: exec.Command(bin, "run", "p", "--", "sleep", s), done: make(chan struct{})}
			w := &lockedWriter{}
			r.cmd.Dir, r.cmd.Env, r.cmd.Stderr = e.ws, append(os.Environ(), "AIRLOCK_HOME="+e.home), w
			if err := r.cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { r.err = r.cmd.Wait(); close(r.done) }()
			t.Cleanup(func() {
				select {
				case <-r.done:
				default:
					_ = r.cmd.Process.Kill()
					<-r.done
				}
			})
			runs, errs = append(runs, r), append(errs, w)
		}
		for _, s := range marks {
			sp.waitInPod(s)
		}
		e.must("stop", "p")
		for i, r := range runs {
			if code := r.exitCode(t); code != 143 {
				wrong = append(wrong, fmt.Sprintf("round %d command %d: exit %d: %s", round, i, code, strings.TrimSpace(errs[i].String())))
			}
		}
		sp.checkGone()
	}
	// On the trail, each round's commands end before the pod does: at
	// each run.exit every exec.start so far has its exec.exit.
	exits := map[string]int{}
	started, ended, late := 0, 0, 0
	for _, ev := range e.audit("p") {
		switch ev.Action {
		case "exec.start":
			started++
		case "exec.exit":
			exits[fmt.Sprint(ev.Details["exit"])]++
			ended++
		case "run.exit":
			late = max(late, started-ended)
		}
	}
	if len(wrong) > 0 || exits["143"] != rounds*n {
		first := wrong
		if len(first) > 4 {
			first = first[:4]
		}
		t.Errorf("%d commands ended by stop's SIGTERM: want every client and every exec.exit 143; exec.exit statuses %v; %d clients wrong, e.g. %v",
			rounds*n, exits, len(wrong), first)
	}
	if late != 0 {
		t.Errorf("up to %d commands of a round have no exec.exit before their pod's run.exit", late)
	}
}

// A long command line (300 KB in 3,000 arguments, well under the
// kernel's ARG_MAX), which an ordinary run takes, runs in a started pod
// too, and at once.
func TestExecLongCommandLine(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	args := []string{"run", "p", "--", "sh", "-c", `echo "$#"`, "sh"}
	for i := 0; i < 3000; i++ {
		args = append(args, strings.Repeat("x", 99))
	}
	if r := e.run("", args...); r.code != 0 || r.stdout != "3000\n" {
		t.Fatalf("a 300 KB command line in an ordinary run: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	e.startPod("p")
	start := time.Now()
	r := e.run("", args...)
	took := time.Since(start)
	if r.code != 0 || r.stdout != "3000\n" {
		t.Errorf("a 300 KB command line in a started pod: exit %d after %v, stdout %q, stderr %q", r.code, took.Round(time.Millisecond), r.stdout, r.stderr)
	}
	if took > 5*time.Second {
		t.Errorf("a 300 KB command line in a started pod took %v", took)
	}
	// The pod still serves after it.
	if r := e.must("run", "p", "--", "echo", "ok"); r.stdout != "ok\n" {
		t.Errorf("after the long command line: %q", r.stdout)
	}
}

// The pod cannot see Airlock's state, its own control socket included,
// also where the state lives under the home directory the pod sees
// copy-on-write: a command cannot talk to its supervisor.
func TestExecStateHidden(t *testing.T) {
	requirePython(t)
	e := newEnv(t)
	home := e.withHome()
	e.home = filepath.Join(home, ".local", "share", "airlock") // newEnv's clean-up follows
	if err := os.MkdirAll(e.home, 0o700); err != nil {
		t.Fatal(err)
	}
	e.must("init", "hs")
	e.startPod("hs")
	sock := filepath.Join(e.home, "pods", "hs", "run", "control.sock")
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the started pod's control socket is not where the test looks: %v", err)
	}
	script := `echo "entries=$(ls -A "$1" 2>/dev/null | wc -l)"
test -e "$2" && echo SOCKET-VISIBLE
test -e "$3" && echo LOG-VISIBLE
` + podPython + ` -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1]); s.sendall(b"{\"op\":\"ping\"}\n"); print("CONNECTED", s.recv(256))
except OSError as e:
    print("connect", e.errno)
' "$2"`
	r := e.must("run", "hs", "--", "sh", "-c", script, "sh", e.home, sock, filepath.Join(e.home, "pods", "hs", "run", "supervisor.log"))
	t.Logf("from inside: %s", r.stdout)
	if !strings.Contains(r.stdout, "entries=0\n") || strings.Contains(r.stdout, "VISIBLE") || strings.Contains(r.stdout, "CONNECTED") {
		t.Errorf("SECURITY: a command in the started pod sees Airlock's state or reaches its supervisor:\n%s", r.stdout)
	}
}

// A warning the supervisor gives while it builds the walls (here: the
// network wall off, mode host) reaches the person who ran airlock start,
// not only the supervisor's log, and start still succeeds.
func TestStartWarnsPerson(t *testing.T) {
	e := newEnv(t)
	e.write("airlock.yaml", "version: 1\nnetwork:\n  mode: host\n")
	e.must("init", "sw")
	r := e.run("", "start", "sw")
	if r.code != 0 {
		t.Fatalf("start: %+v", r)
	}
	defer e.run("", "stop", "sw")
	if !strings.Contains(r.stderr, "airlock: warning: ") || !strings.Contains(strings.ToLower(r.stderr), "host") {
		t.Errorf("start in mode host: want the warning on stderr, got %q", r.stderr)
	}
	if strings.Contains(r.stdout, "warning") {
		t.Errorf("the warning went to stdout: %q", r.stdout)
	}
	if r := e.run("", "run", "sw", "-T", "--", "true"); r.code != 0 {
		t.Errorf("run into the started pod: %+v", r)
	}
	e.must("stop", "sw")
}
