package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/statedir"
)

// ioDevice returns "MAJ:MIN" of the whole disk holding path (or its nearest
// existing parent): throttling applies to disks, not to their partitions.
// A path on a file system without a block device (tmpfs, overlay, NFS) cannot
// be throttled, and the error says so.
func ioDevice(path string) (string, error) {
	if path == "" {
		path = statedir.Default()
	}
	p := filepath.Clean(path)
	var st unix.Stat_t
	for {
		err := unix.Stat(p, &st)
		if err == nil {
			break
		}
		if p == "/" || p == "." {
			return "", fmt.Errorf("finding the block device of %s: %w", path, err)
		}
		p = filepath.Dir(p)
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	sys := "/sys/dev/block/" + dev
	if _, err := os.Stat(sys); err != nil {
		return "", errdefs.Unsupported("I/O limits: %s is on device %s, which is not a block device (tmpfs, overlay or network file system); put AIRLOCK_HOME on a disk or drop the I/O limits", path, dev)
	}
	if _, err := os.Stat(filepath.Join(sys, "partition")); err != nil {
		return dev, nil
	}
	real, err := filepath.EvalSymlinks(sys)
	if err != nil {
		return "", fmt.Errorf("finding the disk of partition %s: %w", dev, err)
	}
	disk, err := os.ReadFile(filepath.Join(filepath.Dir(real), "dev"))
	if err != nil {
		return "", fmt.Errorf("finding the disk of partition %s: %w", dev, err)
	}
	return strings.TrimSpace(string(disk)), nil
}
