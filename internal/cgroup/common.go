package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"syscall"
	"time"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// settle bounds how long Freeze, Thaw and Destroy wait for the kernel.
const settle = 5 * time.Second

// cfsPeriod is the CPU bandwidth period in microseconds (the kernel default).
const cfsPeriod = 100000

// cpuQuota turns a number of CPUs into a quota per cfsPeriod; 0 = unlimited.
func cpuQuota(cpus float64) int64 {
	if cpus <= 0 {
		return 0
	}
	q := int64(cpus * cfsPeriod)
	if q < 1000 { // the kernel's minimum quota is 1 ms
		q = 1000
	}
	return q
}

// killAll SIGKILLs every process in a group until it is empty. Freezing
// first means a fork bomb cannot add processes between reading the list
// and killing it; a kernel holds SIGKILL for a frozen task until the thaw.
func killAll(freeze, thaw func() error, procs func() ([]int, error)) error {
	for round := 0; round < 100; round++ {
		frozen := freeze != nil && freeze() == nil
		pids, err := procs()
		if round > 0 && errors.Is(err, errdefs.ErrNotFound) {
			// The group went away after our SIGKILLs: its owner saw it
			// empty and removed it, so nothing of it is left to kill.
			return nil
		}
		if err == nil {
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if frozen {
			terr := thaw()
			if terr != nil && err == nil && errors.Is(terr, fs.ErrNotExist) {
				// The group emptied (our SIGKILLs, or its processes
				// ended) and its owner removed it before the thaw: the
				// kernel removes only empty groups, so none is left.
				return nil
			}
			if terr != nil && err == nil {
				err = terr
			}
		}
		if err != nil {
			return fmt.Errorf("killing the processes of the cgroup: %w", err)
		}
		if len(pids) == 0 {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return errdefs.Busy("processes of the cgroup keep appearing after 100 rounds of SIGKILL; try again")
}

// waitEmpty waits until procs lists nothing.
func waitEmpty(procs func() ([]int, error)) error {
	err := waitFor(settle, func() (bool, error) {
		p, err := procs()
		return len(p) == 0, err
	})
	if err == errTimeout {
		p, _ := procs()
		return errdefs.Busy("cgroup still holds processes %v after SIGKILL and %s; they may be stuck in the kernel (D state)", p, settle)
	}
	return err
}

// removeGroup removes a group directory, retrying while the kernel reports
// it busy (a just-emptied group can be, for a moment).
func removeGroup(o ops, dir string) error {
	var err error
	for i := 0; i < 200; i++ {
		if err = o.rmdir(dir); err == nil {
			return nil
		}
		if !isBusy(err) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("removing cgroup %s: %w", dir, err)
}

func isBusy(err error) bool {
	for err != nil {
		if err == syscall.EBUSY {
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func uniqSorted(xs []int) []int {
	sort.Ints(xs)
	out := xs[:0]
	for i, x := range xs {
		if i == 0 || x != xs[i-1] {
			out = append(out, x)
		}
	}
	return out
}
