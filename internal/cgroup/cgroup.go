// Package cgroup puts a pod's processes in a control group and limits their
// memory, CPU, process count and block I/O, through one small interface over
// cgroup v1 (one hierarchy per controller, as on hybrid hosts) and cgroup v2
// (one unified hierarchy with controllers).
//
// Layout: every pod's group lives under an "airlock" parent at the root of
// each hierarchy used — v1 <mount>/airlock/<pod> in every controller
// hierarchy, v2 <root>/airlock/<pod> — so another process (the CLI's
// `limit`, `freeze`, `stats`) finds a running pod's group by name alone.
//
// Invariants:
//   - A zero limit means unlimited, in Limits as in Stats.
//   - Destroy kills every process of the group, waits until the group is
//     empty, and removes the pod's directory from every hierarchy; the
//     "airlock" parent goes too once no pod uses it.
//   - A pod's init joins the group itself, from the thread that forks the
//     agent, before the agent exists (ThreadFiles); where that is not
//     possible (v2) the supervisor moves the init with Add first.
//   - All file access goes through an ops seam, so the v2 logic is tested
//     against a fake tree as well as the real kernel.
package cgroup

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// parentName is the group under which every pod's group is created.
const parentName = "airlock"

// Limits are a pod's resource limits. Zero means unlimited.
type Limits struct {
	Memory int64   // bytes of RAM
	Swap   int64   // bytes of swap on top of Memory (v1: memsw = Memory+Swap)
	CPUs   float64 // CPU time as a number of CPUs, e.g. 0.5 or 2
	Pids   int64   // processes and threads
	// ReadBPS and WriteBPS throttle the block device that holds IOPath.
	ReadBPS, WriteBPS int64
	// IOPath names a file or directory whose block device ReadBPS and
	// WriteBPS apply to; "" means the airlock state directory
	// (statedir.Default), where the pod's layer lives.
	IOPath string `json:"-"`
}

// Stats is a snapshot of a group's usage and counters. Limits read 0 when unlimited.
type Stats struct {
	CPUUsec     uint64 `json:"cpu_usec"`
	MemoryBytes int64  `json:"memory_bytes"`
	MemoryPeak  int64  `json:"memory_peak"`
	MemoryLimit int64  `json:"memory_limit"`
	// CPULimit is the CPU bandwidth limit as a number of CPUs (quota/period).
	CPULimit     float64 `json:"cpu_limit"`
	Pids         int64   `json:"pids"`
	PidsLimit    int64   `json:"pids_limit"`
	IOReadBytes  uint64  `json:"io_read_bytes"`
	IOWriteBytes uint64  `json:"io_write_bytes"`
	OOMKills     uint64  `json:"oom_kills"`
	PidsMaxHits  uint64  `json:"pids_max_hits"`
	Frozen       bool    `json:"frozen"`
}

// Group is one pod's control group.
type Group interface {
	// Path is the group's directory (v1: in the memory hierarchy, else the first one used).
	Path() string
	// Version is 1 or 2.
	Version() int
	// Add moves a process into the group.
	Add(pid int) error
	// ThreadFiles lists the files through which a thread moves itself
	// into the group, one per hierarchy: writing "0" to each moves the
	// writing thread alone (v1 "tasks"), and every process it forks
	// afterwards is born in the group. nil when the layout has none (v2:
	// a domain group takes whole processes only), and Add must be used.
	//
	// Why: moving a whole process (Add) write-locks the kernel's global
	// cgroup_threadgroup_rwsem, which waits for an RCU grace period
	// (0.1-9 ms on a two-core VM) and meanwhile stalls every thread
	// creation on the host. A thread moving itself is the one case
	// cgroup_procs_write_start lets go without that lock: it cannot exit
	// or exec under the move.
	ThreadFiles() []string
	// Set applies limits; zero fields remove the corresponding limit.
	Set(l Limits) error
	Stats() (Stats, error)
	// Freeze stops every process in the group and returns once they are all stopped.
	Freeze() error
	// Thaw resumes a frozen group and returns once it runs again.
	Thaw() error
	// Kill sends SIGKILL to every process in the group, including ones forked meanwhile.
	Kill() error
	// Procs lists the process ids in the group.
	Procs() ([]int, error)
	// Destroy kills, waits until the group is empty and removes it everywhere.
	Destroy() error
}

// validName keeps a pod name from naming anything outside the airlock
// parent (at most 128 characters, checked apart: a counted repetition
// compiles to 128 copies of the class). Compiled on first use, not in
// every airlock process (the in-pod init included).
var validName = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
})

func checkName(name string) error {
	if len(name) > 128 || !validName().MatchString(name) || name == "." || name == ".." {
		return errdefs.Invalid("cgroup name %q: use letters, digits, '.', '_' and '-' only", name)
	}
	return nil
}

// GroupName is the name of a pod's group: the pod's name and a short hash
// of its state directory. Group directories are global to the host while
// pod names are unique only within one $AIRLOCK_HOME; without the hash two
// pods of the same name under different homes would share a group, and
// one's `kill`, `limit` or clean-up would reach the other's processes.
func GroupName(pod, podDir string) string {
	if abs, err := filepath.Abs(podDir); err == nil {
		podDir = abs
	}
	sum := sha256.Sum256([]byte(podDir))
	if len(pod) > 100 {
		pod = pod[:100]
	}
	return pod + "-" + hex.EncodeToString(sum[:4])
}

// New creates the pod's group (or reuses an existing one) in the layout
// Detect finds, and applies l.
func New(name string, l Limits) (Group, error) {
	g, err := open(name, true)
	if err != nil {
		return nil, err
	}
	if err := g.Set(l); err != nil {
		_ = g.Destroy()
		return nil, err
	}
	return g, nil
}

// Load opens an existing pod group, for commands run from another process.
func Load(name string) (Group, error) {
	return open(name, false)
}

func open(name string, create bool) (Group, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	lay, err := Detect()
	if err != nil {
		return nil, err
	}
	if err := lay.usable(); err != nil {
		return nil, err
	}
	if lay.Mode == ModeV2 {
		return openV2(realOps{}, lay.V2Root, name, create)
	}
	return openV1(realOps{}, lay.V1, name, create)
}

// Supported says which layout New would use, or what is missing.
func Supported() error {
	lay, err := Detect()
	if err != nil {
		return err
	}
	return lay.usable()
}

// notExist maps a missing pod directory to a NotFound error that says what to do.
func notExist(name, dir string, err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return errdefs.NotFound("cgroup of pod %s not found at %s: is the pod running?", name, dir)
	}
	return fmt.Errorf("opening cgroup %s: %w", dir, err)
}
