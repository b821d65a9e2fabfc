package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/layer"
)

// ViewConfig is what a pod sees, in absolute host paths. Everything not
// listed is absent from the view (the view's root is an empty tmpfs).
type ViewConfig struct {
	// ReadOnly host paths are bind-mounted read-only (system dirs). A path
	// that is a symlink on the host (/bin -> usr/bin) stays a symlink.
	ReadOnly []string
	// Roots are mounted as overlays at Root.Host: copy-on-write.
	Roots []layer.Root
	// Hide makes paths invisible: a directory becomes an empty read-only
	// tmpfs, a file a bind of /dev/null that cannot be opened. Missing
	// paths are skipped; symlinks are resolved so the real target is hidden.
	Hide []string
	// Tmpfs paths get a private empty tmpfs (/tmp and /run always do).
	Tmpfs []string
	// Writable paths are bind-mounted read-write: the explicit escape
	// hatch through which the pod writes to the host.
	Writable []string
	// Sockets are host socket files bind-mounted into the view.
	Sockets []string
}

// Precedence when two entries share a target: a later rank is mounted on
// top, so a hidden path stays hidden whatever else names it.
const (
	rankBase = iota
	rankReadOnly
	rankOverlay
	rankTmpfs
	rankWritable
	rankSocket
	rankHide
)

type planned struct {
	m    Mount
	rank int
}

// PlanView turns a ViewConfig into the mount plan the init performs, in
// order: parents before children (a workspace inside the home directory is
// mounted on top of the home overlay; one under /tmp inside the private
// /tmp), and at equal targets in rank order. It only reads the host (to
// skip missing paths and keep symlinks); it mounts nothing.
func PlanView(v ViewConfig) ([]Mount, error) {
	var p []planned
	add := func(rank int, m Mount) { p = append(p, planned{m, rank}) }
	add(rankBase, Mount{Kind: KindProc, Target: "/proc", Reason: "the pod's own processes"})
	add(rankBase, Mount{Kind: KindSys, Target: "/sys", ReadOnly: true, Reason: "read-only sysfs"})
	add(rankBase, Mount{Kind: KindDev, Target: "/dev", Reason: "minimal /dev"})
	add(rankBase, Mount{Kind: KindTmpfs, Target: "/tmp", Reason: "private /tmp"})
	add(rankBase, Mount{Kind: KindTmpfs, Target: "/run", Reason: "private /run"})
	steps := []func(ViewConfig, func(int, Mount)) error{planReadOnly, planRoots, planTmpfs, planWritable, planSockets, planHide}
	for _, step := range steps {
		if err := step(v, add); err != nil {
			return nil, err
		}
	}
	return order(p), nil
}

func planReadOnly(v ViewConfig, add func(int, Mount)) error {
	for _, path := range v.ReadOnly {
		path, err := cleanTarget(path, "read-only path")
		if err != nil {
			return err
		}
		fi, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("planning read-only %s: %w", path, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			add(rankReadOnly, Mount{Kind: KindBind, Source: path, Target: path, ReadOnly: true, Reason: "read-only system path"})
			continue
		}
		if err := planSymlink(v, path, add); err != nil {
			return err
		}
	}
	return nil
}

// planSymlink keeps a host symlink a symlink in the view and makes its
// target visible read-only unless another entry already covers it.
func planSymlink(v ViewConfig, path string, add func(int, Mount)) error {
	link, err := os.Readlink(path)
	if err != nil {
		return fmt.Errorf("planning read-only %s: %w", path, err)
	}
	add(rankReadOnly, Mount{Kind: KindSymlink, Source: link, Target: path, Optional: true, Reason: "host symlink"})
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil // dangling on the host too
	}
	if covered(v, real) {
		return nil
	}
	add(rankReadOnly, Mount{Kind: KindBind, Source: real, Target: real, ReadOnly: true, Reason: "target of " + path})
	return nil
}

// covered reports whether path lies under a read-only or copy-on-write
// entry that is not itself a symlink.
func covered(v ViewConfig, path string) bool {
	var dirs []string
	for _, d := range v.ReadOnly {
		if fi, err := os.Lstat(d); err == nil && fi.Mode()&fs.ModeSymlink == 0 {
			dirs = append(dirs, filepath.Clean(d))
		}
	}
	for _, r := range v.Roots {
		dirs = append(dirs, filepath.Clean(r.Host))
	}
	for _, d := range dirs {
		if within(path, d) {
			return true
		}
	}
	return false
}

func planRoots(v ViewConfig, add func(int, Mount)) error {
	for _, r := range v.Roots {
		host, err := cleanTarget(r.Host, "copy-on-write root")
		if err != nil {
			return err
		}
		if r.Upper == "" || r.Work == "" || !filepath.IsAbs(r.Upper) || !filepath.IsAbs(r.Work) {
			return errdefs.Invalid("copy-on-write root %s needs absolute upper and work directories", host)
		}
		fi, err := os.Stat(host)
		if err != nil {
			return fmt.Errorf("planning copy-on-write %s: %w (does the directory still exist?)", host, err)
		}
		if !fi.IsDir() {
			return errdefs.Invalid("copy-on-write root %s is not a directory", host)
		}
		name := r.Name
		if name == "" {
			name = host
		}
		add(rankOverlay, Mount{Kind: KindOverlay, Target: host, Lower: host, Upper: r.Upper, Work: r.Work, Reason: name})
	}
	return nil
}

func planTmpfs(v ViewConfig, add func(int, Mount)) error {
	for _, path := range v.Tmpfs {
		path, err := cleanTarget(path, "tmpfs path")
		if err != nil {
			return err
		}
		if path == "/tmp" || path == "/run" {
			continue // the base view has them already (the default config lists them too)
		}
		add(rankTmpfs, Mount{Kind: KindTmpfs, Target: path, Reason: "private tmpfs"})
	}
	return nil
}

func planWritable(v ViewConfig, add func(int, Mount)) error {
	for _, path := range v.Writable {
		path, err := cleanTarget(path, "writable path")
		if err != nil {
			return err
		}
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("planning writable %s: %w (create it or remove it from filesystem.writable)", path, err)
		}
		add(rankWritable, Mount{Kind: KindBind, Source: path, Target: path, Reason: "writable (filesystem.writable)"})
	}
	return nil
}

func planSockets(v ViewConfig, add func(int, Mount)) error {
	for _, path := range v.Sockets {
		path, err := cleanTarget(path, "socket path")
		if err != nil {
			return err
		}
		fi, err := os.Stat(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // nothing listens there now; the pod sees no socket either
		}
		if err != nil {
			return fmt.Errorf("planning socket %s: %w", path, err)
		}
		if fi.Mode()&fs.ModeSocket == 0 {
			return errdefs.Invalid("%s is not a socket; filesystem.sockets only grants sockets", path)
		}
		add(rankSocket, Mount{Kind: KindBind, Source: path, Target: path, Optional: true, Reason: "granted socket"})
	}
	return nil
}

func planHide(v ViewConfig, add func(int, Mount)) error {
	for _, path := range v.Hide {
		path, err := cleanTarget(path, "hidden path")
		if err != nil {
			return err
		}
		real, err := filepath.EvalSymlinks(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("planning hidden %s: %w", path, err)
		}
		add(rankHide, Mount{Kind: KindHide, Target: real, Optional: true, Reason: "hidden " + path})
	}
	return nil
}

// cleanTarget accepts absolute paths outside the init-built trees.
func cleanTarget(path, what string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", errdefs.Invalid("%s %q is not absolute", what, path)
	}
	path = filepath.Clean(path)
	if path == "/" {
		return "", errdefs.Invalid("%s cannot be /", what)
	}
	for _, d := range []string{"/proc", "/sys", "/dev"} {
		if within(path, d) {
			return "", errdefs.Invalid("%s %s is inside %s, which the pod builds itself", what, path, d)
		}
	}
	return path, nil
}

func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// order sorts parents first (by depth), then by rank, keeping the input
// order otherwise, and drops exact duplicates.
func order(p []planned) []Mount {
	sort.SliceStable(p, func(i, j int) bool {
		di, dj := depth(p[i].m.Target), depth(p[j].m.Target)
		if di != dj {
			return di < dj
		}
		return p[i].rank < p[j].rank
	})
	out := make([]Mount, 0, len(p))
	seen := map[Mount]bool{}
	for _, e := range p {
		if !seen[e.m] {
			seen[e.m] = true
			out = append(out, e.m)
		}
	}
	return out
}

func depth(path string) int { return strings.Count(path, "/") }
