// Package pod is the one owner of Airlock's on-disk layout under
// $AIRLOCK_HOME:
//
//	pods/<name>/pod.yaml       the effective config
//	pods/<name>/state.json     what happened to the pod (State)
//	pods/<name>/lock           flock for every read-modify-write of pod state
//	pods/<name>/upper/<root>   overlay upper of each copy-on-write root
//	pods/<name>/work/<root>    overlay work dir of each root
//	pods/<name>/layer.img      with resources.disk: the ext4 image holding
//	                           upper/ and work/, mounted on layer/ while used
//	pods/<name>/rootfs/ journal/ snapshots/ vault/ run/
//	pods/<name>/run/running    held locked by the supervisor for the whole run
//	pods/<name>/run/last.json  what the last run did (RunState); not synced
//	pods/<name>/audit.jsonl    audit trail (written by package audit)
//
// Invariants:
//   - A pod directory appears whole or not at all: Create builds it under a
//     hidden temporary name and publishes it with one rename that refuses
//     to replace an existing pod, so two racing Creates never both win.
//   - Every state file is replaced atomically (temp file in the same
//     directory, fsync, rename, fsync of the directory), mode 0600.
//   - Destroy never follows a symlink out of the pod's directory and never
//     descends into a mount point.
//   - Lock order: the run lock (held for a whole run) may be held while
//     taking the pod lock, never the other way round.
package pod

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/airlock-dev/airlock/internal/config"
	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/statedir"
)

// State is what Airlock records about a pod between commands
// (pods/<name>/state.json).
type State struct {
	Name      string    `json:"name"`
	Workspace string    `json:"workspace"` // absolute, symlink-free
	Home      string    `json:"home"`      // host home dir, copied-on-write when filesystem.cow has "~"
	Created   time.Time `json:"created"`
	// Layer is where the overlay upper and work directories live:
	// LayerDir or LayerExt4 (disk.go), fixed when the pod is created.
	Layer string `json:"layer,omitempty"`
}

// Pod is one pod as loaded from disk.
type Pod struct {
	Name   string
	Dir    string
	Config *config.Config
	State  State
}

// Store is an $AIRLOCK_HOME directory.
type Store struct {
	Home string // absolute, symlink-free
}

// DefaultHome returns the store's directory when none is named
// (statedir.Default: $AIRLOCK_HOME, /var/lib/airlock as root, else
// $XDG_DATA_HOME/airlock or ~/.local/share/airlock).
func DefaultHome() string { return statedir.Default() }

// Open returns the store at home, creating it (0700) if needed.
func Open(home string) (*Store, error) {
	abs, err := filepath.Abs(home)
	if err != nil {
		return nil, errdefs.Invalid("airlock home %s: %v", home, err)
	}
	if err := os.MkdirAll(filepath.Join(abs, "pods"), 0o700); err != nil {
		return nil, fmt.Errorf("creating airlock home %s (set AIRLOCK_HOME to a writable directory): %w", abs, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("resolving airlock home %s: %w", abs, err)
	}
	return &Store{Home: real}, nil
}

func (s *Store) podsDir() string           { return filepath.Join(s.Home, "pods") }
func (s *Store) podDir(name string) string { return filepath.Join(s.podsDir(), name) }

// nameRule is compiled on first use; the length is checked apart (a
// counted repetition compiles to one copy of the class per count).
var nameRule = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`) })

// ValidateName checks a pod name: 1 to 63 characters, lower-case letters,
// digits, '_', '.' and '-', starting with a letter or digit.
func ValidateName(name string) error {
	if len(name) > 63 || !nameRule().MatchString(name) {
		return errdefs.Invalid("invalid pod name %q: use 1-63 lower-case letters, digits, '_', '.' or '-', starting with a letter or digit", name)
	}
	return nil
}

// DefaultName derives a stable pod name from a workspace path: its
// sanitised base name plus a short hash of the full path, so that two
// workspaces called "app" get different pods.
func DefaultName(workspace string) string {
	base := strings.ToLower(filepath.Base(workspace))
	var b strings.Builder
	for _, r := range base {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	clean := strings.TrimLeft(b.String(), "_.-")
	if len(clean) > 48 {
		clean = clean[:48]
	}
	if clean == "" {
		clean = "pod"
	}
	sum := sha256.Sum256([]byte(workspace))
	return clean + "-" + hex.EncodeToString(sum[:3])
}

// Paths inside the pod directory.

func (p *Pod) ConfigPath() string    { return filepath.Join(p.Dir, "pod.yaml") }
func (p *Pod) StatePath() string     { return filepath.Join(p.Dir, "state.json") }
func (p *Pod) JournalDir() string    { return filepath.Join(p.Dir, "journal") }
func (p *Pod) BasePath() string      { return filepath.Join(p.Dir, "base.json") }
func (p *Pod) AuditPath() string     { return filepath.Join(p.Dir, "audit.jsonl") }
func (p *Pod) RootfsDir() string     { return filepath.Join(p.Dir, "rootfs") }
func (p *Pod) SnapshotsDir() string  { return filepath.Join(p.Dir, "snapshots") }
func (p *Pod) RunDir() string        { return filepath.Join(p.Dir, "run") }
func (p *Pod) ControlSocket() string { return filepath.Join(p.RunDir(), "control.sock") }
func (p *Pod) VaultDir() string      { return filepath.Join(p.Dir, "vault") }
func (p *Pod) lockPath() string      { return filepath.Join(p.Dir, "lock") }
func (p *Pod) runLockPath() string   { return filepath.Join(p.RunDir(), "running") }
func (p *Pod) runStatePath() string  { return filepath.Join(p.RunDir(), "last.json") }

// dirs are created (0700) with every pod.
var podDirs = []string{"upper", "work", "layer", "rootfs", "journal", "snapshots", "run", "vault"}
