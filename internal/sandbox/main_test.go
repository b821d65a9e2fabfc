package sandbox_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/layer"
	"github.com/airlock-dev/airlock/internal/sandbox"
	"github.com/airlock-dev/airlock/internal/sandbox/inside"
	"github.com/airlock-dev/airlock/internal/testutil"
)

// probeArg makes the test binary a probe: run as the agent inside a pod,
// it tries each "op:arg" the way an attacker would and prints one
// "op:arg => result" line per probe.
const probeArg = "__sandbox_probe"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case inside.Arg:
			inside.Main()
		case probeArg:
			os.Exit(probe(os.Args[2:]))
		}
	}
	os.Exit(m.Run())
}

func probe(ops []string) int {
	for _, op := range ops {
		name, arg, _ := strings.Cut(op, ":")
		fmt.Printf("%s => %s\n", op, result(runProbe(name, arg)))
	}
	return 0
}

func result(out string, err error) string {
	if err == nil {
		return "ok" + out
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return "err " + unix.ErrnoName(errno)
	}
	return "err " + err.Error()
}

func runProbe(name, arg string) (string, error) {
	switch name {
	case "read":
		b, err := os.ReadFile(arg)
		if err == nil && len(b) == 0 {
			return " empty", nil
		}
		return " " + strings.TrimSpace(string(b)), err
	case "write":
		return "", os.WriteFile(arg, []byte("pwned"), 0o644)
	case "mkdir":
		return "", os.Mkdir(arg, 0o755)
	case "ls":
		ents, err := os.ReadDir(arg)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return " " + strings.Join(names, ","), err
	case "readlink":
		_, err := os.Readlink(arg)
		return "", err
	case "connect":
		c, err := net.Dial("unix", arg)
		if err == nil {
			c.Close()
		}
		return "", err
	case "getpid":
		_, _, e := unix.RawSyscall(unix.SYS_GETPID, 0, 0, 0)
		if e != 0 {
			return "", e
		}
		return "", nil
	case "hostname":
		h, err := os.Hostname()
		return " " + h, err
	case "rlimit":
		var r unix.Rlimit
		err := unix.Getrlimit(unix.RLIMIT_CORE, &r)
		return fmt.Sprintf(" %d %d", r.Cur, r.Max), err
	case "status":
		return statusFields("/proc/self/status", strings.Split(arg, ",")), nil
	case "threads":
		return seccompThreads(arg)
	}
	return "", fmt.Errorf("unknown probe %q", name)
}

func statusFields(path string, keys []string) string {
	b, _ := os.ReadFile(path)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		for _, want := range keys {
			if k == want {
				out = append(out, k+"="+strings.TrimSpace(v))
			}
		}
	}
	return " " + strings.Join(out, " ")
}

// seccompThreads reports the seccomp mode of every thread of a process.
func seccompThreads(pid string) (string, error) {
	tasks, err := os.ReadDir("/proc/" + pid + "/task")
	if err != nil {
		return "", err
	}
	var modes []string
	for _, t := range tasks {
		modes = append(modes, statusFields("/proc/"+pid+"/task/"+t.Name()+"/status", []string{"Seccomp"}))
	}
	return strings.Join(modes, ""), nil
}

// fixture is a workspace, a home directory with a secret, and a pod's
// state directory, all under the test's temp dir (so under /tmp, which the
// pod sees as a private tmpfs).
type fixture struct {
	base, ws, home, state string
	view                  sandbox.ViewConfig
}

func newFixture(t testing.TB, wsName string) *fixture {
	t.Helper()
	testutil.RequireRoot(t)
	base := t.TempDir()
	f := &fixture{base: base, ws: filepath.Join(base, wsName), home: filepath.Join(base, "home", "u"), state: filepath.Join(base, "state")}
	files := map[string]string{
		filepath.Join(f.ws, "file.txt"):           "host content",
		filepath.Join(f.ws, "ro", "keep.txt"):     "keep",
		filepath.Join(f.home, ".bashrc"):          "host rc",
		filepath.Join(f.home, ".ssh", "id_rsa"):   "SECRET KEY",
		filepath.Join(base, "host-only-tmp-file"): "host tmp",
	}
	for p, c := range files {
		mustWrite(t, p, c)
	}
	for _, d := range []string{"ws/upper", "ws/work", "home/upper", "home/work", "rootfs"} {
		if err := os.MkdirAll(filepath.Join(f.state, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f.view = sandbox.ViewConfig{
		ReadOnly: []string{"/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc", filepath.Dir(exe)},
		Roots: []layer.Root{
			{Name: "home", Host: f.home, Upper: filepath.Join(f.state, "home/upper"), Work: filepath.Join(f.state, "home/work")},
			{Name: "workspace", Host: f.ws, Upper: filepath.Join(f.state, "ws/upper"), Work: filepath.Join(f.state, "ws/work")},
		},
		Hide: []string{filepath.Join(f.home, ".ssh")},
	}
	t.Cleanup(func() {
		if testutil.Mounted(base) {
			t.Errorf("mounts left behind under %s", base)
		}
	})
	return f
}

func mustWrite(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) spec(t testing.TB, args ...string) *sandbox.Spec {
	t.Helper()
	mounts, err := sandbox.PlanView(f.view)
	if err != nil {
		t.Fatal(err)
	}
	return &sandbox.Spec{
		Hostname: "pod-test",
		Args:     args,
		Env:      []string{"PATH=/usr/bin:/bin", "HOME=" + f.home},
		Dir:      f.ws,
		Mounts:   mounts,
		RootDir:  filepath.Join(f.state, "rootfs"),
	}
}

func (f *fixture) probeSpec(t testing.TB, ops ...string) *sandbox.Spec {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return f.spec(t, append([]string{exe, probeArg}, ops...)...)
}

// run runs spec with its output captured and returns the code and output.
func run(t testing.TB, spec *sandbox.Spec) (int, string, error) {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	spec.Stdout, spec.Stderr = out, out
	code, runErr := sandbox.Run(spec)
	b, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	return code, string(b), runErr
}

// probes runs ops in a pod and returns op -> result.
func probes(t testing.TB, spec *sandbox.Spec) map[string]string {
	t.Helper()
	code, out, err := run(t, spec)
	if err != nil || code != 0 {
		t.Fatalf("probe run: code %d, err %v, output:\n%s", code, err, out)
	}
	res := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		op, r, ok := strings.Cut(line, " => ")
		if ok {
			res[op] = r
		}
	}
	return res
}

func expect(t *testing.T, res map[string]string, op, want string) {
	t.Helper()
	got, ok := res[op]
	if !ok {
		t.Errorf("%s: probe did not run", op)
		return
	}
	if !strings.HasPrefix(got, want) {
		t.Errorf("%s => %q, want %q", op, got, want)
	}
}

// children lists the test process's direct children, to prove a pod
// leaves none behind.
func children(t testing.TB) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var kids []int
	me := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(me) {
			kids = append(kids, pid)
		}
	}
	return kids
}
