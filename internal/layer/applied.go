package layer

import (
	"sync"

	"golang.org/x/sys/unix"
)

// appliedDirs remembers, for a commit being applied in this process, the
// host directory each op was applied in, as an open fd. If the apply
// fails, its reversal undoes each op through that same directory: the
// host may have renamed it, or swapped a symlink in at its path, since
// the op wrote into it (the apply resolves a parent once for a run of ops
// and keeps the fd). Resolving the path again would then miss what the
// commit wrote, and the reversal would leave it behind while saying the
// host is as before. Undoing through the fd reverses exactly what was
// done, where it was done; it writes nowhere the apply did not.
//
// A crash loses the fds: Recover's reversal resolves paths, and reports
// what it could not reach.
type appliedDirs struct {
	mu    sync.Mutex
	fds   []int             // one per distinct directory (device, inode)
	byIno map[[2]uint64]int // (dev, ino) -> index in fds
	opDir map[int]int       // op index -> index in fds
}

// maxAppliedDirs bounds the fds kept; ops in further directories are
// reversed by path, as after a crash.
const maxAppliedDirs = 256

func newAppliedDirs() *appliedDirs {
	return &appliedDirs{byIno: map[[2]uint64]int{}, opDir: map[int]int{}}
}

// record notes that op i is applied in directory fd (st is its stat).
func (d *appliedDirs) record(i int, fd int, st *unix.Stat_t) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	key := [2]uint64{st.Dev, st.Ino}
	idx, ok := d.byIno[key]
	if !ok {
		idx = -1 // past the bound: reversed by path
		if len(d.fds) < maxAppliedDirs {
			if dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0); err == nil {
				idx = len(d.fds)
				d.fds = append(d.fds, dup)
				d.byIno[key] = idx
			}
		}
	}
	d.opDir[i] = idx
}

// dir returns the directory op i was applied in (-1: by path), and
// whether op i reached the host at all: an op of a failed apply that
// never resolved its directory wrote nothing there.
func (d *appliedDirs) dir(i int) (fd int, reached bool) {
	if d == nil {
		return -1, true // no record (a crashed run's): assume it did
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	idx, ok := d.opDir[i]
	switch {
	case !ok:
		return -1, false
	case idx < 0:
		return -1, true
	}
	return d.fds[idx], true
}

func (d *appliedDirs) close() {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, fd := range d.fds {
		unix.Close(fd)
	}
	d.fds, d.byIno, d.opDir = nil, nil, nil
}
