package layer

// File-descriptor based helpers for commit, undo and rollback. Every host
// and upper path is resolved beneath a directory fd with openat2
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS, one component at
// a time, so a symlink planted anywhere on the way fails the walk instead of
// leading out. Entries are then acted on through (parent fd, name) pairs,
// never through a path string checked earlier.

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

const resolveSafe = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// dirFlags opens a directory we will read, fchmod or fchown.
const dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC

// splitRel checks that rel is a clean relative path and returns its
// components. Empty components, ".", "..", NUL and over-long names are
// refused, so a component can never climb or name the directory itself.
func splitRel(rel string) ([]string, error) {
	if rel == "" || strings.HasPrefix(rel, "/") {
		return nil, errdefsInvalidPath(rel)
	}
	comps := strings.Split(rel, "/")
	for _, c := range comps {
		if c == "" || c == "." || c == ".." || len(c) > 255 || strings.IndexByte(c, 0) >= 0 {
			return nil, errdefsInvalidPath(rel)
		}
	}
	return comps, nil
}

// openRoot opens the directory at abs (a trusted path: Root.Host,
// Root.Upper or a journal directory) for use as a resolution anchor.
func openRoot(abs string) (int, error) {
	fd, err := unix.Open(abs, dirFlags, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: abs, Err: err}
	}
	return fd, nil
}

// openat2Retry opens name beneath dirFd. EAGAIN (a concurrent rename seen
// by the kernel's resolution check) and EINTR are retried a few times.
func openat2Retry(dirFd int, name string, flags int) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolveSafe}
	var err error
	for range 16 {
		var fd int
		fd, err = unix.Openat2(dirFd, name, &how)
		if err == nil {
			return fd, nil
		}
		if err != unix.EAGAIN && err != unix.EINTR {
			break
		}
	}
	return -1, err
}

// openDir walks comps beneath rootFd and returns an fd of the last one,
// which must be a real directory. When mk is non-nil, missing components
// are created with Mkdirat on their parent fd; mk(i) gives the mode and
// owner for comps[i] and is told which ones it created.
func openDir(rootFd int, comps []string, mk func(i int, parent int) (mode uint32, uid, gid int)) (int, []int, error) {
	if len(comps) == 0 {
		fd, err := unix.FcntlInt(uintptr(rootFd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return -1, nil, os.NewSyscallError("fcntl", err)
		}
		return fd, nil, nil
	}
	cur := rootFd // the caller's; the walk's own fds are closed as it goes
	var made []int
	for i, c := range comps {
		next, err := openat2Retry(cur, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
		if err == unix.ENOTDIR && isSymlinkAt(cur, c) {
			err = unix.ELOOP // a symlink on the way is refused, never taken for "absent"
		}
		if err == unix.ENOENT && mk != nil {
			next, err = mkdirOpen(cur, c, i, mk)
			if err == nil {
				made = append(made, i)
			}
		}
		if cur != rootFd {
			unix.Close(cur)
		}
		if err != nil {
			return -1, made, &os.PathError{Op: "openat2", Path: strings.Join(comps[:i+1], "/"), Err: err}
		}
		cur = next
	}
	return cur, made, nil
}

// parentCache keeps the last parent directory resolved beneath a root fd
// (or the error resolving it: an absent parent). Ops come sorted by path,
// so runs of them share a parent, which is then walked once instead of
// once per op. The cached fd stays the directory the walk reached; users
// that change directories drop it.
type parentCache struct {
	root int
	dir  string
	fd   int
	err  error
	ok   bool
}

// parent resolves the parent directory of rel beneath rootFd, as
// openParent does; the fd belongs to the cache (do not close it).
func (c *parentCache) parent(rootFd int, rel string) (int, string, error) {
	comps, err := splitRel(rel)
	if err != nil {
		return -1, "", err
	}
	name := comps[len(comps)-1]
	dir := rel[:len(rel)-len(name)]
	if c.ok && c.root == rootFd && c.dir == dir {
		return c.fd, name, c.err
	}
	c.drop()
	c.fd, _, c.err = openDir(rootFd, comps[:len(comps)-1], nil)
	c.root, c.dir, c.ok = rootFd, dir, true
	return c.fd, name, c.err
}

func (c *parentCache) drop() {
	if c.ok && c.err == nil {
		unix.Close(c.fd)
	}
	*c = parentCache{}
}

// isSymlinkAt reports whether name in dirFd is a symlink.
func isSymlinkAt(dirFd int, name string) bool {
	var st unix.Stat_t
	return unix.Fstatat(dirFd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK
}

// openDirRel opens the directory rel beneath rootFd, one component at a
// time (so paths longer than PATH_MAX work too).
func openDirRel(rootFd int, rel string) (int, error) {
	comps, err := splitRel(rel)
	if err != nil {
		return -1, err
	}
	fd, _, err := openDir(rootFd, comps, nil)
	return fd, err
}

// mkdirOpen creates one missing directory under parent and opens it.
func mkdirOpen(parent int, name string, i int, mk func(int, int) (uint32, int, int)) (int, error) {
	mode, uid, gid := mk(i, parent)
	if err := unix.Mkdirat(parent, name, 0o700); err != nil && err != unix.EEXIST {
		return -1, err
	}
	fd, err := openat2Retry(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if err != nil {
		return -1, err
	}
	if err := fixOwnerMode(fd, uid, gid, mode); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// fixOwnerMode sets owner then mode (chown clears set-id bits, so order matters).
func fixOwnerMode(fd int, uid, gid int, mode uint32) error {
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return os.NewSyscallError("fchown", err)
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return os.NewSyscallError("fchmod", err)
	}
	return nil
}

// openParent resolves the parent directory of rel beneath rootFd and
// returns its fd and the final component.
func openParent(rootFd int, rel string) (int, string, error) {
	comps, err := splitRel(rel)
	if err != nil {
		return -1, "", err
	}
	fd, _, err := openDir(rootFd, comps[:len(comps)-1], nil)
	return fd, comps[len(comps)-1], err
}

// lstatAt stats name in dirFd without following it; nil, nil when absent.
func lstatAt(dirFd int, name string) (*unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(dirFd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == unix.ENOENT {
		return nil, nil
	}
	if err != nil {
		return nil, &os.PathError{Op: "fstatat", Path: name, Err: err}
	}
	return &st, nil
}

// lstatBeneath stats rel beneath rootFd; nil when it (or a parent) is absent.
// A parent that is not a directory also counts as absent; a symlink parent
// is an error (ELOOP), so a swapped component is never looked through.
func lstatBeneath(rootFd int, rel string) (*unix.Stat_t, error) {
	p, name, err := openParent(rootFd, rel)
	if isAbsent(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer unix.Close(p)
	return lstatAt(p, name)
}

// lstatIn is lstatBeneath resolving the parent through c.
func lstatIn(c *parentCache, rootFd int, rel string) (*unix.Stat_t, error) {
	p, name, err := c.parent(rootFd, rel)
	if isAbsent(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return lstatAt(p, name)
}

// isAbsent reports errors that mean "no such entry on the way".
func isAbsent(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)
}

// removeAt removes name in dirFd, a directory recursively through fds:
// every unlinkat names one entry of a directory we hold open, so a symlink
// inside the tree is removed itself, never followed.
func removeAt(dirFd int, name string) error {
	st, err := lstatAt(dirFd, name)
	if err != nil || st == nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if err := emptyDir(dirFd, name); err != nil {
			return err
		}
		err = unix.Unlinkat(dirFd, name, unix.AT_REMOVEDIR)
	} else {
		err = unix.Unlinkat(dirFd, name, 0)
	}
	if err != nil && err != unix.ENOENT {
		return &os.PathError{Op: "unlinkat", Path: name, Err: err}
	}
	return nil
}

// emptyDir removes every entry of the directory name in dirFd.
func emptyDir(dirFd int, name string) error {
	fd, err := unix.Openat(dirFd, name, dirFlags, 0)
	if err != nil {
		return &os.PathError{Op: "openat", Path: name, Err: err}
	}
	names, err := readNames(fd)
	if err == nil {
		for _, n := range names {
			if err = removeAt(fd, n); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	return err
}

// readNames lists a directory fd without consuming it (a dup is read).
func readNames(fd int) ([]string, error) {
	dup, err := unix.Openat(fd, ".", dirFlags, 0)
	if err != nil {
		return nil, os.NewSyscallError("openat", err)
	}
	f := os.NewFile(uintptr(dup), ".")
	defer f.Close()
	return f.Readdirnames(-1)
}

// copyData copies size bytes from src to dst: copy_file_range first (in
// kernel, reflinks where the file system can), then sendfile, which also
// copies in the kernel between two file systems (a disk-capped layer is
// an image of its own, where copy_file_range says EXDEV), and read/write
// as the last resort. noRange (may be nil) remembers that copy_file_range
// failed at the start of a file, so the next files skip it.
func copyData(dst, src int, size int64, noRange *atomic.Bool) error {
	if noRange != nil && noRange.Load() {
		return sendData(dst, src, size)
	}
	var off int64
	for off < size {
		n, err := unix.CopyFileRange(src, nil, dst, nil, int(min(size-off, 1<<30)), 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			if off == 0 && err != nil && noRange != nil {
				noRange.Store(true)
			}
			if off == 0 || err != nil {
				return sendData(dst, src, size-off)
			}
			return nil // source shrank; the layer is static, so this is its end
		}
		off += int64(n)
	}
	return nil
}

// sendData copies up to size bytes with sendfile from the current
// offsets, falling back to read/write where sendfile cannot be used.
func sendData(dst, src int, size int64) error {
	var sent int64
	for sent < size {
		n, err := unix.Sendfile(dst, src, nil, int(min(size-sent, 1<<30)))
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			if sent == 0 && (err == unix.EINVAL || err == unix.ENOSYS) {
				return copyRW(dst, src)
			}
			return os.NewSyscallError("sendfile", err)
		}
		if n == 0 {
			return nil // source shrank
		}
		sent += int64(n)
	}
	return nil
}

// startWriteback starts writing a copied file's data to disk without
// waiting, so the syncfs that ends a commit finds most of it already
// written: the disk works while the next files are copied (a commit of
// 1 GiB otherwise spent half a second in that syncfs). Only a hint: the
// syncfs still waits for every page, so an error here changes nothing.
func startWriteback(fd int) {
	_ = unix.SyncFileRange(fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}

// dropCleanCache drops the cached pages of a layer file that was just
// copied: the commit removes the file from the layer anyway, so its pages
// are dead weight, and freed now they are the ones the next copies
// allocate (on a VM whose balloon takes back free memory, fresh pages
// cost the host a fault each, which made a commit's copy 1.5 s instead of
// 0.35 s for 1 GiB; the layer clean-up then frees no cache either). Only
// a file with no dirty pages: dropping starts writeback of dirty ones,
// which would write out data that is about to be deleted. cachestat needs
// Linux 6.5; without it nothing is dropped.
func dropCleanCache(fd int) {
	var cs unix.Cachestat_t
	if unix.Cachestat(uint(fd), &unix.CachestatRange{}, &cs, 0) != nil || cs.Dirty != 0 || cs.Writeback != 0 {
		return
	}
	_ = unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
}

// copyBufs holds copyRW's buffers: a fresh zeroed MiB per file was most
// of a commit's user time and garbage.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// copyRW is the portable fallback of copyData from the current offsets.
func copyRW(dst, src int) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, err := unix.Read(src, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("read", err)
		}
		if n == 0 {
			return nil
		}
		for w := 0; w < n; {
			m, err := unix.Write(dst, buf[w:n])
			if err != nil && err != unix.EINTR {
				return os.NewSyscallError("write", err)
			}
			w += max(m, 0)
		}
	}
}

// futimens sets atime and mtime of an open file (utimensat with a NULL
// path acts on the fd itself, whatever its type).
func futimens(fd int, mtime unix.Timespec) error {
	ts := [2]unix.Timespec{mtime, mtime}
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return os.NewSyscallError("utimensat", e)
	}
	return nil
}

// listXattrs returns the xattr names of an fd.
func listXattrs(fd int) ([]string, error) {
	size, err := unix.Flistxattr(fd, nil)
	if err != nil || size == 0 {
		if err == unix.ENOTSUP {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, size)
	n, err := unix.Flistxattr(fd, buf)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	return names, nil
}

// committableXattr says whether an xattr of the layer may reach the host:
// user.* only, never the overlay's own markers. security.capability,
// security.selinux, trusted.* and system.* stay behind.
func committableXattr(name string) bool {
	return strings.HasPrefix(name, "user.") && !strings.HasPrefix(name, "user.overlay.")
}

// copyXattrs copies the xattrs keep accepts from src to dst.
func copyXattrs(dst, src int, keep func(string) bool) error {
	names, err := listXattrs(src)
	if err != nil {
		return os.NewSyscallError("flistxattr", err)
	}
	for _, n := range names {
		if !keep(n) {
			continue
		}
		val, err := getXattr(src, n)
		if err != nil {
			return err
		}
		if err := unix.Fsetxattr(dst, n, val, 0); err != nil {
			return fmt.Errorf("setting xattr %s: %w", n, os.NewSyscallError("fsetxattr", err))
		}
	}
	return nil
}

// stripXattrs removes every xattr keep refuses from fd.
func stripXattrs(fd int, keep func(string) bool) error {
	names, err := listXattrs(fd)
	if err != nil {
		return os.NewSyscallError("flistxattr", err)
	}
	for _, n := range names {
		if keep(n) {
			continue
		}
		if err := unix.Fremovexattr(fd, n); err != nil && err != unix.ENODATA {
			return fmt.Errorf("removing xattr %s: %w", n, os.NewSyscallError("fremovexattr", err))
		}
	}
	return nil
}

func getXattr(fd int, name string) ([]byte, error) {
	for size := 256; size <= 1<<20; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Fgetxattr(fd, name, buf)
		if err == unix.ERANGE {
			continue
		}
		if err != nil {
			return nil, os.NewSyscallError("fgetxattr", err)
		}
		return buf[:n], nil
	}
	return nil, os.NewSyscallError("fgetxattr", unix.E2BIG)
}

func errdefsInvalidPath(rel string) error {
	return errdefs.Invalid("path %s is not a clean relative path; run airlock diff again", EscapeName(rel))
}

// subPath joins a relative directory path and one entry name.
func subPath(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}

// regSize is the size of a regular file, 0 for anything else.
func regSize(st *unix.Stat_t) int64 {
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		return st.Size
	}
	return 0
}

// readLink reads the target of the symlink name in dirFd.
func readLink(dirFd int, name string) (string, error) {
	for size := 256; size <= 1<<16; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirFd, name, buf)
		if err != nil {
			return "", &os.PathError{Op: "readlinkat", Path: name, Err: err}
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
	return "", &os.PathError{Op: "readlinkat", Path: name, Err: unix.ENAMETOOLONG}
}

// rootFor finds the Root a change belongs to.
func rootFor(roots []Root, c Change) (Root, error) {
	if _, err := splitRel(c.Path); err != nil {
		return Root{}, err
	}
	for _, r := range roots {
		if r.Name == c.Root {
			return r, nil
		}
	}
	return Root{}, errdefs.NotFound("no root named %s in this pod; run airlock diff again", EscapeName(c.Root))
}
