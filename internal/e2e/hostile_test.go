package e2e

// The layer's attacker suite, end to end: an agent gone rogue plants what
// it can in the pod, the person then runs diff and commit as usual, and
// nothing may land outside the workspace, gain privilege, corrupt the
// terminal or be lost.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// outsideDir is a host directory beside the workspace that no commit may
// write to; it holds one file whose content must survive.
func outsideDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "outside")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "target"), []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func checkOutside(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "target" {
		names := []string{}
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("a commit wrote outside the workspace: %v", names)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "target")); string(b) != "precious\n" {
		t.Errorf("a commit wrote through to a file outside the workspace: %q", b)
	}
}

// The host workspace holds a symlink to a directory outside it and a hard
// link to a file outside it, both legitimately. The agent replaces the
// symlink by a directory full of files, writes through the hard link's
// name, and plants symlinks of its own. Commit must replace, never follow
// or write through, and copy symlinks as symlinks.
func TestHostileLinksCannotLeadCommitOutside(t *testing.T) {
	e := newEnv(t)
	out := outsideDir(t)
	if err := os.Symlink(out, filepath.Join(e.ws, "out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(out, "target"), filepath.Join(e.ws, "hl")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(settle)
	e.must("init", "p")
	script := `set -e
echo pwn > out/target 2>/dev/null || true  # through the symlink: the pod's private view only
rm out && mkdir out && echo pwn > out/target && echo pwn > out/new
echo pwn > hl
ln -s ` + out + ` escape
ln -s ../../../../../../../../` + out + `/target rel-escape
mkdir d && ln -s ` + out + ` d/link
ln b.txt c.txt 2>/dev/null || { echo b > b.txt; ln b.txt c.txt; }`
	e.must("run", "p", "--", "sh", "-c", script)
	e.must("commit", "p")
	checkOutside(t, out)
	if st, err := os.Lstat(filepath.Join(e.ws, "out")); err != nil || !st.IsDir() {
		t.Errorf("out should now be a directory on the host: %v %v", st, err)
	}
	if got := e.read("hl"); got != "pwn\n" {
		t.Errorf("hl = %q", got)
	}
	for link, target := range map[string]string{"escape": out, "d/link": out} {
		if got, err := os.Readlink(filepath.Join(e.ws, link)); err != nil || got != target {
			t.Errorf("%s: readlink = %q, %v; want the symlink copied as is", link, got, err)
		}
	}
	// The agent's hard-linked pair lands as two files: a later write to
	// one on the host must not show up in the other.
	var b, c unix.Stat_t
	if unix.Lstat(filepath.Join(e.ws, "b.txt"), &b) != nil || unix.Lstat(filepath.Join(e.ws, "c.txt"), &c) != nil {
		t.Fatal("b.txt or c.txt missing after commit")
	}
	if b.Ino == c.Ino || b.Nlink != 1 {
		t.Errorf("commit kept the agent's hard link: inodes %d %d, nlink %d", b.Ino, c.Ino, b.Nlink)
	}
	e.must("undo", "p")
	checkOutside(t, out)
	if got, err := os.Readlink(filepath.Join(e.ws, "out")); err != nil || got != out {
		t.Errorf("undo did not bring back the out symlink: %q %v", got, err)
	}
	var hl, tg unix.Stat_t
	if unix.Lstat(filepath.Join(e.ws, "hl"), &hl) != nil || unix.Lstat(filepath.Join(out, "target"), &tg) != nil || hl.Ino != tg.Ino {
		t.Errorf("undo did not restore hl as the same inode as the outside file")
	}
}

// While a commit runs, a host directory it writes into is swapped again
// and again for a symlink to a directory outside. Whatever the commit
// does (finish, or fail and reverse), nothing may land outside.
func TestHostileSwapDuringCommit(t *testing.T) {
	e := newEnv(t)
	out := outsideDir(t)
	if err := os.Mkdir(filepath.Join(e.ws, "sw"), 0o755); err != nil {
		t.Fatal(err)
	}
	time.Sleep(settle)
	e.must("init", "p")
	e.must("run", "p", "--", "sh", "-c", `for i in $(seq 300); do echo $i > sw/f$i; done`)
	sw, real := filepath.Join(e.ws, "sw"), filepath.Join(e.ws, "sw.real")
	for round := range 3 {
		var stop atomic.Bool
		var wg sync.WaitGroup
		swaps := 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if os.Rename(sw, real) == nil && os.Symlink(out, sw) == nil {
					swaps++
					time.Sleep(50 * time.Microsecond)
					_ = os.Remove(sw)
					_ = os.Rename(real, sw)
				}
			}
		}()
		// --force: a swap seen while planning is a conflict, and the point
		// is to race the apply.
		r := e.run("", "commit", "p", "--force")
		stop.Store(true)
		wg.Wait()
		t.Logf("round %d: commit exit %d after %d swaps: %s", round, r.code, swaps, strings.TrimSpace(r.stderr))
		checkOutside(t, out)
		// It may be refused before it starts (diff or planning saw the swap);
		// a commit that failed while applying must have been reversed.
		if r.code != 0 && strings.Contains(r.stderr, "applying") && !strings.Contains(r.stderr, "reversed") {
			t.Errorf("round %d: a failed commit should say it was reversed: %q", round, r.stderr)
		}
		if left := scratchFiles(e.ws); len(left) > 0 {
			t.Errorf("round %d: scratch files left on the host: %v", round, left)
		}
		e.must("audit", "verify", "p")
		if r.code == 0 {
			e.must("undo", "p", "--force")
		}
		// Put back what the swapper may have left mid-swap (the commit
		// may have made a fresh sw while the real one was renamed away).
		if _, err := os.Lstat(real); err == nil {
			_ = os.Remove(sw)
			if err := os.Rename(real, sw); err != nil {
				t.Fatalf("round %d: restoring sw: %v", round, err)
			}
		}
		if ents, err := os.ReadDir(sw); err != nil || len(ents) != 0 {
			t.Fatalf("round %d: after undo sw holds %d entries (%v)", round, len(ents), err)
		}
		e.must("rollback", "p")
		e.must("run", "p", "--", "sh", "-c", `for i in $(seq 300); do echo $i > sw/f$i; done`)
	}
}

// scratchFiles lists commit scratch entries (.airlock-*) left under dir.
func scratchFiles(dir string) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".airlock-") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// The agent makes what must never reach the host as is: FIFOs (skipped
// with a warning), setuid and setgid programs (bits stripped), and names
// made to attack the terminal (always shown escaped).
func TestHostileSpecialFilesAndNames(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	script := `set -e
mkfifo pipe
cp /bin/true suid && chmod 6755 suid
mkdir sdir && chmod 3777 sdir
touch "$(printf 'evil\033]0;pwned\007\033[2J')" "$(printf 'two\nlines')" "$(printf 'bidi\342\200\256txt.exe')" "$(printf 'bad\377utf8')"
mknod dev c 1 3 2>/dev/null && echo MKNOD-WORKED || true`
	r := e.must("run", "p", "--", "sh", "-c", script)
	if strings.Contains(r.stdout, "MKNOD-WORKED") {
		t.Errorf("the pod could create a device node")
	}
	for _, args := range [][]string{{"diff", "p"}, {"diff", "p", "--stat"}, {"diff", "p", "-p"}, {"commit", "p", "--dry-run"}, {"status", "p"}} {
		out := e.must(args...).stdout
		if i := strings.IndexAny(out, "\x1b\x07\r\u202e\xff"); i >= 0 {
			t.Errorf("airlock %s printed a raw control/bidi/invalid byte at %d: %q", strings.Join(args, " "), i, out)
		}
		if strings.Contains(out, "two\nlines") {
			t.Errorf("airlock %s printed a name with a raw newline", strings.Join(args, " "))
		}
	}
	out := e.must("commit", "p").stdout
	if !strings.Contains(out, "skipped pipe") {
		t.Errorf("commit did not warn about the FIFO:\n%s", out)
	}
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("commit printed a raw escape: %q", out)
	}
	if st, err := os.Lstat(filepath.Join(e.ws, "pipe")); err == nil {
		t.Errorf("the FIFO reached the host: %v", st.Mode())
	}
	if st, err := os.Stat(filepath.Join(e.ws, "suid")); err != nil || st.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 || st.Mode().Perm() != 0o755 {
		t.Errorf("suid on the host: %v %v; want 0755 without set-id bits", st.Mode(), err)
	}
	if st, err := os.Stat(filepath.Join(e.ws, "sdir")); err != nil || st.Mode()&os.ModeSetgid != 0 || st.Mode()&os.ModeSticky == 0 {
		t.Errorf("sdir on the host: %v %v; want the sticky bit kept, setgid stripped", st.Mode(), err)
	}
	if _, err := os.Lstat(filepath.Join(e.ws, "two\nlines")); err != nil {
		t.Errorf("a file with a newline in its name was not committed: %v", err)
	}
	if a := e.must("audit", "p").stdout; strings.ContainsAny(a, "\x1b\x07") {
		t.Errorf("audit printed a raw escape: %q", a)
	}
}

// Names of 255 bytes and a tree deeper than PATH_MAX go through diff,
// commit, undo and rollback.
func TestHostileLongNamesAndDeepPaths(t *testing.T) {
	e := newEnv(t)
	e.must("init", "p")
	requirePython(t)
	long := strings.Repeat("n", 255)
	comp := strings.Repeat("d", 200)
	depth := 25 // 25 * 201 bytes > PATH_MAX: only reachable by descriptor
	deep := fmt.Sprintf(`import os
fd = os.open(".", os.O_RDONLY)
for _ in range(%d):
    os.mkdir(%q, dir_fd=fd)
    fd = os.open(%[2]q, os.O_RDONLY, dir_fd=fd)
os.write(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), b"deep\n")
`, depth, comp)
	script := fmt.Sprintf(`set -e
echo long > %s
%s -c '%s'
echo toolong > %[1]sx 2>/dev/null && echo MADE-256 || true`, long, podPython, deep)
	r := e.must("run", "p", "--", "sh", "-c", script)
	if strings.Contains(r.stdout, "MADE-256") {
		t.Fatalf("a 256-byte name was created")
	}
	diff := e.must("diff", "p").stdout
	if !strings.Contains(diff, long) || !strings.Contains(diff, "/leaf") {
		t.Fatalf("diff lacks the long name or the deep leaf (%d bytes)", len(diff))
	}
	e.must("commit", "p")
	if got := e.read(long); got != "long\n" {
		t.Fatalf("255-byte name after commit: %q", got)
	}
	if got := readDeep(t, e.ws, comp, depth); got != "deep\n" {
		t.Fatalf("deep leaf after commit: %q", got)
	}
	e.must("undo", "p")
	if _, err := os.Lstat(filepath.Join(e.ws, comp)); !os.IsNotExist(err) {
		t.Fatalf("undo left the deep tree: %v", err)
	}
	// Undo gave the tree back to the layer; rollback discards it.
	if out := e.must("diff", "p").stdout; !strings.Contains(out, "/leaf") {
		t.Errorf("after undo the deep tree is not back in the layer (%d bytes of diff)", len(out))
	}
	e.must("rollback", "p")
	if out := e.must("diff", "p").stdout; !strings.Contains(out, "no changes") {
		t.Errorf("rollback of a deep tree left: %s", out)
	}
}

// readDeep reads depth/.../leaf by descriptor (the path is too long to open).
func readDeep(t *testing.T, root, comp string, depth int) string {
	t.Helper()
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for range depth {
		next, err := unix.Openat(fd, comp, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		unix.Close(fd)
		if err != nil {
			return "<" + err.Error() + ">"
		}
		fd = next
	}
	defer unix.Close(fd)
	leaf, err := unix.Openat(fd, "leaf", unix.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	f := os.NewFile(uintptr(leaf), "leaf")
	defer f.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(f)
	return buf.String()
}

// rm -rf of the workspace and of ~ inside the pod: the host keeps every
// file, diff shows the deletions, and rollback brings the pod's view back.
func TestHostileRmRf(t *testing.T) {
	e := newEnv(t)
	home := e.withHome()
	if err := os.WriteFile(filepath.Join(home, ".profile"), []byte("keep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.must("init", "p")
	r := e.run("", "run", "p", "--", "sh", "-c", `rm -rf "$PWD" ~ / 2>/dev/null; rm -rf "$PWD"/* "$PWD"/.[!.]* ~/* ~/.[!.]* 2>/dev/null; ls -A "$PWD" ~ | wc -w`)
	if strings.TrimSpace(r.stdout) != "0" {
		t.Logf("left in the pod after rm -rf: %s", r.stdout)
	}
	if e.read("README.md") != "hello\n" || e.read("src/main.c") == "" {
		t.Fatalf("rm -rf in the pod reached the host workspace")
	}
	if b, _ := os.ReadFile(filepath.Join(home, ".profile")); string(b) != "keep\n" {
		t.Fatalf("rm -rf in the pod reached the host home")
	}
	diff := e.must("diff", "p").stdout
	for _, want := range []string{"D  README.md", "D  src/", "D  ~/.profile"} {
		if !strings.Contains(diff, want) {
			t.Errorf("diff after rm -rf lacks %q:\n%s", want, diff)
		}
	}
	e.must("rollback", "p")
	r = e.must("run", "p", "--", "sh", "-c", "cat README.md src/main.c ~/.profile")
	if !strings.Contains(r.stdout, "hello") || !strings.Contains(r.stdout, "keep") {
		t.Errorf("after rollback the pod does not see the files again: %q", r.stdout)
	}
}

// kill -9 of `airlock commit` at random moments: the next airlock command
// finishes or reverses it, every host file is wholly old or wholly new,
// the set is all old or all new, the audit trail stays intact, and undo
// brings the old tree back.
func TestHostileKill9DuringCommit(t *testing.T) {
	e := newEnv(t)
	const n = 200
	for i := range n {
		e.write(fmt.Sprintf("k/f%03d", i), strings.Repeat("o", 1+i*37%4096))
	}
	time.Sleep(settle)
	e.must("init", "p")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	agent := `for f in k/f*; do printf new-%s "$f" > "$f"; done; for i in $(seq 20); do echo a > k/added$i; done`
	// Time one whole commit to pick kill moments inside it.
	e.must("run", "p", "--", "sh", "-c", agent)
	start := time.Now()
	e.must("commit", "p")
	full := time.Since(start)
	t.Logf("one commit takes %v", full)
	e.must("undo", "p")
	iterations := 6
	for it := range iterations {
		// Host files an undo just restored count as changed during a run
		// that starts within the coarse clock's slack (see newEnv).
		time.Sleep(settle)
		e.must("rollback", "p")
		e.must("run", "p", "--", "sh", "-c", agent)
		cmd := exec.Command(bin, "commit", "p")
		cmd.Dir = e.ws
		cmd.Env = append(os.Environ(), "AIRLOCK_HOME="+e.home)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(rng.Int64N(int64(full * 3 / 4)))
		time.Sleep(delay)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		if err := cmd.Wait(); err != nil && !strings.Contains(err.Error(), "killed") {
			t.Fatalf("iteration %d: commit failed on its own: %v", it, err)
		}
		killedIn := journalStates(t, filepath.Join(e.home, "pods", "p", "journal"))
		e.must("status", "p") // any command on the pod recovers it
		olds, news := 0, 0
		for i := range n {
			rel := fmt.Sprintf("k/f%03d", i)
			switch got := e.read(rel); got {
			case strings.Repeat("o", 1+i*37%4096):
				olds++
			case "new-" + rel:
				news++
			default:
				t.Fatalf("iteration %d: %s is torn: %q", it, rel, got)
			}
		}
		if olds != 0 && news != 0 {
			t.Fatalf("iteration %d: host is mixed after recovery: %d old, %d new", it, olds, news)
		}
		if r := e.run("", "audit", "verify", "p"); r.code != 0 {
			t.Fatalf("iteration %d: audit trail damaged by the kill: %s", it, r.stderr)
		}
		if news > 0 {
			e.must("undo", "p")
			if got := e.read("k/f000"); got != "o" {
				t.Fatalf("iteration %d: undo after a recovered commit: %q", it, got)
			}
		}
		t.Logf("iteration %d: killed with journals %v; host %s", it, killedIn, map[bool]string{true: "new (finished)", false: "old (discarded)"}[news > 0])
	}
}

// journalStates lists the state of every commit journal in dir.
func journalStates(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	ents, _ := os.ReadDir(dir)
	for _, d := range ents {
		b, err := os.ReadFile(filepath.Join(dir, d.Name(), "journal.json"))
		if err != nil {
			out = append(out, "no journal")
			continue
		}
		var j struct{ State string }
		_ = json.Unmarshal(b, &j)
		out = append(out, j.State)
	}
	return out
}

// Invariant 3: rollback and destroy never follow a symlink out of the
// pod's directory. The agent fills its layer with links to a host
// directory outside (and to the workspace itself); discarding the layer
// must remove the links, never what they point at.
func TestHostileLinksSurviveRollbackAndDestroy(t *testing.T) {
	e := newEnv(t)
	out := outsideDir(t)
	e.must("init", "p")
	script := `set -e
ln -s ` + out + ` out-link
mkdir -p deep/er && ln -s ` + out + ` deep/er/l && ln -s ` + e.ws + ` deep/ws
ln -s / root-link
rm -rf src && ln -s ` + out + ` src`
	e.must("run", "p", "--", "sh", "-c", script)
	e.must("rollback", "p", "deep")
	checkOutside(t, out)
	e.must("rollback", "p")
	checkOutside(t, out)
	if e.read("src/main.c") == "" || e.read("README.md") != "hello\n" {
		t.Fatalf("rollback reached the workspace through a link")
	}
	e.must("run", "p", "--", "sh", "-c", script)
	e.must("destroy", "p")
	checkOutside(t, out)
	if e.read("src/main.c") == "" || e.read("README.md") != "hello\n" {
		t.Fatalf("destroy reached the workspace through a link")
	}
}
