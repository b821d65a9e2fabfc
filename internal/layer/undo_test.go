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

// changeSet summarises changes as "kind path type mode" lines, for
// comparing two diffs.
func changeSet(cs []Change) map[string]bool {
	out := map[string]bool{}
	for _, c := range cs {
		out[string(c.Kind)+" "+c.Path+" "+c.Type+" "+octalMode(c.Mode, c.Type)] = true
	}
	return out
}

// TestUndoGivesChangesBack: undo is the way back to before the commit: the
// host as it was, and the changes in the layer again, with their content,
// for the person to review and commit again. A path the pod changed again
// after the commit keeps that newer version.
func TestUndoGivesChangesBack(t *testing.T) {
	for _, upperElsewhere := range []bool{false, true} {
		t.Run(map[bool]string{false: "same file system", true: "layer on another file system"}[upperElsewhere], func(t *testing.T) {
			p := newPod(t, func(h string) {
				put(t, filepath.Join(h, "mod.txt"), "old\n", 0o644)
				put(t, filepath.Join(h, "gone.txt"), "gone\n", 0o644)
				put(t, filepath.Join(h, "olddir/x"), "x\n", 0o644)
				put(t, filepath.Join(h, "keep/later.txt"), "host\n", 0o644)
				chk(t, os.Mkdir(filepath.Join(h, "modedir"), 0o755))
			})
			if upperElsewhere {
				p.unmount()
				moveUpperToTmpfs(t, p)
				p.mount()
			}
			before := snapshot(t, p.root.Host)
			put(t, p.in("mod.txt"), "pod\n", 0o600)
			chk(t, os.Remove(p.in("gone.txt")))
			chk(t, os.RemoveAll(p.in("olddir")))
			chk(t, os.Chmod(p.in("modedir"), 0o700))
			put(t, p.in("new/deep/f.txt"), "new\n", 0o644)
			chk(t, os.Symlink("mod.txt", p.in("link")))
			put(t, p.in("keep/later.txt"), "pod v1\n", 0o644)
			cs := p.diff()
			want := changeSet(cs)
			res, err := p.commit(cs, CommitOptions{})
			chk(t, err)
			if left := p.diff(); len(left) != 0 {
				t.Fatalf("commit left %d changes", len(left))
			}
			// The pod runs again and changes one committed path once more.
			p.mount()
			put(t, p.in("keep/later.txt"), "pod v2\n", 0o644)
			p.unmount()
			info, err := Undo(p.journal, res.ID, false)
			chk(t, err)
			sameSnapshot(t, "host after undo", snapshot(t, p.root.Host), before)
			if info.BackInLayer == 0 {
				t.Errorf("undo gave nothing back to the layer")
			}
			got := changeSet(p.diff())
			for c := range want {
				if !got[c] {
					t.Errorf("after undo the layer lacks %q (has %v)", c, got)
				}
			}
			for c := range got {
				if !want[c] {
					t.Errorf("after undo the layer has the unexpected %q", c)
				}
			}
			p.mount()
			if readStr(t, p.in("mod.txt")) != "pod\n" || readStr(t, p.in("new/deep/f.txt")) != "new\n" || readStr(t, p.in("keep/later.txt")) != "pod v2\n" {
				t.Errorf("the pod's view after undo: mod %q new %q later %q", readStr(t, p.in("mod.txt")), readStr(t, p.in("new/deep/f.txt")), readStr(t, p.in("keep/later.txt")))
			}
			if exists(p.in("gone.txt")) || exists(p.in("olddir")) {
				t.Errorf("deletions are not back in the layer")
			}
			// A host edit after the undo is still caught as a conflict ...
			put(t, p.host("mod.txt"), "edited after the undo\n", 0o644)
			if _, err := p.commit(p.diff(), CommitOptions{}); !errors.Is(err, errdefs.ErrConflict) {
				t.Errorf("commit over a host edit made after the undo: %v, want a conflict", err)
			}
			chk(t, os.WriteFile(p.host("mod.txt"), []byte("old\n"), 0o644))
			// ... and committing again gives the host the pod's versions.
			if res, err := p.commit(p.diff(), CommitOptions{Force: true}); err != nil {
				t.Fatalf("commit after undo: %v %+v", err, res.Conflicts)
			}
			if readStr(t, p.host("mod.txt")) != "pod\n" || exists(p.host("gone.txt")) || readStr(t, p.host("keep/later.txt")) != "pod v2\n" {
				t.Errorf("second commit did not apply the given-back changes")
			}
		})
	}
}

// moveUpperToTmpfs puts the pod's upper and work directories on a tmpfs
// of their own, so moving entries between host and layer crosses file
// systems.
func moveUpperToTmpfs(t *testing.T, p *pod) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layerfs")
	chk(t, os.Mkdir(dir, 0o700))
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64m"); err != nil {
		testutil.RequireFeature(t, false, "tmpfs: "+err.Error())
	}
	t.Cleanup(func() { p.unmount(); chk(t, unix.Unmount(dir, unix.MNT_DETACH)) })
	p.root.Upper, p.root.Work = filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	chk(t, os.Mkdir(p.root.Upper, 0o755))
	chk(t, os.Mkdir(p.root.Work, 0o755))
}
