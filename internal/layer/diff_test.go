package layer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/internal/testutil"
	"golang.org/x/sys/unix"
)

// diffOverlay is a real overlay over a temporary lower directory.
type diffOverlay struct {
	root    Root
	mnt     string
	mounted bool
}

// newDiffOverlay builds the lower tree with fill, then mounts the overlay
// the way a pod does. It is always unmounted by the end of the test.
func newDiffOverlay(t *testing.T, fill func(lower string)) *diffOverlay {
	t.Helper()
	testutil.RequireRoot(t)
	base := t.TempDir()
	o := &diffOverlay{root: Root{Name: "workspace", Host: filepath.Join(base, "lower"),
		Upper: filepath.Join(base, "upper"), Work: filepath.Join(base, "work")}, mnt: filepath.Join(base, "mnt")}
	for _, d := range []string{o.root.Host, o.root.Upper, o.root.Work, o.mnt} {
		diffMust(t, os.Mkdir(d, 0o755))
	}
	if fill != nil {
		fill(o.root.Host)
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=off,metacopy=off,index=off",
		o.root.Host, o.root.Upper, o.root.Work)
	if err := unix.Mount("overlay", o.mnt, "overlay", 0, opts); err != nil {
		testutil.RequireFeature(t, false, "overlayfs: "+err.Error())
	}
	o.mounted = true
	t.Cleanup(func() {
		o.unmount(t)
		if testutil.Mounted(base) {
			t.Errorf("mount left behind under %s", base)
		}
	})
	return o
}

func (o *diffOverlay) unmount(t *testing.T) {
	t.Helper()
	if !o.mounted {
		return
	}
	if err := unix.Unmount(o.mnt, 0); err != nil {
		t.Fatalf("unmounting test overlay: %v", err)
	}
	o.mounted = false
}

func (o *diffOverlay) p(rel string) string { return filepath.Join(o.mnt, rel) }

func diffMust(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func diffWrite(t testing.TB, path, data string, mode os.FileMode) {
	t.Helper()
	diffMust(t, os.MkdirAll(filepath.Dir(path), 0o755))
	diffMust(t, os.WriteFile(path, []byte(data), mode))
	diffMust(t, os.Chmod(path, mode))
}

// diffRender prints a change compactly for exact comparison.
func diffRender(c Change) string {
	s := fmt.Sprintf("%s %s %q %s<-%s %v<-%v", c.Root, c.Kind, c.Path, c.Type, c.OldType, c.Mode, c.OldMode)
	if c.Opaque {
		s += " opaque"
	}
	return s
}

func diffRenderAll(cs []Change) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = diffRender(c)
	}
	return out
}

func assertDiffChanges(t *testing.T, got []Change, want []string) {
	t.Helper()
	g := diffRenderAll(got)
	if strings.Join(g, "\n") == strings.Join(want, "\n") {
		return
	}
	t.Errorf("Diff mismatch\n got:\n  %s\nwant:\n  %s", strings.Join(g, "\n  "), strings.Join(want, "\n  "))
}

func TestDiffEveryKindOfChange(t *testing.T) {
	old := unix.Umask(0o022)
	defer unix.Umask(old)
	name255 := strings.Repeat("n", 255)
	o := newDiffOverlay(t, func(l string) {
		diffWrite(t, l+"/keep.txt", "same\n", 0o644)
		diffWrite(t, l+"/edit.txt", "old\n", 0o644)
		diffWrite(t, l+"/samesize.txt", "aaaa\n", 0o644)
		diffWrite(t, l+"/del.txt", "bye\n", 0o644)
		diffWrite(t, l+"/deltree/a/b/c.txt", "c\n", 0o644)
		diffWrite(t, l+"/deltree/d.txt", "d\n", 0o644)
		diffWrite(t, l+"/opq/x.txt", "x\n", 0o644)
		diffWrite(t, l+"/opq/y.txt", "y\n", 0o644)
		diffWrite(t, l+"/opq/sub/z.txt", "z\n", 0o644)
		diffWrite(t, l+"/run.sh", "#!/bin/sh\n", 0o644)
		diffWrite(t, l+"/tool", "ELF\n", 0o755)
		diffWrite(t, l+"/f2l", "plain\n", 0o644)
		diffMust(t, os.Symlink("a", l+"/lnk"))
		diffWrite(t, l+"/d2f/child.txt", "c\n", 0o644)
		diffWrite(t, l+"/f2d", "file\n", 0o644)
		diffWrite(t, l+"/touched.txt", "t\n", 0o644)
		diffWrite(t, l+"/owned.txt", "o\n", 0o644)
		diffWrite(t, l+"/rename.txt", "r\n", 0o644)
		diffWrite(t, l+"/dirmode/keep", "k\n", 0o644)
		diffWrite(t, l+"/a\nb.txt", "hostile\n", 0o644)
		diffMust(t, os.Symlink("/etc", l+"/hl"))
	})
	m := o.p
	diffWrite(t, m("edit.txt"), "new content\n", 0o644)
	diffWrite(t, m("samesize.txt"), "bbbb\n", 0o644)
	diffMust(t, os.Remove(m("del.txt")))
	diffMust(t, os.RemoveAll(m("deltree")))
	diffMust(t, os.RemoveAll(m("opq")))
	diffMust(t, os.Mkdir(m("opq"), 0o755))
	diffWrite(t, m("opq/x.txt"), "x\n", 0o644)
	diffWrite(t, m("opq/new.txt"), "n\n", 0o644)
	diffMust(t, os.Chmod(m("run.sh"), 0o755))
	diffMust(t, os.Chmod(m("tool"), os.ModeSetuid|0o755))
	diffMust(t, os.Remove(m("f2l")))
	diffMust(t, os.Symlink("target", m("f2l")))
	diffMust(t, os.Remove(m("lnk")))
	diffMust(t, os.Symlink("b", m("lnk")))
	diffMust(t, os.RemoveAll(m("d2f")))
	diffWrite(t, m("d2f"), "now a file\n", 0o644)
	diffMust(t, os.Remove(m("f2d")))
	diffWrite(t, m("f2d/inner.txt"), "i\n", 0o644)
	now := time.Now().Add(time.Hour)
	diffMust(t, os.Chtimes(m("touched.txt"), now, now))
	diffMust(t, os.Chown(m("owned.txt"), 1234, 1234))
	diffMust(t, os.Rename(m("rename.txt"), m("renamed.txt")))
	diffMust(t, os.Chmod(m("dirmode"), 0o700))
	diffMust(t, os.Chtimes(m("dirmode/keep"), now, now))
	diffMust(t, os.Remove(m("a\nb.txt")))
	diffMust(t, os.Remove(m("hl")))
	diffWrite(t, m("hl/passwd"), "fake\n", 0o644)
	diffWrite(t, m("new/deep/file.go"), "package x\n", 0o644)
	for _, n := range []string{"\x1b]0;pwned\x07", "a\nb", "bad\xff\xfeutf8", "\u202eevil.txt", name255} {
		diffWrite(t, m("hostile/"+n), "h\n", 0o644)
	}
	o.unmount(t)

	got, err := Diff([]Root{o.root}, DiffOptions{})
	diffMust(t, err)
	w := "workspace "
	assertDiffChanges(t, got, []string{
		w + `deleted "a\nb.txt" <-file ----------<--rw-r--r--`,
		w + `type "d2f" file<-dir -rw-r--r--<-drwxr-xr-x`,
		w + `deleted "del.txt" <-file ----------<--rw-r--r--`,
		w + `deleted "deltree" <-dir ----------<-drwxr-xr-x`,
		w + `mode "dirmode" dir<-dir drwx------<-drwxr-xr-x`,
		w + `modified "edit.txt" file<-file -rw-r--r--<--rw-r--r--`,
		w + `type "f2d" dir<-file drwxr-xr-x<--rw-r--r--`,
		w + `added "f2d/inner.txt" file<- -rw-r--r--<-----------`,
		w + `type "f2l" symlink<-file Lrwxrwxrwx<--rw-r--r--`,
		w + `type "hl" dir<-symlink drwxr-xr-x<-Lrwxrwxrwx`,
		w + `added "hl/passwd" file<- -rw-r--r--<-----------`,
		w + `added "hostile" dir<- drwxr-xr-x<-----------`,
		w + `added "hostile/\x1b]0;pwned\a" file<- -rw-r--r--<-----------`,
		w + `added "hostile/a\nb" file<- -rw-r--r--<-----------`,
		w + `added "hostile/bad\xff\xfeutf8" file<- -rw-r--r--<-----------`,
		w + `added "hostile/` + name255 + `" file<- -rw-r--r--<-----------`,
		w + `added "hostile/\u202eevil.txt" file<- -rw-r--r--<-----------`,
		w + `modified "lnk" symlink<-symlink Lrwxrwxrwx<-Lrwxrwxrwx`,
		w + `added "new" dir<- drwxr-xr-x<-----------`,
		w + `added "new/deep" dir<- drwxr-xr-x<-----------`,
		w + `added "new/deep/file.go" file<- -rw-r--r--<-----------`,
		w + `modified "opq" dir<-dir drwxr-xr-x<-drwxr-xr-x opaque`,
		w + `added "opq/new.txt" file<- -rw-r--r--<-----------`,
		w + `deleted "opq/sub" <-dir ----------<-drwxr-xr-x`,
		w + `deleted "opq/y.txt" <-file ----------<--rw-r--r--`,
		w + `deleted "rename.txt" <-file ----------<--rw-r--r--`,
		w + `added "renamed.txt" file<- -rw-r--r--<-----------`,
		w + `mode "run.sh" file<-file -rwxr-xr-x<--rw-r--r--`,
		w + `modified "samesize.txt" file<-file -rw-r--r--<--rw-r--r--`,
		w + `mode "tool" file<-file urwxr-xr-x<--rwxr-xr-x`,
	})
}

// TestDiffDeepPath builds a 300-level path (over 4096 bytes in total,
// past PATH_MAX) through the mount by directory file descriptor.
func TestDiffDeepPath(t *testing.T) {
	o := newDiffOverlay(t, nil)
	const levels, comp = 300, "d1234567890123"
	fd, err := unix.Open(o.mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	diffMust(t, err)
	for range levels {
		diffMust(t, unix.Mkdirat(fd, comp, 0o755))
		next, err := unix.Openat(fd, comp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		unix.Close(fd)
		diffMust(t, err)
		fd = next
	}
	f, err := unix.Openat(fd, "leaf", unix.O_CREAT|unix.O_WRONLY, 0o644)
	diffMust(t, err)
	unix.Close(f)
	unix.Close(fd)
	o.unmount(t)

	got, err := Diff([]Root{o.root}, DiffOptions{})
	diffMust(t, err)
	if len(got) != levels+1 {
		t.Fatalf("got %d changes, want %d", len(got), levels+1)
	}
	last := got[len(got)-1]
	wantPath := strings.Repeat(comp+"/", levels) + "leaf"
	if last.Path != wantPath || last.Kind != Added || last.Type != "file" || len(last.Path) <= 4096 {
		t.Fatalf("last change %s, want added file at depth %d", diffRender(last), levels)
	}
	for i := 1; i < len(got); i++ {
		if got[i-1].Path >= got[i].Path {
			t.Fatalf("not sorted at %d", i)
		}
	}
}

// TestDiffForgedUserXattrMarkers is the agent's attempt to make the diff
// report host files as deleted: under a root-mounted overlay it can set
// user.overlay.opaque and user.overlay.whiteout through the mount.
func TestDiffForgedUserXattrMarkers(t *testing.T) {
	o := newDiffOverlay(t, func(l string) {
		diffWrite(t, l+"/src/main.go", "package main\n", 0o644)
		diffWrite(t, l+"/src/util.go", "package main\n", 0o644)
		diffWrite(t, l+"/empty.txt", "", 0o644)
	})
	if err := unix.Setxattr(o.p("src"), "user.overlay.opaque", []byte("y"), 0); err != nil {
		t.Fatalf("setting user.overlay.opaque through the mount: %v", err)
	}
	diffMust(t, unix.Setxattr(o.p("empty.txt"), "user.overlay.whiteout", []byte("y"), 0))
	if _, err := os.Stat(o.p("src/main.go")); err != nil {
		t.Fatalf("inside the pod the forged marker must not hide files: %v", err)
	}
	o.unmount(t)

	got, err := Diff([]Root{o.root}, DiffOptions{})
	diffMust(t, err)
	for _, c := range got {
		if c.Kind == Deleted || c.Opaque {
			t.Errorf("forged marker turned into %s", diffRender(c))
		}
	}
	// A rootless overlay (userxattr) owns user.overlay.*: then they count.
	got, err = Diff([]Root{o.root}, DiffOptions{UserXattr: true})
	diffMust(t, err)
	assertDiffChanges(t, got, []string{
		`workspace deleted "empty.txt" <-file ----------<--rw-r--r--`,
		`workspace modified "src" dir<-dir drwxr-xr-x<-drwxr-xr-x opaque`,
		`workspace deleted "src/main.go" <-file ----------<--rw-r--r--`,
		`workspace deleted "src/util.go" <-file ----------<--rw-r--r--`,
	})
}

// TestDiffUpperSymlinksNotFollowed plants symlinks in the upper that point
// out of the layer; Diff must report them as links and read nothing
// through them.
func TestDiffUpperSymlinksNotFollowed(t *testing.T) {
	o := newDiffOverlay(t, func(l string) { diffMust(t, os.Mkdir(l+"/etc", 0o755)) })
	diffMust(t, os.Symlink("/etc", o.p("escape")))
	diffMust(t, os.Symlink("/etc/passwd", o.p("etc/passwd")))
	o.unmount(t)
	got, err := Diff([]Root{o.root}, DiffOptions{})
	diffMust(t, err)
	assertDiffChanges(t, got, []string{
		`workspace added "escape" symlink<- Lrwxrwxrwx<-----------`,
		`workspace added "etc/passwd" symlink<- Lrwxrwxrwx<-----------`,
	})
}

func TestDiffMultipleRootsAndPaths(t *testing.T) {
	ws := newDiffOverlay(t, nil)
	home := newDiffOverlay(t, nil)
	home.root.Name = "home"
	diffWrite(t, ws.p("src/a.go"), "a\n", 0o644)
	diffWrite(t, ws.p("docs/b.md"), "b\n", 0o644)
	diffWrite(t, home.p(".bashrc"), "x\n", 0o644)
	ws.unmount(t)
	home.unmount(t)
	roots := []Root{ws.root, home.root}

	got, err := Diff(roots, DiffOptions{})
	diffMust(t, err)
	want := []string{"docs", "docs/b.md", "src", "src/a.go", "~/.bashrc"}
	if d := diffDisplays(got); d != strings.Join(want, ",") {
		t.Fatalf("got %s, want %v", d, want)
	}
	got, err = Diff(roots, DiffOptions{Paths: []string{"./src/", "~/.bashrc"}})
	diffMust(t, err)
	if d := diffDisplays(got); d != "src,src/a.go,~/.bashrc" {
		t.Fatalf("selected %s", d)
	}
	got, err = Diff(roots, DiffOptions{Paths: []string{"nothing/here"}})
	if err != nil || len(got) != 0 {
		t.Fatalf("a quiet path: got %v, %v; want no changes and no error", got, err)
	}
	if _, err := Diff(roots, DiffOptions{Paths: []string{"../etc"}}); err == nil {
		t.Fatal("Diff accepted ../etc")
	}
}

func TestDiffMissingLayerIsAnError(t *testing.T) {
	dir := t.TempDir()
	_, err := Diff([]Root{{Name: "workspace", Host: dir, Upper: filepath.Join(dir, "nope")}}, DiffOptions{})
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want a not-exist error", err)
	}
}

func diffDisplays(cs []Change) string {
	var s []string
	for _, c := range cs {
		s = append(s, c.Display())
	}
	return strings.Join(s, ",")
}

// TestDiffHandmadeMarkers checks each whiteout and opaque form the
// overlay may leave, built by hand in the upper.
func TestDiffHandmadeMarkers(t *testing.T) {
	testutil.RequireRoot(t)
	host, up := t.TempDir(), t.TempDir()
	diffWrite(t, host+"/chr", "c\n", 0o644)
	diffWrite(t, host+"/xw", "x\n", 0o644)
	diffWrite(t, host+"/op/keep/a", "a\n", 0o644)
	diffWrite(t, host+"/op/keep/gone", "g\n", 0o644)
	diffWrite(t, host+"/op/old", "o\n", 0o644)
	diffMust(t, unix.Mknod(up+"/chr", unix.S_IFCHR|0o600, 0))
	diffMust(t, unix.Mknod(up+"/ghost", unix.S_IFCHR|0o600, 0)) // whiteout of nothing
	diffWrite(t, up+"/xw", "", 0o644)
	diffMust(t, unix.Setxattr(up+"/xw", "trusted.overlay.whiteout", []byte("y"), 0))
	diffWrite(t, up+"/op/keep/a", "a\n", 0o644)
	diffMust(t, unix.Setxattr(up+"/op", "trusted.overlay.opaque", []byte("y"), 0))
	diffWrite(t, up+"/notopaque/f", "f\n", 0o644)
	diffMust(t, unix.Setxattr(up+"/notopaque", "trusted.overlay.opaque", []byte("x"), 0))

	got, err := Diff([]Root{{Name: "/srv/data", Host: host, Upper: up}}, DiffOptions{})
	diffMust(t, err)
	assertDiffChanges(t, got, []string{
		`/srv/data deleted "chr" <-file ----------<--rw-r--r--`,
		`/srv/data added "notopaque" dir<- drwxr-xr-x<-----------`,
		`/srv/data added "notopaque/f" file<- -rw-r--r--<-----------`,
		`/srv/data modified "op" dir<-dir drwxr-xr-x<-drwxr-xr-x opaque`,
		// Beneath an opaque dir the host is hidden all the way down.
		`/srv/data deleted "op/keep/gone" <-file ----------<--rw-r--r--`,
		`/srv/data deleted "op/old" <-file ----------<--rw-r--r--`,
		`/srv/data deleted "xw" <-file ----------<--rw-r--r--`,
	})
	if got[0].Display() != "/srv/data/chr" {
		t.Fatalf("display of an extra root: %q", got[0].Display())
	}
}
