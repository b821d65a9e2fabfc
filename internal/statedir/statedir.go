// Package statedir says where Airlock keeps its state (pods, layers,
// the audit key) when nothing else is named: the one rule the pod store,
// the cgroup package (the disk its I/O limits throttle) and doctor (the
// file system its test mounts probe) share. It imports only the standard
// library, so the low-level packages can use it.
package statedir

import (
	"os"
	"path/filepath"
)

// Default returns $AIRLOCK_HOME if set (made absolute); /var/lib/airlock
// as root; else $XDG_DATA_HOME/airlock, when that is absolute (the XDG
// rule: a relative one is ignored), or ~/.local/share/airlock.
func Default() string {
	if h := os.Getenv("AIRLOCK_HOME"); h != "" {
		if abs, err := filepath.Abs(h); err == nil {
			return abs
		}
		return h
	}
	if os.Geteuid() == 0 {
		return "/var/lib/airlock"
	}
	if x := os.Getenv("XDG_DATA_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "airlock")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/"
	}
	return filepath.Join(home, ".local", "share", "airlock")
}
