package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// fakeV2 is a cgroup2 tree in a temp dir that acts like the kernel where
// the logic depends on it (mkdir fills in interface files, subtree_control
// decides a child's controllers, cgroup.freeze updates cgroup.events) and
// records every change as a transcript of paths relative to the root.
type fakeV2 struct {
	root   string
	log    []string
	nokill bool // a kernel older than 5.14, without cgroup.kill
}

func newFakeV2(t *testing.T, controllers string) *fakeV2 {
	f := &fakeV2{root: t.TempDir()}
	f.seed(f.root, controllers)
	f.log = nil
	return f
}

var v2Files = map[string][]string{
	"":       {"cgroup.procs", "cgroup.subtree_control", "cgroup.freeze", "cpu.stat"},
	"memory": {"memory.max", "memory.swap.max", "memory.current", "memory.peak", "memory.events"},
	"cpu":    {"cpu.max"},
	"pids":   {"pids.max", "pids.current", "pids.events"},
	"io":     {"io.max", "io.stat"},
}

func (f *fakeV2) seed(dir, controllers string) {
	put := func(name, data string) { _ = os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644) }
	put("cgroup.controllers", controllers)
	put("cgroup.events", "populated 0\nfrozen 0\n")
	if !f.nokill {
		put("cgroup.kill", "")
	}
	for _, c := range append([]string{""}, strings.Fields(controllers)...) {
		for _, name := range v2Files[c] {
			put(name, "")
		}
	}
}

func (f *fakeV2) rel(p string) string {
	r, _ := filepath.Rel(f.root, p)
	return r
}

func (f *fakeV2) read(p string) (string, error) { return realOps{}.read(p) }
func (f *fakeV2) exists(p string) bool          { return realOps{}.exists(p) }

func (f *fakeV2) write(p, data string) error {
	f.log = append(f.log, fmt.Sprintf("write %s %s", f.rel(p), data))
	if !f.exists(p) {
		return &os.PathError{Op: "open", Path: p, Err: os.ErrNotExist}
	}
	switch filepath.Base(p) {
	case "cgroup.subtree_control":
		cur, _ := f.read(p)
		data = strings.TrimSpace(cur + " " + strings.TrimPrefix(data, "+"))
	case "cgroup.freeze":
		_ = os.WriteFile(filepath.Join(filepath.Dir(p), "cgroup.events"), []byte("populated 0\nfrozen "+data+"\n"), 0o644)
	}
	return os.WriteFile(p, []byte(data), 0o644)
}

func (f *fakeV2) mkdir(p string) error {
	f.log = append(f.log, "mkdir "+f.rel(p))
	if f.exists(p) {
		return nil
	}
	if err := os.Mkdir(p, 0o755); err != nil {
		return err
	}
	sub, _ := f.read(filepath.Join(filepath.Dir(p), "cgroup.subtree_control"))
	f.seed(p, sub)
	return nil
}

func (f *fakeV2) rmdir(p string) error {
	f.log = append(f.log, "rmdir "+f.rel(p))
	if !f.exists(p) {
		return nil
	}
	entries, _ := os.ReadDir(p)
	for _, e := range entries {
		if e.IsDir() {
			return &os.PathError{Op: "rmdir", Path: p, Err: errors.New("busy")}
		}
	}
	return os.RemoveAll(p)
}

func (f *fakeV2) transcript() string { return strings.Join(f.log, "\n") }

func (f *fakeV2) put(t *testing.T, rel, data string) {
	if err := os.WriteFile(filepath.Join(f.root, rel), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func wantTranscript(t *testing.T, f *fakeV2, want ...string) {
	t.Helper()
	if got := f.transcript(); got != strings.Join(want, "\n") {
		t.Errorf("transcript:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	f.log = nil
}

// TestV2Transcript runs the whole v2 life cycle against the fake tree and
// checks the exact files written, in order.
func TestV2Transcript(t *testing.T) {
	f := newFakeV2(t, "cpuset cpu io memory hugetlb pids rdma misc")
	f.put(t, "cgroup.subtree_control", "cpu") // as systemd leaves it
	g, err := openV2(f, f.root, "p1", true)
	if err != nil {
		t.Fatal(err)
	}
	wantTranscript(t, f,
		"write cgroup.subtree_control +memory",
		"write cgroup.subtree_control +pids",
		"write cgroup.subtree_control +io",
		"mkdir airlock",
		"write airlock/cgroup.subtree_control +memory",
		"write airlock/cgroup.subtree_control +cpu",
		"write airlock/cgroup.subtree_control +pids",
		"write airlock/cgroup.subtree_control +io",
		"mkdir airlock/p1",
	)

	dir := t.TempDir()
	dev, err := ioDevice(dir)
	if err != nil {
		t.Fatal(err)
	}
	l := Limits{Memory: 64 << 20, Swap: 1 << 20, CPUs: 0.5, Pids: 50, ReadBPS: 1 << 20, IOPath: dir}
	if err := g.Set(l); err != nil {
		t.Fatal(err)
	}
	wantTranscript(t, f,
		"write airlock/p1/memory.max 67108864",
		"write airlock/p1/memory.swap.max 1048576",
		"write airlock/p1/cpu.max 50000 100000",
		"write airlock/p1/pids.max 50",
		"write airlock/p1/io.max "+dev+" rbps=1048576 wbps=max",
	)

	if err := g.Add(4242); err != nil {
		t.Fatal(err)
	}
	if err := g.Freeze(); err != nil {
		t.Fatal(err)
	}
	if err := g.Thaw(); err != nil {
		t.Fatal(err)
	}
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	wantTranscript(t, f,
		"write airlock/p1/cgroup.procs 4242",
		"write airlock/p1/cgroup.freeze 1",
		"write airlock/p1/cgroup.freeze 0",
		"write airlock/p1/cgroup.kill 1",
	)

	f.put(t, "airlock/p1/io.max", dev+" rbps=1048576 wbps=max riops=max wiops=max\n")
	if err := g.Set(Limits{}); err != nil {
		t.Fatal(err)
	}
	wantTranscript(t, f,
		"write airlock/p1/memory.max max",
		"write airlock/p1/memory.swap.max max",
		"write airlock/p1/cpu.max max 100000",
		"write airlock/p1/pids.max max",
		"write airlock/p1/io.max "+dev+" rbps=max wbps=max riops=max wiops=max",
	)

	f.put(t, "airlock/p1/cgroup.procs", "")
	if err := g.Destroy(); err != nil {
		t.Fatal(err)
	}
	wantTranscript(t, f,
		"write airlock/p1/cgroup.kill 1",
		"rmdir airlock/p1",
		"rmdir airlock",
	)
	if f.exists(filepath.Join(f.root, "airlock")) {
		t.Error("airlock parent left behind")
	}
}

// TestV2SecondPodKeepsParent: destroying one pod leaves the parent for the other.
func TestV2SecondPodKeepsParent(t *testing.T) {
	f := newFakeV2(t, "cpu io memory pids")
	a, _ := openV2(f, f.root, "a", true)
	b, _ := openV2(f, f.root, "b", true)
	if err := a.Destroy(); err != nil {
		t.Fatal(err)
	}
	if !f.exists(b.Path()) {
		t.Fatal("destroying pod a removed pod b")
	}
	if l, err := openV2(f, f.root, "b", false); err != nil || l.Path() != b.Path() {
		t.Fatalf("Load b: %v", err)
	}
	if _, err := openV2(f, f.root, "a", false); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Load a after Destroy: %v, want ErrNotFound", err)
	}
}

// TestV2MissingController: asking for a limit whose controller the
// kernel does not offer is an Unsupported error, not a silent no-op.
func TestV2MissingController(t *testing.T) {
	f := newFakeV2(t, "cpu pids")
	g, err := openV2(f, f.root, "p", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Set(Limits{Pids: 10}); err != nil {
		t.Fatalf("Set without memory limit: %v", err)
	}
	if err := g.Set(Limits{Memory: 1 << 30}); !errors.Is(err, errdefs.ErrUnsupported) {
		t.Fatalf("Set(memory) without memory controller = %v, want ErrUnsupported", err)
	}
}

// TestV2KillWithoutCgroupKill: before Linux 5.14 Kill freezes, kills the
// listed processes and thaws, until the group is empty.
func TestV2KillWithoutCgroupKill(t *testing.T) {
	f := &fakeV2{root: t.TempDir(), nokill: true}
	f.seed(f.root, "memory pids")
	g, err := openV2(f, f.root, "p", true)
	if err != nil {
		t.Fatal(err)
	}
	f.log = nil
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	wantTranscript(t, f, "write airlock/p/cgroup.freeze 1", "write airlock/p/cgroup.freeze 0")
}

func TestV2Stats(t *testing.T) {
	f := newFakeV2(t, "cpu io memory pids")
	g, _ := openV2(f, f.root, "p", true)
	for name, data := range map[string]string{
		"cpu.stat":       "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n",
		"memory.current": "1048576\n",
		"memory.peak":    "4194304\n",
		"memory.max":     "max\n",
		"cpu.max":        "150000 100000\n",
		"memory.events":  "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n",
		"pids.current":   "3\n",
		"pids.max":       "50\n",
		"pids.events":    "max 12\n",
		"io.stat":        "254:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n7:0 rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n",
		"cgroup.events":  "populated 1\nfrozen 1\n",
	} {
		f.put(t, "airlock/p/"+name, data)
	}
	s, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{CPUUsec: 1234567, MemoryBytes: 1 << 20, MemoryPeak: 4 << 20, MemoryLimit: 0, CPULimit: 1.5, Pids: 3, PidsLimit: 50,
		IOReadBytes: 101, IOWriteBytes: 202, OOMKills: 2, PidsMaxHits: 12, Frozen: true}
	if s != want {
		t.Errorf("Stats = %+v\nwant    %+v", s, want)
	}
}

// TestKillGroupVanishes: the supervisor removes a pod's group as soon as
// the pod is dead, which can happen between two rounds of Kill; that is
// success, not "not found".
func TestKillGroupVanishes(t *testing.T) {
	rounds := 0
	procs := func() ([]int, error) {
		rounds++
		if rounds == 1 {
			return []int{0x3fffffff}, nil // above pid_max: the SIGKILL reaches nobody
		}
		return nil, errdefs.NotFound("gone")
	}
	if err := killAll(nil, nil, procs); err != nil {
		t.Fatalf("killAll after the group vanished: %v", err)
	}
	if err := killAll(nil, nil, func() ([]int, error) { return nil, errdefs.NotFound("gone") }); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("killAll of a group that never existed: %v, want ErrNotFound", err)
	}
	// With a freezer the group can vanish between the SIGKILLs and the
	// thaw (the CI failure of stop 6): the thaw's ENOENT is success too.
	thawed := false
	thaw := func() error {
		thawed = true
		return fmt.Errorf("setting freezer.state to THAWED: %w", &fs.PathError{Op: "open", Path: "freezer.state", Err: syscall.ENOENT})
	}
	rounds = 0
	if err := killAll(func() error { return nil }, thaw, procs); err != nil || !thawed {
		t.Fatalf("killAll whose group vanished before the thaw: %v (thawed %v)", err, thawed)
	}
	// ... also when the processes had already ended and the list read
	// empty before the group went (the CI failure again, a round later).
	thawed = false
	empty := func() ([]int, error) { return nil, nil }
	if err := killAll(func() error { return nil }, thaw, empty); err != nil || !thawed {
		t.Fatalf("killAll whose empty group vanished before the thaw: %v (thawed %v)", err, thawed)
	}
	// A thaw that fails for another reason is still an error: the pod
	// would stay frozen.
	rounds = 0
	if err := killAll(func() error { return nil }, func() error { return syscall.EBUSY }, procs); err == nil {
		t.Fatalf("killAll hid a failed thaw")
	}
}
