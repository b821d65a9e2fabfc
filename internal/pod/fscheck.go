package pod

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"golang.org/x/sys/unix"
)

// badUpperFS are file systems that cannot hold an overlay upper directory
// (no whiteouts, no trusted.* xattrs, or remote semantics), by statfs magic.
var badUpperFS = []struct {
	magic int64
	name  string
}{
	{0x794c7630, "overlayfs"},
	{0x65735546, "fuse"},
	{0x6969, "nfs"},
	{0xff534d42, "cifs"},
	{0xfe534d42, "smb2"},
	{0x517b, "smb"},
	{0x4d44, "vfat"},
	{0x2011bab0, "exfat"},
	{0x5346544e, "ntfs"},
	{0x7366746e, "ntfs3"},
	{0x01021997, "9p"},
	{0xf15f, "ecryptfs"},
	{0x73717368, "squashfs"},
	{0x9660, "iso9660"},
}

func badUpperFSName(magic int64) (string, bool) {
	for _, fs := range badUpperFS {
		if fs.magic == magic {
			return fs.name, true
		}
	}
	return "", false
}

// checkUpperFS refuses a state directory whose file system cannot hold an
// overlay upper: a known-bad type, or no xattr support (overlay keeps
// whiteouts and opaque markers in trusted.* xattrs as root, user.* in a
// user namespace).
func checkUpperFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("checking the file system of %s: %w", dir, &os.PathError{Op: "statfs", Path: dir, Err: err})
	}
	if name, bad := badUpperFSName(int64(st.Type)); bad {
		return errdefs.Unsupported("the airlock home %s is on %s, which cannot hold a copy-on-write layer; set AIRLOCK_HOME to a directory on a local file system (ext4, xfs, btrfs, tmpfs)", filepath.Dir(filepath.Dir(dir)), name)
	}
	return probeXattr(dir)
}

func probeXattr(dir string) error {
	attr := "user.airlock.probe"
	if os.Geteuid() == 0 {
		attr = "trusted.airlock.probe"
	}
	err := unix.Setxattr(dir, attr, []byte("1"), 0)
	if err == nil {
		_ = unix.Removexattr(dir, attr)
		return nil
	}
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
		return errdefs.Unsupported("the file system of the airlock home %s does not support %s extended attributes, which a copy-on-write layer needs; set AIRLOCK_HOME to a directory on ext4, xfs, btrfs or tmpfs", filepath.Dir(filepath.Dir(dir)), attr[:len(attr)-len(".airlock.probe")])
	}
	if errors.Is(err, unix.EPERM) {
		return errdefs.New(errdefs.ErrPermission, "setting %s extended attributes in the airlock home %s was refused: an overlay upper needs them, and trusted.* needs CAP_SYS_ADMIN; run airlock as root, outside any sandbox", attr[:len(attr)-len(".airlock.probe")], filepath.Dir(filepath.Dir(dir)))
	}
	return fmt.Errorf("probing extended attributes on %s: %w", dir, &os.PathError{Op: "setxattr", Path: dir, Err: err})
}
