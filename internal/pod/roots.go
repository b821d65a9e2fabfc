package pod

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"

	"github.com/airlock-dev/airlock/internal/layer"
)

// Roots returns the pod's copy-on-write roots: the workspace, the home
// directory when filesystem.cow lists "~" and the home is not inside the
// workspace, and every other filesystem.cow directory. A directory equal
// to or inside an earlier root is skipped, since that root covers it.
//
// Extra roots live in upper/cow-<hash of the host path> so that editing
// the cow list never attributes one directory's changes to another.
//
// For a disk-capped pod, Roots opens the layer for this process (see
// OpenLayer) on the way; a failure shows when the layer is used, and
// PrepareRoots and OpenLayer report it.
func (p *Pod) Roots() []layer.Root {
	_ = p.OpenLayer()
	return p.roots()
}

func (p *Pod) roots() []layer.Root {
	base := p.layerBase()
	ws := p.State.Workspace
	roots := []layer.Root{p.root(base, "workspace", ws, "workspace")}
	for _, c := range p.Config.Filesystem.Cow {
		host := p.expandHome(c)
		if host == "" || covered(roots, host) {
			continue
		}
		if c == "~" || host == p.State.Home {
			roots = append(roots, p.root(base, "home", host, "home"))
			continue
		}
		sum := sha256.Sum256([]byte(host))
		roots = append(roots, p.root(base, host, host, "cow-"+hex.EncodeToString(sum[:6])))
	}
	return roots
}

func (p *Pod) root(base, name, host, dir string) layer.Root {
	return layer.Root{
		Name:  name,
		Host:  host,
		Upper: filepath.Join(base, "upper", dir),
		Work:  filepath.Join(base, "work", dir),
	}
}

// expandHome turns "~" and "~/x" into host paths; "" when there is no
// home or the path is not absolute.
func (p *Pod) expandHome(c string) string {
	switch {
	case c == "~":
		return p.State.Home
	case strings.HasPrefix(c, "~/"):
		if p.State.Home == "" {
			return ""
		}
		return filepath.Join(p.State.Home, c[2:])
	case filepath.IsAbs(c):
		return filepath.Clean(c)
	}
	return ""
}

// covered reports whether host is one of roots or inside one.
func covered(roots []layer.Root, host string) bool {
	for _, r := range roots {
		if within(host, r.Host) {
			return true
		}
	}
	return false
}

// within reports whether path is dir or beneath it (both clean, absolute).
func within(path, dir string) bool {
	if dir == "/" {
		return true
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}
