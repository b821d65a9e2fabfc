package pod

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/internal/config"
	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestMain doubles as a helper process for the cross-process tests.
func TestMain(m *testing.M) {
	switch os.Getenv("POD_TEST_HELPER") {
	case "create":
		helperCreate()
	case "run":
		helperRun()
	}
	os.Exit(m.Run())
}

func helperCreate() {
	s, err := Open(os.Getenv("POD_TEST_HOME"))
	if err == nil {
		_, err = s.Create("race", os.Getenv("POD_TEST_WS"), nil)
	}
	switch {
	case err == nil:
		os.Exit(0)
	case errors.Is(err, errdefs.ErrConflict):
		os.Exit(3)
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

// helperRun holds the run lock until killed.
func helperRun() {
	s, _ := Open(os.Getenv("POD_TEST_HOME"))
	p, err := s.Get(os.Getenv("POD_TEST_POD"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := p.AcquireRun(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("running")
	time.Sleep(time.Minute)
	os.Exit(0)
}

func newStore(t *testing.T) (*Store, string) {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "home"))
	if err != nil {
		t.Fatal(err)
	}
	ws := filepath.Join(t.TempDir(), "My Project!")
	if err := os.Mkdir(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	ws, _ = filepath.EvalSymlinks(ws)
	return s, ws
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a", "0", "my-pod", "a.b_c-d", strings.Repeat("a", 63)} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v", ok, err)
		}
	}
	hostile := []string{"", ".", "..", "../x", "a/b", "/abs", "-rf", ".hidden", "_x", "A", "a b", "a\x00b",
		"a\nb", strings.Repeat("a", 64), "pod\u00e9", "a\\b", "$(id)", "a;b", "~", "*", "ａ"}
	for _, bad := range hostile {
		err := ValidateName(bad)
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(fmt.Sprint(err), "lower-case letters") {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalid stating the rule", bad, err)
		}
	}
}

func TestDefaultName(t *testing.T) {
	for _, ws := range []string{"/home/u/My Project!", "/", "/x/...", "/x/" + strings.Repeat("Z", 200), "/srv/app"} {
		n := DefaultName(ws)
		if err := ValidateName(n); err != nil {
			t.Errorf("DefaultName(%q) = %q: %v", ws, n, err)
		}
		if DefaultName(ws) != n {
			t.Errorf("DefaultName(%q) is not stable", ws)
		}
	}
	if DefaultName("/a/app") == DefaultName("/b/app") {
		t.Error("two workspaces with the same base name share a default name")
	}
	if n := DefaultName("/home/u/My Project!"); !strings.HasPrefix(n, "my-project--") {
		t.Errorf("DefaultName = %q, want it readable", n)
	}
}

func TestDefaultHome(t *testing.T) {
	t.Setenv("AIRLOCK_HOME", "/custom/place")
	if h := DefaultHome(); h != "/custom/place" {
		t.Errorf("DefaultHome() = %q with AIRLOCK_HOME set", h)
	}
	t.Setenv("AIRLOCK_HOME", "")
	want := "/var/lib/airlock"
	if os.Geteuid() != 0 {
		t.Setenv("XDG_DATA_HOME", "/xdg")
		want = "/xdg/airlock"
	}
	if h := DefaultHome(); h != want {
		t.Errorf("DefaultHome() = %q, want %q", h, want)
	}
}

func TestCreateGetList(t *testing.T) {
	s, ws := newStore(t)
	cfg := config.Default()
	cfg.Resources.Memory = 2 * config.GiB
	cfg.Resources.Disk = config.Disk{} // the directory layer; disk_test.go has the capped one
	p, err := s.Create("dev", ws, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range append([]string{"", "work/workspace"}, podDirs...) {
		st, err := os.Lstat(filepath.Join(p.Dir, d))
		if err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v, want a 0700 dir", d, st.Mode(), err)
		}
	}
	// The upper of a root carries its host directory's owner and mode:
	// the overlay shows them as the workspace's inside the pod.
	var hst, ust unix.Stat_t
	chk := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	chk(unix.Stat(ws, &hst))
	chk(unix.Stat(filepath.Join(p.Dir, "upper/workspace"), &ust))
	if ust.Mode != hst.Mode || ust.Uid != hst.Uid || ust.Gid != hst.Gid || ust.Mtim != hst.Mtim {
		t.Errorf("upper/workspace: mode %o owner %d:%d, want the workspace's %o %d:%d", ust.Mode, ust.Uid, ust.Gid, hst.Mode, hst.Uid, hst.Gid)
	}
	for _, f := range []string{p.ConfigPath(), p.StatePath()} {
		st, err := os.Stat(f)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, want 0600", f, err)
		}
	}
	got, err := s.Get("dev")
	if err != nil {
		t.Fatal(err)
	}
	if got.State.Workspace != ws || got.Config.Resources.Memory != 2*config.GiB || got.State.Created.IsZero() {
		t.Errorf("Get = %+v", got.State)
	}
	if _, err := s.Create("dev", ws, nil); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("duplicate Create: %v", err)
	}
	if _, err := s.Get("nope"); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "airlock ls") {
		t.Errorf("Get(nope) = %v", err)
	}
	if _, err := s.Get("../../etc"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Get(traversal) = %v", err)
	}
	os.Mkdir(filepath.Join(s.podsDir(), ".new-x-123"), 0o700) // a crashed Create
	if _, err := s.Create("other", ws, nil); err != nil {
		t.Fatal(err)
	}
	pods, err := s.List()
	if err != nil || len(pods) != 2 || pods[0].Name != "dev" || pods[1].Name != "other" {
		t.Fatalf("List = %v, %v", pods, err)
	}
	fw, err := s.ForWorkspace(ws)
	if err != nil || fw.State.Workspace != ws {
		t.Fatalf("ForWorkspace = %v, %v", fw, err)
	}
	if _, err := s.ForWorkspace(t.TempDir()); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("ForWorkspace(other) = %v", err)
	}
}

// One pod with a corrupt state.json must not hide the others: ls still
// lists everything (naming the broken one) and commands on other
// workspaces still find their pod.
func TestListSurvivesABrokenPod(t *testing.T) {
	s, ws := newStore(t)
	if _, err := s.Create("good", ws, nil); err != nil {
		t.Fatal(err)
	}
	bad, err := s.Create("bad", t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad.StatePath(), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	pods, broken, err := s.ListAll()
	if err != nil || len(pods) != 1 || pods[0].Name != "good" || len(broken) != 1 || broken[0].Name != "bad" {
		t.Fatalf("ListAll = %v, %v, %v", pods, broken, err)
	}
	if !strings.Contains(broken[0].Err.Error(), "destroy bad") {
		t.Errorf("broken pod error does not say how to fix it: %v", broken[0].Err)
	}
	if p, err := s.ForWorkspace(ws); err != nil || p.Name != "good" {
		t.Fatalf("ForWorkspace beside a broken pod = %v, %v", p, err)
	}
	if err := s.Destroy("bad", false); err != nil {
		t.Fatalf("destroying the broken pod: %v", err)
	}
}

func TestCreateRejectsBadWorkspaces(t *testing.T) {
	s, ws := newStore(t)
	file := filepath.Join(ws, "file")
	os.WriteFile(file, nil, 0o600)
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(s.Home, link)
	tests := map[string]string{
		"relative":          "rel/dir",
		"missing":           filepath.Join(ws, "missing"),
		"a file":            file,
		"the home":          s.Home,
		"inside home":       filepath.Join(s.Home, "pods"),
		"containing home":   filepath.Dir(s.Home),
		"root":              "/",
		"symlink into home": link,
	}
	for name, w := range tests {
		if _, err := s.Create("x", w, nil); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s (%s): %v, want ErrInvalid", name, w, err)
		}
	}
	bad := config.Default()
	bad.Network.Mode = "wide-open"
	if _, err := s.Create("x", ws, bad); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("invalid config: %v", err)
	}
	entries, _ := os.ReadDir(s.podsDir())
	if len(entries) != 0 {
		t.Errorf("failed Creates left %d entries behind", len(entries))
	}
}

func TestCreateResolvesSymlinkedWorkspace(t *testing.T) {
	s, ws := newStore(t)
	link := filepath.Join(t.TempDir(), "ws-link")
	os.Symlink(ws, link)
	p, err := s.Create("l", link, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.State.Workspace != ws {
		t.Errorf("workspace = %q, want the resolved %q", p.State.Workspace, ws)
	}
}

func TestCreateRefusesOverlayHome(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		os.Mkdir(filepath.Join(dir, d), 0o700)
	}
	merged := filepath.Join(dir, "merged")
	opts := fmt.Sprintf("lowerdir=%s/lower,upperdir=%s/upper,workdir=%s/work", dir, dir, dir)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		testutil.RequireFeature(t, false, "overlayfs: "+err.Error())
	}
	t.Cleanup(func() { unix.Unmount(merged, unix.MNT_DETACH) })
	s, err := Open(merged)
	if err != nil {
		t.Fatal(err)
	}
	_, ws := newStore(t)
	_, err = s.Create("x", ws, nil)
	if !errors.Is(err, errdefs.ErrUnsupported) || !strings.Contains(err.Error(), "overlayfs") || !strings.Contains(err.Error(), "AIRLOCK_HOME") {
		t.Fatalf("Create on overlayfs = %v", err)
	}
}

func TestCreateRaceGoroutines(t *testing.T) {
	s, ws := newStore(t)
	var wg sync.WaitGroup
	results := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Create("race", ws, nil)
			results <- err
		}()
	}
	wg.Wait()
	close(results)
	wins := 0
	for err := range results {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, errdefs.ErrConflict):
			t.Errorf("loser got %v, want ErrConflict", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d Creates won, want exactly 1", wins)
	}
	entries, _ := os.ReadDir(s.podsDir())
	if len(entries) != 1 {
		t.Errorf("pods dir holds %d entries, want 1", len(entries))
	}
}

func TestCreateRaceProcesses(t *testing.T) {
	s, ws := newStore(t)
	var cmds []*exec.Cmd
	for i := 0; i < 4; i++ {
		c := exec.Command(os.Args[0], "-test.run=^$")
		c.Env = append(os.Environ(), "POD_TEST_HELPER=create", "POD_TEST_HOME="+s.Home, "POD_TEST_WS="+ws)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	wins := 0
	for _, c := range cmds {
		err := c.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil:
			wins++
		case errors.As(err, &ee) && ee.ExitCode() == 3:
		default:
			t.Errorf("helper: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d processes created the pod, want exactly 1", wins)
	}
}

func TestLock(t *testing.T) {
	s, ws := newStore(t)
	p, _ := s.Create("l", ws, nil)
	unlock, err := p.Lock()
	if err != nil {
		t.Fatal(err)
	}
	old := LockTimeout
	LockTimeout = 50 * time.Millisecond
	t.Cleanup(func() { LockTimeout = old })
	if _, err := p.Lock(); !errors.Is(err, errdefs.ErrBusy) {
		t.Fatalf("second Lock = %v, want ErrBusy", err)
	}
	LockTimeout = 5 * time.Second
	got := make(chan time.Time)
	go func() {
		u, err := p.Lock()
		if err != nil {
			t.Error(err)
		}
		got <- time.Now()
		u()
	}()
	time.Sleep(30 * time.Millisecond)
	released := time.Now()
	unlock()
	if at := <-got; at.Before(released) {
		t.Fatal("second Lock succeeded while the first was held")
	}
}

func TestRunLock(t *testing.T) {
	s, ws := newStore(t)
	p, _ := s.Create("r", ws, nil)
	if _, running := p.Running(); running {
		t.Fatal("fresh pod reports running")
	}
	release, err := p.AcquireRun()
	if err != nil {
		t.Fatal(err)
	}
	pid, running := p.Running()
	if !running || pid != os.Getpid() {
		t.Fatalf("Running() = %d %v", pid, running)
	}
	_, err = p.AcquireRun()
	if !errors.Is(err, errdefs.ErrBusy) || !strings.Contains(err.Error(), fmt.Sprintf("already running (pid %d)", os.Getpid())) {
		t.Fatalf("second AcquireRun = %v", err)
	}
	if err := s.Destroy("r", false); !errors.Is(err, errdefs.ErrBusy) {
		t.Fatalf("Destroy of a running pod = %v", err)
	}
	release()
	if _, running := p.Running(); running {
		t.Fatal("still running after release")
	}
	if err := s.Destroy("r", false); err != nil {
		t.Fatal(err)
	}
}

func TestDestroyForceKillsSupervisor(t *testing.T) {
	s, ws := newStore(t)
	p, _ := s.Create("k", ws, nil)
	c := exec.Command(os.Args[0], "-test.run=^$")
	c.Env = append(os.Environ(), "POD_TEST_HELPER=run", "POD_TEST_HOME="+s.Home, "POD_TEST_POD=k")
	out, _ := c.StdoutPipe()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- c.Wait() }()
	t.Cleanup(func() { c.Process.Kill() })
	buf := make([]byte, 8)
	if n, _ := out.Read(buf); string(buf[:n]) != "running\n" {
		t.Fatalf("helper said %q", buf[:n])
	}
	if pid, running := p.Running(); !running || pid != c.Process.Pid {
		t.Fatalf("Running() = %d %v, want %d", pid, running, c.Process.Pid)
	}
	if err := s.Destroy("k", false); !errors.Is(err, errdefs.ErrBusy) {
		t.Fatalf("Destroy without force = %v", err)
	}
	// The test process does not reap the child until Wait returns, so the
	// lock drops as soon as the kernel closes the child's files.
	if err := s.Destroy("k", true); err != nil {
		t.Fatal(err)
	}
	<-waited
	if _, err := os.Lstat(p.Dir); !os.IsNotExist(err) {
		t.Fatal("pod dir survived Destroy --force")
	}
}

// TestDestroyDoesNotFollowLinks plants what an agent could leave in its
// upper layer: symlinks to host dirs and files, and hard links to host
// files. Destroy must remove the links, never what they point at.
func TestDestroyDoesNotFollowLinks(t *testing.T) {
	s, ws := newStore(t)
	p, _ := s.Create("d", ws, dirLayer())
	host := t.TempDir()
	hostDir := filepath.Join(host, "precious")
	os.Mkdir(hostDir, 0o755)
	hostFile := filepath.Join(hostDir, "data.txt")
	os.WriteFile(hostFile, []byte("keep me"), 0o644)
	upper := filepath.Join(p.Dir, "upper", "workspace")
	must(t, os.Symlink(hostDir, filepath.Join(upper, "dirlink")))
	must(t, os.Symlink(hostFile, filepath.Join(upper, "filelink")))
	must(t, os.Symlink(host, filepath.Join(p.Dir, "rootfs", "escape")))
	must(t, os.Link(hostFile, filepath.Join(upper, "hardlink")))
	must(t, os.MkdirAll(filepath.Join(upper, "deep", "er"), 0o755))
	must(t, os.Symlink("../../../../../../..", filepath.Join(upper, "deep", "er", "up")))
	must(t, os.Symlink(hostDir, filepath.Join(p.Dir, "snapshots", "s1")))
	if err := s.Destroy("d", false); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(hostFile); err != nil || string(data) != "keep me" {
		t.Fatalf("host file damaged: %q %v", data, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(hostFile, &st); err != nil || st.Nlink != 1 {
		t.Errorf("host file links = %d, %v", st.Nlink, err)
	}
	if entries, _ := os.ReadDir(s.podsDir()); len(entries) != 0 {
		t.Errorf("pods dir not empty after Destroy: %v", entries)
	}
	if _, err := s.Get("d"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get after Destroy = %v", err)
	}
	if err := s.Destroy("d", false); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second Destroy = %v", err)
	}
}

// TestDestroyRefusesMounts: deleting through a leftover bind mount would
// delete host files.
func TestDestroyRefusesMounts(t *testing.T) {
	testutil.RequireRoot(t)
	s, ws := newStore(t)
	p, _ := s.Create("m", ws, nil)
	host := t.TempDir()
	os.WriteFile(filepath.Join(host, "f"), []byte("x"), 0o644)
	target := filepath.Join(p.RootfsDir())
	if err := unix.Mount(host, target, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
	if err := s.Destroy("m", true); !errors.Is(err, errdefs.ErrBusy) || !strings.Contains(err.Error(), "umount") {
		t.Fatalf("Destroy with a mount = %v", err)
	}
	if _, err := os.Stat(filepath.Join(host, "f")); err != nil {
		t.Fatal("host file behind the mount was removed")
	}
	unix.Unmount(target, unix.MNT_DETACH)
	if err := s.Destroy("m", false); err != nil {
		t.Fatal(err)
	}
}

func TestDestroyCorruptPod(t *testing.T) {
	s, ws := newStore(t)
	p, _ := s.Create("c", ws, nil)
	os.WriteFile(p.ConfigPath(), []byte("version: 9\n"), 0o600)
	if _, err := s.Get("c"); err == nil {
		t.Fatal("Get accepted a corrupt pod.yaml")
	}
	if err := s.Destroy("c", false); err != nil {
		t.Fatalf("a corrupt pod cannot be destroyed: %v", err)
	}
}

func TestSaveStateAtomic(t *testing.T) {
	s, ws := newStore(t)
	p, _ := s.Create("a", ws, nil)
	p.State.Home = "/home/someone"
	// A symlink planted where the temp file would go is never written through.
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("orig"), 0o644)
	must(t, os.Symlink(victim, p.StatePath()+".tmp"))
	must(t, p.SaveState())
	got, err := s.Get("a")
	if err != nil || got.State.Home != "/home/someone" {
		t.Fatalf("state after save: %+v %v", got.State, err)
	}
	if data, _ := os.ReadFile(victim); string(data) != "orig" {
		t.Fatal("SaveState wrote through a symlink")
	}
	entries, _ := os.ReadDir(p.Dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".state.json.tmp") {
			t.Errorf("temp file left behind: %s", e.Name())
		}
	}
	p.Config.Network.Mode = "nonsense"
	if err := p.SaveConfig(); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("SaveConfig of an invalid config = %v", err)
	}
}

func TestRoots(t *testing.T) {
	home := t.TempDir()
	ws := filepath.Join(home, "src", "app")
	p := &Pod{Name: "r", Dir: "/pods/r", Config: config.Default(),
		State: State{Workspace: ws, Home: home}}
	p.Config.Filesystem.Cow = []string{"~", "/opt/tools", "~/sub", "/opt/tools/inner"}
	roots := p.Roots()
	if len(roots) != 3 {
		t.Fatalf("roots = %+v", roots)
	}
	if r := roots[0]; r.Name != "workspace" || r.Host != ws || r.Upper != "/pods/r/upper/workspace" || r.Work != "/pods/r/work/workspace" {
		t.Errorf("workspace root = %+v", r)
	}
	if r := roots[1]; r.Name != "home" || r.Host != home || r.Upper != "/pods/r/upper/home" {
		t.Errorf("home root = %+v", r)
	}
	if r := roots[2]; r.Name != "/opt/tools" || !strings.HasPrefix(r.Upper, "/pods/r/upper/cow-") {
		t.Errorf("extra root = %+v", r)
	}
	// Home inside the workspace: the workspace covers it.
	p.State.Workspace = filepath.Dir(home)
	if roots := p.Roots(); len(roots) != 2 || roots[1].Name != "/opt/tools" {
		t.Errorf("home inside workspace: %+v", roots)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func BenchmarkCreateDestroy(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "home"))
	if err != nil {
		b.Fatal(err)
	}
	ws := b.TempDir()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("p%d", i)
		if _, err := s.Create(name, ws, nil); err != nil {
			b.Fatal(err)
		}
		if err := s.Destroy(name, false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCreate(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "home"))
	if err != nil {
		b.Fatal(err)
	}
	ws := b.TempDir()
	for i := 0; i < b.N; i++ {
		if _, err := s.Create(fmt.Sprintf("p%d", i), ws, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// The last run's record round-trips; a missing or damaged one reads as
// "never ran", so a torn file after a power cut breaks no command.
func TestRunState(t *testing.T) {
	s, ws := newStore(t)
	p, _ := s.Create("a", ws, nil)
	if _, ok := p.LastRun(); ok {
		t.Fatal("a new pod reports a last run")
	}
	code := 3
	start := time.Now().Round(0)
	must(t, p.SaveRun(RunState{Started: start, Exit: &code, Walls: map[string]string{"seccomp": "up"}}))
	rs, ok := p.LastRun()
	if !ok || !rs.Started.Equal(start) || rs.Exit == nil || *rs.Exit != 3 || rs.Walls["seccomp"] != "up" {
		t.Fatalf("LastRun = %+v, %v", rs, ok)
	}
	// A long record, then a short one: nothing of the long one is left.
	long := map[string]string{"network": "downgraded: " + strings.Repeat("x", 3000)}
	must(t, p.SaveRun(RunState{Started: start, Walls: long}))
	must(t, p.SaveRun(RunState{Started: start, Exit: &code}))
	if rs, ok := p.LastRun(); !ok || rs.Walls != nil || rs.Exit == nil {
		t.Fatalf("after a long then a short record: %+v, %v", rs, ok)
	}
	for _, junk := range []string{"", "{", "null", `{"exit":1}`} {
		must(t, os.WriteFile(p.runStatePath(), []byte(junk), 0o600))
		if rs, ok := p.LastRun(); ok {
			t.Errorf("damaged record %q read as %+v", junk, rs)
		}
	}
}

// The workspace's upper directory takes the host directory's owner, mode
// and times, follows later host changes, and is not written when nothing
// changed (ctime stays): every write dirties the layer's journal.
func TestPrepareRootsMirrorsAttrs(t *testing.T) {
	s, ws := newStore(t)
	p, err := s.Create("a", ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Destroy("a", true) })
	upper := ""
	for _, r := range p.Roots() {
		if r.Host == ws {
			upper = r.Upper
		}
	}
	if upper == "" {
		t.Fatal("no root for the workspace")
	}
	check := func(what string) unix.Stat_t {
		t.Helper()
		var h, u unix.Stat_t
		must(t, unix.Stat(ws, &h))
		must(t, unix.Stat(upper, &u))
		if u.Mode&0o7777 != h.Mode&0o7777 || u.Uid != h.Uid || u.Gid != h.Gid || u.Mtim != h.Mtim {
			t.Fatalf("%s: upper %o %d:%d %v, host %o %d:%d %v", what, u.Mode&0o7777, u.Uid, u.Gid, u.Mtim, h.Mode&0o7777, h.Uid, h.Gid, h.Mtim)
		}
		return u
	}
	must(t, os.Chmod(ws, 0o751))
	if os.Geteuid() == 0 {
		must(t, os.Lchown(ws, 1234, 5678))
	}
	must(t, p.PrepareRoots())
	first := check("after the first prepare")
	time.Sleep(10 * time.Millisecond)
	must(t, p.PrepareRoots())
	if again := check("after a second prepare"); again.Ctim != first.Ctim {
		t.Errorf("a prepare with nothing to change wrote the upper directory (ctime %v -> %v)", first.Ctim, again.Ctim)
	}
	must(t, os.Chmod(ws, 0o700))
	must(t, p.PrepareRoots())
	check("after the host mode changed")
}
