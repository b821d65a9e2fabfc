package layer

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// overlayMarkers are the xattrs by which overlayfs marks an opaque
// directory; both forms are removed when an opaque directory is undone.
var opaqueXattrs = []string{"trusted.overlay.opaque", "user.overlay.opaque"}

// Rollback discards the given changes from the layer, so the pod sees the
// host's entries again: a Deleted change loses its whiteout; an Added,
// Modified or TypeChg change loses its layer entry (a directory
// recursively); a directory's ModeChg gets the host's mode back, and an
// opaque directory stops hiding the host's children. Emptied layer
// directories that are not changes themselves are pruned. Every removal
// goes through directory fds beneath Root.Upper, so a symlink the agent
// planted is removed, never followed. A Deleted change hidden only by an
// opaque directory cannot be rolled back alone: errdefs.ErrInvalid names
// the directory to roll back instead. The pod must be stopped.
func Rollback(roots []Root, changes []Change) error {
	cs := sortChanges(roots, changes)
	fds := map[string]*rootFds{}
	defer func() {
		for _, r := range fds {
			unix.Close(r.host)
			unix.Close(r.up)
		}
	}()
	for _, c := range cs {
		r, err := rootFor(roots, c)
		if err != nil {
			return err
		}
		if _, err := splitRel(c.Path); err != nil {
			return err
		}
		if fds[r.Name] == nil {
			if fds[r.Name], err = openRootFds(r); err != nil {
				return err
			}
		}
		if err := checkExpressible(fds[r.Name], c, cs); err != nil {
			return err
		}
	}
	for _, c := range cs {
		if err := rollbackOne(fds[c.Root], c); err != nil {
			return fmt.Errorf("rolling back %s: %w", EscapeName(c.Display()), err)
		}
	}
	return nil
}

// checkExpressible refuses a Deleted change that has no whiteout of its
// own because an opaque ancestor hides it, unless that ancestor is rolled
// back in the same call.
func checkExpressible(r *rootFds, c Change, all []Change) error {
	if c.Kind != Deleted {
		return nil
	}
	if st, err := lstatBeneath(r.up, c.Path); err != nil || st != nil {
		return err
	}
	for dir := path.Dir(c.Path); dir != "."; dir = path.Dir(dir) {
		opaque, err := isOpaqueDir(r.up, dir)
		if err != nil || !opaque {
			continue
		}
		if slices.ContainsFunc(all, func(o Change) bool { return o.Root == c.Root && o.Path == dir }) {
			return nil
		}
		shown := Change{Root: c.Root, Path: dir}.Display()
		return errdefs.Invalid("%s is hidden by the opaque directory %s and cannot be rolled back alone; roll back %s instead",
			EscapeName(c.Display()), EscapeName(shown), EscapeName(shown))
	}
	return nil
}

// isOpaqueDir reports whether the layer directory rel carries an opaque marker.
func isOpaqueDir(upFd int, rel string) (bool, error) {
	fd, err := openDirRel(upFd, rel)
	if err != nil {
		if isAbsent(err) || errors.Is(err, unix.ELOOP) {
			return false, nil
		}
		return false, err
	}
	defer unix.Close(fd)
	return fdOpaque(fd), nil
}

func fdOpaque(fd int) bool {
	var buf [8]byte
	for _, x := range opaqueXattrs {
		if n, err := unix.Fgetxattr(fd, x, buf[:]); err == nil && string(buf[:n]) == "y" {
			return true
		}
	}
	return false
}

func rollbackOne(r *rootFds, c Change) error {
	par, name, err := openParent(r.up, c.Path)
	if isAbsent(err) {
		return nil // an ancestor was rolled back already
	}
	if err != nil {
		return err
	}
	defer unix.Close(par)
	switch {
	case c.Kind == Deleted:
		err = removeWhiteout(par, name)
	case c.Type == "dir" && (c.Kind == ModeChg || (c.Kind == Modified && c.Opaque)):
		err = resetDir(r, par, name, c.Path)
	default:
		err = removeAt(par, name)
	}
	if err != nil {
		return err
	}
	return pruneUpper(r, c.Path)
}

// removeWhiteout removes name when it is a whiteout (and nothing else).
func removeWhiteout(par int, name string) error {
	st, err := lstatAt(par, name)
	if err != nil || st == nil || !isWhiteoutAt(par, name, st) {
		return err
	}
	return ignoreENOENT(unix.Unlinkat(par, name, 0), "unlinkat", name)
}

// isWhiteoutAt recognises a 0:0 character device or a zero-size file
// marked with an overlay.whiteout xattr.
func isWhiteoutAt(par int, name string, st *unix.Stat_t) bool {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		return st.Rdev == 0
	case unix.S_IFREG:
		if st.Size != 0 {
			return false
		}
	default:
		return false
	}
	fd, err := unix.Openat(par, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var buf [1]byte
	for _, x := range []string{"trusted.overlay.whiteout", "user.overlay.whiteout"} {
		if _, err := unix.Fgetxattr(fd, x, buf[:0]); err == nil || err == unix.ERANGE {
			return true
		}
	}
	return false
}

// resetDir makes a layer directory show the host directory again: host
// mode and owner, no opaque marker. Its other entries stay changes.
func resetDir(r *rootFds, par int, name, rel string) error {
	hst, err := lstatBeneath(r.host, rel)
	if err != nil {
		return err
	}
	if hst == nil || hst.Mode&unix.S_IFMT != unix.S_IFDIR {
		return removeAt(par, name)
	}
	fd, err := unix.Openat(par, name, dirFlags, 0)
	if err != nil {
		return &os.PathError{Op: "openat", Path: name, Err: err}
	}
	defer unix.Close(fd)
	for _, x := range opaqueXattrs {
		if err := unix.Fremovexattr(fd, x); err != nil && err != unix.ENODATA && err != unix.ENOTSUP {
			return os.NewSyscallError("fremovexattr", err)
		}
	}
	return fixOwnerMode(fd, int(hst.Uid), int(hst.Gid), hst.Mode&07777)
}

// pruneUpper removes rel and its ancestors from the layer, deepest first,
// while each is an empty, non-opaque directory that looks exactly like its
// host counterpart (so it is no change of its own).
func pruneUpper(r *rootFds, rel string) error {
	for p := rel; p != "." && p != ""; p = path.Dir(p) {
		removed, err := pruneOne(r, p)
		if err != nil || !removed {
			return err
		}
	}
	return nil
}

func pruneOne(r *rootFds, rel string) (bool, error) {
	par, name, err := openParent(r.up, rel)
	if isAbsent(err) {
		return true, nil // gone already: keep climbing
	}
	if err != nil {
		return false, err
	}
	defer unix.Close(par)
	ust, err := lstatAt(par, name)
	if err != nil {
		return false, err
	}
	if ust == nil {
		return true, nil
	}
	hst, err := lstatBeneath(r.host, rel)
	if err != nil || hst == nil || ust.Mode&unix.S_IFMT != unix.S_IFDIR || hst.Mode&unix.S_IFMT != unix.S_IFDIR ||
		ust.Mode&07777 != hst.Mode&07777 {
		return false, err
	}
	if opaque, err := isOpaqueDir(par, name); err != nil || opaque {
		return false, err
	}
	switch err := unix.Unlinkat(par, name, unix.AT_REMOVEDIR); err {
	case nil, unix.ENOENT:
		return true, nil
	case unix.ENOTEMPTY, unix.EEXIST:
		return false, nil
	default:
		return false, &os.PathError{Op: "rmdir", Path: rel, Err: err}
	}
}

// cleanUpper removes what a finished commit applied from the layer, so
// diff stops showing it: written files and symlinks, whiteouts of removed
// entries, and directories left empty. An opaque directory loses its
// marker once no host child remains hidden behind it.
func cleanUpper(j *journal) error {
	fds := map[string]*rootFds{}
	defer func() {
		for _, r := range fds {
			unix.Close(r.host)
			unix.Close(r.up)
		}
	}()
	rootsOf := func(o *op) (*rootFds, error) {
		key := o.Host + "\x00" + o.Upper
		if fds[key] == nil {
			r, err := openRootFds(Root{Name: o.Root, Host: o.Host, Upper: o.Upper})
			if err != nil {
				return nil, err
			}
			fds[key] = r
		}
		return fds[key], nil
	}
	// Opaque markers first, parents before children, while the layer
	// still holds every committed child: only then can we tell whether a
	// marker hides something the pod does not see.
	for i := range j.Ops {
		o := &j.Ops[i]
		if o.Action == actRemove || o.Type != "dir" {
			continue
		}
		r, err := rootsOf(o)
		if err == nil {
			err = dropOpaqueIfNothingHidden(r, o.Path)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", EscapeName(o.change().Display()), err)
		}
	}
	prune := map[*rootFds][]string{}
	for i := range j.Ops {
		r, err := rootsOf(&j.Ops[i]) // every root now: the map is only read below
		if err != nil {
			return fmt.Errorf("%s: %w", EscapeName(j.Ops[i].change().Display()), err)
		}
		prune[r] = append(prune[r], j.Ops[i].Path)
	}
	key := func(o *op) *rootFds { return fds[o.Host+"\x00"+o.Upper] }
	if err := cleanOps(j.Ops, key); err != nil {
		return err
	}
	for r, paths := range prune {
		if err := pruneAll(r, paths); err != nil {
			return err
		}
	}
	return nil
}

// pruneAll prunes each path and its parents once (deepest first), not
// once per path: a commit of a thousand files in one directory tries that
// directory once.
func pruneAll(r *rootFds, paths []string) error {
	seen := map[string]bool{}
	var dirs []string
	for _, p := range paths {
		for _, d := range []string{p, path.Dir(p)} {
			if d != "." && !seen[d] {
				seen[d] = true
				dirs = append(dirs, d)
			}
		}
	}
	slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	for _, d := range dirs {
		if err := pruneUpper(r, d); err != nil {
			return fmt.Errorf("%s: %w", EscapeName(d), err)
		}
	}
	return nil
}

// cleanOps removes the layer entries of ops, last op first (children
// before parents). Runs of written files and symlinks, which touch nothing
// but their own entry, are spread over a few workers like the apply (the
// unlinks are bound by the layer file system's per-file work).
func cleanOps(ops []op, rootOf func(*op) *rootFds) error {
	var c parentCache
	defer c.drop()
	for i := len(ops) - 1; i >= 0; {
		lo := i
		for lo > 0 && independent(&ops[lo-1]) && independent(&ops[i]) {
			lo--
		}
		if i+1-lo >= 2*applyWorkers {
			caches := make([]parentCache, applyWorkers)
			failed, err := spread(pieces(ops, lo, i+1), len(caches), func(w, k int) error {
				return cleanOne(rootOf(&ops[k]), &ops[k], &caches[w])
			})
			for w := range caches {
				caches[w].drop()
			}
			if err != nil {
				return fmt.Errorf("%s: %w", EscapeName(ops[failed].change().Display()), err)
			}
			i = lo - 1
			continue
		}
		for ; i >= lo; i-- {
			if err := cleanOne(rootOf(&ops[i]), &ops[i], &c); err != nil {
				return fmt.Errorf("%s: %w", EscapeName(ops[i].change().Display()), err)
			}
		}
	}
	return nil
}

// cleanOne removes o's entry from the layer (never a directory: those go
// in pruneAll). c caches the layer parent.
func cleanOne(r *rootFds, o *op, c *parentCache) error {
	par, name, err := c.parent(r.up, o.Path)
	if isAbsent(err) {
		return nil
	}
	if err != nil {
		return err
	}
	st, err := lstatAt(par, name)
	if err != nil || st == nil {
		return err
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	switch {
	case o.Action == actRemove:
		err = removeWhiteout(par, name)
	case !isDir:
		err = ignoreENOENT(unix.Unlinkat(par, name, 0), "unlinkat", name)
	}
	return err
}

// dropOpaqueIfNothingHidden removes the opaque marker of a committed
// directory once every host child also exists in the layer: the marker
// then hides nothing and only keeps the directory showing in diff.
func dropOpaqueIfNothingHidden(r *rootFds, rel string) error {
	up, err := openDirRel(r.up, rel)
	if err != nil {
		return nil // not a directory in the layer (any more): nothing to do
	}
	defer unix.Close(up)
	if !fdOpaque(up) {
		return nil
	}
	host, err := openDirRel(r.host, rel)
	if err != nil {
		return nil // no host directory: nothing can be hidden, keep as is
	}
	defer unix.Close(host)
	if hidden, err := hidesHost(up, host); err != nil || hidden {
		return err
	}
	for _, x := range opaqueXattrs {
		if err := unix.Fremovexattr(up, x); err != nil && err != unix.ENODATA && err != unix.ENOTSUP {
			return os.NewSyscallError("fremovexattr", err)
		}
	}
	return nil
}

// hidesHost reports whether some host entry beneath host would reappear
// if the layer directory up were not opaque: a host child missing from the
// layer, or one beneath a non-opaque layer subdirectory.
func hidesHost(up, host int) (bool, error) {
	upNames, err := readNames(up)
	if err != nil {
		return false, err
	}
	hostNames, err := readNames(host)
	if err != nil {
		return false, err
	}
	for _, n := range hostNames {
		if !slices.Contains(upNames, n) {
			return true, nil
		}
		if hidden, err := childHidesHost(up, host, n); err != nil || hidden {
			return hidden, err
		}
	}
	return false, nil
}

func childHidesHost(up, host int, n string) (bool, error) {
	u, err := unix.Openat(up, n, dirFlags, 0)
	if err != nil {
		return false, nil // not a directory in the layer: hides the host entry whole
	}
	defer unix.Close(u)
	if fdOpaque(u) {
		return false, nil
	}
	h, err := unix.Openat(host, n, dirFlags, 0)
	if err != nil {
		return false, nil
	}
	defer unix.Close(h)
	return hidesHost(u, h)
}
