package layer

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/testutil"
)

// TestUndoJournalOnAnotherFileSystem keeps the journal on a tmpfs, so
// backups cannot be hard links and are copies: undo must still restore
// content, mode, owner, mtime, xattrs and symlinks exactly.
func TestUndoJournalOnAnotherFileSystem(t *testing.T) {
	p := newPod(t, func(h string) {
		put(t, filepath.Join(h, "mod.txt"), "old\n", 0o640)
		chk(t, os.Chown(filepath.Join(h, "mod.txt"), 1000, 1000))
		chk(t, unix.Setxattr(filepath.Join(h, "mod.txt"), "user.tag", []byte("v"), 0))
		put(t, filepath.Join(h, "tree/a/b"), "b\n", 0o600)
		chk(t, os.Symlink("../mod.txt", filepath.Join(h, "tree/link")))
		put(t, filepath.Join(h, "gone"), "gone\n", 0o644)
	})
	jdir := filepath.Join(t.TempDir(), "tmpfs")
	chk(t, os.Mkdir(jdir, 0o700))
	if err := unix.Mount("tmpfs", jdir, "tmpfs", 0, "size=64m"); err != nil {
		testutil.RequireFeature(t, false, "tmpfs: "+err.Error())
	}
	defer func() { chk(t, unix.Unmount(jdir, 0)) }()
	p.journal = filepath.Join(jdir, "journal")
	before := snapshot(t, p.root.Host)
	put(t, p.in("mod.txt"), "new\n", 0o644)
	chk(t, os.RemoveAll(p.in("tree")))
	chk(t, os.Remove(p.in("gone")))
	put(t, p.in("gone"), "back as new\n", 0o600)
	cs := p.diff()
	res, err := p.commit(cs, CommitOptions{})
	chk(t, err)
	if exists(p.host("tree")) || readStr(t, p.host("mod.txt")) != "new\n" {
		t.Fatalf("commit not applied")
	}
	info, err := Undo(p.journal, res.ID, false)
	chk(t, err)
	if info.State != stateUndone {
		t.Errorf("undo state %q", info.State)
	}
	sameSnapshot(t, "host after undo", snapshot(t, p.root.Host), before)
	if _, err := Undo(p.journal, res.ID, false); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("undoing twice: %v, want conflict", err)
	}
	if _, err := Undo(p.journal, "no-such-commit", false); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("undo of an unknown id: %v, want not found", err)
	}
	if _, err := Undo(p.journal, "../../etc", false); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("undo of a climbing id: %v, want invalid", err)
	}
}

// TestUndoLatestFirst: with two commits, undo without an id undoes the
// newer one, then the older one.
func TestUndoLatestFirst(t *testing.T) {
	p := newPod(t, func(h string) { put(t, filepath.Join(h, "f"), "v0\n", 0o644) })
	put(t, p.in("f"), "v1\n", 0o644)
	first, err := p.commit(p.diff(), CommitOptions{})
	chk(t, err)
	p.mount()
	put(t, p.in("f"), "v2\n", 0o644)
	second, err := p.commit(p.diff(), CommitOptions{})
	chk(t, err)
	if info, err := Undo(p.journal, "", false); err != nil || info.ID != second.ID || readStr(t, p.host("f")) != "v1\n" {
		t.Fatalf("first undo: %+v %v, host %q", info, err, readStr(t, p.host("f")))
	}
	if info, err := Undo(p.journal, "", false); err != nil || info.ID != first.ID || readStr(t, p.host("f")) != "v0\n" {
		t.Fatalf("second undo: %+v %v", info, err)
	}
}
