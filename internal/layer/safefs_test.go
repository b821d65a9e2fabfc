package layer

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// hostileRoot builds a root full of traps next to an outside directory:
// symlinks climbing out relatively and absolutely, and a symlink chain.
func hostileRoot(t testing.TB) (root, outside string) {
	dir := t.TempDir()
	root, outside = filepath.Join(dir, "root"), filepath.Join(dir, "outside")
	chk(t, os.MkdirAll(filepath.Join(root, "dir/sub"), 0o755))
	chk(t, os.MkdirAll(outside, 0o755))
	chk(t, os.WriteFile(filepath.Join(root, "file"), []byte("x"), 0o644))
	for name, target := range map[string]string{
		"up": "..", "abs": outside, "dir/up": "../..", "dir/self": ".", "proc": "/proc/self/cwd",
		"loop": "loop", "chain": "abs",
	} {
		chk(t, os.Symlink(target, filepath.Join(root, name)))
	}
	return root, outside
}

// checkResolve resolves rel beneath root creating missing directories, as
// commit does, and checks that whatever it reached or made is inside root.
func checkResolve(t *testing.T, root, outside, rel string) {
	comps, err := splitRel(rel)
	if err != nil {
		return
	}
	for _, c := range comps {
		if c == "" || c == "." || c == ".." || strings.ContainsRune(c, 0) || strings.Contains(c, "/") {
			t.Fatalf("splitRel(%q) accepted component %q", rel, c)
		}
	}
	rootFd, err := openRoot(root)
	chk(t, err)
	defer unix.Close(rootFd)
	fd, _, err := openDir(rootFd, comps, func(int, int) (uint32, int, int) { return 0o755, 0, 0 })
	if err == nil {
		where, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
		unix.Close(fd)
		if where != root && !strings.HasPrefix(where, root+"/") {
			t.Fatalf("%q resolved to %s, outside %s", rel, where, root)
		}
	}
	if st, err := lstatBeneath(rootFd, rel); err == nil && st != nil && len(comps) > 1 {
		// A found entry must sit under a real directory of the root.
		par, _, perr := openParent(rootFd, rel)
		chk(t, perr)
		where, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(par))
		unix.Close(par)
		if where != root && !strings.HasPrefix(where, root+"/") {
			t.Fatalf("%q parent resolved to %s", rel, where)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("resolving %q created %s outside the root", rel, ents[0].Name())
	}
}

var resolveSeeds = []string{
	"a", "dir/sub/new", "up/x", "abs/x", "dir/up/x", "dir/self/x", "proc/x", "loop/x", "chain/x",
	"../x", "dir/../../x", "/etc/x", "a//b", "./a", "a/.", "file/x", "dir/sub/../../up/x",
	strings.Repeat("d/", 100) + "f", strings.Repeat("n", 256), "x\x00y", "abs",
}

func TestSafeResolveHostile(t *testing.T) {
	root, outside := hostileRoot(t)
	for _, rel := range resolveSeeds {
		checkResolve(t, root, outside, rel)
	}
	rootFd, err := openRoot(root)
	chk(t, err)
	defer unix.Close(rootFd)
	for _, rel := range []string{"up/x", "abs/x", "dir/up/x", "proc/x", "chain/x", "loop/x"} {
		if _, _, err := openParent(rootFd, rel); err == nil || isAbsent(err) {
			t.Errorf("openParent(%q) = %v, want a symlink refusal", rel, err)
		}
	}
}

// FuzzSafeResolve: no path name, however built, resolves or creates
// anything outside the root.
func FuzzSafeResolve(f *testing.F) {
	for _, s := range resolveSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rel string) {
		root, outside := hostileRoot(t)
		checkResolve(t, root, outside, rel)
	})
}
