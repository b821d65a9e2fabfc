package cgroup

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ops is the seam between the group logic and the file system, so that
// tests can run the logic against a fake tree and record what it writes.
type ops interface {
	read(path string) (string, error)
	write(path, data string) error
	mkdir(path string) error // no error when it already exists
	rmdir(path string) error // no error when it is already gone
	exists(path string) bool
}

type realOps struct{}

func (realOps) read(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}

// write opens without O_CREATE or O_TRUNC: cgroup files exist already, and
// a missing one means the controller is absent, which the caller must learn.
func (realOps) write(path, data string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(data)
	cerr := f.Close()
	if werr != nil {
		return fmt.Errorf("writing %q to %s: %w", strings.TrimSpace(data), path, werr)
	}
	return cerr
}

func (realOps) mkdir(path string) error {
	err := os.Mkdir(path, 0o755)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	return err
}

func (realOps) rmdir(path string) error {
	err := syscall.Rmdir(path)
	if err == nil || err == syscall.ENOENT {
		return nil
	}
	return &os.PathError{Op: "rmdir", Path: path, Err: err}
}

func (realOps) exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// readInt reads a file holding one integer, or "max" (returned as 0 = unlimited).
func readInt(o ops, path string) (int64, error) {
	s, err := o.read(path)
	if err != nil {
		return 0, err
	}
	s = strings.TrimSpace(s)
	if s == "max" || s == "-1" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing %s: %w", path, err)
	}
	return v, nil
}

// keyed returns the value of key in a "key value" per line file
// (memory.events, pids.events, cpu.stat, memory.oom_control).
func keyed(text, key string) (uint64, bool) {
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == key {
			v, err := strconv.ParseUint(f[1], 10, 64)
			return v, err == nil
		}
	}
	return 0, false
}

// parsePids parses cgroup.procs.
func parsePids(text string) []int {
	var pids []int
	for _, f := range strings.Fields(text) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}

// waitFor polls cond every few milliseconds until it holds or d passes.
func waitFor(d time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(d)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return errTimeout
		}
		time.Sleep(2 * time.Millisecond)
	}
}

var errTimeout = errors.New("timed out")

// limitString renders a limit for a v2 file: 0 is "max".
func limitString(v int64) string {
	if v <= 0 {
		return "max"
	}
	return strconv.FormatInt(v, 10)
}
