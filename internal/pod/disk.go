package pod

// The disk wall: a pod with resources.disk set keeps its layer (the
// overlay upper and work directories of every root) in a file system of
// its own, an ext4 image pods/<name>/layer.img of exactly the configured
// size and inode count. When the agent fills it, the kernel answers
// ENOSPC inside the pod; the host's disk only ever holds the image, which
// is sparse and can never grow past the cap.
//
// The image is mounted on pods/<name>/layer from the first command that
// needs the layer until the pod is destroyed (or the host reboots; the
// next command mounts it again), like the directory layer it replaces:
// mounting for each command instead cost every run a mount and an
// unmount, and every diff a cold inode cache (10,000 changes: 190 ms
// against 50 ms warm).
//
//   - OpenLayer attaches the image to a free loop device with
//     LO_FLAGS_AUTOCLEAR and mounts it, under layer.lock; the loop device
//     detaches by itself when the file system goes.
//   - The mount is private, so the pods' mount namespaces (copies taken
//     at their start) hold their own references and nothing propagates.
//   - The image is never mounted twice: before attaching, OpenLayer checks
//     that no loop device still holds it (a layer unmounted on the host
//     stays alive while a pod's mount namespace still holds it) and waits
//     for it to go.
//   - Destroy unmounts it (lazily: the image goes with the pod).
//
// The pod never sees any of this: AIRLOCK_HOME is hidden in its view and
// its /dev holds no loop device.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"golang.org/x/sys/unix"
)

// Layer kinds recorded in State.Layer.
const (
	LayerDir  = ""     // upper and work directories straight in the pod directory (no disk cap)
	LayerExt4 = "ext4" // the layer lives in layer.img, an ext4 file system of the capped size
)

func (p *Pod) imagePath() string     { return filepath.Join(p.Dir, "layer.img") }
func (p *Pod) layerMount() string    { return filepath.Join(p.Dir, "layer") }
func (p *Pod) layerLockPath() string { return filepath.Join(p.Dir, "layer.lock") }

// layerBase is the directory that holds upper/ and work/.
func (p *Pod) layerBase() string {
	if p.State.Layer != LayerExt4 {
		return p.Dir
	}
	return p.layerMount()
}

// layersOpen are the pod directories whose layer this process has found
// mounted (or mounted), so that later calls cost nothing.
var layersOpen = struct {
	sync.Mutex
	m map[string]bool
}{m: map[string]bool{}}

// OpenLayer makes sure the pod's layer is reachable: for a disk-capped
// pod it mounts the image (making it on first use) unless it is mounted.
func (p *Pod) OpenLayer() error {
	if p.State.Layer != LayerExt4 {
		return nil
	}
	layersOpen.Lock()
	defer layersOpen.Unlock()
	if layersOpen.m[p.Dir] {
		return nil
	}
	if err := p.mountLayer(); err != nil {
		return fmt.Errorf("opening the layer of pod %s: %w", p.Name, err)
	}
	layersOpen.m[p.Dir] = true
	return nil
}

func (p *Pod) mountLayer() error {
	unlock, err := lockFile(p.layerLockPath(), unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	mounted, err := isMountPoint(p.layerMount())
	if err != nil {
		return err
	}
	if !mounted {
		if err := p.ensureImage(); err != nil {
			return err
		}
		if err := waitUnattached(p.imagePath(), 5*time.Second); err != nil {
			return err
		}
		if err := mountImage(p.imagePath(), p.layerMount()); err != nil {
			return err
		}
	}
	return p.mkLayerDirs()
}

// mkLayerDirs makes upper/ and work/ in the mounted image and the
// directories of every root, so a pod that never ran has an empty layer.
func (p *Pod) mkLayerDirs() error {
	dirs := []string{filepath.Join(p.layerMount(), "upper"), filepath.Join(p.layerMount(), "work")}
	for _, r := range p.roots() {
		dirs = append(dirs, r.Upper, r.Work)
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	return nil
}

// dropLayer unmounts the layer so that Destroy can delete the pod.
// Callers hold the pod lock and have checked that the pod does not run.
// The detach is lazy: a host process still inside keeps its view, and
// the image is deleted with the pod, so it is never mounted again.
func (p *Pod) dropLayer() {
	if mounted, _ := isMountPoint(p.layerMount()); !mounted {
		return
	}
	unlock, err := lockFile(p.layerLockPath(), unix.LOCK_EX)
	if err != nil {
		return
	}
	defer unlock()
	if err := unix.Unmount(p.layerMount(), 0); err != nil {
		_ = unix.Unmount(p.layerMount(), unix.MNT_DETACH)
	}
	layersOpen.Lock()
	delete(layersOpen.m, p.Dir)
	layersOpen.Unlock()
}

// lockFile flocks path (created 0600) and returns the unlock.
func lockFile(path string, how int) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := flock(f, how); err != nil {
		f.Close()
		return nil, os.NewSyscallError("flock", err)
	}
	return func() { f.Close() }, nil
}

// isMountPoint reports whether dir is on another device than its parent.
func isMountPoint(dir string) (bool, error) {
	var st, pst unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return false, &os.PathError{Op: "lstat", Path: dir, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return false, fmt.Errorf("%s is not a directory; the pod's directory is damaged", dir)
	}
	if err := unix.Lstat(filepath.Dir(dir), &pst); err != nil {
		return false, &os.PathError{Op: "lstat", Path: filepath.Dir(dir), Err: err}
	}
	return st.Dev != pst.Dev, nil
}

// ensureImage creates layer.img from the store's template for the pod's
// cap, the first time the layer is used.
func (p *Pod) ensureImage() error {
	img := p.imagePath()
	if _, err := os.Lstat(img); err == nil {
		return nil
	}
	d := p.Config.Resources.Disk
	tmpl, err := layerTemplate(filepath.Dir(filepath.Dir(p.Dir)), int64(d.Bytes), d.Inodes)
	if err != nil {
		return err
	}
	tmp := img + ".tmp"
	if err := copySparse(tmpl, tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("creating the layer image: %w", err)
	}
	return os.Rename(tmp, img)
}

// layerTemplate returns a freshly made, never mounted ext4 image of the
// given size and inode count in $AIRLOCK_HOME/cache, making it once.
// Pods copy it (sparsely, a few MiB) instead of running mkfs each time.
func layerTemplate(home string, size, inodes int64) (string, error) {
	dir := filepath.Join(home, "cache")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, fmt.Sprintf("layer-ext4-%d-%d.img", size, inodes))
	if _, err := os.Lstat(path); err == nil {
		return path, nil
	}
	unlock, err := lockFile(path+".lock", unix.LOCK_EX)
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Lstat(path); err == nil {
		return path, nil // made by another process while we waited
	}
	tmp := path + ".tmp"
	os.Remove(tmp)
	if err := mkfsExt4(tmp, size, inodes); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return path, os.Rename(tmp, path)
}

// minDiskBytes is the smallest cap mkfs can honour with a journal.
const minDiskBytes = 16 << 20

// mkfsExt4 makes an ext4 file system in a new sparse file: no reserved
// blocks (the cap is the agent's to use), a small journal, inode tables
// and journal left for the kernel to initialise lazily so the image stays
// a few MiB until used.
func mkfsExt4(path string, size, inodes int64) error {
	if size < minDiskBytes {
		return errdefs.Invalid("resources.disk.bytes %d is below the smallest layer (%d MiB)", size, minDiskBytes>>20)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		return err
	}
	mkfs, err := findMkfs()
	if err != nil {
		return err
	}
	args := []string{"-q", "-F", "-t", "ext4", "-m", "0", "-L", "airlock-layer",
		"-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0"}
	if size >= 64<<20 {
		args = append(args, "-J", "size=4")
	}
	if inodes > 0 {
		args = append(args, "-N", strconv.FormatInt(inodes, 10))
	}
	cmd := exec.Command(mkfs, append(args, path)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("making the layer's file system (%s): %v: %s", mkfs, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// findMkfs looks for mke2fs where distributions keep it, PATH first.
func findMkfs() (string, error) {
	if p, err := exec.LookPath("mkfs.ext4"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4", "/usr/sbin/mke2fs", "/sbin/mke2fs"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errdefs.Unsupported("resources.disk needs mkfs.ext4 to make the pod's layer; install e2fsprogs, or set resources.disk.bytes: 0 (no cap), or accept running without with security.downgrade: [disk-quota]")
}

// copySparse copies src to a new file dst, data extents only.
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := out.Truncate(st.Size()); err != nil {
		return err
	}
	for off := int64(0); off < st.Size(); {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return os.NewSyscallError("lseek", err)
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return os.NewSyscallError("lseek", err)
		}
		if err := copyRange(in, out, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return out.Sync()
}

func copyRange(in, out *os.File, off, n int64) error {
	ro, wo := off, off
	for n > 0 {
		c, err := unix.CopyFileRange(int(in.Fd()), &ro, int(out.Fd()), &wo, int(min(n, 1<<30)), 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("copy_file_range", err)
		}
		if c == 0 {
			return fmt.Errorf("copy_file_range: short copy at %d", ro)
		}
		n -= int64(c)
	}
	return nil
}

// mountImage attaches img to a free loop device (auto-clearing) and
// mounts its ext4 on dir.
func mountImage(img, dir string) error {
	err := mountOnce(img, dir)
	if errors.Is(err, unix.EUCLEAN) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIO) {
		// An image torn by a host crash (see layerMountOpts): repair
		// what e2fsck can without asking, then try once more.
		if ferr := fsckImage(img); ferr != nil {
			return fmt.Errorf("%w; repairing it failed too: %v", err, ferr)
		}
		err = mountOnce(img, dir)
	}
	return err
}

// layerMountOpts: noinit_itable keeps the image sparse (no background
// zeroing of inode tables); errors=remount-ro stops writes rather than
// corrupt the layer when the host disk is too full for the sparse image
// to grow; nobarrier spares every run the flush of the whole backing
// file whenever the layer is unmounted or synced. The layer is scratch
// space under review: its writes survive the death of any process, as
// page cache, but a power loss of the host may lose the latest ones
// (mountImage repairs the image then). commit writes the host durably.
const layerMountOpts = "noinit_itable,errors=remount-ro,nobarrier"

func mountOnce(img, dir string) error {
	dev, err := attachLoop(img)
	if err != nil {
		return err
	}
	defer unix.Close(dev.fd) // the mount keeps the device; autoclear frees it after
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOATIME
	if err := unix.Mount(dev.path, dir, "ext4", flags, layerMountOpts); err != nil {
		return fmt.Errorf("mounting the layer image on %s: %w", dir, os.NewSyscallError("mount", err))
	}
	// Private: mount events here must not propagate into the pods'
	// namespaces (nor theirs here) where / is shared.
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		_ = unix.Unmount(dir, 0)
		return fmt.Errorf("making the layer mount private: %w", os.NewSyscallError("mount", err))
	}
	return nil
}

// fsckImage runs e2fsck -p (automatic, safe repairs) on an unmounted image.
func fsckImage(img string) error {
	fsck := "e2fsck"
	if p, err := exec.LookPath("e2fsck"); err == nil {
		fsck = p
	} else if _, err := os.Stat("/usr/sbin/e2fsck"); err == nil {
		fsck = "/usr/sbin/e2fsck"
	}
	out, err := exec.Command(fsck, "-p", img).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() <= 2 { // 1, 2: errors corrected
		return nil
	}
	if err != nil {
		first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return fmt.Errorf("%s -p: %v: %s (run e2fsck on %s by hand, or destroy the pod)", fsck, err, first, img)
	}
	return nil
}

type loopDev struct {
	fd   int
	path string
}

// attachLoop binds img to a free loop device, retrying when another
// process takes the same free device first.
func attachLoop(img string) (loopDev, error) {
	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return loopDev{}, errdefs.Unsupported("resources.disk needs loop devices (/dev/loop-control: %v); load the loop module, or set resources.disk.bytes: 0, or security.downgrade: [disk-quota]", err)
	}
	defer unix.Close(ctl)
	imgFd, err := unix.Open(img, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return loopDev{}, &os.PathError{Op: "open", Path: img, Err: err}
	}
	defer unix.Close(imgFd)
	for try := 0; try < 16; try++ {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return loopDev{}, os.NewSyscallError("LOOP_CTL_GET_FREE", err)
		}
		path := "/dev/loop" + strconv.Itoa(n)
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return loopDev{}, &os.PathError{Op: "open", Path: path, Err: err}
		}
		cfg := unix.LoopConfig{Fd: uint32(imgFd)}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:], img)
		err = unix.IoctlLoopConfigure(fd, &cfg)
		if err == nil {
			return loopDev{fd: fd, path: path}, nil
		}
		unix.Close(fd)
		if err != unix.EBUSY {
			return loopDev{}, os.NewSyscallError("LOOP_CONFIGURE", err)
		}
	}
	return loopDev{}, errdefs.Busy("no free loop device for the layer after 16 tries; retry")
}

// waitUnattached waits until no loop device holds img: a pod that was
// killed keeps the old file system alive until its mount namespace is
// gone, and mounting the image again before then would let two file
// systems write one image.
func waitUnattached(img string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		dev := loopHolding(img)
		if dev == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return errdefs.Busy("the layer image %s is still held by %s (a pod that is shutting down?); retry when it is released", img, dev)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// loopHolding names the loop device whose backing file is img, or "".
func loopHolding(img string) string {
	devs, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range devs {
		b, err := os.ReadFile(f)
		if err == nil && strings.TrimSuffix(string(b), "\n") == img {
			return filepath.Base(filepath.Dir(filepath.Dir(f)))
		}
	}
	return ""
}

// chooseLayer decides, at creation, where the pod's layer lives: in a
// capped image when resources.disk asks for one. When this machine cannot
// make one (no loop devices, no mkfs.ext4, not root) the pod is refused
// (fail closed) unless security.downgrade accepts "disk-quota".
func (p *Pod) chooseLayer() error {
	p.State.Layer = LayerDir
	if p.Config.Resources.Disk.Bytes <= 0 {
		return nil
	}
	err := diskCapUsable()
	if err == nil {
		p.State.Layer = LayerExt4
		return nil
	}
	for _, w := range p.Config.Security.Downgrade {
		if w == "disk-quota" {
			return nil
		}
	}
	return err
}

// diskCapUsable says why this process cannot cap a layer, or nil.
func diskCapUsable() error {
	if os.Geteuid() != 0 {
		return errdefs.Unsupported("resources.disk needs root to mount the pod's layer image (rootless layers are not capped yet); set resources.disk.bytes: 0, or accept it with security.downgrade: [disk-quota]")
	}
	if err := unix.Access("/dev/loop-control", unix.R_OK|unix.W_OK); err != nil {
		return errdefs.Unsupported("resources.disk needs loop devices (/dev/loop-control: %v); load the loop module, or set resources.disk.bytes: 0, or accept it with security.downgrade: [disk-quota]", err)
	}
	_, err := findMkfs()
	return err
}

// DiskCap describes the pod's disk wall for status, "" when the layer is
// not capped.
func (p *Pod) DiskCap() string {
	if p.State.Layer != LayerExt4 {
		return ""
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p.layerBase(), &st); err != nil || st.Type != unix.EXT4_SUPER_MAGIC {
		return "ext4 layer image"
	}
	used := (st.Blocks - st.Bfree) * uint64(st.Bsize)
	return fmt.Sprintf("ext4 layer image, %d of %d MiB and %d of %d inodes used",
		used>>20, (st.Blocks*uint64(st.Bsize))>>20, st.Files-st.Ffree, st.Files)
}
