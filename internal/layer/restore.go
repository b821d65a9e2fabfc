package layer

// Giving a commit's changes back to the layer on Undo. A commit moves the
// pod's changes from the layer to the host; undo takes them off the host
// again. Without this they would be gone from both, and the person who
// undid a commit to review it again would have lost the agent's work.
//
// Best effort, never at the host's expense: the host is restored whatever
// happens here, and a path is given back only when the host still holds
// exactly what the commit wrote (a path changed since, undone with
// --force, is not the pod's version) and the layer holds nothing at that
// path (a later run of the pod may have changed it again: that is newer).
// An undo interrupted by a crash and finished by Recover gives back only
// the paths it had not restored on the host yet; the host is exact either way.

import (
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// giveBack returns committed entries to their uppers during an undo.
type giveBack struct {
	uppers fdCache
	hosts  fdCache
	done   []int // indices of the ops given back
}

func newGiveBack(hosts fdCache) *giveBack {
	return &giveBack{uppers: fdCache{}, hosts: hosts}
}

func (g *giveBack) close() { g.uppers.close() }

// wanted reports whether op o's host entry (name in par) is still what
// the commit left there and the layer has nothing at its path.
func (g *giveBack) wanted(o *op, par int, name string) bool {
	st, err := lstatAt(par, name)
	if err != nil {
		return false
	}
	cur, err := stateOf(par, name, st)
	if err != nil || !sameEntry(o.After, cur) {
		return false
	}
	up, err := g.uppers.open(o.Upper)
	if err != nil {
		return false
	}
	ust, err := lstatBeneath(up, o.Path)
	if err != nil && !isAbsent(err) {
		return false // a layer parent is not a directory (the pod removed it since)
	}
	return ust == nil && err == nil
}

// upperParent opens the layer directory that holds o.Path, creating
// missing ones with the owner and mode of the host directory at the same
// path, so that they do not show as changes of their own.
func (g *giveBack) upperParent(o *op) (int, string, error) {
	up, err := g.uppers.open(o.Upper)
	if err != nil {
		return -1, "", err
	}
	host, err := g.hosts.open(o.Host)
	if err != nil {
		return -1, "", err
	}
	comps, err := splitRel(o.Path)
	if err != nil {
		return -1, "", err
	}
	fd, _, err := openDir(up, comps[:len(comps)-1], func(i int, _ int) (uint32, int, int) {
		if st, _ := lstatBeneath(host, strings.Join(comps[:i+1], "/")); st != nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return st.Mode & 0o7777, int(st.Uid), int(st.Gid)
		}
		return 0o755, 0, 0
	})
	return fd, comps[len(comps)-1], err
}

// take gives the entry src in par (the pod's version, about to leave the
// host) back to the layer at o.Path: a file or symlink is moved there (or
// copied, across file systems), a directory is recreated empty with its
// owner and mode (its children are ops of their own). The caller then
// removes whatever is left at src.
func (g *giveBack) take(i int, o *op, par int, src string) {
	st, err := lstatAt(par, src)
	if err != nil || st == nil {
		return
	}
	upar, name, err := g.upperParent(o)
	if err != nil {
		return
	}
	defer unix.Close(upar)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if unix.Mkdirat(upar, name, 0o700) != nil {
			return
		}
		fd, err := unix.Openat(upar, name, dirFlags, 0)
		if err != nil {
			return
		}
		err = fixOwnerMode(fd, int(st.Uid), int(st.Gid), st.Mode&0o7777)
		unix.Close(fd)
		if err != nil {
			return
		}
	case unix.S_IFREG, unix.S_IFLNK:
		err := unix.Renameat(par, src, upar, name)
		if err == unix.EXDEV {
			err = copyBack(par, src, upar, name, st)
		}
		if err != nil {
			return
		}
	default:
		return
	}
	g.done = append(g.done, i)
}

// whiteout marks o.Path deleted in the layer again (a committed deletion).
func (g *giveBack) whiteout(i int, o *op) {
	upar, name, err := g.upperParent(o)
	if err != nil {
		return
	}
	defer unix.Close(upar)
	if unix.Mknodat(upar, name, unix.S_IFCHR, 0) == nil {
		g.done = append(g.done, i)
	}
}

// copyBack copies a host file or symlink into the layer: content, owner,
// mode and times, and only user.* xattrs (the layer must not get overlay
// markers or capabilities from a host file).
func copyBack(srcDir int, src string, dstDir int, dst string, st *unix.Stat_t) error {
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		t, err := readLink(srcDir, src)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(t, dstDir, dst); err != nil {
			return &os.PathError{Op: "symlinkat", Path: dst, Err: err}
		}
		_ = unix.Fchownat(dstDir, dst, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW)
		return unix.UtimesNanoAt(dstDir, dst, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
	}
	s, err := unix.Openat(srcDir, src, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "openat", Path: src, Err: err}
	}
	defer unix.Close(s)
	d, err := unix.Openat(dstDir, dst, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "openat", Path: dst, Err: err}
	}
	defer unix.Close(d)
	err = copyData(d, s, st.Size, nil)
	if err == nil {
		err = copyXattrs(d, s, committableXattr)
	}
	if err == nil {
		err = fixOwnerMode(d, int(st.Uid), int(st.Gid), st.Mode&0o777)
	}
	if err == nil {
		err = futimens(d, st.Mtim)
	}
	if err != nil {
		_ = unix.Unlinkat(dstDir, dst, 0)
	}
	return err
}

// rememberBase records, for every path given back, what the host holds
// now that the undo restored it, so that a host edit made before the next
// commit of it is still reported as a conflict.
func (g *giveBack) rememberBase(j *journal) error {
	if j.Base == "" || len(g.done) == 0 {
		return nil
	}
	b, err := LoadBase(j.Base)
	if err != nil {
		return err
	}
	for _, i := range g.done {
		o := &j.Ops[i]
		hfd, err := g.hosts.open(o.Host)
		if err != nil {
			return err
		}
		cur, err := hostState(hfd, o.Path)
		if err != nil {
			continue
		}
		e := BaseEntry{Absent: true}
		if cur != nil {
			e = BaseEntry{Type: cur.Type, Dev: cur.Dev, Ino: cur.Ino, Size: cur.Size, Mtime: cur.Mtime, Ctime: cur.Ctime, Mode: cur.Mode}
		}
		if b.Roots[o.Root] == nil {
			b.Roots[o.Root] = map[string]BaseEntry{}
		}
		b.Roots[o.Root][o.Path] = e
	}
	return b.save()
}
