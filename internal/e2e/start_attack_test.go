package e2e

// Attacks on a started pod (airlock start): from a command inside it
// against the serving init (PID 1), the pod's other commands and the
// host; from another local user against the supervisor's control socket;
// and from the pod's owner, with hand-made exec requests. Each test
// checks that the attack fails, that the pod keeps serving, and that
// nothing is left behind.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// serves checks that the started pod still takes commands from the same
// supervisor.
func (sp *startedPod) serves() {
	sp.e.t.Helper()
	if r := sp.e.run("", "run", sp.name, "--", "echo", "still-serving"); r.code != 0 || r.stdout != "still-serving\n" {
		sp.e.t.Errorf("the started pod no longer serves: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if !alive(sp.pid) {
		sp.e.t.Errorf("the supervisor (pid %d) is gone", sp.pid)
	}
	if st := sp.e.status(sp.name); st.State != "running" || !st.Serving || st.SupervisorPID != sp.pid {
		sp.e.t.Errorf("status after the attack: %+v, want running, serving, supervisor %d", st, sp.pid)
	}
}

// initScript probes the serving init from a command: its /proc entries
// (links, environment, memory, every thread's), the signals a namespace's
// init can get from inside it, kill(-1), and the sockets of the host.
const initScript = `
p=` + podPython + `
for f in /proc/1/fd/0 /proc/1/fd/3 /proc/1/root /proc/1/cwd /proc/1/exe /proc/1/task/*/fd/0 /proc/1/task/*/root /proc/1/task/*/cwd; do
  if readlink "$f" >/dev/null 2>&1; then echo "LINK-READABLE $f"; fi
done
for f in /proc/1/environ /proc/1/mem /proc/1/task/*/environ /proc/1/task/*/mem /proc/1/auxv /proc/1/stack /proc/1/syscall /proc/1/pagemap; do
  if head -c 1 "$f" >/dev/null 2>&1; then echo "READABLE $f"; fi
done
if ls /proc/1/root/ >/dev/null 2>&1; then echo "ROOT-LISTABLE"; fi
$p - "$1" "$2" <<'EOF'
import os, socket, sys
# The init's files, one by one, through the pidfd interface.
try:
    pfd = os.pidfd_open(1)
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    for n in range(0, 16):
        fd = libc.syscall(438, pfd, n, 0)  # pidfd_getfd
        if fd >= 0:
            print("PIDFD-GETFD-OK", n)
except OSError as e:
    print("pidfd_open", e.errno)
for name, addr in (("abstract", "\0" + sys.argv[1]), ("control", sys.argv[2])):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(addr); print("CONNECTED", name)
    except OSError as e:
        print(name, "refused", e.errno)
EOF
for s in TERM INT HUP QUIT USR1 USR2 PIPE ALRM STOP TSTP TTIN TTOU CONT WINCH XCPU XFSZ VTALRM PROF PWR URG IO CHLD KILL; do
  kill -s $s 1 2>/dev/null
done
kill -s 34 1; kill -s 50 1; kill -s 64 1
kill -9 -1
echo probes-done
`

// A command cannot reach into the serving init or end it: /proc/1's
// links, environment and memory (and every thread's) are closed to it
// (the init is not dumpable), pidfd_getfd takes none of its files, no
// ordinary or real-time signal, SIGKILL and SIGSTOP included, ends or
// stops it, kill(-1) ends the other commands but not it, and neither a
// host abstract socket nor the control socket can be reached. Each
// command killed by kill(-1) has its status reported; the pod serves on.
func TestStartAttackInitUnreachable(t *testing.T) {
	requirePython(t)
	e := newEnv(t)
	e.must("init", "p")
	sp := e.startPod("p")
	abs, conns := abstractListener(t)
	s := sleeper()
	victim := e.background("run", "p", "--", "sleep", s)
	sp.waitInPod(s)
	sock := filepath.Join(e.home, "pods", "p", "run", "control.sock")
	r := e.run("", "run", "p", "--", "sh", "-c", initScript, "sh", abs, sock)
	t.Logf("from inside: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	// kill -9 -1 kills the script itself too (it is no exception to -1
	// from its own view: the caller is spared, its shell is not).
	if !strings.Contains(r.stdout, "probes-done") && r.code != 137 {
		t.Fatalf("the probe script did not run to its end: exit %d", r.code)
	}
	for _, bad := range []string{"LINK-READABLE", "READABLE /", "ROOT-LISTABLE", "PIDFD-GETFD-OK", "CONNECTED"} {
		if strings.Contains(r.stdout, bad) {
			t.Errorf("ATTACK SUCCEEDED: a command reached into the serving init or out of the pod (%s):\n%s", bad, r.stdout)
		}
	}
	if n := conns(); n != 0 {
		t.Errorf("ATTACK SUCCEEDED: the host's abstract socket got %d connections from the pod", n)
	}
	if code := victim.exitCode(t); code != 137 {
		t.Errorf("the command killed by kill -9 -1: exit %d, want 137", code)
	}
	sp.serves()
}

// A command's kill(1, SIGSEGV) (or BUS, FPE, ILL, ABRT, TRAP, SYS) must
// not end the serving init: the pod and every other command the person
// runs in it would end with it. The kernel gives a PID namespace's init
// only the signals it handles, and the Go runtime handles these: sent by
// kill they are the runtime's fatal "signal arrived" path unless the init
// takes them itself (os/signal treats them as asynchronous then).
func TestStartAttackInitCrashSignals(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	sp := e.startPod("p")
	for _, sig := range []string{"SEGV", "BUS", "FPE", "ILL", "ABRT", "TRAP", "SYS"} {
		s := sleeper()
		bystander := e.background("run", "p", "--", "sleep", s)
		sp.waitInPod(s)
		r := e.run("", "run", "p", "--", "sh", "-c", "kill -s "+sig+" 1; sleep 0.5; echo after-"+sig)
		if r.code == 0 && strings.Contains(r.stdout, "after-"+sig) && alive(sp.pid) && sp.running(s) {
			_ = e.run("", "run", "p", "--", "pkill", "-f", s)
			_ = bystander.exitCode(t)
			continue
		}
		code := bystander.exitCode(t)
		t.Errorf("ATTACK SUCCEEDED: kill -s %s 1 from a command ended the started pod: the attacker's run exit %d (%q), a bystander command exit %d, supervisor alive %v",
			sig, r.code, strings.TrimSpace(r.stderr), code, alive(sp.pid))
		// The pod must at least be gone cleanly before the next round.
		sp.checkGone()
		if st := e.status("p"); st.State != "stopped" {
			t.Errorf("status after the init crashed: %+v", st)
		}
		sp = e.startPod("p")
	}
	sp.serves()
	e.must("stop", "p")
	sp.checkGone()
	e.must("audit", "verify", "p")
}

// Nothing a command leaves behind outlives airlock stop: a daemon in a
// session of its own (setsid, double fork) that ignores SIGTERM and
// SIGHUP, one that tried to move itself to another control group, and a
// nohup'd loop all end with the pod.
func TestStartAttackOutlivesStop(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	sp := e.startPod("p")
	mk := marker()
	script := `
mk=$1
( setsid sh -c 'trap "" TERM HUP INT; (trap "" TERM HUP INT; while :; do sleep 0.1; done) & exit 0' "$mk-daemon" & ) >/dev/null 2>&1
sh -c 'for f in /sys/fs/cgroup/cgroup.procs /sys/fs/cgroup/*/cgroup.procs /sys/fs/cgroup/*/tasks /sys/fs/cgroup/unified/cgroup.procs; do echo $$ > "$f" 2>/dev/null && echo "MOVED $f" >> /tmp/moved; done; trap "" TERM; while :; do sleep 0.1; done' "$mk-cgroup" >/dev/null 2>&1 &
nohup sh -c 'while :; do sleep 0.1; done' "$mk-nohup" >/dev/null 2>&1 &
sleep 0.3
cat /tmp/moved 2>/dev/null
echo left
`
	r := e.must("run", "p", "--", "sh", "-c", script, "sh", mk)
	if strings.Contains(r.stdout, "MOVED") {
		t.Errorf("ATTACK SUCCEEDED: a command moved itself out of the pod's control group: %s", r.stdout)
	}
	waitFor(t, func() bool { return len(processesWith(mk)) >= 3 })
	start := time.Now()
	e.must("stop", "p", "--time", "1s")
	if took := time.Since(start); took > 8*time.Second {
		t.Errorf("stop of a pod with stubborn daemons took %v", took)
	}
	sp.checkGone()
	deadline := time.Now().Add(5 * time.Second)
	for len(processesWith(mk)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if left := processesWith(mk); len(left) != 0 {
		t.Errorf("ATTACK SUCCEEDED: processes outlived airlock stop: %v", left)
	}
}

// A fork bomb that fills the pod's PID limit: a new command cannot be
// forked, and airlock says so in one line with a failure status, at once
// (no hang); the supervisor lives, stop ends every process, and the pod
// starts again.
func TestStartAttackForkBomb(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	sp := e.startPod("p", "--pids", "64")
	// A filler that takes every slot freed, started first and on its own,
	// then a classic bomb. A bomb alone may collapse under the limit into
	// a few processes asleep on each other's pipes, and dash exits at its
	// first failed fork: the filler is bash, which retries and goes on.
	e.must("run", "p", "--", "sh", "-c", "(bash -c 'while :; do sleep 1000 & done') >/dev/null 2>&1 &")
	e.run("", "run", "p", "--", "sh", "-c", "(f() { f | f & }; f) >/dev/null 2>&1 &")
	// The pod's group has one CPU share against each busy host task: on
	// a loaded host the bomb takes a while to fill its limit.
	last := 0
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if last = e.stats("p").Pids; last >= 60 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the filler and the bomb hold only %d of the pod's 64 PIDs after a minute", last)
		}
	}
	for i := 0; i < 3; i++ {
		start := time.Now()
		r := e.run("", "run", "p", "--", "echo", "squeezed-in")
		took := time.Since(start)
		if took > 20*time.Second {
			t.Errorf("a run into a bombed pod took %v", took)
		}
		if r.code == 0 {
			continue // it found a free slot: fine
		}
		if r.code < 125 || strings.TrimSpace(r.stderr) == "" || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
			t.Errorf("a run into a bombed pod: exit %d, stderr %q; want 125-127 and one line saying why", r.code, r.stderr)
		}
		if !alive(sp.pid) {
			t.Fatalf("the supervisor died of the fork bomb")
		}
	}
	if s := e.stats("p"); s.Pids > 64 {
		t.Errorf("the bomb got past --pids 64: %d", s.Pids)
	}
	e.must("stop", "p", "--time", "1s")
	sp.checkGone()
	sp = e.startPod("p")
	sp.serves()
}

// One command cannot push input into another's terminal: a command that
// opens the pts of a TTY command beside it (same uid, same devpts) and
// tries TIOCSTI and TIOCLINUX on it is refused by seccomp, and nothing it
// pushed runs in the victim's shell.
func TestStartAttackOtherTerminal(t *testing.T) {
	e := newEnv(t)
	prog := compileAttack(t, e, "tiocsti")
	e.must("init", "p")
	sp := e.startPod("p")
	s := sleeper()
	victim, vc := startTTY(t, e, 24, 80, "run", "p", "-t", "--", "sh", "-c", "tty > /tmp/victim-tty; exec sleep "+s)
	sp.waitInPod(s)
	var tty string
	waitFor(t, func() bool {
		tty = strings.TrimSpace(e.run("", "run", "p", "--", "cat", "/tmp/victim-tty").stdout)
		return ptsRE.MatchString(tty)
	})
	r := e.run("", "run", "p", "--", "sh", "-c", `exec "$1" < "$2"`, "sh", prog, tty)
	t.Logf("attacker on %s: exit %d\n%s%s", tty, r.code, r.stdout, r.stderr)
	checkAllEPERM(t, r.stdout, 4)
	time.Sleep(200 * time.Millisecond)
	victim.mu.Lock()
	out := victim.out.String()
	victim.mu.Unlock()
	if strings.Contains(out, "uid=") {
		t.Errorf("ATTACK SUCCEEDED: input pushed into another command's terminal ran: %q", out)
	}
	_ = vc.Process.Signal(syscall.SIGTERM)
	select {
	case <-victim.done:
	case <-time.After(15 * time.Second):
		t.Errorf("the victim's airlock did not end on SIGTERM")
	}
	_ = vc.Wait()
	sp.serves()
}

// A host file the person hands a command as stdin stays read-only: the
// command cannot reopen it for writing through /proc/self/fd/0 (Landlock:
// the host file is outside every rule), and a host directory as stdin is
// refused before the command runs.
func TestStartAttackHostStdio(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	sp := e.startPod("p")
	host := filepath.Join(t.TempDir(), "host-file")
	if err := os.WriteFile(host, []byte("original\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(host)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := exec.Command(bin, "run", "p", "--", "sh", "-c", `echo pwned > /proc/self/fd/0 && echo REOPENED; echo pwned 1<>/proc/self/fd/0 && echo REOPENED-RW; ls /proc/self/fd/0/.. >/dev/null 2>&1 && echo PARENT`)
	c.Dir, c.Env, c.Stdin = e.ws, append(os.Environ(), "AIRLOCK_HOME="+e.home), f
	out, _ := c.CombinedOutput()
	if strings.Contains(string(out), "REOPENED") || strings.Contains(string(out), "PARENT") {
		t.Errorf("ATTACK SUCCEEDED: the command reopened its host stdin: %s", out)
	}
	if b, _ := os.ReadFile(host); string(b) != "original\n" {
		t.Errorf("ATTACK SUCCEEDED: the host file handed as stdin was written: %q", b)
	}
	d, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c = exec.Command(bin, "run", "p", "--", "touch", "ran-with-dir-stdin")
	c.Dir, c.Env, c.Stdin = e.ws, append(os.Environ(), "AIRLOCK_HOME="+e.home), d
	out, err = c.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 125 || !strings.Contains(string(out), "directory") {
		t.Errorf("a directory as stdin: %v, %q; want exit 125 naming the directory", err, out)
	}
	if strings.Contains(e.must("diff", "p").stdout, "ran-with-dir-stdin") {
		t.Errorf("the command given a directory as stdin ran")
	}
	sp.serves()
}

// otherUID is the local user the other-user attacks run as.
const otherUID = 65534

// asOther runs argv as the unprivileged user (no groups), and returns
// its combined output.
func asOther(t *testing.T, argv ...string) string {
	t.Helper()
	args := append([]string{fmt.Sprintf("--reuid=%d", otherUID), fmt.Sprintf("--regid=%d", otherUID), "--clear-groups", "--"}, argv...)
	out, _ := exec.Command("setpriv", args...).CombinedOutput()
	return string(out)
}

// otherClient connects to the control socket and sends an exec request,
// with /dev/null (or, with "dir", /) as the files; it prints the answer
// or why it could not connect.
const otherClient = `
import array, os, socket, sys
path, mode = sys.argv[1], sys.argv[2]
if mode == "dir":
    fds = [os.open("/", os.O_RDONLY)] * 3
elif mode == "opath":
    fds = [os.open("/", os.O_PATH)] * 3
else:
    fds = [os.open("/dev/null", os.O_RDWR)] * 3
req = b'{"op":"exec","exec":{"args":["sh","-c","touch pwned-by-other; exec sleep 30"],"cwd":"' + sys.argv[3].encode() + b'"}}\n'
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(path)
except OSError as e:
    print("CONNECT-FAILED", e.errno); sys.exit(0)
print("CONNECTED")
# The refusal may come (and the supervisor hang up) before the request
# is sent: a failed send still leaves the answer to read.
def answer(s):
    s.settimeout(15)
    try:
        print("ANSWER", s.recv(4096).decode().strip())
    except OSError as e:
        print("IO-ERROR", e.errno)
try:
    s.sendmsg([req], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
except OSError as e:
    pass
answer(s)
for op in (b'{"op":"stop"}\n', b'{"op":"ping"}\n'):
    t = socket.socket(socket.AF_UNIX)
    try:
        t.connect(path); t.sendall(op)
    except OSError as e:
        pass
    answer(t)
`

// Another local user cannot steer a root-owned started pod: the state
// directory keeps it from the control socket, the supervisor's log, the
// audit trail and the state; and with every permission on the way
// loosened (a mistake the supervisor must survive), the supervisor still
// refuses its exec, stop and ping for its uid (SO_PEERCRED), also from a
// user namespace in which it is root, with files or a directory or an
// O_PATH descriptor as stdio. Nothing it asked for runs.
func TestStartAttackOtherUser(t *testing.T) {
	requirePython(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv is needed to act as another user")
	}
	e := newEnv(t)
	e.must("init", "p")
	sp := e.startPod("p")
	pd := filepath.Join(e.home, "pods", "p")
	sock := filepath.Join(pd, "run", "control.sock")
	for _, f := range []string{sock, filepath.Join(pd, "run", "supervisor.log"), filepath.Join(pd, "audit.jsonl"), filepath.Join(pd, "state.json"), filepath.Join(pd, "pod.yaml")} {
		if out := asOther(t, "cat", f); !strings.Contains(out, "Permission denied") {
			t.Errorf("ATTACK SUCCEEDED or unexpected: another user reading %s: %q", f, out)
		}
	}
	if out := asOther(t, podPython, "-c", otherClient, sock, "null", e.ws); !strings.Contains(out, "CONNECT-FAILED 13") {
		t.Errorf("another user connecting to the control socket as left: %q, want EACCES", out)
	}

	// Loosen everything on the way to the socket; put it back after.
	type mode struct {
		path string
		mode os.FileMode
	}
	var saved []mode
	loosen := func(p string, m os.FileMode) {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		saved = append(saved, mode{p, st.Mode().Perm()})
		if err := os.Chmod(p, m); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for i := len(saved) - 1; i >= 0; i-- {
			_ = os.Chmod(saved[i].path, saved[i].mode)
		}
	})
	for _, p := range []string{filepath.Dir(e.home), e.home, filepath.Join(e.home, "pods"), pd, filepath.Join(pd, "run")} {
		loosen(p, 0o711)
	}
	loosen(sock, 0o666)
	unshare := ""
	if out := asOther(t, "unshare", "-r", "id", "-u"); strings.TrimSpace(out) == "0" {
		unshare = "unshare"
	}
	for _, m := range []string{"null", "dir", "opath"} {
		for _, wrap := range []string{"", unshare} {
			if wrap == "" && m != "null" && unshare == "" {
				continue
			}
			argv := []string{podPython, "-c", otherClient, sock, m, e.ws}
			if wrap != "" {
				argv = append([]string{"unshare", "-r"}, argv...)
			}
			out := asOther(t, argv...)
			t.Logf("other user (%s %s): %s", m, wrap, out)
			if !strings.Contains(out, "CONNECTED") || strings.Count(out, "ANSWER") != 3 {
				t.Errorf("the loosened socket did not answer as expected (%s %s): %q", m, wrap, out)
			}
			if strings.Count(out, "peer uid not allowed") != 3 {
				t.Errorf("ATTACK SUCCEEDED: another user (%s, %s) was not refused on each request: %q", m, wrap, out)
			}
		}
	}
	if strings.Contains(e.must("diff", "p").stdout, "pwned-by-other") {
		t.Errorf("ATTACK SUCCEEDED: another user's command ran in the pod")
	}
	sp.serves()
}

// rawConn is a hand-made exec conversation with the supervisor.
type rawConn struct {
	c *net.UnixConn
	r *bufio.Reader
}

// rawSend dials sock and sends payload with fds attached to its first
// bytes; the rest follows in a goroutine (the supervisor may stop
// reading).
func rawSend(t *testing.T, sock string, payload []byte, fds []int) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		t.Fatalf("dialing the control socket: %v", err)
	}
	uc := c.(*net.UnixConn)
	t.Cleanup(func() { uc.Close() })
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	first := payload
	if len(first) > 4096 {
		first = first[:4096]
	}
	if _, _, err := uc.WriteMsgUnix(first, oob, nil); err != nil {
		t.Fatalf("sending: %v", err)
	}
	if rest := payload[len(first):]; len(rest) > 0 {
		go func() { _, _ = uc.Write(rest) }()
	}
	return &rawConn{c: uc, r: bufio.NewReader(uc)}
}

// line reads the supervisor's next line, or "" on EOF or after 40 s.
func (rc *rawConn) line() string {
	_ = rc.c.SetReadDeadline(time.Now().Add(40 * time.Second))
	s, _ := rc.r.ReadString('\n')
	return strings.TrimSpace(s)
}

func execJSON(t *testing.T, x map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"op": "exec", "exec": x})
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func fdCount(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

// The pod's owner (root) sends malformed exec requests by hand: each gets
// a clear error (or, where it is a valid odd request, a clean start and
// exit), the supervisor leaks no descriptor, keeps serving other commands
// meanwhile and after, and idle or half-sent connections hold nobody up.
func TestStartAttackMalformedRequests(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	sp := e.startPod("p")
	sock := filepath.Join(e.home, "pods", "p", "run", "control.sock")
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	dir, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	opath, err := unix.Open(e.ws, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(opath)
	n := int(null.Fd())
	std := []int{n, n, n}
	before := fdCount(sp.pid)

	// Idle connections and a half-sent request, held open meanwhile.
	var idle []*rawConn
	for i := 0; i < 20; i++ {
		idle = append(idle, rawSend(t, sock, []byte(" "), nil))
	}
	idle = append(idle, rawSend(t, sock, []byte(`{"op":"exec","exec":{"args":["tr`), std))

	huge := strings.Repeat("v", 10<<20)
	for _, c := range []struct {
		name    string
		payload []byte
		fds     []int
		want    string // in the answer
	}{
		{"not JSON", []byte("garbage garbage\n"), nil, "malformed"},
		{"not JSON with files", []byte("{{{{\n"), std, "malformed"},
		{"exec without a command object", []byte(`{"op":"exec"}` + "\n"), std, `"code":12`},
		{"no files", execJSON(t, map[string]any{"args": []string{"touch", "ran-0"}}), nil, "stdio"},
		{"two files", execJSON(t, map[string]any{"args": []string{"touch", "ran-2"}}), []int{n, n}, "stdio"},
		{"four files", execJSON(t, map[string]any{"args": []string{"touch", "ran-4"}}), []int{n, n, n, n}, "stdio"},
		{"eight files", execJSON(t, map[string]any{"args": []string{"touch", "ran-8"}}), []int{n, n, n, n, n, n, n, n}, `"error"`},
		{"directory as stdin", execJSON(t, map[string]any{"args": []string{"touch", "ran-dir"}}), []int{int(dir.Fd()), n, n}, "directory"},
		{"O_PATH as stdout", execJSON(t, map[string]any{"args": []string{"touch", "ran-opath"}}), []int{n, opath, n}, "O_PATH"},
		{"negative rows", []byte(`{"op":"exec","exec":{"args":["touch","ran-rows"],"tty":true,"rows":-1,"cols":80}}` + "\n"), nil, "malformed"},
		{"rows too large", []byte(`{"op":"exec","exec":{"args":["touch","ran-rows2"],"rows":70000}}` + "\n"), std, "malformed"},
		{"args of the wrong type", []byte(`{"op":"exec","exec":{"args":"touch ran-str"}}` + "\n"), std, "malformed"},
		{"empty program name", execJSON(t, map[string]any{"args": []string{""}}), std, `"code":12`},
		{"NUL in an argument", execJSON(t, map[string]any{"args": []string{"touch", "ran-\x00nul"}}), std, `"code":12`},
		{"NUL in the environment", execJSON(t, map[string]any{"args": []string{"touch", "ran-envnul"}, "env": []string{"A=\x00b"}}), std, `"code":12`},
		{"10 MB environment value", execJSON(t, map[string]any{"args": []string{"touch", "ran-huge"}, "env": []string{"HUGE=" + huge}}), std, `"code":12`},
		{"40 MB request", append([]byte(`{"op":"exec","exec":{"args":["touch","ran-40"],"env":["X=`), []byte(strings.Repeat("x", 40<<20))...), std, "malformed"},
		{"unknown op", []byte(`{"op":"rm -rf"}` + "\n"), std, `"error"`},
	} {
		start := time.Now()
		rc := rawSend(t, sock, c.payload, c.fds)
		ans := rc.line()
		rc.c.Close()
		if len(ans) > 300 {
			ans = ans[:300] + "..."
		}
		t.Logf("%s: %v: %s", c.name, time.Since(start).Round(time.Millisecond), ans)
		if !strings.Contains(ans, c.want) || strings.Contains(ans, `"started":true`) {
			t.Errorf("%s: answer %q, want an error with %q", c.name, ans, c.want)
		}
		if !alive(sp.pid) {
			t.Fatalf("%s: the supervisor died", c.name)
		}
	}

	// Odd but valid: a TTY request that also carries files, huge window.
	rc := rawSend(t, sock, execJSON(t, map[string]any{"args": []string{"true"}, "tty": true, "rows": 65535, "cols": 65535}), std)
	if ans := rc.line(); !strings.Contains(ans, `"started":true`) {
		t.Errorf("a TTY request with files attached: %q", ans)
	} else if ans := rc.line(); !strings.Contains(ans, `"exit":`) {
		t.Errorf("a TTY request with files attached did not end cleanly: %q", ans)
	}
	rc.c.Close()

	// Signals out of range and garbage after the start: the first are
	// dropped, garbage is a hangup (129).
	s := sleeper()
	rc = rawSend(t, sock, execJSON(t, map[string]any{"args": []string{"sleep", s}}), std)
	if ans := rc.line(); !strings.Contains(ans, `"started":true`) {
		t.Fatalf("a valid hand-made request: %q", ans)
	}
	if _, err := rc.c.Write([]byte(`{"signal":99999}` + "\n" + `{"signal":-9}` + "\n" + `{"signal":0}` + "\n" + `{"signal":"KILL"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	if ans := rc.line(); !strings.Contains(ans, `"exit":129`) {
		t.Errorf("garbage after the start: %q, want a hangup (exit 129)", ans)
	}
	rc.c.Close()

	// Meanwhile the idle connections held nobody up; now let them go.
	sp.serves()
	for _, c := range idle {
		c.c.Close()
	}
	if diff := e.must("diff", "p").stdout; strings.Contains(diff, "ran-") {
		t.Errorf("a refused request ran its command:\n%s", diff)
	}
	deadline := time.Now().Add(15 * time.Second)
	for fdCount(sp.pid) > before+2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := fdCount(sp.pid); got > before+2 {
		t.Errorf("the supervisor holds %d descriptors after the requests, %d before: a leak", got, before)
	}
	sp.serves()
	e.must("stop", "p")
	sp.checkGone()
	e.must("audit", "verify", "p")
}
