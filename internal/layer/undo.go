package layer

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// Undo restores the host exactly as it was before commit id ("" = the
// latest commit not yet undone): overwritten and removed entries come back
// from the journal's backups (content, mode, owner, times, symlink
// targets), entries the commit created are removed, and directories it
// created are removed when empty. A host path changed since the commit
// (it no longer is what the commit wrote) makes Undo refuse with
// errdefs.ErrConflict unless force. Undo is journaled: a crash midway is
// finished by Recover.
func Undo(journalDir, id string, force bool) (*CommitInfo, error) {
	j, err := undoTarget(journalDir, id)
	if err != nil {
		return nil, err
	}
	if changed, err := undoConflicts(j); err != nil {
		return nil, err
	} else if len(changed) > 0 && !force {
		return nil, errdefs.Conflict("%d paths changed on the host since commit %s (first: %s); undo with --force to overwrite them",
			len(changed), j.ID, EscapeName(changed[0]))
	}
	j.State = stateUndoing
	if err := j.save(); err != nil {
		return nil, err
	}
	if err := j.runUndo(); err != nil {
		return nil, fmt.Errorf("undoing commit %s: %w; run any airlock command on the pod to finish the undo", j.ID, err)
	}
	info := j.info()
	return &info, nil
}

// undoTarget loads the journal to undo and checks it can be undone.
func undoTarget(journalDir, id string) (*journal, error) {
	if id == "" {
		js, err := loadJournals(journalDir)
		if err != nil {
			return nil, err
		}
		for i := len(js) - 1; i >= 0; i-- {
			if js[i].State == stateApplied {
				return js[i], nil
			}
		}
		return nil, errdefs.NotFound("no commit to undo in this pod")
	}
	j, err := loadJournal(journalDir, id)
	if err != nil {
		return nil, err
	}
	switch j.State {
	case stateApplied:
		return j, nil
	case stateUndone:
		return nil, errdefs.Conflict("commit %s is already undone", j.ID)
	}
	return nil, errdefs.Conflict("commit %s is %s; run any airlock command on the pod to finish it first", j.ID, j.State)
}

// undoConflicts lists the paths whose host entry is no longer what the
// commit left there.
func undoConflicts(j *journal) ([]string, error) {
	hosts := fdCache{}
	defer hosts.close()
	var changed []string
	for _, o := range j.Ops {
		hfd, err := hosts.open(o.Host)
		if err != nil {
			return nil, err
		}
		cur, err := hostState(hfd, o.Path)
		if err != nil {
			changed = append(changed, o.change().Display())
			continue
		}
		if !sameEntry(o.After, cur) {
			changed = append(changed, o.change().Display())
		}
	}
	return changed, nil
}

// runUndo restores every op in reverse order (children before parents),
// then removes the parent directories the commit created, and marks the
// journal undone. Every step is idempotent, so Recover may rerun it.
func (j *journal) runUndo() error {
	bfd, err := j.backupsFd()
	if err != nil {
		return err
	}
	defer unix.Close(bfd)
	hosts := fdCache{}
	defer hosts.close()
	last := len(j.Ops) - 1
	var back *giveBack // a person's undo gives the changes back to the layer
	if j.FailedAt != nil {
		if !j.Redo {
			last = min(last, *j.FailedAt) // reversing a failed apply: later ops never ran
		}
		// the layer still has the changes: nothing is given back
	} else {
		back = newGiveBack(hosts)
		defer back.close()
	}
	for i := last; i >= 0; i-- {
		o := &j.Ops[i]
		hfd, err := hosts.open(o.Host)
		if err != nil {
			return err
		}
		if j.Redo && j.FailedAt != nil && i > *j.FailedAt {
			ours, err := holdsCommitted(hfd, o)
			if err != nil {
				return fmt.Errorf("checking %s: %w", EscapeName(o.change().Display()), err)
			}
			if !ours {
				continue // never applied, or changed on the host since: not ours to undo
			}
		}
		par, reached := j.applied.dir(i)
		switch {
		case !reached && !j.Redo:
			continue // this process's failed apply never got to this op
		case par >= 0:
			// Through the directory the apply wrote into, wherever it is now.
			err = undoIn(j.ID, i, o, par, path.Base(o.Path), bfd, back)
		default:
			err = undoOp(j.ID, i, o, hfd, bfd, back)
		}
		if err != nil && j.FailedAt != nil && unreachable(err) {
			// Reversing a failed apply: this op could not reach its path.
			j.unreached = append(j.unreached, EscapeName(o.change().Display()))
			err = nil
		}
		if err != nil {
			return fmt.Errorf("restoring %s: %w", EscapeName(o.change().Display()), err)
		}
	}
	if err := removeCreatedParents(j, hosts); err != nil {
		return err
	}
	for _, fd := range hosts {
		if err := unix.Syncfs(fd); err != nil {
			return os.NewSyscallError("syncfs", err)
		}
	}
	if back != nil {
		j.BackInLayer = len(back.done)
	}
	j.State = stateUndone
	if err := j.save(); err != nil {
		return err
	}
	// The backups are no longer needed once the undo is durable.
	if err := os.RemoveAll(j.dir + "/" + backupsDir); err != nil {
		return err
	}
	if back != nil {
		// Only now: dropping the backups' hard links moved the restored
		// files' ctime. Best effort: without a record a later host edit
		// of these paths goes unnoticed, nothing worse.
		_ = back.rememberBase(j)
	}
	return nil
}

// undoOp puts back what the host held at o.Path before the commit; back
// (nil when reversing a failed apply) gives the pod's version to the layer.
func undoOp(id string, i int, o *op, hostFd, bfd int, back *giveBack) error {
	comps, err := splitRel(o.Path)
	if err != nil {
		return err
	}
	par, _, err := openDir(hostFd, comps[:len(comps)-1], func(_ int, p int) (uint32, int, int) {
		var st unix.Stat_t
		_ = unix.Fstat(p, &st)
		return 0o755, int(st.Uid), int(st.Gid)
	})
	if err != nil {
		return err
	}
	defer unix.Close(par)
	return undoIn(id, i, o, par, comps[len(comps)-1], bfd, back)
}

// undoIn is undoOp with o's parent directory open as par.
func undoIn(id string, i int, o *op, par int, name string, bfd int, back *giveBack) error {
	tmp := tmpName(id, i, ".undo")
	if err := removeAt(par, tmp); err != nil {
		return err
	}
	give := back != nil && back.wanted(o, par, name)
	switch {
	case o.Before == nil:
		if give {
			back.take(i, o, par, name)
		}
		return removeCreated(par, name)
	case o.Action == actChmod:
		if give {
			back.take(i, o, par, name)
		}
		return restoreDirMode(par, name, o.Before)
	case give && o.Action == actRemove:
		back.whiteout(i, o)
	}
	if err := cloneEntry(bfd, o.Backup, par, tmp); err != nil {
		return err
	}
	// Swap the restored entry in atomically, then drop what the commit left.
	err := unix.Renameat2(par, tmp, par, name, unix.RENAME_EXCHANGE)
	if err == unix.ENOENT {
		return ignoreENOENT(unix.Renameat(par, tmp, par, name), "renameat", name)
	}
	if err != nil {
		return &os.PathError{Op: "renameat2", Path: name, Err: err}
	}
	if give {
		back.take(i, o, par, tmp) // tmp now holds what the commit wrote
	}
	return removeAt(par, tmp)
}

// removeCreated removes an entry the commit created; a directory only
// when empty (anything left in it was put there after the commit).
func removeCreated(par int, name string) error {
	st, err := lstatAt(par, name)
	if err != nil || st == nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		err = unix.Unlinkat(par, name, unix.AT_REMOVEDIR)
		if err == unix.ENOTEMPTY || err == unix.EEXIST {
			return nil
		}
		return ignoreENOENT(err, "rmdir", name)
	}
	return ignoreENOENT(unix.Unlinkat(par, name, 0), "unlinkat", name)
}

func restoreDirMode(par int, name string, before *entryState) error {
	fd, err := unix.Openat(par, name, dirFlags, 0)
	if err != nil {
		return &os.PathError{Op: "openat", Path: name, Err: err}
	}
	defer unix.Close(fd)
	return fixOwnerMode(fd, before.UID, before.GID, before.Mode)
}

// removeCreatedParents removes, deepest first, the parent directories
// the commit created, when they are empty.
func removeCreatedParents(j *journal, hosts fdCache) error {
	type dir struct{ host, rel string }
	var dirs []dir
	for i, o := range j.Ops {
		if j.FailedAt != nil && i > *j.FailedAt && !j.Redo {
			break // later ops never ran (a redo's may have: only empty ones go)
		}
		comps, _ := splitRel(o.Path)
		for k := len(comps) - o.Made; k < len(comps); k++ {
			dirs = append(dirs, dir{o.Host, strings.Join(comps[:k], "/")})
		}
	}
	slices.SortFunc(dirs, func(a, b dir) int {
		if c := strings.Count(b.rel, "/") - strings.Count(a.rel, "/"); c != 0 {
			return c
		}
		return strings.Compare(a.host+"\x00"+a.rel, b.host+"\x00"+b.rel)
	})
	for _, d := range slices.Compact(dirs) {
		hfd, err := hosts.open(d.host)
		if err != nil {
			return err
		}
		par, name, err := openParent(hfd, d.rel)
		if unreachable(err) {
			continue
		}
		if err != nil {
			return err
		}
		if st, _ := lstatAt(par, name); st != nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err = removeCreated(par, name)
		}
		unix.Close(par)
		if err != nil {
			return err
		}
	}
	return nil
}

// unreachable reports a path that cannot be resolved: absent, or a
// component that is not a directory or is a symlink (never followed).
func unreachable(err error) bool {
	return isAbsent(err) || errors.Is(err, unix.ELOOP)
}

// fdCache holds directory fds of trusted paths (host roots) by path.
type fdCache map[string]int

func (c fdCache) open(path string) (int, error) {
	if fd, ok := c[path]; ok {
		return fd, nil
	}
	fd, err := openRoot(path)
	if err != nil {
		return -1, err
	}
	c[path] = fd
	return fd, nil
}

func (c fdCache) close() {
	for _, fd := range c {
		unix.Close(fd)
	}
}

// holdsCommitted reports whether the host entry of o is what the commit
// writes there, i.e. a crashed run applied o before Recover's redo failed
// at an earlier op. A removal is applied when the entry is gone; a write
// or chmod when the entry matches the layer's (type, and size and mtime,
// which the commit copies, or the symlink's target, or the directory's
// mode). Anything else is the host's own and stays as it is.
func holdsCommitted(hostFd int, o *op) (bool, error) {
	cur, err := hostState(hostFd, o.Path)
	if err != nil {
		if unreachable(err) {
			return false, nil
		}
		return false, err
	}
	if o.Action == actRemove {
		return cur == nil, nil
	}
	if cur == nil {
		return false, nil
	}
	// The layer entry as planned: a commit that links (same file
	// system) shares the inode with the layer until its clean-up, so a
	// host edit in place would show in the live layer entry too.
	want := o.Layer
	if want == nil || want.Type == "symlink" {
		ufd, err := openRoot(o.Upper)
		if err != nil {
			return false, err
		}
		defer unix.Close(ufd)
		if want, err = hostState(ufd, o.Path); err != nil {
			return false, err
		}
	}
	if want == nil || want.Type != cur.Type {
		return false, nil
	}
	switch {
	case o.Action == actChmod || cur.Type == "dir":
		return dirMode(cur.Mode) == dirMode(want.Mode), nil
	case cur.Type == "symlink":
		return cur.Target == want.Target, nil
	default:
		return cur.Size == want.Size && cur.Mtime == want.Mtime, nil
	}
}
