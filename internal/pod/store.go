package pod

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/airlock-dev/airlock/internal/atomicfile"
	"github.com/airlock-dev/airlock/internal/config"
	"github.com/airlock-dev/airlock/internal/errdefs"
	"golang.org/x/sys/unix"
)

// Create makes a new pod for workspace with cfg (nil: config.Default()).
// The workspace must be an existing absolute directory, neither inside
// $AIRLOCK_HOME nor containing it. A duplicate name is errdefs.ErrConflict;
// a state directory on a file system that cannot hold an overlay upper is
// errdefs.ErrUnsupported.
func (s *Store) Create(name, workspace string, cfg *config.Config) (*Pod, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if cfg == nil {
		cfg = config.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config of pod %s: %w", name, err)
	}
	ws, err := s.checkWorkspace(workspace)
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(s.podDir(name)); err == nil {
		return nil, errdefs.Conflict("a pod named %q already exists; pick another name or airlock destroy %s", name, name)
	}
	tmp, err := os.MkdirTemp(s.podsDir(), ".new-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("creating pod %s: %w", name, err)
	}
	p := &Pod{Name: name, Dir: tmp, Config: cfg, State: State{Name: name, Workspace: ws, Home: InvokerFor(ws).Home, Created: time.Now().UTC()}}
	if err := p.build(); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	if err := publish(tmp, s.podDir(name)); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	p.Dir = s.podDir(name)
	return p, atomicfile.SyncDir(s.podsDir())
}

// build fills a fresh pod directory: the file system probe, the
// directories, pod.yaml and state.json.
func (p *Pod) build() error {
	if err := os.Chmod(p.Dir, 0o700); err != nil {
		return fmt.Errorf("creating pod %s: %w", p.Name, err)
	}
	if err := checkUpperFS(p.Dir); err != nil {
		return err
	}
	for _, d := range podDirs {
		if err := os.Mkdir(filepath.Join(p.Dir, d), 0o700); err != nil {
			return fmt.Errorf("creating pod %s: %w", p.Name, err)
		}
	}
	if err := p.chooseLayer(); err != nil {
		return err
	}
	if p.State.Layer == LayerDir { // an image is made and mounted on first use
		if err := p.PrepareRoots(); err != nil {
			return err
		}
	}
	if err := p.SaveConfig(); err != nil {
		return err
	}
	return p.SaveState()
}

// PrepareRoots creates the upper and work directories of every root that
// lacks them (a root added to filesystem.cow after Create), and gives each
// upper directory the owner, mode and times of its host directory: the
// overlay's root takes its attributes from the upper, so the workspace
// would otherwise appear inside the pod as root's, mode 0700. Run calls it
// before every start, so host-side changes to them carry over.
func (p *Pod) PrepareRoots() error {
	if err := p.OpenLayer(); err != nil {
		return err
	}
	for _, r := range p.roots() {
		for _, d := range []string{r.Upper, r.Work} {
			if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("creating %s of pod %s: %w", d, p.Name, err)
			}
		}
		if err := mirrorAttrs(r.Host, r.Upper); err != nil {
			return fmt.Errorf("preparing the layer of %s for pod %s: %w", r.Host, p.Name, err)
		}
	}
	return nil
}

// mirrorAttrs copies owner, permission bits and times of host onto upper.
// A host directory that is gone is left for the sandbox to report. What
// already matches is not written again: each write dirties the layer's
// file system, whose journal the overlay's unmount then waits on.
func mirrorAttrs(host, upper string) error {
	var st, up unix.Stat_t
	if err := unix.Stat(host, &st); err != nil {
		return nil
	}
	if err := unix.Lstat(upper, &up); err != nil {
		return &os.PathError{Op: "lstat", Path: upper, Err: err}
	}
	chowned := up.Uid != st.Uid || up.Gid != st.Gid
	if chowned {
		if err := unix.Lchown(upper, int(st.Uid), int(st.Gid)); err != nil {
			return &os.PathError{Op: "lchown", Path: upper, Err: err}
		}
	}
	if chowned || up.Mode&0o7777 != st.Mode&0o7777 { // chown may drop setgid
		if err := unix.Chmod(upper, st.Mode&0o7777); err != nil {
			return &os.PathError{Op: "chmod", Path: upper, Err: err}
		}
	}
	if up.Atim != st.Atim || up.Mtim != st.Mtim {
		if err := unix.UtimesNano(upper, []unix.Timespec{st.Atim, st.Mtim}); err != nil {
			return &os.PathError{Op: "utimensat", Path: upper, Err: err}
		}
	}
	return nil
}

// publish renames the finished temp dir to its final name, refusing to
// replace anything already there: of two racing Creates exactly one wins.
func publish(tmp, final string) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
		name := filepath.Base(final)
		return errdefs.Conflict("a pod named %q already exists; pick another name or airlock destroy %s", name, name)
	}
	if err != nil {
		return fmt.Errorf("creating pod %s: %w", filepath.Base(final), &os.LinkError{Op: "renameat2", Old: tmp, New: final, Err: err})
	}
	return nil
}

// checkWorkspace resolves the workspace and refuses one that overlaps the
// store: the pod would otherwise see (and could change) its own state.
func (s *Store) checkWorkspace(workspace string) (string, error) {
	if !filepath.IsAbs(workspace) {
		return "", errdefs.Invalid("workspace %q must be an absolute path", workspace)
	}
	ws, err := filepath.EvalSymlinks(workspace)
	if err != nil {
		return "", errdefs.Invalid("workspace %s does not exist; create it or pick another directory", workspace)
	}
	st, err := os.Stat(ws)
	if err != nil || !st.IsDir() {
		return "", errdefs.Invalid("workspace %s is not a directory", workspace)
	}
	if within(ws, s.Home) || within(s.Home, ws) {
		return "", errdefs.Invalid("workspace %s overlaps the airlock home %s; pick a workspace outside it (or move AIRLOCK_HOME)", ws, s.Home)
	}
	return ws, nil
}

// Get loads the pod called name.
func (s *Store) Get(name string) (*Pod, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	p := &Pod{Name: name, Dir: s.podDir(name)}
	data, err := os.ReadFile(p.StatePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, errdefs.NotFound("no pod named %q; airlock ls lists pods", name)
	}
	if err != nil {
		return nil, fmt.Errorf("reading pod %s: %w", name, err)
	}
	if err := json.Unmarshal(data, &p.State); err != nil {
		return nil, fmt.Errorf("pod %s: state.json is corrupt (%v); airlock destroy %s removes the pod: %w", name, err, name, errdefs.ErrInvalid)
	}
	if p.Config, err = config.Load(p.ConfigPath()); err != nil {
		return nil, fmt.Errorf("pod %s: %w", name, err)
	}
	return p, nil
}

// Broken is a pod directory that cannot be loaded (a corrupt state.json
// or pod.yaml); it is listed so the person can see and destroy it.
type Broken struct {
	Name string
	Err  error
}

// List loads every pod, sorted by name. A pod that cannot be loaded is
// left out (ListAll reports it), so one damaged pod never stops commands
// on the others.
func (s *Store) List() ([]*Pod, error) {
	pods, _, err := s.ListAll()
	return pods, err
}

// ListAll loads every pod, sorted by name, and names the pod directories
// that could not be loaded.
func (s *Store) ListAll() ([]*Pod, []Broken, error) {
	entries, err := os.ReadDir(s.podsDir())
	if err != nil {
		return nil, nil, fmt.Errorf("listing pods in %s: %w", s.podsDir(), err)
	}
	var pods []*Pod
	var broken []Broken
	for _, e := range entries {
		if !e.IsDir() || ValidateName(e.Name()) != nil {
			continue // temp and trash dirs start with "."
		}
		p, err := s.Get(e.Name())
		if errors.Is(err, errdefs.ErrNotFound) {
			continue // destroyed while we listed
		}
		if err != nil {
			broken = append(broken, Broken{Name: e.Name(), Err: err})
			continue
		}
		pods = append(pods, p)
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	return pods, broken, nil
}

// ForWorkspace returns the pod bound to workspace dir (symlinks resolved);
// with several, the one named DefaultName(dir), else the first by name.
func (s *Store) ForWorkspace(dir string) (*Pod, error) {
	ws := filepath.Clean(dir)
	if r, err := filepath.EvalSymlinks(ws); err == nil {
		ws = r
	}
	pods, err := s.List()
	if err != nil {
		return nil, err
	}
	var found *Pod
	for _, p := range pods {
		if p.State.Workspace != ws {
			continue
		}
		if found == nil || p.Name == DefaultName(ws) {
			found = p
		}
	}
	if found == nil {
		return nil, errdefs.NotFound("no pod for workspace %s; airlock run creates one", ws)
	}
	return found, nil
}

// SaveState writes state.json atomically. Hold Lock() around the
// read-modify-write that led here.
func (p *Pod) SaveState() error {
	data, err := json.MarshalIndent(p.State, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding state of pod %s: %w", p.Name, err)
	}
	return atomicfile.WriteFile(p.StatePath(), append(data, '\n'))
}

// SaveConfig validates the config and writes pod.yaml atomically.
func (p *Pod) SaveConfig() error {
	if err := p.Config.Validate(); err != nil {
		return fmt.Errorf("config of pod %s: %w", p.Name, err)
	}
	data, err := config.Marshal(p.Config)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(p.ConfigPath(), data)
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
