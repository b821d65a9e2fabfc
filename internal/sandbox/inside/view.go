package inside

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/sandbox"
)

// view builds the pod's filesystem in a tmpfs mounted on the spec's root
// directory. Every mount is made detached (fsmount/open_tree), given its
// attributes, then attached with move_mount onto a target resolved inside
// the new root (RESOLVE_IN_ROOT): a symlink in a workspace or home
// directory can never send a mount, or a hide, somewhere else.
type view struct {
	root     int // fd of the root tmpfs mount
	uid, gid int
}

const (
	attrHidden = unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC
	attrData   = unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV
)

func buildView(spec *sandbox.InitSpec) error {
	// Nothing mounted here may propagate to the host, and host mount
	// events must not change the pod's view underneath it.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return sysFail("making the pod's mounts private", err)
	}
	root, err := newFS("tmpfs", []string{"mode", "0755"}, attrData)
	if err != nil {
		return sysFail("creating the pod's root tmpfs", err)
	}
	if err := unix.MoveMount(root, "", unix.AT_FDCWD, spec.RootDir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return sysFail("mounting the pod's root on "+spec.RootDir, err)
	}
	v := &view{root: root, uid: spec.UID, gid: spec.GID}
	for _, m := range spec.Mounts {
		if err := v.mount(m); err != nil {
			return describe(m, err)
		}
	}
	if err := setattr(root, unix.MOUNT_ATTR_RDONLY|attrData, false); err != nil {
		return sysFail("making the pod's root read-only", err)
	}
	if err := pivot(root); err != nil {
		return err
	}
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return sysFail("setting the hostname", err)
		}
	}
	return nil
}

// pivot makes the view the root and detaches the host's tree.
func pivot(root int) error {
	if err := unix.Fchdir(root); err != nil {
		return sysFail("entering the pod's root", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return sysFail("pivot_root into the pod's root", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return sysFail("detaching the host's root", err)
	}
	unix.Close(root)
	return sysFail("entering /", unix.Chdir("/"))
}

func (v *view) mount(m sandbox.Mount) error {
	switch m.Kind {
	case sandbox.KindBind:
		return v.bind(m)
	case sandbox.KindOverlay:
		return v.overlay(m)
	case sandbox.KindTmpfs:
		return v.tmpfs(m)
	case sandbox.KindHide:
		return v.hide(m)
	case sandbox.KindSymlink:
		return v.symlink(m)
	case sandbox.KindDev:
		return v.dev(m)
	case sandbox.KindProc:
		return v.proc(m)
	case sandbox.KindSys:
		return v.sys(m)
	}
	return fmt.Errorf("unknown mount kind %q", m.Kind)
}

func (v *view) bind(m sandbox.Mount) error {
	src, err := unix.OpenTree(unix.AT_FDCWD, m.Source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		if m.Optional && errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("open_tree %s: %w", m.Source, err)
	}
	defer unix.Close(src)
	attr := uint64(attrData)
	if m.ReadOnly {
		attr |= unix.MOUNT_ATTR_RDONLY
	}
	if err := setattr(src, attr, true); err != nil {
		return fmt.Errorf("mount_setattr: %w", err)
	}
	return v.attach(src, m.Target, isDir(src))
}

func (v *view) overlay(m sandbox.Mount) error {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(fsfd)
	if err := overlayLower(fsfd, m.Lower); err != nil {
		return kernelSays(fsfd, err)
	}
	opts := []string{"upperdir", m.Upper, "workdir", m.Work,
		"redirect_dir", "off", "metacopy", "off", "index", "off", "xino", "off"}
	mnt, err := configure(fsfd, opts, attrData)
	if err != nil {
		return err
	}
	defer unix.Close(mnt)
	return v.attach(mnt, m.Target, true)
}

// overlayLower passes the lower directory verbatim ("lowerdir+", Linux
// 6.8+), so ',' and ':' in the path need no escaping; older kernels get
// the escaped single-string form.
func overlayLower(fsfd int, lower string) error {
	err := unix.FsconfigSetString(fsfd, "lowerdir+", lower)
	if !errors.Is(err, unix.EINVAL) {
		return err
	}
	esc := strings.NewReplacer(`\`, `\\`, `:`, `\:`, `,`, `\,`).Replace(lower)
	return unix.FsconfigSetString(fsfd, "lowerdir", esc)
}

func (v *view) tmpfs(m sandbox.Mount) error {
	opts := []string{"mode", "0755", "uid", fmt.Sprint(v.uid), "gid", fmt.Sprint(v.gid)}
	if m.Target == "/tmp" || m.Target == "/var/tmp" {
		opts = []string{"mode", "1777"}
	}
	attr := uint64(attrData)
	if m.ReadOnly {
		attr |= unix.MOUNT_ATTR_RDONLY
	}
	mnt, err := newFS("tmpfs", opts, attr)
	if err != nil {
		return err
	}
	defer unix.Close(mnt)
	return v.attach(mnt, m.Target, true)
}

// hide covers what the view shows at the target, whatever it is by now.
func (v *view) hide(m sandbox.Mount) error {
	dst, err := v.resolve(m.Target)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	cover, err := hider(isDir(dst))
	if err != nil {
		return err
	}
	defer unix.Close(cover)
	return move(cover, dst)
}

// hider returns a detached mount that covers a directory (an empty
// read-only tmpfs) or a file (a /dev/null that nodev makes unopenable).
func hider(dir bool) (int, error) {
	if dir {
		return newFS("tmpfs", []string{"mode", "0555", "size", "4k", "nr_inodes", "1"}, attrHidden)
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, "/dev/null", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return -1, err
	}
	if err := setattr(fd, attrHidden, false); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func (v *view) symlink(m sandbox.Mount) error {
	parent, err := v.mountpoint(filepath.Dir(m.Target), true)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	err = unix.Symlinkat(m.Source, parent, filepath.Base(m.Target))
	if errors.Is(err, unix.EEXIST) && m.Optional {
		return nil
	}
	return err
}

// attach moves a detached mount onto target, creating the mount point.
func (v *view) attach(mnt int, target string, dir bool) error {
	dst, err := v.mountpoint(target, dir)
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	return move(mnt, dst)
}

// resolve opens a view path as the agent will see it.
func (v *view) resolve(path string) (int, error) {
	rel := strings.TrimPrefix(path, "/")
	if rel == "" {
		rel = "."
	}
	return unix.Openat2(v.root, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// mountpoint resolves path in the view, creating it (and its parents) when
// missing: directories inside tmpfs parents, an empty file for file mounts.
func (v *view) mountpoint(path string, dir bool) (int, error) {
	fd, err := v.resolve(path)
	if !errors.Is(err, unix.ENOENT) || path == "/" {
		return fd, err
	}
	parent, err := v.mountpoint(filepath.Dir(path), true)
	if err != nil {
		return -1, err
	}
	defer unix.Close(parent)
	name := filepath.Base(path)
	if dir {
		err = unix.Mkdirat(parent, name, 0o755)
	} else {
		err = createFile(parent, name, 0o644)
	}
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("creating mount point %s: %w", path, err)
	}
	return v.resolve(path)
}

func createFile(dir int, name string, mode uint32) error {
	fd, err := unix.Openat(dir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

func move(mnt, dst int) error {
	return unix.MoveMount(mnt, "", dst, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
}

func setattr(fd int, attr uint64, recursive bool) error {
	flags := uint(unix.AT_EMPTY_PATH)
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	return unix.MountSetattr(fd, "", flags, &unix.MountAttr{Attr_set: attr})
}

func isDir(fd int) bool {
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR
}

// newFS creates a detached mount of a new fstype instance; opts are
// key, value pairs.
func newFS(fstype string, opts []string, attr uint64) (int, error) {
	fsfd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, err
	}
	defer unix.Close(fsfd)
	return configure(fsfd, opts, attr)
}

func configure(fsfd int, opts []string, attr uint64) (int, error) {
	for i := 0; i+1 < len(opts); i += 2 {
		if err := unix.FsconfigSetString(fsfd, opts[i], opts[i+1]); err != nil {
			return -1, kernelSays(fsfd, fmt.Errorf("option %s=%s: %w", opts[i], opts[i+1], err))
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, kernelSays(fsfd, err)
	}
	mnt, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, int(attr))
	if err != nil {
		return -1, kernelSays(fsfd, err)
	}
	return mnt, nil
}

// kernelSays appends the file system's own explanation, which the kernel
// queues on the fs context, to err.
func kernelSays(fsfd int, err error) error {
	buf := make([]byte, 256)
	n, rerr := unix.Read(fsfd, buf)
	if rerr != nil || n <= 2 {
		return err
	}
	return fmt.Errorf("%w (kernel: %s)", err, strings.TrimSpace(string(buf[2:n])))
}
