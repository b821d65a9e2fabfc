package layer

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// CommitOptions tunes Commit.
type CommitOptions struct {
	Force  bool   // apply conflicting paths too
	DryRun bool   // compute the result, touch nothing
	Actor  string // who commits (recorded in the journal)
}

// Skipped is a change Commit left out on purpose.
type Skipped struct {
	Path   string `json:"path"` // Change.Display()
	Reason string `json:"reason"`
}

// Conflict is a change whose host path moved since the pod copied it.
type Conflict struct {
	Path   string `json:"path"` // Change.Display()
	Reason string `json:"reason"`
}

// CommitResult reports what Commit did (or, with DryRun, would do).
type CommitResult struct {
	ID        string     `json:"id"`
	Applied   []Change   `json:"applied"`
	Skipped   []Skipped  `json:"skipped,omitempty"`
	Conflicts []Conflict `json:"conflicts,omitempty"`
	DryRun    bool       `json:"dry_run,omitempty"`
	// Outside counts the changes outside the workspace (home, extra roots)
	// that a commit without paths left in the layer; set by the caller.
	Outside int `json:"outside_workspace,omitempty"`
}

// Commit applies changes (already chosen by the caller) to the host, each
// beneath its own Root.Host, and journals the commit in journalDir/<id>
// so that Recover can finish it after a crash and Undo can reverse it.
// base (may be nil: no conflict detection) says what each host path was
// when the pod copied it; a conflicting path stops the whole commit unless
// opts.Force. FIFOs, sockets and device nodes are skipped. After the host
// is updated, the committed entries leave the upper, so diff no longer
// shows them. The pod must be stopped and its lock held.
func Commit(roots []Root, changes []Change, journalDir string, base *Base, opts CommitOptions) (*CommitResult, error) {
	p, err := newPlanner(roots, base)
	if err != nil {
		return nil, err
	}
	defer p.close()
	j := &journal{Format: journalFormat, Time: time.Now(), Actor: opts.Actor, State: statePreparing}
	j.ID = newID(j.Time)
	res := &CommitResult{ID: j.ID, DryRun: opts.DryRun, Applied: []Change{}}
	for _, c := range subsume(sortChanges(roots, changes)) {
		if err := p.plan(c, j, res); err != nil {
			return nil, err
		}
	}
	if len(res.Conflicts) > 0 && !opts.Force {
		res.Applied = []Change{}
		return res, errdefs.Conflict("%d paths changed on the host since the pod copied them; review with airlock diff, then commit with --force", len(res.Conflicts))
	}
	if opts.DryRun || len(j.Ops) == 0 {
		if len(j.Ops) == 0 {
			res.ID = ""
		}
		return res, nil
	}
	if base != nil {
		j.Base = base.path
	}
	if err := prepare(j, journalDir); err != nil {
		return nil, err
	}
	if hookAfterPrepare != nil {
		hookAfterPrepare()
	}
	if err := j.finishApply(); err != nil {
		return nil, j.reverse(err)
	}
	return res, nil
}

// sortChanges orders changes by root (in roots order), then path, so
// parents come before children.
func sortChanges(roots []Root, changes []Change) []Change {
	idx := map[string]int{}
	for i, r := range roots {
		idx[r.Name] = i
	}
	out := slices.Clone(changes)
	slices.SortStableFunc(out, func(a, b Change) int {
		if c := idx[a.Root] - idx[b.Root]; c != 0 {
			return c
		}
		return strings.Compare(a.Path, b.Path)
	})
	return out
}

// subsume drops Deleted changes beneath a path that is itself removed or
// replaced: the parent's op already handles (and backs up) the subtree.
func subsume(cs []Change) []Change {
	var out []Change
	var gone []string // root + "\x00" + path of removed/replaced dirs
	for _, c := range cs {
		key := c.Root + "\x00" + c.Path
		if c.Kind == Deleted && slices.ContainsFunc(gone, func(g string) bool { return strings.HasPrefix(key, g+"/") }) {
			continue
		}
		if c.Kind == Deleted || c.Kind == TypeChg {
			gone = append(gone, key)
		}
		out = append(out, c)
	}
	return out
}

// rootFds holds the resolution anchors of one root.
type rootFds struct {
	root     Root
	host, up int
	sameFS   bool
	// noCopyRange is set once copy_file_range failed between the two
	// file systems (a disk-capped layer: EXDEV): later files go straight
	// to sendfile.
	noCopyRange atomic.Bool
	baseByPath  map[string]BaseEntry
}

// planner classifies changes into journal ops, conflicts and skips.
type planner struct {
	roots map[string]*rootFds
	base  *Base
	list  []Root
	// replaced holds root+"\x00"+path of planned ops that put a directory
	// where the host has a non-directory.
	replaced map[string]bool
	up, host parentCache
}

func newPlanner(roots []Root, base *Base) (*planner, error) {
	p := &planner{roots: map[string]*rootFds{}, base: base, list: roots, replaced: map[string]bool{}}
	for _, r := range roots {
		fds, err := openRootFds(r)
		if err != nil {
			p.close()
			return nil, err
		}
		p.roots[r.Name] = fds
	}
	return p, nil
}

func openRootFds(r Root) (*rootFds, error) {
	h, err := openRoot(r.Host)
	if err != nil {
		return nil, fmt.Errorf("opening host directory of %s: %w; was it moved or removed?", r.Name, err)
	}
	u, err := openRoot(r.Upper)
	if err != nil {
		unix.Close(h)
		return nil, fmt.Errorf("opening layer of %s: %w; check the pod's directory", r.Name, err)
	}
	var hs, us unix.Stat_t
	_ = unix.Fstat(h, &hs)
	_ = unix.Fstat(u, &us)
	return &rootFds{root: r, host: h, up: u, sameFS: hs.Dev == us.Dev}, nil
}

func (p *planner) close() {
	p.up.drop()
	p.host.drop()
	for _, r := range p.roots {
		unix.Close(r.host)
		unix.Close(r.up)
	}
}

// plan turns one change into an op (appended to j), a skip or a conflict.
func (p *planner) plan(c Change, j *journal, res *CommitResult) error {
	r, err := rootFor(p.list, c)
	if err != nil {
		return err
	}
	fds := p.roots[r.Name]
	if _, err := splitRel(c.Path); err != nil {
		return err
	}
	if c.Kind != Deleted {
		switch c.Type {
		case "fifo", "socket", "device":
			reason := map[string]string{"fifo": "FIFO", "socket": "socket", "device": "device node"}[c.Type]
			res.Skipped = append(res.Skipped, Skipped{Path: c.Display(), Reason: reason + ": not committed"})
			return nil
		}
	}
	o, err := p.makeOp(c, fds)
	if err != nil {
		return err
	}
	if reason, err := p.conflict(c, fds, o.Before); err != nil {
		return err
	} else if reason != "" {
		res.Conflicts = append(res.Conflicts, Conflict{Path: c.Display(), Reason: reason})
	}
	j.Ops = append(j.Ops, *o)
	res.Applied = append(res.Applied, c)
	return nil
}

// makeOp checks the layer entry against the change and records what the
// host holds now.
func (p *planner) makeOp(c Change, fds *rootFds) (*op, error) {
	o := &op{Root: c.Root, Path: c.Path, Host: fds.root.Host, Upper: fds.root.Upper, Kind: c.Kind, Opaque: c.Opaque}
	if c.Kind != Deleted {
		ust, err := lstatIn(&p.up, fds.up, c.Path)
		if err != nil {
			return nil, fmt.Errorf("reading layer entry %s: %w", EscapeName(c.Display()), err)
		}
		if ust == nil || typeName(ust.Mode) != c.Type {
			return nil, errdefs.Conflict("layer entry %s changed since the diff; run airlock diff again", EscapeName(c.Display()))
		}
		o.Type = c.Type
		o.Layer = &entryState{Type: typeName(ust.Mode), Mode: ust.Mode & 07777, Size: regSize(ust), Mtime: ust.Mtim.Nano()}
	}
	o.Action = actionFor(c)
	before, err := hostStateIn(&p.host, fds.host, c.Path)
	if errors.Is(err, unix.ELOOP) && p.replacesParent(c) {
		err = nil // the host symlink above it becomes a directory first: nothing is there yet
	}
	if err != nil {
		return nil, fmt.Errorf("inspecting host path %s: %w; is a parent directory a symlink?", EscapeName(c.Display()), err)
	}
	o.Before = before
	if o.Type == "dir" && before != nil && before.Type != "dir" {
		p.replaced[c.Root+"\x00"+c.Path] = true
	}
	return o, nil
}

// replacesParent reports whether an op already planned turns a host
// non-directory (a symlink) above c into a directory. Changes are planned
// parents first.
func (p *planner) replacesParent(c Change) bool {
	for d := path.Dir(c.Path); d != "." && d != "/"; d = path.Dir(d) {
		if p.replaced[c.Root+"\x00"+d] {
			return true
		}
	}
	return false
}

func actionFor(c Change) string {
	switch {
	case c.Kind == Deleted:
		return actRemove
	case c.Type == "dir" && (c.Kind == ModeChg || c.Kind == Modified):
		return actChmod
	}
	return actWrite
}

// hostState reads what the host holds at rel, nil when absent.
func hostState(hostFd int, rel string) (*entryState, error) {
	var c parentCache
	defer c.drop()
	return hostStateIn(&c, hostFd, rel)
}

// hostStateIn is hostState resolving the parent through c.
func hostStateIn(c *parentCache, hostFd int, rel string) (*entryState, error) {
	par, name, err := c.parent(hostFd, rel)
	if isAbsent(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	st, err := lstatAt(par, name)
	if err != nil {
		return nil, err
	}
	return stateOf(par, name, st)
}

// conflict says why c's host path no longer is what the pod copied, or "".
func (p *planner) conflict(c Change, fds *rootFds, cur *entryState) (string, error) {
	if c.Kind == Deleted && cur == nil {
		return "", nil // already gone: the commit has nothing to overwrite
	}
	if rec, ok := p.base.Lookup(c.Root, c.Path); ok {
		return rec.conflict(cur), nil
	}
	switch {
	case c.Kind == Added && cur != nil:
		return "created on the host after the diff", nil
	case c.Kind != Added && cur == nil:
		return "removed from the host since the pod copied it", nil
	}
	return "", nil
}

// prepare creates the journal, takes the backups and moves to applying.
func prepare(j *journal, journalDir string) error {
	j.dir = filepath.Join(journalDir, j.ID)
	if err := os.MkdirAll(journalDir, 0o700); err != nil {
		return fmt.Errorf("creating commit journal: %w", err)
	}
	if err := os.Mkdir(j.dir, 0o700); err != nil {
		return fmt.Errorf("creating commit journal: %w", err)
	}
	if err := os.Mkdir(filepath.Join(j.dir, backupsDir), 0o700); err != nil {
		return fmt.Errorf("creating commit journal: %w", err)
	}
	// A commit that backs nothing up (it only adds paths) has nothing for
	// Recover to settle while preparing: a crash leaves a directory
	// without journal.json, which Recover drops.
	if slices.ContainsFunc(j.Ops, needsBackup) {
		if err := j.save(); err != nil {
			return err
		}
	}
	if err := takeBackups(j); err != nil {
		return fmt.Errorf("backing up host files for commit %s: %w; nothing was changed", j.ID, err)
	}
	j.State = stateApplying
	return j.save()
}

// takeBackups saves every host entry the commit overwrites or removes and
// records which parent directories the commit will create.
func takeBackups(j *journal) error {
	bfd, err := j.backupsFd()
	if err != nil {
		return err
	}
	defer unix.Close(bfd)
	hosts := map[string]int{}
	var pc parentCache
	var mp missingMemo
	defer func() {
		pc.drop()
		for _, fd := range hosts {
			unix.Close(fd)
		}
	}()
	for i := range j.Ops {
		o := &j.Ops[i]
		hfd, ok := hosts[o.Host]
		if !ok {
			if hfd, err = openRoot(o.Host); err != nil {
				return err
			}
			hosts[o.Host] = hfd
		}
		if err := backupOp(o, i, hfd, bfd, &pc, &mp); err != nil {
			return fmt.Errorf("%s: %w", EscapeName(o.Path), err)
		}
	}
	if !slices.ContainsFunc(j.Ops, needsBackup) {
		return nil // nothing was written that must be durable first
	}
	if err := unix.Syncfs(bfd); err != nil {
		return os.NewSyscallError("syncfs", err)
	}
	return nil
}

// backupOp backs up op i's host entry; pc and mp cache what ops of one
// directory share (the backups change nothing on the host).
func backupOp(o *op, i int, hostFd, bfd int, pc *parentCache, mp *missingMemo) error {
	o.Made = mp.count(hostFd, o.Path)
	if !needsBackup(*o) {
		return nil
	}
	par, name, err := pc.parent(hostFd, o.Path)
	if err != nil {
		return err
	}
	o.Backup = strconv.Itoa(i)
	return cloneEntry(par, name, bfd, o.Backup)
}

// needsBackup reports an op that overwrites or removes a host entry.
func needsBackup(o op) bool { return o.Before != nil && o.Action != actChmod }

// missingMemo remembers missingParents for the last directory asked.
type missingMemo struct {
	fd  int
	dir string
	n   int
	ok  bool
}

func (m *missingMemo) count(hostFd int, rel string) int {
	dir := path.Dir(rel)
	if !m.ok || m.fd != hostFd || m.dir != dir {
		*m = missingMemo{fd: hostFd, dir: dir, n: missingParents(hostFd, rel), ok: true}
	}
	return m.n
}

// missingParents counts the parent directories of rel absent on the host
// (always the deepest ones: below the first missing, all are missing).
func missingParents(hostFd int, rel string) int {
	comps, _ := splitRel(rel)
	cur, err := unix.Dup(hostFd)
	if err != nil {
		return 0
	}
	defer func() { unix.Close(cur) }()
	for i := 0; i < len(comps)-1; i++ {
		next, err := openat2Retry(cur, comps[i], unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW)
		if err == unix.ENOENT {
			return len(comps) - 1 - i
		}
		if err != nil {
			return 0 // not a directory: an earlier op replaces it, or apply fails
		}
		unix.Close(cur)
		cur = next
	}
	return 0
}

// cloneEntry makes dst in dstDir an exact copy of src in srcDir: a hard
// link for files and symlinks when both share a file system (the old inode
// is never modified afterwards: commit replaces by rename), else a copy
// that keeps content, mode, owner, times and xattrs; directories are
// copied recursively the same way.
func cloneEntry(srcDir int, src string, dstDir int, dst string) error {
	st, err := lstatAt(srcDir, src)
	if err != nil || st == nil {
		return err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return cloneDir(srcDir, src, dstDir, dst, st)
	case unix.S_IFREG, unix.S_IFLNK:
		err := unix.Linkat(srcDir, src, dstDir, dst, 0)
		if err == nil || err == unix.EEXIST {
			return nil
		}
		if err != unix.EXDEV && err != unix.EPERM && err != unix.EMLINK {
			return &os.PathError{Op: "linkat", Path: src, Err: err}
		}
	}
	return copyEntry(srcDir, src, dstDir, dst, st)
}

func cloneDir(srcDir int, src string, dstDir int, dst string, st *unix.Stat_t) error {
	if err := unix.Mkdirat(dstDir, dst, 0o700); err != nil && err != unix.EEXIST {
		return &os.PathError{Op: "mkdirat", Path: dst, Err: err}
	}
	s, err := unix.Openat(srcDir, src, dirFlags, 0)
	if err != nil {
		return &os.PathError{Op: "openat", Path: src, Err: err}
	}
	defer unix.Close(s)
	d, err := unix.Openat(dstDir, dst, dirFlags, 0)
	if err != nil {
		return &os.PathError{Op: "openat", Path: dst, Err: err}
	}
	defer unix.Close(d)
	names, err := readNames(s)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := cloneEntry(s, n, d, n); err != nil {
			return err
		}
	}
	_ = copyXattrs(d, s, func(string) bool { return true })
	if err := fixOwnerMode(d, int(st.Uid), int(st.Gid), st.Mode&07777); err != nil {
		return err
	}
	return futimens(d, st.Mtim)
}

// copyEntry copies a non-directory entry exactly (host-side backups and
// restores, so every xattr is kept).
func copyEntry(srcDir int, src string, dstDir int, dst string, st *unix.Stat_t) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		t, err := readLink(srcDir, src)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(t, dstDir, dst); err != nil && err != unix.EEXIST {
			return &os.PathError{Op: "symlinkat", Path: dst, Err: err}
		}
		_ = unix.Fchownat(dstDir, dst, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW)
		return unix.UtimesNanoAt(dstDir, dst, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
	case unix.S_IFREG:
		return copyRegular(srcDir, src, dstDir, dst, st)
	}
	return unix.Mknodat(dstDir, dst, st.Mode, int(st.Rdev))
}

func copyRegular(srcDir int, src string, dstDir int, dst string, st *unix.Stat_t) error {
	s, err := unix.Openat(srcDir, src, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "openat", Path: src, Err: err}
	}
	defer unix.Close(s)
	_ = removeAt(dstDir, dst)
	d, err := unix.Openat(dstDir, dst, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "openat", Path: dst, Err: err}
	}
	defer unix.Close(d)
	if err := copyData(d, s, st.Size, nil); err != nil {
		return err
	}
	_ = copyXattrs(d, s, func(string) bool { return true })
	if err := fixOwnerMode(d, int(st.Uid), int(st.Gid), st.Mode&07777); err != nil {
		return err
	}
	return futimens(d, st.Mtim)
}

// hookAfterPrepare lets tests change the host between backup and apply.
var hookAfterPrepare func()

// hookBeforeOp lets tests change the host while the ops are applied.
var hookBeforeOp func(i int)

// hookAfterApply lets tests stop a commit (as a crash would) once every
// op ran, before the journal says so.
var hookAfterApply func()

// linkFromLayer enables hard-linking layer files into the host when both
// share a file system (tests turn it off to exercise the copy path).
var linkFromLayer = true

// tmpName is the scratch name op i of commit id uses in its parent dir.
// It is fixed per op, so a redo finds and removes a half-written one.
func tmpName(id string, i int, suffix string) string {
	return ".airlock-" + id + "-" + strconv.Itoa(i) + suffix
}

// reverse undoes a commit whose apply failed (the host changed under it
// after the backups were taken), so it does not stay half applied.
func (j *journal) reverse(cause error) error {
	if j.State != stateApplying {
		return fmt.Errorf("commit %s: %w; run any airlock command on the pod to finish it", j.ID, cause)
	}
	defer func() { j.applied.close(); j.applied = nil }()
	j.State = stateUndoing
	if err := j.save(); err != nil {
		return fmt.Errorf("commit %s failed: %w; reversing it failed too: %v", j.ID, cause, err)
	}
	if err := j.runUndo(); err != nil {
		return fmt.Errorf("commit %s failed: %w; reversing it failed too: %v; run any airlock command on the pod to retry", j.ID, cause, err)
	}
	as := "the host is as before"
	if n := len(j.unreached); n > 0 {
		as = fmt.Sprintf("except at %d path(s) the host moved away meanwhile, which may still hold what the commit wrote: %s", n, strings.Join(j.unreached, ", "))
	}
	if err := settleBase(j.Base, j.Ops); err != nil {
		return fmt.Errorf("commit %s failed and was reversed, %s: %w; updating the conflict base: %v", j.ID, as, cause, err)
	}
	return fmt.Errorf("commit %s failed and was reversed, %s: %w", j.ID, as, cause)
}

// finishApply (re)runs every op, makes the host durable, and finishes.
func (j *journal) finishApply() error {
	a := newApplier(j)
	defer a.close()
	// Kept for reverse when an op fails (it closes them); dropped here
	// when every op is applied.
	j.applied = newAppliedDirs()
	for i := 0; i < len(j.Ops); {
		end := i + 1
		for end < len(j.Ops) && independent(&j.Ops[end]) && independent(&j.Ops[i]) {
			end++
		}
		if failed, err := a.applyRange(i, end); err != nil {
			j.FailedAt = &end
			*j.FailedAt--
			return fmt.Errorf("applying %s: %w", EscapeName(j.Ops[failed].Path), err)
		}
		i = end
	}
	j.applied.close()
	j.applied = nil
	if hookAfterApply != nil {
		hookAfterApply()
	}
	if err := a.syncAndRecord(); err != nil {
		return err
	}
	j.State = stateApplied
	if err := j.save(); err != nil {
		return err
	}
	return j.finishClean()
}

// independent reports an op that touches only its own path: a file or
// symlink written over anything but a directory. A run of such ops may be
// applied in any order, so it is spread over a few workers (the copy is
// bound by per-file latency, not bandwidth).
func independent(o *op) bool {
	return o.Action == actWrite && (o.Type == "file" || o.Type == "symlink") &&
		(o.Before == nil || o.Before.Type != "dir")
}

// applyWorkers is how many files are written at once.
const applyWorkers = 4

// applyRange applies ops [i, end); it returns the index of a failed op.
func (a *applier) applyRange(i, end int) (int, error) {
	if end-i < 2*applyWorkers {
		for k := i; k < end; k++ {
			if err := a.apply(k, &a.j.Ops[k]); err != nil {
				return k, err
			}
		}
		return 0, nil
	}
	for k := i; k < end; k++ {
		if _, err := a.rootsOf(&a.j.Ops[k]); err != nil { // shared, read-only below
			return k, err
		}
	}
	a.dropParent()
	ws := make([]*applier, applyWorkers)
	for w := range ws {
		ws[w] = &applier{j: a.j, roots: a.roots, par: -1}
	}
	defer func() {
		for _, w := range ws {
			w.dropParent()
			w.up.drop()
		}
	}()
	return spread(pieces(a.j.Ops, i, end), len(ws), func(w, k int) error {
		return ws[w].apply(k, &a.j.Ops[k])
	})
}

// pieceOps is the most ops of one directory a worker takes at a time.
const pieceOps = 16

// pieces splits ops [i, end) into runs within one parent directory, at
// most pieceOps long, ordered round-robin over the directories: workers
// taking consecutive pieces then work in different directories and seldom
// wait on one directory's lock (creates and renames in a directory are
// serialized by the kernel), while each still resolves its parents once
// per piece.
func pieces(ops []op, i, end int) [][2]int {
	var byDir [][][2]int
	for k := i; k < end; {
		n := k + 1
		for n < end && sameParent(&ops[k], &ops[n]) {
			n++
		}
		var ps [][2]int
		for lo := k; lo < n; lo += pieceOps {
			ps = append(ps, [2]int{lo, min(lo+pieceOps, n)})
		}
		byDir = append(byDir, ps)
		k = n
	}
	var out [][2]int
	for round := 0; ; round++ {
		added := false
		for _, ps := range byDir {
			if round < len(ps) {
				out = append(out, ps[round])
				added = true
			}
		}
		if !added {
			return out
		}
	}
}

func sameParent(a, b *op) bool {
	return a.Host == b.Host && a.Upper == b.Upper && path.Dir(a.Path) == path.Dir(b.Path)
}

// spread runs work(w, k) for every op k of the pieces on n workers (w
// names the worker, for its own caches) and returns the first op that
// failed. After a failure no new piece is started.
func spread(ps [][2]int, n int, work func(w, k int) error) (int, error) {
	next := make(chan [2]int)
	var (
		mu     sync.Mutex
		failed = -1
		ferr   error
		wg     sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range next {
				for k := p[0]; k < p[1]; k++ {
					if err := work(w, k); err != nil {
						mu.Lock()
						if ferr == nil {
							failed, ferr = k, err
							close(stop)
						}
						mu.Unlock()
						return
					}
				}
			}
		}()
	}
feed:
	for _, p := range ps {
		select {
		case next <- p:
		case <-stop:
			break feed
		}
	}
	close(next)
	wg.Wait()
	return failed, ferr
}

// finishClean removes the committed entries from the upper and forgets
// their base records.
func (j *journal) finishClean() error {
	if err := cleanUpper(j); err != nil {
		return fmt.Errorf("removing committed entries from the layer: %w", err)
	}
	if j.Base != "" {
		if err := forgetBase(j.Base, j.Ops); err != nil {
			return err
		}
	}
	j.Cleaned = true
	return j.save()
}

// applier performs ops on the host, caching root fds.
type applier struct {
	j     *journal
	roots map[string]*rootFds
	// par caches the host parent of the previous op (parSt its stat):
	// sorted ops in one directory (the common case) then resolve it once.
	par    int
	parKey string
	parSt  unix.Stat_t
	up     parentCache // the layer parent of the previous op
}

func newApplier(j *journal) *applier {
	return &applier{j: j, roots: map[string]*rootFds{}, par: -1}
}

func (a *applier) close() {
	a.dropParent()
	a.up.drop()
	for _, r := range a.roots {
		unix.Close(r.host)
		unix.Close(r.up)
	}
}

func (a *applier) dropParent() {
	if a.par >= 0 {
		unix.Close(a.par)
	}
	a.par, a.parKey = -1, ""
}

func (a *applier) rootsOf(o *op) (*rootFds, error) {
	key := o.Host + "\x00" + o.Upper
	if r, ok := a.roots[key]; ok {
		return r, nil
	}
	r, err := openRootFds(Root{Name: o.Root, Host: o.Host, Upper: o.Upper})
	if err != nil {
		return nil, err
	}
	a.roots[key] = r
	return r, nil
}

// parent resolves (creating as needed) the host parent directory of o.
func (a *applier) parent(r *rootFds, o *op) (int, string, error) {
	comps, err := splitRel(o.Path)
	if err != nil {
		return -1, "", err
	}
	name := comps[len(comps)-1]
	key := o.Host + "\x00" + path.Dir(o.Path)
	if a.parKey == key {
		return a.par, name, nil
	}
	a.dropParent()
	fd, _, err := openDir(r.host, comps[:len(comps)-1], func(i, parent int) (uint32, int, int) {
		return newDirAttrs(r.up, parent, strings.Join(comps[:i+1], "/"))
	})
	if err != nil {
		return -1, "", err
	}
	if err := unix.Fstat(fd, &a.parSt); err != nil {
		unix.Close(fd)
		return -1, "", os.NewSyscallError("fstat", err)
	}
	a.par, a.parKey = fd, key
	return fd, name, nil
}

// newDirAttrs gives a parent directory the commit must create the mode of
// its layer counterpart and the owner of its host parent.
func newDirAttrs(upFd, hostParent int, rel string) (uint32, int, int) {
	mode := uint32(0o755)
	if st, _ := lstatBeneath(upFd, rel); st != nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		mode = dirMode(st.Mode)
	}
	var pst unix.Stat_t
	_ = unix.Fstat(hostParent, &pst)
	return mode, int(pst.Uid), int(pst.Gid)
}

// fileModeBits keeps only permission bits: set-id and sticky bits of a
// file never reach the host.
func fileModeBits(m uint32) uint32 { return m & 0o777 }

// dirMode keeps permission bits and the sticky bit of a directory.
func dirMode(m uint32) uint32 { return m & (0o777 | unix.S_ISVTX) }

func (a *applier) apply(i int, o *op) error {
	if hookBeforeOp != nil {
		hookBeforeOp(i)
	}
	r, err := a.rootsOf(o)
	if err != nil {
		return err
	}
	par, name, err := a.parent(r, o)
	if err != nil {
		return err
	}
	a.j.applied.record(i, par, &a.parSt)
	if o.Action != actWrite || o.Type == "dir" || (o.Before != nil && o.Before.Type == "dir") {
		// The op may replace or remove a directory: later ops must
		// resolve their parents afresh.
		defer a.dropParent()
	}
	tmp := tmpName(a.j.ID, i, ".tmp")
	switch {
	case o.Action == actRemove:
		return a.remove(par, name, i)
	case o.Action == actChmod:
		return a.chmodDir(r, par, name, o)
	case o.Type == "dir":
		return a.writeDir(r, par, name, o, i)
	case o.Type == "symlink":
		return a.writeSymlink(r, par, name, tmp, o, i)
	default:
		return a.writeFile(r, par, name, tmp, o, i)
	}
}

// remove takes a host entry away. A directory is first renamed aside so it
// vanishes at once, then emptied through fds.
func (a *applier) remove(par int, name string, i int) error {
	del := tmpName(a.j.ID, i, ".del")
	if err := removeAt(par, del); err != nil {
		return err
	}
	st, err := lstatAt(par, name)
	if err != nil || st == nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return ignoreENOENT(unix.Unlinkat(par, name, 0), "unlinkat", name)
	}
	if err := unix.Renameat(par, name, par, del); err != nil {
		return &os.PathError{Op: "renameat", Path: name, Err: err}
	}
	return removeAt(par, del)
}

func ignoreENOENT(err error, op, name string) error {
	if err == nil || err == unix.ENOENT {
		return nil
	}
	return &os.PathError{Op: op, Path: name, Err: err}
}

// clearDir removes a host directory standing where a non-directory goes.
func (a *applier) clearDir(par int, name string, i int) error {
	st, err := lstatAt(par, name)
	if err != nil || st == nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return err
	}
	return a.remove(par, name, i)
}

// owner is who a written entry belongs to: the host entry it replaces,
// or else the host parent directory (the op's, from a.parent).
func (a *applier) owner(o *op) (int, int) {
	if o.Before != nil {
		return o.Before.UID, o.Before.GID
	}
	return int(a.parSt.Uid), int(a.parSt.Gid)
}

// upperParent resolves the layer parent of o (the fd is cached: do not
// close it).
func (a *applier) upperParent(r *rootFds, o *op) (int, string, error) {
	upar, name, err := a.up.parent(r.up, o.Path)
	if err != nil {
		return -1, "", fmt.Errorf("opening layer entry: %w", err)
	}
	return upar, name, nil
}

// upperOpen opens the layer entry of o (a regular file) for reading.
func (a *applier) upperOpen(r *rootFds, o *op) (int, *unix.Stat_t, int, string, error) {
	upar, name, err := a.upperParent(r, o)
	if err != nil {
		return -1, nil, -1, "", err
	}
	fd, err := unix.Openat(upar, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, nil, -1, "", &os.PathError{Op: "openat", Path: name, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, nil, -1, "", errdefs.Conflict("layer entry %s is no longer a regular file; run airlock diff again", EscapeName(o.Path))
	}
	return fd, &st, upar, name, nil
}

// makeTmp runs mk, which creates tmp in par. A tmp already there can only
// be left by an interrupted run of the same op (names are unique to the
// commit and op): it is removed and mk runs again.
func makeTmp(par int, tmp string, mk func() error) error {
	err := mk()
	if errors.Is(err, unix.EEXIST) {
		if err = removeAt(par, tmp); err == nil {
			err = mk()
		}
	}
	return err
}

// renameOver renames tmp over name. A directory standing at name, which
// rename refuses for a non-directory (EISDIR), is removed first, but only
// the one the commit planned to replace (and backed up): a directory that
// appeared there since is the host's, and the commit stops instead.
func (a *applier) renameOver(par int, tmp, name string, i int) error {
	err := unix.Renameat(par, tmp, par, name)
	if err == unix.EISDIR || err == unix.ENOTEMPTY || err == unix.EEXIST {
		before := a.j.Ops[i].Before
		st, serr := lstatAt(par, name)
		if serr != nil {
			return serr
		}
		if st != nil && (before == nil || before.Type != "dir" || before.Ino != st.Ino || before.Dev != st.Dev) {
			return errdefs.Conflict("host path %s became a directory during the commit; it is left as it is", EscapeName(name))
		}
		if err := a.clearDir(par, name, i); err != nil {
			return err
		}
		err = unix.Renameat(par, tmp, par, name)
	}
	return ignoreENOENT(err, "renameat", name)
}

// writeFile puts the layer's file at name: a new inode under a scratch
// name, then renamed over the target, so the target is never written
// through (hard link or symlink) and is always either old or new.
func (a *applier) writeFile(r *rootFds, par int, name, tmp string, o *op, i int) error {
	src, st, upar, uname, err := a.upperOpen(r, o)
	if err != nil {
		return err
	}
	defer unix.Close(src)
	dst, err := a.newInode(r, par, tmp, src, upar, uname, st)
	if err != nil {
		return err
	}
	uid, gid := a.owner(o)
	err = fixOwnerMode(dst, uid, gid, fileModeBits(st.Mode))
	if err == nil {
		err = futimens(dst, st.Mtim)
	}
	unix.Close(dst)
	if err != nil {
		return err
	}
	return a.renameOver(par, tmp, name, i)
}

// newInode creates tmp in par with the layer file's content and user
// xattrs only. When the layer shares the host's file system and the file
// has one link, it is hard-linked instead of copied (the layer entry is
// removed after the commit anyway); its other xattrs are then stripped.
func (a *applier) newInode(r *rootFds, par int, tmp string, src, upar int, uname string, st *unix.Stat_t) (int, error) {
	if linkFromLayer && r.sameFS && st.Nlink == 1 {
		link := func() error { return unix.Linkat(upar, uname, par, tmp, 0) }
		if err := makeTmp(par, tmp, link); err == nil {
			dst, err := unix.Openat(par, tmp, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return -1, &os.PathError{Op: "openat", Path: tmp, Err: err}
			}
			if err := stripXattrs(dst, committableXattr); err != nil {
				unix.Close(dst)
				return -1, err
			}
			return dst, nil
		}
	}
	dst := -1
	err := makeTmp(par, tmp, func() (err error) {
		dst, err = unix.Openat(par, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		return err
	})
	if err != nil {
		return -1, &os.PathError{Op: "openat", Path: tmp, Err: err}
	}
	err = copyData(dst, src, st.Size, &r.noCopyRange)
	if err == nil {
		startWriteback(dst)
		dropCleanCache(src)
		err = copyXattrs(dst, src, committableXattr)
	}
	if err != nil {
		unix.Close(dst)
		return -1, err
	}
	return dst, nil
}

// writeSymlink creates the layer's symlink (same target, never followed).
func (a *applier) writeSymlink(r *rootFds, par int, name, tmp string, o *op, i int) error {
	upar, uname, err := a.upperParent(r, o)
	if err != nil {
		return err
	}
	st, err := lstatAt(upar, uname)
	if err != nil {
		return err
	}
	if st == nil || st.Mode&unix.S_IFMT != unix.S_IFLNK {
		return errdefs.Conflict("layer entry %s is no longer a symlink; run airlock diff again", EscapeName(o.Path))
	}
	target, err := readLink(upar, uname)
	if err != nil {
		return err
	}
	if err := makeTmp(par, tmp, func() error { return unix.Symlinkat(target, par, tmp) }); err != nil {
		return &os.PathError{Op: "symlinkat", Path: tmp, Err: err}
	}
	uid, gid := a.owner(o)
	if err := unix.Fchownat(par, tmp, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "fchownat", Path: tmp, Err: err}
	}
	if err := unix.UtimesNanoAt(par, tmp, []unix.Timespec{st.Mtim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: tmp, Err: err}
	}
	return a.renameOver(par, tmp, name, i)
}

// writeDir creates the layer's directory (its children are ops of their
// own), replacing a non-directory host entry.
func (a *applier) writeDir(r *rootFds, par int, name string, o *op, i int) error {
	st, err := lstatAt(par, name)
	if err != nil {
		return err
	}
	if st != nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := a.remove(par, name, i); err != nil {
			return err
		}
	}
	if err := unix.Mkdirat(par, name, 0o700); err != nil && err != unix.EEXIST {
		return &os.PathError{Op: "mkdirat", Path: name, Err: err}
	}
	uid, gid := a.owner(o)
	return a.setDir(r, par, name, o, uid, gid)
}

// chmodDir gives a kept host directory the layer directory's mode.
func (a *applier) chmodDir(r *rootFds, par int, name string, o *op) error {
	var st unix.Stat_t
	if err := unix.Fstatat(par, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "fstatat", Path: name, Err: err}
	}
	return a.setDir(r, par, name, o, int(st.Uid), int(st.Gid))
}

// setDir opens the host directory and applies the layer dir's mode and
// user xattrs to it.
func (a *applier) setDir(r *rootFds, par int, name string, o *op, uid, gid int) error {
	fd, err := unix.Openat(par, name, dirFlags, 0)
	if err != nil {
		return &os.PathError{Op: "openat", Path: name, Err: err}
	}
	defer unix.Close(fd)
	up, err := openDirRel(r.up, o.Path)
	if err != nil {
		return fmt.Errorf("opening layer directory: %w", err)
	}
	defer unix.Close(up)
	var ust unix.Stat_t
	if err := unix.Fstat(up, &ust); err != nil {
		return os.NewSyscallError("fstat", err)
	}
	if err := copyXattrs(fd, up, committableXattr); err != nil {
		return err
	}
	return fixOwnerMode(fd, uid, gid, dirMode(ust.Mode))
}

// syncAndRecord flushes every host file system once (not a fsync per
// file) and records what each op left on the host, for Undo to compare.
func (a *applier) syncAndRecord() error {
	a.dropParent()
	for _, r := range a.roots {
		if err := unix.Syncfs(r.host); err != nil {
			return os.NewSyscallError("syncfs", err)
		}
	}
	var c parentCache
	defer c.drop()
	for i := range a.j.Ops {
		o := &a.j.Ops[i]
		r, err := a.rootsOf(o)
		if err != nil {
			return err
		}
		if o.After, err = hostStateIn(&c, r.host, o.Path); err != nil {
			return err
		}
	}
	return nil
}
