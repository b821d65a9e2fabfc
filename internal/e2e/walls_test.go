package e2e

// The attacker's suite: each test runs an attack inside a real pod through
// the built binary, the way an agent gone rogue would, and asserts that the
// attack fails the way it should and that the pod and the host survive.
// The C attackers live in testdata/walls and are built with gcc into the
// test's workspace, which the pod sees at the same path.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/airlock-dev/airlock/internal/cgroup"
	"github.com/airlock-dev/airlock/internal/testutil"
)

// podPython is the interpreter the attacks use inside the pod: the host's
// PATH may put a pyenv shim first, which need not work in a pod.
const podPython = "/usr/bin/python3"

// compileAttack builds testdata/walls/NAME.c into the workspace and returns
// the path, which is the same inside the pod.
func compileAttack(t *testing.T, e *env, name string) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	testutil.RequireFeature(t, err == nil, "gcc to build the attack programs")
	src, err := filepath.Abs(filepath.Join("testdata", "walls", name+".c"))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(e.ws, "attack-"+name)
	if b, err := exec.Command(gcc, "-O1", "-Wall", "-o", out, src).CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", name, err, b)
	}
	return out
}

func requirePython(t *testing.T) {
	t.Helper()
	_, err := os.Stat(podPython)
	testutil.RequireFeature(t, err == nil, podPython)
}

// auditActions returns the actions of the pod's audit trail, in order.
func auditActions(e *env, pod string) []string {
	e.t.Helper()
	recs := e.audit(pod)
	actions := make([]string, len(recs))
	for i, r := range recs {
		actions[i] = r.Action
	}
	return actions
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// hostSurvives checks that the host can still fork and that the pod can
// start again after the attack.
func hostSurvives(t *testing.T, e *env, pod string) {
	t.Helper()
	if err := exec.Command("true").Run(); err != nil {
		t.Fatalf("the host cannot start a process after the attack: %v", err)
	}
	e.must("run", pod, "--", "true")
}

// resultLine matches "NAME ABI ret=R errno=E" and "NAME ret=R errno=E".
var resultLine = regexp.MustCompile(`^(\S+(?: \S+)?) ret=(-?\d+) errno=(\d+)\r?$`)

// checkAllEPERM asserts every attempt printed by a C attacker failed with
// EPERM, that it printed want attempts and that it lived to say so.
func checkAllEPERM(t *testing.T, out string, want int) {
	t.Helper()
	n := 0
	for _, line := range strings.Split(out, "\n") {
		m := resultLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n++
		if m[2] != "-1" || m[3] != "1" {
			t.Errorf("ATTACK SUCCEEDED or was not refused by the wall: %s (want ret=-1 errno=1 EPERM)", strings.TrimSpace(line))
		}
	}
	if n != want {
		t.Errorf("%d attempts reported, want %d:\n%s", n, want, out)
	}
	if !strings.Contains(out, "survived") {
		t.Errorf("the attacker did not survive its refused calls:\n%s", out)
	}
}

// Every denied syscall class, by its native, x32 and i386 numbers, fails
// with EPERM and the process lives on; ptrace of a sibling and of the
// pod's init fails too.
func TestAttackDeniedSyscalls(t *testing.T) {
	e := newEnv(t)
	sys := compileAttack(t, e, "syscalls")
	pt := compileAttack(t, e, "ptrace")
	e.must("init", "p")
	r := e.run("", "run", "p", "--", "sh", "-c", sys+"; echo ===; "+pt)
	if r.code != 0 {
		t.Fatalf("attack run: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	t.Logf("attack transcript:\n%s", r.stdout)
	parts := strings.SplitN(r.stdout, "===", 2)
	if len(parts) != 2 {
		t.Fatalf("output: %s", r.stdout)
	}
	// 28 calls by their x86_64, x32 and i386 numbers; kexec_file_load has no i386 number.
	checkAllEPERM(t, parts[0], 28*3-1)
	checkAllEPERM(t, parts[1], 6)
	hostSurvives(t, e, "p")
}

// attackScript is what an agent tries with the tools it finds: each probe
// prints NAME=OK when the attack worked and NAME=FAIL when it was stopped.
const attackScript = `
t() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "$name=OK"; else echo "$name=FAIL"; fi; }
before=$(wc -l < /proc/self/mountinfo)
mkdir -p /tmp/mnt /tmp/x
t unshare unshare -Urm true
t unshare-net unshare -n true
t mount-proc-mnt mount -t proc proc /mnt
t mount-proc mount -t proc proc /tmp/mnt
t mount-tmpfs mount -t tmpfs x /tmp/x
t mount-bind mount --bind /tmp/x /tmp/mnt
t remount-usr mount -o remount,rw /usr
t umount-proc umount -l /proc
t sethostname hostname evil
t sysctl-hostname sh -c 'echo evil > /proc/sys/kernel/hostname'
t sysrq sh -c 'echo h > /proc/sysrq-trigger'
ksm=$(cat /sys/kernel/mm/ksm/run 2>/dev/null || echo 0)
t sys-ksm sh -c "echo $ksm > /sys/kernel/mm/ksm/run"
t sys-uevent sh -c 'echo add > /sys/kernel/uevent_helper'
t core-pattern sh -c 'cat /proc/sys/kernel/core_pattern > /tmp/cp && cat /tmp/cp > /proc/sys/kernel/core_pattern'
t mknod mknod /tmp/sda b 8 0
t dev-mem sh -c 'head -c 1 /dev/mem | wc -c | grep -qv "^0"'
t kcore sh -c 'head -c 16 /proc/kcore | wc -c | grep -qv "^0"'
t kmsg sh -c 'timeout 1 head -c 1 /proc/kmsg | wc -c | grep -qv "^0"'
t init-environ sh -c 'cat /proc/1/environ | wc -c | grep -qv "^0"'
t init-exe-link readlink /proc/1/exe
t init-root ls /proc/1/root/
t core-raise sh -c 'ulimit -c unlimited'
t proc-fd-init sh -c 'for f in /proc/1/fd/*; do [ -e "$f" ] && exit 0; done; exit 1'
kill -KILL 1 2>/dev/null; sleep 0.1
echo "init-survives-kill=yes"
echo "core-limit=$(ulimit -c)"
echo "session=$(cut -d' ' -f6 /proc/self/stat)"
after=$(wc -l < /proc/self/mountinfo)
if [ "$before" = "$after" ] && ! grep -qE ' /tmp/(mnt|x) ' /proc/self/mountinfo; then echo mounts-changed=FAIL; else echo mounts-changed=OK; fi
echo "hostname-now=$(hostname)"
grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|CapInh|NoNewPrivs|Seccomp):' /proc/self/status
for d in /proc/[0-9]*; do echo "proc ${d#/proc/} $(cat $d/comm 2>/dev/null)"; done
`

// The tools at hand (unshare, mount, sysctl files, /sys, /proc of the
// runtime) all fail; capabilities are gone, no_new_privs and seccomp are on,
// and the host's processes are invisible.
func TestAttackEscapeTools(t *testing.T) {
	e := newEnv(t)
	e.write("attack.sh", attackScript)
	e.must("init", "p")
	r := e.run("", "run", "p", "--", "sh", filepath.Join(e.ws, "attack.sh"))
	if r.code != 0 {
		t.Fatalf("attack run: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	t.Logf("attack transcript:\n%s", r.stdout)
	status := map[string]string{}
	var pids []string
	for _, line := range strings.Split(r.stdout, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.Contains(k, " ") {
			if v == "OK" {
				t.Errorf("ATTACK SUCCEEDED: %s", k)
			}
			status[k] = v
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			status[k] = strings.TrimSpace(v)
		}
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "proc" {
			pids = append(pids, f[1])
			if len(f) > 2 && (f[2] == "e2e.test" || f[2] == "go") {
				t.Errorf("a host process is visible in the pod: %s", line)
			}
		}
	}
	if len(status) < 20 {
		t.Fatalf("the attack script did not run to the end:\n%s\nstderr: %s", r.stdout, r.stderr)
	}
	if status["init-survives-kill"] != "yes" {
		t.Errorf("kill -KILL 1 from the agent ended the pod")
	}
	if status["core-limit"] != "0" {
		t.Errorf("RLIMIT_CORE inside the pod is %q, want 0", status["core-limit"])
	}
	// A session whose leader is outside the pod's PID namespace reads as 0.
	if sid := status["session"]; sid == "" || sid == "0" {
		t.Errorf("the pod's processes are not in a session of their own (sid %q as the pod sees it)", sid)
	}
	if status["hostname-now"] != "p" {
		t.Errorf("pod host name is %q after the attack, want p", status["hostname-now"])
	}
	for _, k := range []string{"CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"} {
		if status[k] != "0000000000000000" {
			t.Errorf("%s = %q inside the pod, want 0", k, status[k])
		}
	}
	if status["NoNewPrivs"] != "1" || status["Seccomp"] != "2" {
		t.Errorf("NoNewPrivs %q Seccomp %q, want 1 and 2", status["NoNewPrivs"], status["Seccomp"])
	}
	self := strconv.Itoa(os.Getpid())
	for _, p := range pids {
		if n, _ := strconv.Atoi(p); p == self && n > 100 {
			t.Errorf("the test's own pid %s is visible in the pod", p)
		}
	}
	// init, sh, the loop's cat and perhaps a straggler: never the host's.
	if len(pids) == 0 || len(pids) > 6 {
		t.Errorf("the pod sees %d processes, want only its own few: %v", len(pids), pids)
	}
	if h, _ := os.Hostname(); h == "evil" {
		t.Fatalf("the pod renamed the host")
	}
	hostSurvives(t, e, "p")
}

// exeAttack is CVE-2019-5736 and friends: overwrite the runtime binary
// through /proc/1/exe or its host path, so the next run executes the
// attacker's code as root on the host.
const exeAttack = `
import os, subprocess, sys
def attempt(name, fn):
    try:
        fn()
        print(name + "=OK")
    except OSError as e:
        print(name + "=FAIL " + str(e.errno))
attempt("exe-wronly", lambda: os.open("/proc/1/exe", os.O_WRONLY))
attempt("exe-rdwr", lambda: os.open("/proc/1/exe", os.O_RDWR))
attempt("exe-path", lambda: os.open("/proc/1/exe", os.O_PATH))
attempt("exe-exec", lambda: subprocess.run(["/proc/1/exe", "version"], check=True, capture_output=True))
attempt("init-mem", lambda: os.open("/proc/1/mem", os.O_RDWR))
attempt("init-map-files", lambda: os.listdir("/proc/1/map_files"))
attempt("bin-wronly", lambda: os.open(sys.argv[1], os.O_WRONLY))
attempt("bin-trunc", lambda: os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC))
attempt("bin-rename", lambda: os.rename(sys.argv[1], sys.argv[1] + ".old"))
print("bin-visible=" + str(os.path.exists(sys.argv[1])))
`

// The runtime binary cannot be opened for writing from the pod, neither
// through /proc/1/exe nor at its host path (made visible read-only when it
// is not under /tmp), and it is byte for byte unchanged afterwards.
func TestAttackRuntimeBinary(t *testing.T) {
	requirePython(t)
	e := newEnv(t)
	binAbs, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	binAbs, _ = filepath.EvalSymlinks(binAbs)
	before := fileSHA(t, binAbs)
	cfg := "version: 1\n"
	if dir := filepath.Dir(binAbs); !strings.HasPrefix(dir, "/tmp/") {
		// Where an installed airlock lives (/usr/local/bin) the pod sees it:
		// give the attacker the same view of this one.
		cfg += "filesystem:\n  readonly: [/usr, /bin, /sbin, /lib, /lib32, /lib64, /libx32, /etc, /opt, " + dir + "]\n"
	}
	e.write("attack-cfg.yaml", cfg)
	e.write("exe.py", exeAttack)
	e.must("init", "p", "--config", filepath.Join(e.ws, "attack-cfg.yaml"))
	r := e.run("", "run", "p", "--", podPython, filepath.Join(e.ws, "exe.py"), binAbs)
	if r.code != 0 {
		t.Fatalf("attack run: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	t.Logf("attack transcript:\n%s", r.stdout)
	n := 0
	for _, line := range strings.Split(r.stdout, "\n") {
		if strings.Contains(line, "=OK") {
			t.Errorf("ATTACK SUCCEEDED against the runtime binary: %s", line)
		}
		if strings.Contains(line, "=FAIL") {
			n++
		}
	}
	if n != 9 {
		t.Errorf("%d attempts reported, want 9:\n%s\nstderr: %s", n, r.stdout, r.stderr)
	}
	t.Logf("runtime binary %s %s", binAbs, strings.TrimSpace(r.stdout[strings.LastIndex(r.stdout, "bin-visible"):]))
	if after := fileSHA(t, binAbs); after != before {
		t.Fatalf("THE RUNTIME BINARY CHANGED: sha256 %s -> %s", before, after)
	}
	if _, err := os.Stat(binAbs + ".old"); err == nil {
		t.Fatalf("the pod renamed the runtime binary on the host")
	}
	hostSurvives(t, e, "p")
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// Descriptors the caller leaks into airlock never reach the pod: the pod's
// command starts with 0, 1 and 2 only.
func TestAttackInheritedFds(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
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
	cmd.Dir = e.ws
	cmd.Env = append(os.Environ(), "AIRLOCK_HOME="+e.home)
	cmd.ExtraFiles = []*os.File{f, f} // fds 3 and 4 in airlock
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "s3cret") {
		t.Fatalf("ATTACK SUCCEEDED: the pod read a descriptor leaked by its caller: %q", out)
	}
	// ls itself holds one more: the directory it lists.
	if got := strings.TrimSpace(string(out)); got != "0 1 2 3" {
		t.Errorf("fds inside the pod: %q, want \"0 1 2 3\" (3 is ls's own listing)", got)
	}
}

// TIOCSTI and TIOCLINUX under a terminal (the pod's and, through it, the
// user's) are refused by the seccomp wall, also with high bits set in the
// request.
func TestAttackTIOCSTI(t *testing.T) {
	e := newEnv(t)
	prog := compileAttack(t, e, "tiocsti")
	e.must("init", "p")
	cmd := exec.Command(bin, "run", "p", "-t", "--", prog)
	cmd.Dir = e.ws
	cmd.Env = append(os.Environ(), "AIRLOCK_HOME="+e.home, "TERM=dumb")
	ptmx, err := pty.Start(cmd)
	if err != nil {
		t.Fatalf("starting airlock run -t on a pty: %v", err)
	}
	defer ptmx.Close()
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(&out, ptmx); close(copied) }() // ends with EIO when the pty closes
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err = <-waited:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-waited
		t.Fatalf("airlock run -t did not finish; output so far: %q", out.String())
	}
	ptmx.Close()
	<-copied
	if err != nil {
		t.Fatalf("run -t: %v\n%s", err, out.String())
	}
	got := strings.ReplaceAll(out.String(), "\r", "")
	t.Logf("attack transcript:\n%s", got)
	checkAllEPERM(t, got, 4)
	if strings.Contains(got, "uid=") {
		t.Errorf("ATTACK SUCCEEDED: the injected command ran:\n%s", got)
	}
}

// A fork bomb under --pids 64 hits the limit, is stopped by the timeout,
// and leaves a pids-limit event; the host and the pod live on.
func TestAttackForkBomb(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	start := time.Now()
	// The bomb runs beside the command, which then needs no fork to wait.
	r := e.run("", "run", "p", "--pids", "64", "--timeout", "4s", "--", "sh", "-c", "(f() { f | f & }; f) & exec sleep 60")
	took := time.Since(start)
	if r.code == 0 {
		t.Errorf("the fork bomb's run exited 0, want it stopped")
	}
	if took > 20*time.Second {
		t.Errorf("the fork bomb's run took %v; the timeout is 4s", took)
	}
	actions := auditActions(e, "p")
	if indexOf(actions, "pids-limit") < 0 {
		t.Errorf("no pids-limit event in the audit trail: %v", actions)
	}
	if indexOf(actions, "timeout") < 0 {
		t.Errorf("no timeout event in the audit trail: %v", actions)
	}
	hostSurvives(t, e, "p")
}

// A memory balloon of 1 GiB under --memory 64MiB is OOM-killed and
// audited; the next run works.
func TestAttackMemoryBalloon(t *testing.T) {
	requirePython(t)
	e := newEnv(t)
	e.must("init", "p")
	balloon := "a = []\nwhile len(a) < 64:\n    a.append(b'x' * (16 << 20))\nprint('ALLOCATED 1GiB')\n"
	r := e.run("", "run", "p", "--memory", "64MiB", "--", podPython, "-c", balloon)
	if r.code == 0 || strings.Contains(r.stdout, "ALLOCATED") {
		t.Fatalf("ATTACK SUCCEEDED: 1 GiB touched under a 64 MiB limit: exit %d, %s", r.code, r.stdout)
	}
	actions := auditActions(e, "p")
	if indexOf(actions, "oom-kill") < 0 {
		t.Errorf("no oom-kill event in the audit trail: %v (exit %d, stderr %s)", actions, r.code, r.stderr)
	} else if indexOf(actions, "oom-kill") > indexOf(actions, "run.exit") {
		// What the command did is on record before its end.
		t.Errorf("oom-kill comes after run.exit in the audit trail: %v", actions)
	}
	hostSurvives(t, e, "p")
}

// resources.timeout ends the run on time, warning first.
func TestWallTimeout(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	start := time.Now()
	r := e.run("", "run", "p", "--timeout", "2s", "--", "sleep", "30")
	took := time.Since(start)
	if r.code == 0 {
		t.Errorf("a timed-out run exited 0")
	}
	if took < 1800*time.Millisecond || took > 8*time.Second {
		t.Errorf("run with --timeout 2s took %v", took)
	}
	actions := auditActions(e, "p")
	w, k := indexOf(actions, "timeout.warning"), indexOf(actions, "timeout")
	if w < 0 || k < 0 || w > k {
		t.Errorf("audit trail lacks timeout.warning before timeout: %v", actions)
	}
}

// A wall that cannot be built stops the run (fail closed) unless the
// user downgrades it, which is audited and shown in status. Without the
// filter the syscall attacker gets further, so the EPERMs of
// TestAttackDeniedSyscalls come from the seccomp wall.
func TestWallSeccompFailClosed(t *testing.T) {
	e := newEnv(t)
	sys := compileAttack(t, e, "syscalls")
	e.write("airlock.yaml", "version: 1\nsecurity:\n  seccomp: /nonexistent.yaml\n")
	r := e.expect(125, "seccomp", "run", "p", "--", "true")
	if !strings.Contains(r.stderr, "--downgrade") {
		t.Errorf("the error does not say how to downgrade: %q", r.stderr)
	}
	r = e.run("", "run", "p", "--downgrade", "seccomp", "--", sys)
	if r.code != 0 {
		t.Fatalf("run --downgrade seccomp: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	// Without the filter each ABI gets past it somewhere (x32 to the
	// kernel's ENOSYS when it lacks the ABI): the test can see a hole.
	for _, abi := range []string{"x86_64", "x32", "i386"} {
		if !regexp.MustCompile(`(?m)^\S+ ` + abi + ` ret=\S+ errno=([02-9]|\d\d+)$`).MatchString(r.stdout) {
			t.Errorf("without the filter no %s call got further than EPERM; the attack test could not tell the wall from missing capabilities:\n%s", abi, r.stdout)
		}
	}
	if !strings.Contains(r.stdout, "setns x86_64 ret=-1 errno=9") {
		t.Errorf("without the filter setns(-1) should fail with EBADF:\n%s", r.stdout)
	}
	if indexOf(auditActions(e, "p"), "wall.downgrade") < 0 {
		t.Errorf("the downgrade is not in the audit trail")
	}
	var st struct{ Walls map[string]string }
	if err := json.Unmarshal([]byte(e.must("status", "p", "--json").stdout), &st); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(st.Walls["seccomp"], "downgraded") {
		t.Errorf("status walls.seccomp = %q, want downgraded", st.Walls["seccomp"])
	}
}

// stats is one `airlock stats --json` sample.
type stats struct {
	MemoryLimit int64 `json:"memory_limit"`
	Pids        int   `json:"pids"`
	Frozen      bool  `json:"frozen"`
}

func (e *env) stats(pod string) stats {
	e.t.Helper()
	return mustJSON[stats](e, "stats", pod, "--json")
}

// freeze, resume, stats, limit and kill act on a running pod: a frozen
// pod stops ticking, a resumed one ticks again, kill ends the run.
func TestWallControlRunningPod(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	cmd := exec.Command(bin, "run", "p", "--", "sh", "-c", "while :; do echo tick; sleep 0.05; done")
	cmd.Dir = e.ws
	cmd.Env = append(os.Environ(), "AIRLOCK_HOME="+e.home)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var ticks atomic.Int64
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			ticks.Add(1)
		}
	}()
	var waitErr error
	done := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(done) }()
	defer func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	waitFor(t, func() bool { return strings.Contains(e.run("", "status", "p").stdout, "running") && ticks.Load() > 0 })

	e.must("freeze", "p")
	if !e.stats("p").Frozen {
		t.Errorf("stats does not report the frozen pod as frozen")
	}
	time.Sleep(200 * time.Millisecond) // let ticks already in the pipe arrive
	n := ticks.Load()
	time.Sleep(500 * time.Millisecond)
	if got := ticks.Load(); got != n {
		t.Errorf("the frozen pod ticked %d times", got-n)
	}
	e.must("resume", "p")
	waitFor(t, func() bool { return ticks.Load() > n })
	if e.stats("p").Frozen {
		t.Errorf("stats reports the resumed pod as frozen")
	}

	e.must("limit", "p", "--memory", "96MiB")
	if s := e.stats("p"); s.MemoryLimit != 96<<20 || s.Pids < 2 {
		t.Errorf("after limit --memory 96MiB: %+v", s)
	}

	e.must("kill", "p")
	select {
	case <-done:
		var ee *exec.ExitError
		if !errors.As(waitErr, &ee) || ee.Sys().(syscall.WaitStatus).ExitStatus() != 137 {
			t.Errorf("killed run ended with %v, want exit 137", waitErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the run did not end after airlock kill")
	}
	waitFor(t, func() bool { return strings.Contains(e.run("", "status", "p").stdout, "stopped") })
}

// podRun is an `airlock run` in the background, for commands that act on a
// running pod.
type podRun struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (e *env) background(args ...string) *podRun {
	e.t.Helper()
	r := &podRun{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	r.cmd.Dir = e.ws
	r.cmd.Env = append(os.Environ(), "AIRLOCK_HOME="+e.home)
	if err := r.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { r.err = r.cmd.Wait(); close(r.done) }()
	e.t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

// exitCode waits for the run and returns its exit status.
func (r *podRun) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("the run did not end")
	}
	var ee *exec.ExitError
	if r.err == nil {
		return 0
	}
	if !errors.As(r.err, &ee) {
		t.Fatalf("run: %v", r.err)
	}
	return ee.ExitCode()
}

func (e *env) waitRunning(pod string) {
	e.t.Helper()
	// stats answers once the pod runs and its cgroup holds the init.
	waitFor(e.t, func() bool {
		var s struct{ Pids int }
		r := e.run("", "stats", pod, "--json")
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &s) == nil && s.Pids >= 2
	})
}

// The run flags set memory, fractional CPUs and PIDs; limit changes them
// while the pod runs; kill --signal TERM reaches the agent, whose own
// handler decides the exit status.
func TestWallLiveLimitsAndSignal(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	r := e.background("run", "p", "--memory", "128MiB", "--cpus", "1.5", "--pids", "200", "--",
		"sh", "-c", `trap "exit 7" TERM; while :; do sleep 0.05; done`)
	e.waitRunning("p")
	var s struct {
		MemoryLimit int64   `json:"memory_limit"`
		CPULimit    float64 `json:"cpu_limit"`
		PidsLimit   int64   `json:"pids_limit"`
		Pids        int64   `json:"pids"`
	}
	read := func() {
		t.Helper()
		if err := json.Unmarshal([]byte(e.must("stats", "p", "--json").stdout), &s); err != nil {
			t.Fatal(err)
		}
	}
	read()
	if s.MemoryLimit != 128<<20 || s.CPULimit != 1.5 || s.PidsLimit != 200 || s.Pids < 2 {
		t.Errorf("limits from run flags: %+v, want 128MiB, 1.5 CPUs, 200 pids", s)
	}
	e.must("limit", "p", "--cpus", "0.25", "--pids", "50", "--memory", "64MiB")
	read()
	if s.MemoryLimit != 64<<20 || s.CPULimit != 0.25 || s.PidsLimit != 50 {
		t.Errorf("limits after limit --cpus 0.25 --pids 50 --memory 64MiB: %+v", s)
	}
	if txt := e.must("stats", "p").stdout; !strings.Contains(txt, "limit 0.25 CPUs") || !strings.Contains(txt, "of 50") {
		t.Errorf("stats text does not show the live limits:\n%s", txt)
	}
	// I/O throttling is offered here (v1 blkio on the state directory's disk).
	e.must("limit", "p", "--io-write-bps", "1MiB")
	group := cgroup.GroupName("p", filepath.Join(e.home, "pods", "p"))
	file, want := filepath.Join("/sys/fs/cgroup/blkio/airlock", group, "blkio.throttle.write_bps_device"), " 1048576"
	if _, err := os.Stat(filepath.Dir(file)); err != nil { // pure cgroup v2
		file, want = filepath.Join("/sys/fs/cgroup/airlock", group, "io.max"), "wbps=1048576"
	}
	if b, err := os.ReadFile(file); err != nil || !strings.Contains(string(b), want) {
		t.Errorf("after limit --io-write-bps 1MiB, %s reads %q (%v)", file, b, err)
	}
	e.must("kill", "p", "--signal", "TERM")
	if code := r.exitCode(t); code != 7 {
		t.Errorf("after kill --signal TERM the run exited %d, want 7 from the agent's TERM handler", code)
	}
	if indexOf(auditActions(e, "p"), "limit") < 0 {
		t.Errorf("the live limit change is not in the audit trail")
	}
	// limit kept the new values for the next run.
	if out := e.must("run", "p", "--", "cat", "/proc/self/status").stdout; !strings.Contains(out, "Name:") {
		t.Errorf("the pod does not run after the signal: %s", out)
	}
}

// stats --watch --json streams one sample a second and ends by itself
// when the pod stops.
func TestWallStatsWatch(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	e.background("run", "p", "--", "sh", "-c", "while :; do :; done")
	e.waitRunning("p")
	w := exec.Command(bin, "stats", "p", "--watch", "--json")
	w.Dir, w.Env = e.ws, append(os.Environ(), "AIRLOCK_HOME="+e.home)
	var werr bytes.Buffer
	w.Stderr = &werr
	out, err := w.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	watchDone := make(chan error, 1)
	samples := make(chan map[string]any, 16)
	go func() {
		dec := json.NewDecoder(out)
		for {
			var m map[string]any
			if dec.Decode(&m) != nil {
				break
			}
			samples <- m
		}
		watchDone <- w.Wait()
	}()
	var got []map[string]any
	for len(got) < 3 {
		select {
		case m := <-samples:
			got = append(got, m)
		case err := <-watchDone:
			t.Fatalf("stats --watch ended after %d samples: %v; stderr: %s", len(got), err, werr.String())
		case <-time.After(10 * time.Second):
			_ = w.Process.Kill()
			t.Fatalf("stats --watch gave %d samples in 10s", len(got))
		}
	}
	if got[0]["pod"] != "p" || got[2]["cpu_usec"].(float64) <= got[0]["cpu_usec"].(float64) {
		t.Errorf("samples do not show the busy loop's CPU time growing: %v", got)
	}
	if pct, _ := got[2]["cpu_percent"].(float64); pct < 20 {
		t.Errorf("a busy loop shows %.0f%% CPU in the third sample, want most of a CPU", pct)
	}
	e.must("kill", "p")
	select {
	case err := <-watchDone:
		if err != nil {
			t.Errorf("stats --watch ended with %v after the pod stopped", err)
		}
	case <-time.After(10 * time.Second):
		_ = w.Process.Kill()
		t.Fatalf("stats --watch did not end when the pod stopped")
	}
}

// security.seccomp takes strict and a policy file, also under ~/; status
// names the profile that is up.
func TestWallSeccompProfiles(t *testing.T) {
	requirePython(t)
	e := newEnv(t)
	home := t.TempDir()
	pol := "version: 1\nname: test-file\ndefault: allow\nrules:\n  - name: mkdir\n    action: errno\n    errno: EXDEV\n    reason: the test's marker\n"
	if err := os.WriteFile(filepath.Join(home, "pol.yaml"), []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	netlink := podPython + ` -c "import socket; socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0); print('netlink-open')"`
	for i, c := range []struct{ profile, cmd, want string }{
		{"default", netlink, "netlink-open"},
		{"strict", netlink, "PermissionError"},
		{"~/pol.yaml", "mkdir /tmp/x", "Invalid cross-device link"},
	} {
		e.write("airlock.yaml", "version: 1\nsecurity:\n  seccomp: "+c.profile+"\n")
		name := fmt.Sprintf("p%d", i)
		r := e.runEnv([]string{"HOME=" + home}, "", "run", name, "--", "sh", "-c", c.cmd+" 2>&1; true")
		if r.code != 0 || !strings.Contains(r.stdout, c.want) {
			t.Errorf("security.seccomp %s: %s gave exit %d, %q (stderr %q), want %q", c.profile, c.cmd, r.code, r.stdout, r.stderr, c.want)
		}
		var st struct{ Walls map[string]string }
		if err := json.Unmarshal([]byte(e.must("status", name, "--json").stdout), &st); err != nil {
			t.Fatal(err)
		}
		if st.Walls["seccomp"] != "up ("+c.profile+")" {
			t.Errorf("status walls.seccomp = %q for profile %s", st.Walls["seccomp"], c.profile)
		}
	}
}

// doctor on this host says pods can run; inside a pod, where namespaces
// and mounts are walled off, it says they cannot and exits non-zero.
func TestDoctor(t *testing.T) {
	e := newEnv(t)
	var results []struct {
		Name, Status string
		Required     bool
	}
	if err := json.Unmarshal([]byte(e.must("doctor", "--json").stdout), &results); err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, r := range results {
		names[r.Name] = r.Status
	}
	for _, n := range []string{"namespaces", "overlayfs", "cgroups", "seccomp", "seccomp user notification", "landlock", "nf_tables", "user namespaces"} {
		if names[n] != "ok" {
			t.Errorf("doctor on the CI host: %s is %q, want ok", n, names[n])
		}
	}
	self, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	e.write("airlock-copy", string(self))
	if err := os.Chmod(filepath.Join(e.ws, "airlock-copy"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.must("init", "p")
	r := e.run("", "run", "p", "--", filepath.Join(e.ws, "airlock-copy"), "doctor")
	if r.code != 6 || !strings.Contains(r.stdout, "cannot run pods here") || !strings.Contains(r.stdout, "✗  namespaces (required)") {
		t.Errorf("doctor inside a pod: exit %d, want 6 and the missing namespaces named:\n%s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	t.Logf("doctor inside a pod:\n%s", r.stdout)
}

// An OOM kill inside a pod that keeps running is in the audit trail while
// the pod still runs, not only when it ends.
func TestWallLiveOOMEvent(t *testing.T) {
	requirePython(t)
	e := newEnv(t)
	e.must("init", "p")
	balloon := podPython + ` -c "a = []
while True: a.append(bytearray(16 << 20))"`
	e.background("run", "p", "--memory", "64MiB", "--", "sh", "-c", balloon+"; echo balloon-died; exec sleep 30")
	e.waitRunning("p")
	waitFor(t, func() bool { return indexOf(auditActions(e, "p"), "oom-kill") >= 0 })
	if r := e.run("", "stats", "p", "--json"); r.code != 0 {
		t.Errorf("the pod stopped with its balloon; the OOM kill should have taken only the balloon: %s", r.stderr)
	}
	e.must("kill", "p")
}

// A wall that cannot be built here (an I/O limit with the state directory
// on tmpfs, which has no block device) stops the run; --downgrade cgroups
// runs it without the wall, audited and shown by status.
func TestWallCgroupsFailClosed(t *testing.T) {
	e := newEnv(t)
	if err := syscall.Mount("tmpfs", e.home, "tmpfs", 0, "size=64m"); err != nil {
		t.Fatalf("mounting a tmpfs state directory: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(e.home, syscall.MNT_DETACH) })
	e.write("airlock.yaml", "version: 1\nresources:\n  io:\n    write_bps: 1MiB\n")
	r := e.expect(125, "cgroups wall", "run", "p", "--", "true")
	if !strings.Contains(r.stderr, "--downgrade cgroups") || !strings.Contains(r.stderr, "block device") {
		t.Errorf("the refusal does not say why or how to downgrade: %q", r.stderr)
	}
	e.must("run", "p", "--downgrade", "cgroups", "--", "true")
	if indexOf(auditActions(e, "p"), "wall.downgrade") < 0 {
		t.Errorf("the downgrade is not in the audit trail")
	}
	var st struct{ Walls map[string]string }
	if err := json.Unmarshal([]byte(e.must("status", "p", "--json").stdout), &st); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(st.Walls["cgroups"], "downgraded") {
		t.Errorf("status walls: %v, want cgroups downgraded", st.Walls)
	}
}

// The disk guard keeps an uncapped layer (resources.disk 0) from filling
// the host's disk: when the file system under the pod runs low, the pod
// is frozen and the event audited. A 32 MiB tmpfs state directory stands
// in for the host's disk.
func TestWallDiskGuard(t *testing.T) {
	e := newEnv(t)
	if err := syscall.Mount("tmpfs", e.home, "tmpfs", 0, "size=32m"); err != nil {
		t.Fatalf("mounting a small state directory: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(e.home, syscall.MNT_DETACH) })
	e.write("nocap.yaml", "version: 1\nresources:\n  disk:\n    bytes: 0\n    inodes: 0\n")
	e.must("init", "p", "--config", filepath.Join(e.ws, "nocap.yaml"))
	r := e.background("run", "p", "--", "sh", "-c", "dd if=/dev/zero of=fill bs=1M count=64 2>&1; echo dd-done; exec sleep 30")
	waitFor(t, func() bool { return indexOf(auditActions(e, "p"), "disk-guard") >= 0 })
	if s := e.stats("p"); !s.Frozen {
		t.Errorf("the disk guard fired but the pod is not frozen: %+v", s)
	}
	e.must("kill", "p")
	if code := r.exitCode(t); code != 137 {
		t.Errorf("killed frozen pod exited %d, want 137", code)
	}
}

// The walls' price on real work, pod against host (benchmarks, never
// timed tests; run them under flock /tmp/airlock-bench.lock, see
// docs/BENCHMARKS.md, walls section). Host and pod runs alternate so that drift in the
// machine's speed hits both alike.

// benchPod is a workspace and a pod for a benchmark.
type benchPod struct {
	b        *testing.B
	ws, home string
}

func newBenchPod(b *testing.B, config string) *benchPod {
	testutil.RequireRoot(b)
	p := &benchPod{b: b, ws: filepath.Join(b.TempDir(), "ws"), home: b.TempDir()}
	if err := os.MkdirAll(p.ws, 0o755); err != nil {
		b.Fatal(err)
	}
	if config != "" {
		if err := os.WriteFile(filepath.Join(p.ws, "airlock.yaml"), []byte(config), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	p.airlock("init", "bench")
	b.Cleanup(func() { _ = p.cmd(bin, "destroy", "--force", "bench").Run() }) // unmounts its layer
	return p
}

func (p *benchPod) cmd(name string, args ...string) *exec.Cmd {
	c := exec.Command(name, args...)
	c.Dir = p.ws
	c.Env = append(os.Environ(), "AIRLOCK_HOME="+p.home)
	return c
}

func (p *benchPod) airlock(args ...string) string {
	p.b.Helper()
	out, err := p.cmd(bin, args...).Output()
	if err != nil {
		p.b.Fatalf("airlock %v: %v %s", args, err, out)
	}
	return string(out)
}

// inPod runs argv in the pod; onHost runs the same argv on the host.
func (p *benchPod) inPod(argv ...string) string {
	return p.airlock(append([]string{"run", "bench", "--"}, argv...)...)
}

func (p *benchPod) onHost(argv ...string) string {
	p.b.Helper()
	out, err := p.cmd(argv[0], argv[1:]...).Output()
	if err != nil {
		p.b.Fatalf("%v on the host: %v %s", argv, err, out)
	}
	return string(out)
}

// BenchmarkWallsGetpid reports the cost of one raw getpid on the host and
// inside a pod (default seccomp profile, Landlock, cgroup, namespaces):
// the filter's price on the most syscall-bound loop there is. The loop
// times itself, so pod start-up is not in the figure.
func BenchmarkWallsGetpid(b *testing.B) {
	p := newBenchPod(b, "")
	gcc, err := exec.LookPath("gcc")
	testutil.RequireFeature(b, err == nil, "gcc")
	prog := filepath.Join(p.ws, "getpid")
	if out, err := exec.Command(gcc, "-O2", "-o", prog, "testdata/walls/getpid.c").CombinedOutput(); err != nil {
		b.Fatalf("gcc: %v %s", err, out)
	}
	const loops = "20000000"
	var host, pod []float64
	for i := 0; i < b.N; i++ {
		host = append(host, parseNs(b, p.onHost(prog, loops)))
		pod = append(pod, parseNs(b, p.inPod(prog, loops)))
	}
	h, q := median(host), median(pod)
	b.ReportMetric(h, "host-ns/call")
	b.ReportMetric(q, "pod-ns/call")
	b.ReportMetric((q/h-1)*100, "overhead-%")
}

// BenchmarkWallsBuild is a real build, pod against host: go build -a of
// a program importing encoding/json (its standard-library dependencies,
// about 30 packages, compiled from scratch; GOCACHE in the workspace, so in
// the pod every object file goes through the overlay layer). The pod runs
// with every wall, and again with Landlock off to show that wall's share.
func BenchmarkWallsBuild(b *testing.B) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	_, err = os.Stat(goBin)
	testutil.RequireFeature(b, err == nil, "the go tool")
	p := newBenchPod(b, "")
	files := map[string]string{
		"go.mod":   "module benchbuild\n\ngo 1.21\n",
		"main.go":  "package main\n\nimport \"encoding/json\"\n\nfunc main() { _, _ = json.Marshal(1) }\n",
		"nol.yaml": "version: 1\nsecurity:\n  landlock: false\n",
		"build.sh": "set -e\nexport GOCACHE=$PWD/gocache GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0\n" +
			"rm -rf gocache out\nstart=$(date +%s%N)\n" + goBin + " build -a -o out .\nend=$(date +%s%N)\necho $(( (end-start) / 1000 ))\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(p.ws, name), []byte(body), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	p.airlock("init", "nol", "--config", filepath.Join(p.ws, "nol.yaml"))
	script := filepath.Join(p.ws, "build.sh")
	var host, pod, nol []float64
	for i := 0; i < b.N; i++ {
		host = append(host, parseNs(b, p.onHost("sh", script))/1000)
		pod = append(pod, parseNs(b, p.inPod("sh", script))/1000)
		nol = append(nol, parseNs(b, p.airlock("run", "nol", "--", "sh", script))/1000)
		p.airlock("rollback", "bench")
		p.airlock("rollback", "nol")
	}
	h, q, n := median(host), median(pod), median(nol)
	b.ReportMetric(h, "host-ms")
	b.ReportMetric(q, "pod-ms")
	b.ReportMetric(n, "pod-nolandlock-ms")
	b.ReportMetric((q/h-1)*100, "overhead-%")
	b.Logf("host %v\npod %v\npod without Landlock %v", host, pod, nol)
}

// BenchmarkWallsRunTrue is the start-up price of each wall, end to end:
// `airlock run -- true` with every wall, then with Landlock switched off
// (security.landlock: false) and with the strict seccomp profile.
func BenchmarkWallsRunTrue(b *testing.B) {
	for _, c := range []struct{ name, config string }{
		{"default", ""},
		{"no-landlock", "version: 1\nsecurity:\n  landlock: false\n"},
		{"strict-seccomp", "version: 1\nsecurity:\n  seccomp: strict\n"},
		{"network-none", "version: 1\nnetwork:\n  mode: none\n"},
	} {
		b.Run(c.name, func(b *testing.B) {
			p := newBenchPod(b, c.config)
			p.inPod("true") // warm: the pod exists, its layer is built
			durs := make([]float64, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				p.inPod("true")
				durs = append(durs, float64(time.Since(start).Microseconds())/1000)
			}
			b.ReportMetric(median(durs), "median-ms")
		})
	}
}

func parseNs(b *testing.B, out string) float64 {
	b.Helper()
	v, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
	if err != nil {
		b.Fatalf("benchmark program printed %q", out)
	}
	return v
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}
