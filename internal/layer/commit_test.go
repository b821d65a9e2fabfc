package layer

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/testutil"
)

// pod is a real overlay over a temporary host directory, plus the pod's
// journal and base locations, for commit tests.
type pod struct {
	t       *testing.T
	root    Root
	mnt     string
	journal string
	base    string
	outside string // a directory outside the workspace, for attacks
	mounted bool
}

func newPod(t *testing.T, fill func(host string)) *pod {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	p := &pod{t: t, mnt: filepath.Join(dir, "mnt"), journal: filepath.Join(dir, "pod", "journal"),
		base: filepath.Join(dir, "pod", "base.json"), outside: filepath.Join(dir, "outside"),
		root: Root{Name: "workspace", Host: filepath.Join(dir, "host"), Upper: filepath.Join(dir, "pod", "upper"),
			Work: filepath.Join(dir, "pod", "work")}}
	for _, d := range []string{p.root.Host, p.root.Upper, p.root.Work, p.mnt, p.outside} {
		chk(t, os.MkdirAll(d, 0o755))
	}
	if fill != nil {
		fill(p.root.Host)
	}
	p.mount()
	t.Cleanup(func() {
		p.unmount()
		if testutil.Mounted(dir) {
			t.Errorf("mount left behind under %s", dir)
		}
	})
	return p
}

func (p *pod) mount() {
	p.t.Helper()
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=off,metacopy=off,index=off",
		p.root.Host, p.root.Upper, p.root.Work)
	if err := unix.Mount("overlay", p.mnt, "overlay", 0, opts); err != nil {
		testutil.RequireFeature(p.t, false, "overlayfs: "+err.Error())
	}
	p.mounted = true
}

func (p *pod) unmount() {
	p.t.Helper()
	if p.mounted {
		chk(p.t, unix.Unmount(p.mnt, 0))
		p.mounted = false
	}
}

func (p *pod) in(rel string) string   { return filepath.Join(p.mnt, rel) }
func (p *pod) host(rel string) string { return filepath.Join(p.root.Host, rel) }

// diff unmounts (the pod stops) and returns every change.
func (p *pod) diff() []Change {
	p.t.Helper()
	p.unmount()
	cs, err := Diff([]Root{p.root}, DiffOptions{})
	chk(p.t, err)
	return cs
}

func (p *pod) commit(cs []Change, opts CommitOptions) (*CommitResult, error) {
	base, err := LoadBase(p.base)
	chk(p.t, err)
	return Commit([]Root{p.root}, cs, p.journal, base, opts)
}

func chk(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func put(t testing.TB, path, data string, mode os.FileMode) {
	t.Helper()
	chk(t, os.MkdirAll(filepath.Dir(path), 0o755))
	chk(t, os.WriteFile(path, []byte(data), mode))
	chk(t, os.Chmod(path, mode))
}

func readStr(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	chk(t, err)
	return string(b)
}

// snapshot describes a tree exactly: type, mode, owner, mtime (not for
// directories, whose times follow their children), content hash, symlink
// target and xattrs of every entry.
func snapshot(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(root, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		var st unix.Stat_t
		chk(t, unix.Lstat(path, &st))
		desc := fmt.Sprintf("%s %o %d:%d", typeName(st.Mode), st.Mode&07777, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			data, err := os.ReadFile(path)
			chk(t, err)
			desc += fmt.Sprintf(" %d %x", st.Mtim.Nano(), sha256.Sum256(data))
		case unix.S_IFLNK:
			target, _ := os.Readlink(path)
			desc += fmt.Sprintf(" %d ->%q", st.Mtim.Nano(), target)
		}
		desc += xattrDesc(path)
		out[rel] = desc
		return nil
	})
	chk(t, err)
	return out
}

func xattrDesc(path string) string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(path, buf)
	if err != nil || n == 0 {
		return ""
	}
	names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
	slices.Sort(names)
	var s strings.Builder
	for _, name := range names {
		v := make([]byte, 4096)
		m, _ := unix.Lgetxattr(path, name, v)
		fmt.Fprintf(&s, " %s=%q", name, v[:max(m, 0)])
	}
	return s.String()
}

func sameSnapshot(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q = %q, want %q", what, k, got[k], v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected %q = %q", what, k, v)
		}
	}
}

func lstatT(t testing.TB, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	chk(t, unix.Lstat(path, &st))
	return st
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// TestCommitEveryKindThenUndo commits every kind of change made through
// a real overlay, checks the host byte by byte, then undoes the commit and
// checks the host is exactly as before.
func TestCommitEveryKindThenUndo(t *testing.T) {
	p := newPod(t, func(h string) {
		put(t, filepath.Join(h, "keep.txt"), "keep\n", 0o644)
		put(t, filepath.Join(h, "mod.txt"), "old\n", 0o640)
		chk(t, os.Chown(filepath.Join(h, "mod.txt"), 1000, 1001))
		put(t, filepath.Join(h, "del.txt"), "bye\n", 0o644)
		put(t, filepath.Join(h, "deldir/a/b.txt"), "deep\n", 0o600)
		chk(t, os.Symlink("keep.txt", filepath.Join(h, "link")))
		chk(t, os.Mkdir(filepath.Join(h, "modedir"), 0o755))
		put(t, filepath.Join(h, "typechg"), "was a file\n", 0o644)
		chk(t, os.Mkdir(filepath.Join(h, "owned"), 0o755))
		chk(t, os.Chown(filepath.Join(h, "owned"), 1234, 1235))
		put(t, filepath.Join(h, "opq/hidden.txt"), "hidden\n", 0o644)
		put(t, filepath.Join(h, "opq/kept.txt"), "kept-old\n", 0o644)
	})
	before := snapshot(t, p.root.Host)
	put(t, p.in("mod.txt"), "new content\n", 0o600)
	put(t, p.in("owned/new.txt"), "fresh\n", 0o755)
	chk(t, unix.Setxattr(p.in("owned/new.txt"), "user.note", []byte("hello"), 0))
	chk(t, os.MkdirAll(p.in("newdir/sub"), 0o750))
	put(t, p.in("newdir/sub/f"), "nested\n", 0o644)
	chk(t, os.Remove(p.in("del.txt")))
	chk(t, os.RemoveAll(p.in("deldir")))
	chk(t, os.Remove(p.in("link")))
	chk(t, os.Symlink("mod.txt", p.in("link")))
	chk(t, os.Chmod(p.in("modedir"), 0o700))
	chk(t, os.Remove(p.in("typechg")))
	chk(t, os.Mkdir(p.in("typechg"), 0o755))
	put(t, p.in("typechg/child"), "child\n", 0o644)
	chk(t, os.RemoveAll(p.in("opq")))
	put(t, p.in("opq/kept.txt"), "kept-new\n", 0o644)
	chk(t, unix.Mkfifo(p.in("fifo"), 0o644))
	cs := p.diff()
	upperMtime := lstatT(t, filepath.Join(p.root.Upper, "mod.txt")).Mtim

	res, err := p.commit(cs, CommitOptions{Actor: "tester"})
	chk(t, err)
	if len(res.Skipped) != 1 || res.Skipped[0].Path != "fifo" || !strings.Contains(res.Skipped[0].Reason, "FIFO") {
		t.Errorf("skipped = %+v, want the fifo", res.Skipped)
	}
	h := p.host
	if got := readStr(t, h("mod.txt")); got != "new content\n" {
		t.Errorf("mod.txt = %q", got)
	}
	st := lstatT(t, h("mod.txt"))
	if st.Mode&07777 != 0o600 || st.Uid != 1000 || st.Gid != 1001 || st.Mtim != upperMtime {
		t.Errorf("mod.txt mode %o owner %d:%d mtime %v; want 600 1000:1001 %v", st.Mode&07777, st.Uid, st.Gid, st.Mtim, upperMtime)
	}
	st = lstatT(t, h("owned/new.txt"))
	if st.Uid != 1234 || st.Gid != 1235 || st.Mode&07777 != 0o755 {
		t.Errorf("new file owner %d:%d mode %o, want its parent's owner 1234:1235 and 755", st.Uid, st.Gid, st.Mode&07777)
	}
	if v := xattrDesc(h("owned/new.txt")); v != ` user.note="hello"` {
		t.Errorf("new file xattrs %s, want user.note only", v)
	}
	if readStr(t, h("newdir/sub/f")) != "nested\n" || lstatT(t, h("newdir/sub")).Mode&0o777 != 0o750 {
		t.Errorf("nested new directory not committed with its mode")
	}
	for _, gone := range []string{"del.txt", "deldir", "opq/hidden.txt", "fifo"} {
		if exists(h(gone)) {
			t.Errorf("%s still on the host", gone)
		}
	}
	if target, _ := os.Readlink(h("link")); target != "mod.txt" {
		t.Errorf("link -> %q, want mod.txt", target)
	}
	if lstatT(t, h("modedir")).Mode&0o777 != 0o700 || readStr(t, h("typechg/child")) != "child\n" || readStr(t, h("opq/kept.txt")) != "kept-new\n" {
		t.Errorf("modedir, typechg or opq not committed")
	}
	// The layer no longer shows what was committed: only the fifo is left.
	left, err := Diff([]Root{p.root}, DiffOptions{})
	chk(t, err)
	if len(left) != 1 || left[0].Path != "fifo" {
		t.Errorf("after commit the diff shows %v, want only the fifo", left)
	}
	infos, err := ListCommits(p.journal)
	chk(t, err)
	if len(infos) != 1 || infos[0].ID != res.ID || infos[0].State != "applied" || infos[0].Actor != "tester" {
		t.Fatalf("commits = %+v", infos)
	}

	info, err := Undo(p.journal, "", false)
	chk(t, err)
	if info.ID != res.ID || info.State != "undone" {
		t.Errorf("undo = %+v", info)
	}
	sameSnapshot(t, "host after undo", snapshot(t, p.root.Host), before)
	if _, err := Undo(p.journal, "", false); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("second undo: %v, want ErrNotFound", err)
	}
}

// TestCommitStripsPrivilege: a setuid/setgid file with a file capability
// and trusted.* xattr reaches the host as a plain file.
func TestCommitStripsPrivilege(t *testing.T) {
	for _, link := range []bool{true, false} {
		t.Run(fmt.Sprintf("link=%v", link), func(t *testing.T) {
			defer setLink(link)()
			p := newPod(t, nil)
			put(t, p.in("suid"), "#!/bin/sh\n", 0o755)
			chk(t, os.Chmod(p.in("suid"), 0o6755|os.ModeSetuid|os.ModeSetgid|os.ModeSticky))
			p.unmount()
			up := filepath.Join(p.root.Upper, "suid")
			// cap_setuid+ep, as setcap would write it (VFS_CAP_REVISION_2).
			capv := []byte{0, 0, 0, 2, 0x80, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
			chk(t, unix.Setxattr(up, "security.capability", capv, 0))
			chk(t, unix.Setxattr(up, "trusted.evil", []byte("x"), 0))
			chk(t, unix.Setxattr(up, "user.overlay.opaque", []byte("y"), 0))
			chk(t, unix.Chmod(up, 0o6755|unix.S_ISVTX))
			cs := p.diff()
			_, err := p.commit(cs, CommitOptions{})
			chk(t, err)
			st := lstatT(t, p.host("suid"))
			if st.Mode&07777 != 0o755 {
				t.Errorf("committed mode %o, want 755 (set-id and sticky stripped)", st.Mode&07777)
			}
			if x := xattrDesc(p.host("suid")); x != "" {
				t.Errorf("committed xattrs %s, want none", x)
			}
		})
	}
}

func setLink(v bool) func() {
	old := linkFromLayer
	linkFromLayer = v
	return func() { linkFromLayer = old }
}

// TestCommitUpperSymlinkIsCopiedNotFollowed: the agent plants a symlink to
// a file outside the workspace; commit creates the symlink and never
// writes through it, even where the host had a regular file.
func TestCommitUpperSymlinkIsCopiedNotFollowed(t *testing.T) {
	p := newPod(t, func(h string) { put(t, filepath.Join(h, "victim"), "host\n", 0o644) })
	secret := filepath.Join(p.outside, "secret")
	put(t, secret, "outside\n", 0o600)
	chk(t, os.Remove(p.in("victim")))
	chk(t, os.Symlink(secret, p.in("victim")))
	chk(t, os.Symlink(p.outside, p.in("escape")))
	cs := p.diff()
	_, err := p.commit(cs, CommitOptions{})
	chk(t, err)
	if target, err := os.Readlink(p.host("victim")); err != nil || target != secret {
		t.Errorf("victim is not the symlink %s: %q %v", secret, target, err)
	}
	if readStr(t, secret) != "outside\n" || lstatT(t, secret).Mode&0o777 != 0o600 {
		t.Errorf("file outside the workspace was changed")
	}
}

// TestCommitHostComponentSwappedForSymlink: between diff and commit a
// host directory on the path is replaced by a symlink to a directory
// outside the workspace. Commit must write nothing there.
func TestCommitHostComponentSwappedForSymlink(t *testing.T) {
	for _, kind := range []string{"modify", "add", "delete"} {
		t.Run(kind, func(t *testing.T) {
			p := newPod(t, func(h string) { put(t, filepath.Join(h, "sub/f"), "host\n", 0o644) })
			put(t, filepath.Join(p.outside, "f"), "outside\n", 0o644)
			switch kind {
			case "modify":
				put(t, p.in("sub/f"), "pod\n", 0o644)
			case "add":
				put(t, p.in("sub/new"), "pod\n", 0o644)
			case "delete":
				chk(t, os.Remove(p.in("sub/f")))
			}
			cs := p.diff()
			chk(t, os.Rename(p.host("sub"), p.host("sub.old")))
			chk(t, os.Symlink(p.outside, p.host("sub")))
			outBefore := snapshot(t, p.outside)
			_, err := p.commit(cs, CommitOptions{Force: true})
			if err == nil {
				t.Errorf("commit through a swapped symlink succeeded")
			}
			sameSnapshot(t, "outside", snapshot(t, p.outside), outBefore)
			if list, _ := os.ReadDir(p.journal); len(list) > 0 {
				if infos, _ := ListCommits(p.journal); len(infos) > 0 {
					t.Errorf("a failed commit left a journal: %+v", infos)
				}
			}
		})
	}
}

// TestCommitHostHardlinkNotWrittenThrough: the host target is a hard link
// to a file outside the workspace; the outside file must stay unchanged.
func TestCommitHostHardlinkNotWrittenThrough(t *testing.T) {
	for _, link := range []bool{true, false} {
		t.Run(fmt.Sprintf("link=%v", link), func(t *testing.T) {
			defer setLink(link)()
			var outside string
			p := newPod(t, func(h string) {
				outside = filepath.Join(filepath.Dir(h), "outside", "shadow")
				put(t, outside, "precious\n", 0o600)
				chk(t, os.Link(outside, filepath.Join(h, "target")))
			})
			put(t, p.in("target"), "pod wrote this\n", 0o644)
			cs := p.diff()
			_, err := p.commit(cs, CommitOptions{})
			chk(t, err)
			if readStr(t, outside) != "precious\n" || lstatT(t, outside).Mode&0o777 != 0o600 {
				t.Errorf("outside hard link was written through")
			}
			if readStr(t, p.host("target")) != "pod wrote this\n" {
				t.Errorf("target not committed")
			}
			chk(t, func() error { _, err := Undo(p.journal, "", false); return err }())
			if lstatT(t, p.host("target")).Ino != lstatT(t, outside).Ino {
				t.Errorf("undo did not restore the original hard link")
			}
		})
	}
}

// TestCommitSkipsSpecialFiles: FIFOs, sockets and device nodes never reach the host.
func TestCommitSkipsSpecialFiles(t *testing.T) {
	p := newPod(t, nil)
	chk(t, unix.Mkfifo(p.in("fifo"), 0o644))
	chk(t, unix.Mknod(p.in("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	chk(t, unix.Mknod(p.in("disk"), unix.S_IFBLK|0o666, int(unix.Mkdev(8, 0))))
	cs := p.diff()
	res, err := p.commit(cs, CommitOptions{})
	chk(t, err)
	if len(res.Skipped) != 3 || len(res.Applied) != 0 || res.ID != "" {
		t.Errorf("result %+v, want three skipped and nothing applied", res)
	}
	for _, s := range res.Skipped {
		if !strings.HasSuffix(s.Reason, ": not committed") {
			t.Errorf("skip reason %q", s.Reason)
		}
	}
	for _, n := range []string{"fifo", "null", "disk"} {
		if exists(p.host(n)) {
			t.Errorf("%s reached the host", n)
		}
	}
}

// TestCommitHostileNames: 255-byte names, terminal escapes, newlines and a
// path deeper than PATH_MAX all commit, and undo, exactly.
func TestCommitHostileNames(t *testing.T) {
	p := newPod(t, nil)
	long := strings.Repeat("n", 255)
	weird := "evil\x1b]0;pwned\x07\nname\r"
	put(t, p.in(long), "long\n", 0o644)
	put(t, p.in(weird), "weird\n", 0o644)
	deep := deepDirs(t, p.mnt, 300, "dddddddddddddddddd") // 300 x 19 bytes > PATH_MAX
	chk(t, os.WriteFile("/proc/self/fd/"+fmt.Sprint(deep)+"/"+long, []byte("bottom\n"), 0o644))
	unix.Close(deep)
	cs := p.diff()
	res, err := p.commit(cs, CommitOptions{})
	chk(t, err)
	if len(res.Applied) != 303 {
		t.Errorf("applied %d changes, want 303", len(res.Applied))
	}
	if readStr(t, p.host(long)) != "long\n" || readStr(t, p.host(weird)) != "weird\n" {
		t.Errorf("hostile names not committed")
	}
	fd := deepDirs(t, p.root.Host, 300, "dddddddddddddddddd")
	data, err := os.ReadFile("/proc/self/fd/" + fmt.Sprint(fd) + "/" + long)
	unix.Close(fd)
	if err != nil || string(data) != "bottom\n" {
		t.Errorf("deep file: %q %v", data, err)
	}
	_, err = Undo(p.journal, "", false)
	chk(t, err)
	if ents, _ := os.ReadDir(p.root.Host); len(ents) != 0 {
		t.Errorf("undo left %d entries on the host", len(ents))
	}
}

// deepDirs creates (or opens) n nested directories named name under root
// through fds and returns an fd of the deepest.
func deepDirs(t testing.TB, root string, n int, name string) int {
	t.Helper()
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	chk(t, err)
	for range n {
		if err := unix.Mkdirat(fd, name, 0o755); err != nil && err != unix.EEXIST {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		chk(t, err)
		unix.Close(fd)
		fd = next
	}
	return fd
}

// TestCommitWholeWorkspaceRemoved: rm -rf of the whole workspace in the
// pod changes the host only when committed; rollback restores the view;
// a committed removal is undone exactly.
func TestCommitWholeWorkspaceRemoved(t *testing.T) {
	p := newPod(t, func(h string) {
		put(t, filepath.Join(h, "a/b/c.txt"), "c\n", 0o644)
		put(t, filepath.Join(h, "top.txt"), "top\n", 0o600)
		chk(t, os.Symlink("/etc/passwd", filepath.Join(h, "a/pw")))
	})
	before := snapshot(t, p.root.Host)
	ents, _ := os.ReadDir(p.mnt)
	for _, e := range ents {
		chk(t, os.RemoveAll(p.in(e.Name())))
	}
	cs := p.diff()
	if len(cs) != 2 {
		t.Fatalf("diff after rm -rf: %v", cs)
	}
	sameSnapshot(t, "host before commit", snapshot(t, p.root.Host), before)
	chk(t, Rollback([]Root{p.root}, cs))
	p.mount()
	sameSnapshot(t, "pod view after rollback", snapshot(t, p.mnt), before)
	for _, e := range ents {
		chk(t, os.RemoveAll(p.in(e.Name())))
	}
	cs = p.diff()
	_, err := p.commit(cs, CommitOptions{})
	chk(t, err)
	if left, _ := os.ReadDir(p.root.Host); len(left) != 0 {
		t.Errorf("host keeps %d entries after committing rm -rf", len(left))
	}
	_, err = Undo(p.journal, "", false)
	chk(t, err)
	sameSnapshot(t, "host after undo", snapshot(t, p.root.Host), before)
}

// TestCommitConflicts: a host file changed after the pod copied it, a
// path created on the host that the pod added, and a file changed during
// the run all stop the commit (nothing applied) unless forced.
func TestCommitConflicts(t *testing.T) {
	p := newPod(t, func(h string) {
		put(t, filepath.Join(h, "edited"), "v1\n", 0o644)
		put(t, filepath.Join(h, "calm"), "v1\n", 0o644)
	})
	put(t, p.in("edited"), "pod\n", 0o644)
	put(t, p.in("calm"), "pod\n", 0o644)
	put(t, p.in("added"), "pod\n", 0o644)
	cs := p.diff()
	chk(t, RecordBase([]Root{p.root}, p.base, p.runStart()))
	put(t, p.host("edited"), "host edit\n", 0o644)
	put(t, p.host("added"), "host made it too\n", 0o644)

	res, err := p.commit(cs, CommitOptions{})
	if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "2 paths changed on the host") {
		t.Fatalf("commit err = %v, want a conflict on 2 paths", err)
	}
	if len(res.Conflicts) != 2 || len(res.Applied) != 0 {
		t.Errorf("result %+v", res)
	}
	if readStr(t, p.host("calm")) != "v1\n" || readStr(t, p.host("edited")) != "host edit\n" {
		t.Errorf("a conflicting commit changed the host")
	}
	if infos, _ := ListCommits(p.journal); len(infos) != 0 {
		t.Errorf("a refused commit was journaled")
	}
	dry, err := p.commit(cs, CommitOptions{Force: true, DryRun: true})
	chk(t, err)
	if !dry.DryRun || len(dry.Applied) != 3 || readStr(t, p.host("calm")) != "v1\n" {
		t.Errorf("dry run %+v touched the host or misreported", dry)
	}
	_, err = p.commit(cs, CommitOptions{Force: true})
	chk(t, err)
	for _, n := range []string{"edited", "calm", "added"} {
		if readStr(t, p.host(n)) != "pod\n" {
			t.Errorf("%s not committed with --force", n)
		}
	}
	// Committed paths leave the base: the next run records them afresh.
	b, err := LoadBase(p.base)
	chk(t, err)
	if len(b.Roots["workspace"]) != 0 {
		t.Errorf("base still holds %v", b.Roots["workspace"])
	}
}

// TestCommitChangedDuringRun: a host file changed while the pod ran is
// always a conflict, since the pod may have copied the old version.
func TestCommitChangedDuringRun(t *testing.T) {
	p := newPod(t, func(h string) { put(t, filepath.Join(h, "f"), "v1\n", 0o644) })
	start := p.runStart()
	put(t, p.in("f"), "pod\n", 0o644)
	put(t, p.host("f"), "host during run\n", 0o644) // after runStart
	cs := p.diff()
	chk(t, RecordBase([]Root{p.root}, p.base, start))
	_, err := p.commit(cs, CommitOptions{})
	if !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("commit err = %v, want conflict", err)
	}
}

// runStart is a run start time after every file created so far (the
// kernel's coarse file clock and ctimeSlack are waited out).
func (p *pod) runStart() time.Time {
	p.t.Helper()
	time.Sleep(ctimeSlack + 10*time.Millisecond)
	var st unix.Stat_t
	f := filepath.Join(p.t.TempDir(), "clock")
	chk(p.t, os.WriteFile(f, nil, 0o600))
	chk(p.t, unix.Stat(f, &st))
	return time.Unix(0, st.Ctim.Nano()+1)
}

// TestUndoRefusesChangedHost: a host path changed after the commit makes
// undo refuse unless forced.
func TestUndoRefusesChangedHost(t *testing.T) {
	p := newPod(t, func(h string) { put(t, filepath.Join(h, "f"), "v1\n", 0o644) })
	put(t, p.in("f"), "pod\n", 0o644)
	cs := p.diff()
	_, err := p.commit(cs, CommitOptions{})
	chk(t, err)
	put(t, p.host("f"), "edited after commit\n", 0o644)
	if _, err := Undo(p.journal, "", false); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("undo err = %v, want conflict", err)
	}
	if readStr(t, p.host("f")) != "edited after commit\n" {
		t.Errorf("refused undo changed the host")
	}
	_, err = Undo(p.journal, "", true)
	chk(t, err)
	if readStr(t, p.host("f")) != "v1\n" {
		t.Errorf("forced undo did not restore the file")
	}
}

// TestCommitLayerParentSwappedForSymlink: a layer directory is replaced by
// a symlink to an outside directory holding a file of the changed name.
// Commit must refuse rather than copy the outside file onto the host.
func TestCommitLayerParentSwappedForSymlink(t *testing.T) {
	p := newPod(t, nil)
	put(t, p.in("a/f"), "pod\n", 0o644)
	cs := p.diff()
	put(t, filepath.Join(p.outside, "f"), "outside secret\n", 0o600)
	chk(t, os.RemoveAll(filepath.Join(p.root.Upper, "a")))
	chk(t, os.Symlink(p.outside, filepath.Join(p.root.Upper, "a")))
	if _, err := p.commit(cs, CommitOptions{Force: true}); err == nil {
		t.Errorf("commit through a symlinked layer directory succeeded")
	}
	if exists(p.host("a/f")) {
		t.Errorf("the outside file reached the host")
	}
}

// TestCommitSymlinkReplacedByDirectory: the host has a symlink to a
// directory outside; the pod replaced it by a real directory with files.
// Commit turns the symlink into that directory (never writing through it)
// and undo brings the symlink back.
func TestCommitSymlinkReplacedByDirectory(t *testing.T) {
	p := newPod(t, func(h string) {
		chk(t, os.Symlink(filepath.Join(filepath.Dir(h), "outside"), filepath.Join(h, "link")))
	})
	put(t, filepath.Join(p.outside, "f"), "outside\n", 0o644)
	chk(t, os.Remove(p.in("link")))
	put(t, p.in("link/f"), "pod\n", 0o644)
	put(t, p.in("link/deeper/g"), "pod g\n", 0o644)
	outBefore := snapshot(t, p.outside)
	_, err := p.commit(p.diff(), CommitOptions{})
	chk(t, err)
	sameSnapshot(t, "outside", snapshot(t, p.outside), outBefore)
	if st := lstatT(t, p.host("link")); st.Mode&unix.S_IFMT != unix.S_IFDIR || readStr(t, p.host("link/deeper/g")) != "pod g\n" {
		t.Fatalf("host link is not the pod's directory")
	}
	_, err = Undo(p.journal, "", false)
	chk(t, err)
	if got, err := os.Readlink(p.host("link")); err != nil || got != p.outside {
		t.Fatalf("undo: link = %q, %v", got, err)
	}
	sameSnapshot(t, "outside after undo", snapshot(t, p.outside), outBefore)
}
