package layer

// The commit journal. Each commit owns journalDir/<id>/ holding
// journal.json (the ops, what each host path held before, the state) and
// backups/ (the host entries the commit overwrites or removes). States move
// forward only, each written atomically (temp + fsync + rename):
//
//	preparing -> applying -> applied -> undoing -> undone
//
// preparing: backups being taken, host untouched (Recover discards).
// applying:  host being changed; every op is idempotent (Recover redoes all).
// applied:   host done; Cleaned tells whether the upper was cleaned yet.
// undoing:   host being restored from backups (Recover redoes the undo).

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/atomicfile"
	"github.com/airlock-dev/airlock/internal/errdefs"
)

const (
	statePreparing = "preparing"
	stateApplying  = "applying"
	stateApplied   = "applied"
	stateUndoing   = "undoing"
	stateUndone    = "undone"

	journalFile   = "journal.json"
	backupsDir    = "backups"
	journalFormat = 1
)

// Actions an op performs on its host path.
const (
	actWrite  = "write"  // create or replace with the layer's entry
	actChmod  = "chmod"  // directory kept, mode changed in place
	actRemove = "remove" // entry (a directory recursively) removed
)

// CommitInfo summarises one journaled commit.
type CommitInfo struct {
	ID    string    `json:"id"`
	Time  time.Time `json:"time"`
	Actor string    `json:"actor,omitempty"`
	Paths int       `json:"paths"`
	State string    `json:"state"` // preparing, applying, applied, undoing, undone
	// BackInLayer counts the paths the undo gave back to the layer.
	BackInLayer int `json:"back_in_layer,omitempty"`
}

// entryState is what a host path held at one moment; nil means absent.
type entryState struct {
	Type   string `json:"type"`
	Mode   uint32 `json:"mode"` // permission bits incl. set-id/sticky
	UID    int    `json:"uid"`
	GID    int    `json:"gid"`
	Size   int64  `json:"size,omitempty"`
	Mtime  int64  `json:"mtime_ns"`
	Ctime  int64  `json:"ctime_ns,omitempty"`
	Ino    uint64 `json:"ino,omitempty"`
	Dev    uint64 `json:"dev,omitempty"`
	Target string `json:"target,omitempty"` // symlink target
}

// op is one host path a commit changes.
type op struct {
	Root   string      `json:"root"`
	Path   string      `json:"path"`
	Host   string      `json:"host"`  // Root.Host
	Upper  string      `json:"upper"` // Root.Upper
	Kind   Kind        `json:"kind"`
	Action string      `json:"action"`
	Type   string      `json:"type,omitempty"` // type written (actWrite)
	Opaque bool        `json:"opaque,omitempty"`
	Before *entryState `json:"before,omitempty"`
	Backup string      `json:"backup,omitempty"` // name under backups/
	After  *entryState `json:"after,omitempty"`  // recorded once applied
	// Layer is the layer entry as planned (type, mode, size, mtime): what
	// the commit writes, for telling its result from a later host edit.
	Layer *entryState `json:"layer,omitempty"`
	// Made counts the parent directories of Path this op had to create
	// (the deepest Made ones); undo removes them again when empty.
	// create on the host; undo removes them again when empty.
	Made int `json:"made_parents,omitempty"`
}

func (o *op) change() Change { return Change{Root: o.Root, Path: o.Path, Kind: o.Kind, Type: o.Type} }

// journal is the content of journal.json.
type journal struct {
	Format  int       `json:"format"`
	ID      string    `json:"id"`
	Time    time.Time `json:"time"`
	Actor   string    `json:"actor,omitempty"`
	State   string    `json:"state"`
	Cleaned bool      `json:"cleaned,omitempty"` // upper cleaned after apply
	Base    string    `json:"base,omitempty"`    // base file to prune after apply
	// FailedAt is set when an apply failed at that op and the commit is
	// being reversed: later ops never ran, so only ops up to it are undone.
	FailedAt *int `json:"failed_at,omitempty"`
	// Redo marks a failure while Recover re-ran a crashed apply: ops
	// after FailedAt may hold what the crashed run wrote, so the
	// reversal undoes each of them whose host entry is the commit's.
	Redo bool `json:"redo,omitempty"`
	// BackInLayer counts the paths an undo gave back to the layer.
	BackInLayer int  `json:"back_in_layer,omitempty"`
	Ops         []op `json:"ops"`

	dir string // journalDir/<id>
	// applied holds the directories of this process's apply, for the
	// reversal of a failed one (applied.go); nil otherwise.
	applied *appliedDirs
	// unreached lists the ops a reversal could not reach (display paths).
	unreached []string
}

func (j *journal) info() CommitInfo {
	return CommitInfo{ID: j.ID, Time: j.Time, Actor: j.Actor, Paths: len(j.Ops), State: j.State, BackInLayer: j.BackInLayer}
}

// newID names a commit so that IDs sort by time.
func newID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102-150405.000000") + "-" + hex.EncodeToString(b[:])
}

// save writes journal.json atomically and durably. It is encoded straight
// into the file: a commit of 10,000 files has a journal of a few MB,
// written in each state.
func (j *journal) save() error {
	err := atomicfile.Write(filepath.Join(j.dir, journalFile), func(w io.Writer) error {
		return json.NewEncoder(w).Encode(j)
	})
	if err != nil {
		return fmt.Errorf("writing commit journal %s: %w; check free space in the pod directory", j.ID, err)
	}
	return nil
}

// loadJournal reads journalDir/id/journal.json.
func loadJournal(journalDir, id string) (*journal, error) {
	if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
		return nil, errdefs.Invalid("commit id %s is malformed; list commits with airlock undo --list", EscapeName(id))
	}
	dir := filepath.Join(journalDir, id)
	data, err := os.ReadFile(filepath.Join(dir, journalFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errdefs.NotFound("no commit %s in this pod; list commits with airlock undo --list", EscapeName(id))
	}
	if err != nil {
		return nil, fmt.Errorf("reading commit journal %s: %w", id, err)
	}
	var j journal
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("commit journal %s is corrupt: %w; inspect %s by hand", id, err, dir)
	}
	if j.Format != journalFormat {
		return nil, errdefs.Unsupported("commit journal %s has format %d, this airlock reads %d; use a matching airlock", id, j.Format, journalFormat)
	}
	j.dir = dir
	return &j, nil
}

// loadJournals reads every journal in journalDir, oldest first. A
// directory without journal.json (a commit that crashed before its first
// write) is ignored.
func loadJournals(journalDir string) ([]*journal, error) {
	ents, err := os.ReadDir(journalDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing commits: %w", err)
	}
	var out []*journal
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		j, err := loadJournal(journalDir, e.Name())
		if errors.Is(err, errdefs.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	slices.SortFunc(out, func(a, b *journal) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// ListCommits returns every commit recorded in journalDir, oldest first.
func ListCommits(journalDir string) ([]CommitInfo, error) {
	js, err := loadJournals(journalDir)
	if err != nil {
		return nil, err
	}
	out := make([]CommitInfo, 0, len(js))
	for _, j := range js {
		out = append(out, j.info())
	}
	return out, nil
}

// Recover finishes or reverses every interrupted commit or undo in
// journalDir and returns their IDs. A commit still preparing never touched
// the host and is discarded; one applying is redone (each op is
// idempotent) and finished; one applied but not yet cleaned gets its upper
// cleaned; an undo in progress is redone. Callers hold the pod lock.
func Recover(journalDir string) ([]string, error) {
	dropUnstarted(journalDir)
	js, err := loadJournals(journalDir)
	if err != nil {
		return nil, err
	}
	var done []string
	for _, j := range js {
		acted, err := recoverOne(j)
		if err != nil {
			return done, fmt.Errorf("recovering commit %s: %w", j.ID, err)
		}
		if acted {
			done = append(done, j.ID)
		}
	}
	return done, nil
}

// dropUnstarted removes commit directories that never got a journal.json
// (a crash right after creating them): nothing was backed up or changed.
func dropUnstarted(journalDir string) {
	ents, _ := os.ReadDir(journalDir)
	for _, e := range ents {
		dir := filepath.Join(journalDir, e.Name())
		if _, err := os.Lstat(filepath.Join(dir, journalFile)); e.IsDir() && errors.Is(err, os.ErrNotExist) {
			os.RemoveAll(dir)
		}
	}
}

func recoverOne(j *journal) (bool, error) {
	switch {
	case j.State == statePreparing:
		if err := os.RemoveAll(j.dir); err != nil {
			return true, err
		}
		return true, settleBase(j.Base, j.Ops)
	case j.State == stateApplying:
		j.Redo = true
		if err := j.finishApply(); err != nil {
			return true, j.reverse(err)
		}
		return true, nil
	case j.State == stateApplied && !j.Cleaned:
		return true, j.finishClean()
	case j.State == stateUndoing:
		if err := j.runUndo(); err != nil {
			return true, err
		}
		if j.FailedAt != nil { // a failed apply being reversed: the layer keeps its changes
			return true, settleBase(j.Base, j.Ops)
		}
		return true, nil
	}
	return false, nil
}

// backupsFd opens the backups directory of the journal.
func (j *journal) backupsFd() (int, error) {
	return openRoot(filepath.Join(j.dir, backupsDir))
}

// stateOf describes st (read from parent fd p, entry name) as an entryState.
func stateOf(p int, name string, st *unix.Stat_t) (*entryState, error) {
	if st == nil {
		return nil, nil
	}
	e := &entryState{Type: typeName(st.Mode), Mode: st.Mode & 07777, UID: int(st.Uid), GID: int(st.Gid),
		Size: regSize(st), Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(), Ino: st.Ino, Dev: st.Dev}
	if e.Type == "symlink" {
		t, err := readLink(p, name)
		if err != nil {
			return nil, err
		}
		e.Target = t
	}
	return e, nil
}

// sameEntry reports whether the host entry still is the one recorded. For
// directories only type, inode and mode count: their times move whenever
// a child changes.
func sameEntry(rec, cur *entryState) bool {
	if rec == nil || cur == nil {
		return rec == nil && cur == nil
	}
	if rec.Type != cur.Type || rec.Ino != cur.Ino || rec.Mode != cur.Mode {
		return false
	}
	if rec.Type == "dir" {
		return true
	}
	return rec.Size == cur.Size && rec.Mtime == cur.Mtime && rec.Target == cur.Target
}
