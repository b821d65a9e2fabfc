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

import "os"

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
