// Package layer is a pod's copy-on-write layer: the overlay upper
// directories that hold everything the agent changed, and the operations a
// person performs on them from the host while the pod is stopped:
//
//   - Diff walks only the upper directories, so its cost is O(changes),
//     never O(workspace).
//   - Commit applies chosen changes to the host beneath a root, resolving
//     every path by file descriptor (openat2 RESOLVE_BENEATH|NO_SYMLINKS|
//     NO_MAGICLINKS), replacing by rename, stripping privilege bits and
//     xattrs, and journaling each commit so that a crash is finished on the
//     next call and Undo restores the host exactly.
//   - Rollback discards changes from the upper without following a symlink
//     out of the pod's directory.
//
// A pod has one Root per copy-on-write host directory (the workspace, the
// home directory, any extra filesystem.cow path). The overlay for a Root is
// mounted with redirect_dir=off, metacopy=off and index=off, so the upper
// holds only plain entries, whiteouts and opaque markers.
//
// The layer must not change under a mounted overlay: callers hold the pod
// lock and check the pod is stopped before calling anything that writes.
package layer

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
)

// Root is one copy-on-write host directory and its overlay directories.
type Root struct {
	// Name identifies the root in paths shown to the user: "workspace"
	// (paths shown relative), "home" (paths shown as ~/...), or the
	// absolute host path for extra roots.
	Name string `json:"name"`
	// Host is the absolute, symlink-free host path (the overlay lower).
	Host string `json:"host"`
	// Upper and Work are the overlay upper and work directories (same file system).
	Upper string `json:"upper"`
	Work  string `json:"work"`
}

// Kind classifies a change.
type Kind string

const (
	Added    Kind = "added"    // path exists in the layer, not on the host
	Modified Kind = "modified" // same type, content differs
	Deleted  Kind = "deleted"  // path exists on the host, removed in the layer
	TypeChg  Kind = "type"     // type differs (file <-> dir <-> symlink ...)
	ModeChg  Kind = "mode"     // same type and content, permission bits differ
)

// Change is one path in the layer that differs from the host.
type Change struct {
	Root string `json:"root"` // Root.Name
	Path string `json:"path"` // slash-separated, relative to Root.Host, never empty, no ".."
	Kind Kind   `json:"kind"`
	// Type of the entry in the layer ("file", "dir", "symlink", "fifo",
	// "socket", "device"); empty when Deleted.
	Type string `json:"type,omitempty"`
	// OldType is the type on the host; empty when Added.
	OldType string      `json:"old_type,omitempty"`
	Mode    os.FileMode `json:"mode,omitempty"`
	OldMode os.FileMode `json:"old_mode,omitempty"`
	Size    int64       `json:"size,omitempty"`
	// Opaque is set on a directory that replaced a host directory wholesale
	// (its host children are Deleted changes of their own).
	Opaque bool `json:"opaque,omitempty"`
}

// Display returns the path as shown to the user: workspace paths relative,
// home paths as ~/..., other roots absolute. The result is not escaped;
// pass it through EscapeName before printing to a terminal.
func (c Change) Display() string {
	switch c.Root {
	case "workspace":
		return c.Path
	case "home":
		return "~/" + c.Path
	default:
		return c.Root + "/" + c.Path
	}
}

// changeJSON is how a Change looks in --json output: modes as the octal
// permission strings people and scripts know ("0755", "4755"), with the
// type in its own field, not Go's os.FileMode bit set.
type changeJSON struct {
	Root    string `json:"root"`
	Path    string `json:"path"`
	Kind    Kind   `json:"kind"`
	Type    string `json:"type,omitempty"`
	OldType string `json:"old_type,omitempty"`
	Mode    string `json:"mode,omitempty"`
	OldMode string `json:"old_mode,omitempty"`
	Size    int64  `json:"size,omitempty"`
	Opaque  bool   `json:"opaque,omitempty"`
}

// MarshalJSON renders the modes as octal strings.
func (c Change) MarshalJSON() ([]byte, error) {
	return json.Marshal(changeJSON{Root: c.Root, Path: c.Path, Kind: c.Kind, Type: c.Type, OldType: c.OldType,
		Mode: octalMode(c.Mode, c.Type), OldMode: octalMode(c.OldMode, c.OldType), Size: c.Size, Opaque: c.Opaque})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (c *Change) UnmarshalJSON(b []byte) error {
	var j changeJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	mode, err := parseOctalMode(j.Mode, j.Type)
	if err != nil {
		return err
	}
	old, err := parseOctalMode(j.OldMode, j.OldType)
	if err != nil {
		return err
	}
	*c = Change{Root: j.Root, Path: j.Path, Kind: j.Kind, Type: j.Type, OldType: j.OldType, Mode: mode, OldMode: old, Size: j.Size, Opaque: j.Opaque}
	return nil
}

// octalMode is the st_mode permission part of m: "0644", "4755", "1777".
func octalMode(m os.FileMode, typ string) string {
	if typ == "" && m == 0 {
		return ""
	}
	return fmt.Sprintf("%04o", PermBits(m))
}

// PermBits is a mode's permission and special bits as chmod takes them.
func PermBits(m os.FileMode) uint32 {
	v := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		v |= 0o1000
	}
	return v
}

func typeMode(typ string) os.FileMode {
	switch typ {
	case "dir":
		return os.ModeDir
	case "symlink":
		return os.ModeSymlink
	case "fifo":
		return os.ModeNamedPipe
	case "socket":
		return os.ModeSocket
	case "device":
		return os.ModeDevice
	}
	return 0
}

func parseOctalMode(s, typ string) (os.FileMode, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o7777 {
		return 0, fmt.Errorf("mode %q: expected octal permission bits such as 0644", s)
	}
	m := os.FileMode(v&0o777) | typeMode(typ)
	if v&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if v&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if v&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m, nil
}
