package layer

// The conflict base: for every path in the layer, what the host held when
// the pod copied it. Commit compares the host's current entry with this
// record and reports a conflict instead of silently overwriting a change
// made on the host in the meantime.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/atomicfile"
)

const baseFormat = 1

// ctimeSlack widens "changed during the run": file times come from the
// kernel's coarse clock, which lags the real time by up to a tick, so a
// change just after the run started may carry a ctime slightly before it.
// Two ticks of that clock (8 ms at HZ=250) cover it; every host file
// changed within that window before a run is a conflict the person must
// confirm with --force, so the window is kept as small as is safe.
var ctimeSlack = coarseSlack()

func coarseSlack() time.Duration {
	var res unix.Timespec
	if err := unix.ClockGetres(unix.CLOCK_REALTIME_COARSE, &res); err != nil || res.Nano() <= 0 || res.Nano() > int64(50*time.Millisecond) {
		return 50 * time.Millisecond
	}
	return max(2*time.Duration(res.Nano()), time.Millisecond)
}

// BaseEntry is the host stat of one path when the pod copied it.
type BaseEntry struct {
	// Absent: the host had no entry (a path the pod added).
	Absent bool `json:"absent,omitempty"`
	// ChangedDuringRun: the host entry changed while the pod ran, so the
	// pod's copy may predate it; always a conflict.
	ChangedDuringRun bool   `json:"changed_during_run,omitempty"`
	Type             string `json:"type,omitempty"`
	Dev              uint64 `json:"dev,omitempty"`
	Ino              uint64 `json:"ino,omitempty"`
	Size             int64  `json:"size,omitempty"`
	Mtime            int64  `json:"mtime_ns,omitempty"`
	Ctime            int64  `json:"ctime_ns,omitempty"`
	Mode             uint32 `json:"mode,omitempty"`
}

// Base is the conflict base of a pod: root name -> relative path -> entry.
type Base struct {
	Format int                             `json:"format"`
	Roots  map[string]map[string]BaseEntry `json:"roots"`

	path string // where LoadBase read it; Commit prunes committed paths there
}

// LoadBase reads a base file; a missing file is an empty base.
func LoadBase(path string) (*Base, error) {
	b := &Base{Format: baseFormat, Roots: map[string]map[string]BaseEntry{}, path: path}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return b, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading conflict base: %w", err)
	}
	if err := json.Unmarshal(data, b); err != nil {
		return nil, fmt.Errorf("conflict base %s is corrupt: %w; remove it to start a fresh base (conflicts made before now go undetected)", path, err)
	}
	if b.Roots == nil {
		b.Roots = map[string]map[string]BaseEntry{}
	}
	b.path = path
	return b, nil
}

// Lookup returns the record of root/rel; a nil Base has none.
func (b *Base) Lookup(root, rel string) (BaseEntry, bool) {
	if b == nil {
		return BaseEntry{}, false
	}
	e, ok := b.Roots[root][rel]
	return e, ok
}

func (b *Base) save() error {
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(b.path), 0o700); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(b.path, data); err != nil {
		return fmt.Errorf("writing conflict base: %w; check free space in the pod directory", err)
	}
	return nil
}

// conflict says why the host entry cur differs from the record, or "".
func (e BaseEntry) conflict(cur *entryState) string {
	switch {
	case e.ChangedDuringRun:
		return "changed on the host while the pod ran"
	case e.Absent && cur != nil:
		return "created on the host after the pod started"
	case e.Absent:
		return ""
	case cur == nil:
		return "removed from the host since the pod copied it"
	case e.Type != cur.Type || e.Ino != cur.Ino || (e.Dev != 0 && cur.Dev != 0 && e.Dev != cur.Dev):
		return "replaced on the host since the pod copied it"
	case e.Type == "dir":
		if e.Mode != cur.Mode {
			return "mode changed on the host since the pod copied it"
		}
		return ""
	case e.Size != cur.Size || e.Mtime != cur.Mtime || e.Ctime != cur.Ctime || e.Mode != cur.Mode:
		return "changed on the host since the pod copied it"
	}
	return ""
}

// RecordBase records, after a pod run that started at runStart, the host
// stat of every layer path not yet in the base at basePath. A host entry
// whose ctime is not before runStart changed while the pod ran: it is
// recorded as such and is always a conflict. A layer path with no host
// entry is recorded absent. Records of paths no longer in the layer are
// dropped. Directories are recorded by type, inode and mode only (their
// times move whenever a child changes). The file is replaced atomically.
func RecordBase(roots []Root, basePath string, runStart time.Time) error {
	b, err := LoadBase(basePath)
	if err != nil {
		return err
	}
	before, err := json.Marshal(b)
	if err != nil {
		return err
	}
	for _, r := range roots {
		if err := recordRoot(b, r, runStart.UnixNano()); err != nil {
			return fmt.Errorf("recording conflict base of %s: %w", r.Name, err)
		}
	}
	// Most runs add nothing new to the base; rewriting it costs two
	// fsyncs at the end of every run.
	if after, err := json.Marshal(b); err == nil && bytes.Equal(before, after) {
		if _, err := os.Stat(basePath); err == nil {
			return nil
		}
	}
	return b.save()
}

func recordRoot(b *Base, r Root, start int64) error {
	up, err := openRoot(r.Upper)
	if err != nil {
		return err
	}
	host, err := openRoot(r.Host)
	if err != nil {
		unix.Close(up)
		return err
	}
	defer unix.Close(host)
	old := b.Roots[r.Name]
	w := &baseWalker{old: old, now: map[string]BaseEntry{}, start: start}
	if err := w.dir(up, host, ""); err != nil {
		return err
	}
	b.Roots[r.Name] = w.now
	return nil
}

// baseWalker walks one upper directory alongside its host counterpart.
type baseWalker struct {
	old, now map[string]BaseEntry
	start    int64
}

// dir records the entries of upper dir up (closed here); host is the host
// directory at the same path or -1.
func (w *baseWalker) dir(up, host int, rel string) error {
	defer unix.Close(up)
	names, err := readNames(up)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := w.entry(up, host, subPath(rel, n), n); err != nil {
			return err
		}
	}
	return nil
}

func (w *baseWalker) entry(up, host int, rel, name string) error {
	var hst *unix.Stat_t
	var err error
	if host >= 0 {
		if hst, err = lstatAt(host, name); err != nil {
			return err
		}
	}
	if e, ok := w.old[rel]; ok {
		w.now[rel] = e
	} else {
		w.now[rel] = w.record(hst)
	}
	var ust unix.Stat_t
	if err := unix.Fstatat(up, name, &ust, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "fstatat", Path: rel, Err: err}
	}
	if ust.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil
	}
	sub, err := unix.Openat(up, name, dirFlags, 0)
	if err != nil {
		return &os.PathError{Op: "openat", Path: rel, Err: err}
	}
	hsub := -1
	if hst != nil && hst.Mode&unix.S_IFMT == unix.S_IFDIR {
		if hsub, err = unix.Openat(host, name, dirFlags, 0); err != nil {
			unix.Close(sub)
			return &os.PathError{Op: "openat", Path: rel, Err: err}
		}
		defer unix.Close(hsub)
	}
	return w.dir(sub, hsub, rel)
}

func (w *baseWalker) record(st *unix.Stat_t) BaseEntry {
	if st == nil {
		return BaseEntry{Absent: true}
	}
	dir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if !dir && st.Ctim.Nano() >= w.start-int64(ctimeSlack) {
		return BaseEntry{ChangedDuringRun: true}
	}
	return BaseEntry{Type: typeName(st.Mode), Dev: st.Dev, Ino: st.Ino, Size: regSize(st),
		Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(), Mode: st.Mode & 07777}
}

// forgetBase drops the records of committed paths: the host now holds the
// pod's version, so the next run records afresh.
func forgetBase(path string, ops []op) error {
	b, err := LoadBase(path)
	if err != nil {
		return err
	}
	for _, o := range ops {
		delete(b.Roots[o.Root], o.Path)
	}
	return b.save()
}

// settleBase takes back the ctime a commit that did not happen left on
// host files: taking a backup hard-links the host file, and dropping the
// backup unlinks it again; each changes the file's ctime and nothing else.
// Without this, every path of a discarded or reversed commit would stay a
// conflict until --force. A record is updated only when the host entry
// still is the same inode with the recorded type, size, mtime and mode.
func settleBase(path string, ops []op) error {
	if path == "" {
		return nil
	}
	b, err := LoadBase(path)
	if err != nil {
		return err
	}
	hosts := fdCache{}
	defer hosts.close()
	changed := false
	for _, o := range ops {
		e, ok := b.Roots[o.Root][o.Path]
		if !ok || e.Absent || e.ChangedDuringRun || e.Type == "dir" || o.Before == nil {
			continue
		}
		hfd, err := hosts.open(o.Host)
		if err != nil {
			return err
		}
		cur, err := hostState(hfd, o.Path)
		if err != nil || cur == nil {
			continue
		}
		if cur.Type == e.Type && cur.Ino == e.Ino && cur.Size == e.Size && cur.Mtime == e.Mtime &&
			cur.Mode == e.Mode && cur.Ctime != e.Ctime {
			e.Ctime = cur.Ctime
			b.Roots[o.Root][o.Path] = e
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return b.save()
}
