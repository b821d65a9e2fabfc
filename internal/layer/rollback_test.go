package layer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// TestRollbackRestoresView rolls back every kind of change and checks the
// pod sees the host again, with nothing left in the layer.
func TestRollbackRestoresView(t *testing.T) {
	p := newPod(t, func(h string) {
		put(t, filepath.Join(h, "mod.txt"), "old\n", 0o644)
		put(t, filepath.Join(h, "del.txt"), "bye\n", 0o644)
		put(t, filepath.Join(h, "opq/a"), "a\n", 0o644)
		put(t, filepath.Join(h, "opq/b"), "b\n", 0o644)
		put(t, filepath.Join(h, "dir/x"), "x\n", 0o644)
		put(t, filepath.Join(h, "typechg"), "file\n", 0o644)
	})
	view := snapshot(t, p.mnt)
	put(t, p.in("mod.txt"), "new\n", 0o600)
	chk(t, os.Remove(p.in("del.txt")))
	chk(t, os.RemoveAll(p.in("opq")))
	put(t, p.in("opq/a"), "replaced\n", 0o644)
	chk(t, os.Chmod(p.in("dir"), 0o700))
	put(t, p.in("added/deep/f"), "f\n", 0o644)
	chk(t, os.Remove(p.in("typechg")))
	chk(t, os.Mkdir(p.in("typechg"), 0o755))
	cs := p.diff()
	chk(t, Rollback([]Root{p.root}, cs))
	if left, err := Diff([]Root{p.root}, DiffOptions{}); err != nil || len(left) != 0 {
		t.Fatalf("after rollback the diff shows %v (%v)", left, err)
	}
	if ents, _ := os.ReadDir(p.root.Upper); len(ents) != 0 {
		t.Errorf("layer keeps %d top-level entries after a full rollback", len(ents))
	}
	p.mount()
	sameSnapshot(t, "pod view after rollback", snapshot(t, p.mnt), view)
}

// TestRollbackPartial rolls back one change and keeps the others.
func TestRollbackPartial(t *testing.T) {
	p := newPod(t, func(h string) { put(t, filepath.Join(h, "dir/keep"), "k\n", 0o644) })
	put(t, p.in("dir/one"), "1\n", 0o644)
	put(t, p.in("dir/two"), "2\n", 0o644)
	chk(t, os.Chmod(p.in("dir"), 0o700))
	cs := p.diff()
	var chosen []Change
	for _, c := range cs {
		if c.Path == "dir" || c.Path == "dir/one" {
			chosen = append(chosen, c)
		}
	}
	chk(t, Rollback([]Root{p.root}, chosen))
	left, err := Diff([]Root{p.root}, DiffOptions{})
	chk(t, err)
	if len(left) != 1 || left[0].Path != "dir/two" {
		t.Errorf("after partial rollback: %v, want only dir/two", left)
	}
}

// TestRollbackNeverFollowsSymlinks: the agent plants symlinks in the layer
// to directories and files outside; rollback removes the links only.
func TestRollbackNeverFollowsSymlinks(t *testing.T) {
	p := newPod(t, nil)
	put(t, filepath.Join(p.outside, "precious"), "keep me\n", 0o644)
	put(t, filepath.Join(p.outside, "sub/precious2"), "keep me too\n", 0o644)
	chk(t, os.Symlink(p.outside, p.in("link-to-dir")))
	chk(t, os.Mkdir(p.in("tree"), 0o755))
	chk(t, os.Symlink(p.outside, p.in("tree/inner")))
	chk(t, os.Symlink(filepath.Join(p.outside, "precious"), p.in("tree/file-link")))
	cs := p.diff()
	before := snapshot(t, p.outside)
	chk(t, Rollback([]Root{p.root}, cs))
	sameSnapshot(t, "outside after rollback", snapshot(t, p.outside), before)
	if ents, _ := os.ReadDir(p.root.Upper); len(ents) != 0 {
		t.Errorf("layer keeps %d entries", len(ents))
	}
}

// TestRollbackLayerParentSwappedForSymlink: a layer directory named by a
// change is replaced with a symlink to an outside directory holding a file
// of the same name. Rollback must not delete the outside file.
func TestRollbackLayerParentSwappedForSymlink(t *testing.T) {
	p := newPod(t, nil)
	put(t, p.in("a/f"), "pod\n", 0o644)
	cs := p.diff()
	put(t, filepath.Join(p.outside, "f"), "outside\n", 0o644)
	chk(t, os.RemoveAll(filepath.Join(p.root.Upper, "a")))
	chk(t, os.Symlink(p.outside, filepath.Join(p.root.Upper, "a")))
	var fOnly []Change
	for _, c := range cs {
		if c.Path == "a/f" {
			fOnly = append(fOnly, c)
		}
	}
	err := Rollback([]Root{p.root}, fOnly)
	if readStr(t, filepath.Join(p.outside, "f")) != "outside\n" {
		t.Fatalf("rollback deleted a file outside the layer (err %v)", err)
	}
	if err == nil {
		t.Errorf("rollback through a symlinked layer directory reported success")
	}
}

// TestRollbackOpaqueChildAlone: a deletion hidden by an opaque directory
// cannot be rolled back on its own; the error names the directory.
func TestRollbackOpaqueChildAlone(t *testing.T) {
	p := newPod(t, func(h string) {
		put(t, filepath.Join(h, "opq/a"), "a\n", 0o644)
		put(t, filepath.Join(h, "opq/b"), "b\n", 0o644)
	})
	chk(t, os.RemoveAll(p.in("opq")))
	chk(t, os.Mkdir(p.in("opq"), 0o755))
	cs := p.diff()
	var child []Change
	for _, c := range cs {
		if c.Path == "opq/a" {
			child = append(child, c)
		}
	}
	if len(child) != 1 {
		t.Fatalf("diff %v has no opq/a deletion", cs)
	}
	err := Rollback([]Root{p.root}, child)
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "roll back opq instead") {
		t.Fatalf("err = %v, want ErrInvalid naming opq", err)
	}
}

func TestRollbackRejectsBadPaths(t *testing.T) {
	p := newPod(t, nil)
	p.unmount()
	for _, bad := range []string{"../x", "/etc/passwd", "a/../../b", "", "a//b", "."} {
		err := Rollback([]Root{p.root}, []Change{{Root: "workspace", Path: bad, Kind: Added, Type: "file"}})
		if !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Rollback(%q) = %v, want ErrInvalid", bad, err)
		}
		_, err = Commit([]Root{p.root}, []Change{{Root: "workspace", Path: bad, Kind: Deleted}}, p.journal, nil, CommitOptions{})
		if !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Commit(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}
