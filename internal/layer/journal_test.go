package layer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/testutil"
)

// crashEnv carries a crashJob to the helper process TestCrashHelper.
const crashEnv = "AIRLOCK_TEST_CRASH_JOB"

type crashJob struct {
	Op      string // "commit" or "undo"
	Root    Root
	Changes []Change
	Journal string
	Link    bool
}

// TestCrashHelper is not a test: it is the child process that
// TestKill9DuringCommitAndUndo kills at a random moment.
func TestCrashHelper(t *testing.T) {
	spec := os.Getenv(crashEnv)
	if spec == "" {
		t.Skip("helper process for TestKill9DuringCommitAndUndo")
	}
	var job crashJob
	chk(t, json.Unmarshal([]byte(spec), &job))
	linkFromLayer = job.Link
	fmt.Println("go")
	var err error
	if job.Op == "commit" {
		_, err = Commit([]Root{job.Root}, job.Changes, job.Journal, nil, CommitOptions{})
	} else {
		_, err = Undo(job.Journal, "", false)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	os.Exit(0)
}

// crashTree is a host tree and a hand-built layer over it: 150 files
// modified, 25 deleted by whiteout, a deleted directory, 25 files added.
type crashTree struct {
	root    Root
	journal string
	old     map[string][]byte // host content before
	new     map[string][]byte // content after a full commit (nil = absent)
}

func newCrashTree(t *testing.T, rng *rand.Rand) *crashTree {
	dir := t.TempDir()
	ct := &crashTree{root: Root{Name: "workspace", Host: filepath.Join(dir, "host"), Upper: filepath.Join(dir, "upper")},
		journal: filepath.Join(dir, "journal"), old: map[string][]byte{}, new: map[string][]byte{}}
	fill := func(seed byte, n int) []byte { return bytes.Repeat([]byte{seed}, n) }
	for i := range 200 {
		rel := fmt.Sprintf("f%03d", i)
		ct.old[rel] = fill('o', 1+rng.IntN(64<<10))
		put(t, filepath.Join(ct.root.Host, rel), string(ct.old[rel]), 0o644)
		switch {
		case i < 150:
			ct.new[rel] = fill('n', 1+rng.IntN(64<<10))
			put(t, filepath.Join(ct.root.Upper, rel), string(ct.new[rel]), 0o600)
		case i < 175:
			ct.new[rel] = nil
			chk(t, unix.Mknod(filepath.Join(ct.root.Upper, rel), unix.S_IFCHR, 0))
		default:
			ct.new[rel] = ct.old[rel]
		}
	}
	for i := range 5 {
		rel := fmt.Sprintf("olddir/g%d", i)
		ct.old[rel] = fill('d', 4096)
		ct.new[rel] = nil
		put(t, filepath.Join(ct.root.Host, rel), string(ct.old[rel]), 0o644)
	}
	chk(t, unix.Mknod(filepath.Join(ct.root.Upper, "olddir"), unix.S_IFCHR, 0))
	for i := range 25 {
		rel := fmt.Sprintf("new/a%02d", i)
		ct.new[rel] = fill('a', 1+rng.IntN(32<<10))
		put(t, filepath.Join(ct.root.Upper, rel), string(ct.new[rel]), 0o644)
	}
	return ct
}

// outcome classifies the host: "old", "new", or a description of a torn
// or mixed state.
func (ct *crashTree) outcome(t *testing.T) string {
	olds, news := 0, 0
	for rel := range ct.new {
		data, err := os.ReadFile(filepath.Join(ct.root.Host, rel))
		if errors.Is(err, os.ErrNotExist) {
			data = nil
		} else if err != nil {
			return fmt.Sprintf("%s unreadable: %v", rel, err)
		}
		isOld, isNew := bytes.Equal(data, ct.old[rel]), bytes.Equal(data, ct.new[rel])
		switch {
		case isOld && isNew:
		case isOld:
			olds++
		case isNew:
			news++
		default:
			return fmt.Sprintf("%s is torn (%d bytes)", rel, len(data))
		}
	}
	switch {
	case news == 0:
		return "old"
	case olds == 0:
		return "new"
	}
	return fmt.Sprintf("mixed: %d old, %d new", olds, news)
}

func (ct *crashTree) leftovers(t *testing.T) []string {
	var out []string
	_ = filepath.Walk(ct.root.Host, func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.HasPrefix(fi.Name(), ".airlock-") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// runKilled starts the helper on job and SIGKILLs it after delay (once it
// has started); it returns whether the helper finished first.
func runKilled(t *testing.T, job crashJob, delay time.Duration) bool {
	spec, err := json.Marshal(job)
	chk(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+string(spec))
	out, err := cmd.StdoutPipe()
	chk(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	chk(t, cmd.Start())
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "go\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper did not start: %q %s", line, stderr.String())
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(delay):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err = <-done
	}
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 3 {
		t.Fatalf("helper failed: %s", stderr.String())
	}
	return err == nil
}

// TestKill9DuringCommitAndUndo kills a commit, and then an undo, at
// random moments, many times. After Recover every file must be entirely
// old or entirely new, the whole tree must be all old or all new, no
// scratch file may remain, and an undo must bring back the exact tree.
func TestKill9DuringCommitAndUndo(t *testing.T) {
	testutil.RequireRoot(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	full := calibrate(t, rng)
	iterations := 40
	if testing.Short() {
		iterations = 8
	}
	counts := map[string]int{}
	for i := range iterations {
		ct := newCrashTree(t, rng)
		before := snapshot(t, ct.root.Host)
		cs, err := Diff([]Root{ct.root}, DiffOptions{})
		chk(t, err)
		job := crashJob{Op: "commit", Root: ct.root, Changes: cs, Journal: ct.journal, Link: i%2 == 0}
		finished := runKilled(t, job, time.Duration(rng.Int64N(int64(full))))
		counts["killed in state "+journalState(ct.journal)]++
		if _, err := Recover(ct.journal); err != nil {
			t.Fatalf("iteration %d: recover: %v", i, err)
		}
		got := ct.outcome(t)
		counts[fmt.Sprintf("commit finished=%v %s", finished, got)]++
		if got != "old" && got != "new" {
			t.Fatalf("iteration %d: after kill and recover the host is %s", i, got)
		}
		if left := ct.leftovers(t); len(left) > 0 {
			t.Fatalf("iteration %d: scratch files left: %v", i, left)
		}
		if got == "old" {
			sameSnapshot(t, "host after a discarded commit", snapshot(t, ct.root.Host), before)
			continue
		}
		if left, _ := Diff([]Root{ct.root}, DiffOptions{}); len(left) != 0 {
			t.Fatalf("iteration %d: recovered commit left %d changes in the layer", i, len(left))
		}
		job.Op = "undo"
		runKilled(t, job, time.Duration(rng.Int64N(int64(full/2))))
		counts["undo killed in state "+journalState(ct.journal)]++
		if _, err := Recover(ct.journal); err != nil {
			t.Fatalf("iteration %d: recover undo: %v", i, err)
		}
		if infos, _ := ListCommits(ct.journal); len(infos) == 1 && infos[0].State == stateApplied {
			_, err := Undo(ct.journal, "", false) // the kill came before the undo started
			chk(t, err)
		}
		counts["undo done"]++
		sameSnapshot(t, fmt.Sprintf("iteration %d: host after undo", i), snapshot(t, ct.root.Host), before)
	}
	t.Logf("outcomes: %v", counts)
}

// journalState is the state of the only journal in dir ("none" without one).
func journalState(dir string) string {
	js, err := loadJournals(dir)
	if err != nil || len(js) == 0 {
		return "none"
	}
	if js[0].State == stateApplied && !js[0].Cleaned {
		return "applied-uncleaned"
	}
	return js[0].State
}

// calibrate times one complete helper commit, process start excluded.
func calibrate(t *testing.T, rng *rand.Rand) time.Duration {
	ct := newCrashTree(t, rng)
	cs, err := Diff([]Root{ct.root}, DiffOptions{})
	chk(t, err)
	start := time.Now()
	if !runKilled(t, crashJob{Op: "commit", Root: ct.root, Changes: cs, Journal: ct.journal}, 10*time.Second) {
		t.Fatalf("calibration commit did not finish")
	}
	return max(time.Since(start), 20*time.Millisecond)
}

// TestRecoverDiscardsPreparing: a commit that died while preparing never
// touched the host and is simply dropped.
func TestRecoverDiscardsPreparing(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	j := &journal{Format: journalFormat, ID: "20260101-000000.000000-abcdef", State: statePreparing,
		dir: filepath.Join(dir, "20260101-000000.000000-abcdef"),
		Ops: []op{{Root: "workspace", Path: "x", Host: "/nonexistent", Upper: "/nonexistent", Action: actRemove}}}
	chk(t, os.MkdirAll(j.dir, 0o700))
	chk(t, j.save())
	got, err := Recover(dir)
	chk(t, err)
	if len(got) != 1 || got[0] != j.ID || exists(j.dir) {
		t.Errorf("recover = %v, journal dir exists=%v", got, exists(j.dir))
	}
	if got, err := Recover(dir); err != nil || len(got) != 0 {
		t.Errorf("second recover = %v, %v; want nothing to do", got, err)
	}
}

// TestCommitReversedWhenHostChangesMidway: a host directory swapped for a
// symlink after the backups were taken makes the apply fail; the commit is
// reversed, nothing is written outside, and the host is as before.
func TestCommitReversedWhenHostChangesMidway(t *testing.T) {
	p := newPod(t, func(h string) {
		put(t, filepath.Join(h, "a.txt"), "a\n", 0o644)
		put(t, filepath.Join(h, "sub/f"), "f\n", 0o644)
	})
	put(t, p.in("a.txt"), "pod a\n", 0o644)
	put(t, p.in("sub/f"), "pod f\n", 0o644)
	cs := p.diff()
	hookAfterPrepare = func() {
		chk(t, os.Rename(p.host("sub"), filepath.Join(p.outside, "sub.moved")))
		chk(t, os.Symlink(p.outside, p.host("sub")))
	}
	defer func() { hookAfterPrepare = nil }()
	_, err := p.commit(cs, CommitOptions{})
	if err == nil || !strings.Contains(err.Error(), "reversed") {
		t.Fatalf("commit err = %v, want failed and reversed", err)
	}
	if readStr(t, p.host("a.txt")) != "a\n" || exists(filepath.Join(p.outside, "f")) {
		t.Errorf("host not restored, or a file was written outside")
	}
	infos, err := ListCommits(p.journal)
	chk(t, err)
	if len(infos) != 1 || infos[0].State != stateUndone {
		t.Errorf("commits = %+v, want one undone", infos)
	}
	if _, err := Undo(p.journal, infos[0].ID, false); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("undo of a reversed commit: %v, want conflict", err)
	}
}

// Taking a backup hard-links the host file, which moves its ctime. A
// commit that did not happen (reversed after a failed apply, or discarded
// by Recover while preparing) must not leave its paths looking changed on
// the host: the retry goes through without --force. A real host change
// made meanwhile is still a conflict.
func TestNoFalseConflictAfterFailedCommit(t *testing.T) {
	p := newPod(t, func(h string) {
		put(t, filepath.Join(h, "a.txt"), "a\n", 0o644)
		put(t, filepath.Join(h, "b.txt"), "b\n", 0o644)
		put(t, filepath.Join(h, "sub/f"), "f\n", 0o644)
	})
	start := p.runStart()
	put(t, p.in("a.txt"), "pod a\n", 0o644)
	put(t, p.in("b.txt"), "pod b\n", 0o644)
	put(t, p.in("sub/f"), "pod f\n", 0o644)
	chk(t, RecordBase([]Root{p.root}, p.base, start))
	cs := p.diff()

	// 1. The apply fails midway (a parent swapped for a symlink) and is reversed.
	hookAfterPrepare = func() {
		chk(t, os.Rename(p.host("sub"), filepath.Join(p.outside, "sub.moved")))
		chk(t, os.Symlink(p.outside, p.host("sub")))
	}
	_, err := p.commit(cs, CommitOptions{})
	hookAfterPrepare = nil
	if err == nil || !strings.Contains(err.Error(), "reversed") {
		t.Fatalf("commit err = %v, want failed and reversed", err)
	}
	chk(t, os.Remove(p.host("sub")))
	chk(t, os.Rename(filepath.Join(p.outside, "sub.moved"), p.host("sub")))

	// 2. A commit killed while preparing: its backups exist, Recover drops them.
	hookAfterPrepare = func() { panic("killed") }
	func() {
		defer func() { _ = recover() }()
		_, _ = p.commit(cs, CommitOptions{})
	}()
	hookAfterPrepare = nil
	js, err := loadJournals(p.journal)
	chk(t, err)
	j := js[len(js)-1]
	j.State = statePreparing // as if the kill came before the state moved on
	chk(t, j.save())
	_, err = Recover(p.journal)
	chk(t, err)

	// The retry is not a conflict for a.txt, b.txt or sub/f ...
	res, err := p.commit(cs, CommitOptions{DryRun: true})
	if err != nil || len(res.Conflicts) != 0 {
		t.Fatalf("retry after failed commits: %v, conflicts %+v", err, res.Conflicts)
	}
	// ... but a real edit on the host still is.
	put(t, p.host("b.txt"), "edited on the host\n", 0o644)
	res, err = p.commit(cs, CommitOptions{DryRun: true})
	if !errors.Is(err, errdefs.ErrConflict) || len(res.Conflicts) != 1 || res.Conflicts[0].Path != "b.txt" {
		t.Fatalf("host edit after failed commits: %v, %+v; want one conflict on b.txt", err, res)
	}
}

// TestParallelApplyReversedWhenHostChangesMidway: the same across many
// directories, where files are written by several workers at once: one
// directory swapped for a symlink after the backups stops the apply, the
// whole commit is reversed, nothing lands outside, and the layer keeps
// every change.
func TestParallelApplyReversedWhenHostChangesMidway(t *testing.T) {
	p := newPod(t, func(h string) {
		for d := range 6 {
			for f := range 12 {
				put(t, filepath.Join(h, fmt.Sprintf("d%d/f%02d", d, f)), "old\n", 0o644)
			}
		}
	})
	for d := range 6 {
		for f := range 12 {
			put(t, p.in(fmt.Sprintf("d%d/f%02d", d, f)), "new\n", 0o644)
		}
	}
	cs := p.diff()
	before := snapshot(t, p.root.Host)
	hookAfterPrepare = func() {
		chk(t, os.Rename(p.host("d3"), filepath.Join(p.outside, "d3.moved")))
		chk(t, os.Symlink(p.outside, p.host("d3")))
	}
	defer func() { hookAfterPrepare = nil }()
	_, err := p.commit(cs, CommitOptions{})
	if err == nil || !strings.Contains(err.Error(), "reversed") {
		t.Fatalf("commit err = %v, want failed and reversed", err)
	}
	if ents, _ := os.ReadDir(p.outside); len(ents) != 1 {
		t.Errorf("outside the workspace: %v, want only d3.moved", ents)
	}
	chk(t, os.Remove(p.host("d3")))
	chk(t, os.Rename(filepath.Join(p.outside, "d3.moved"), p.host("d3")))
	sameSnapshot(t, "host after the reversed commit", snapshot(t, p.root.Host), before)
	if got := len(p.diff()); got != len(cs) {
		t.Errorf("layer has %d changes after the reversed commit, want %d", got, len(cs))
	}
}

// TestRedoFailureReversesWhatTheCrashedRunApplied: a commit dies after
// applying every op but before its journal says so; before the next
// command, the host changes under the first op, so Recover's redo fails
// there. The ops the crashed run applied after it (a new directory, a
// replaced file, a new file) must be reversed too, and a host file written
// meanwhile at one of their paths must stay.
func TestRedoFailureReversesWhatTheCrashedRunApplied(t *testing.T) {
	p := newPod(t, func(h string) {
		put(t, filepath.Join(h, "a/x"), "old x\n", 0o644)
		put(t, filepath.Join(h, "z.txt"), "old z\n", 0o644)
		put(t, filepath.Join(h, "y.txt"), "old y\n", 0o644)
	})
	put(t, p.in("a/x"), "new x\n", 0o644)
	chk(t, os.Mkdir(p.in("m"), 0o755))        // a directory op splits the parallel runs
	put(t, p.in("m/n.txt"), "new n\n", 0o644) // created inside it
	put(t, p.in("y.txt"), "new y\n", 0o644)
	put(t, p.in("z.txt"), "new z\n", 0o644)
	cs := p.diff()
	type crash struct{}
	hookAfterApply = func() { panic(crash{}) }
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(crash); !ok {
					panic(r)
				}
			}
		}()
		_, _ = p.commit(cs, CommitOptions{})
		t.Fatal("the commit was not stopped")
	}()
	hookAfterApply = nil
	if readStr(t, p.host("z.txt")) != "new z\n" {
		t.Fatalf("the crashed run did not apply z.txt; the test needs it applied")
	}
	// The host changes before the next command: a/ becomes a symlink
	// (the redo of a/x fails there), and the person rewrites y.txt.
	chk(t, os.Rename(p.host("a"), filepath.Join(p.outside, "a.moved")))
	chk(t, os.Symlink(p.outside, p.host("a")))
	put(t, p.host("y.txt"), "the person's y\n", 0o644)

	_, err := Recover(p.journal)
	if err == nil || !strings.Contains(err.Error(), "reversed") {
		t.Fatalf("recover err = %v, want the redo failed and reversed", err)
	}
	if got := readStr(t, p.host("z.txt")); got != "old z\n" {
		t.Errorf("z.txt after the reversal = %q, want the host's old content", got)
	}
	if exists(p.host("m")) {
		t.Errorf("the directory the crashed run created is still on the host")
	}
	if got := readStr(t, p.host("y.txt")); got != "the person's y\n" {
		t.Errorf("y.txt = %q: the reversal overwrote a host edit made after the crash", got)
	}
	if exists(filepath.Join(p.outside, "x")) {
		t.Errorf("a file was written outside the workspace")
	}
	infos, err := ListCommits(p.journal)
	chk(t, err)
	if len(infos) != 1 || infos[0].State != stateUndone {
		t.Errorf("commits = %+v, want one undone", infos)
	}
}

// A directory that appears on the host, after the commit planned, where
// the commit writes a file is the host's: the commit stops and is
// reversed, and the directory keeps what it holds.
func TestCommitKeepsDirectoryMadeOnHostMidway(t *testing.T) {
	p := newPod(t, func(h string) {
		put(t, filepath.Join(h, "a.txt"), "a\n", 0o644)
	})
	put(t, p.in("a.txt"), "pod a\n", 0o644)
	put(t, p.in("p"), "pod p\n", 0o644)
	cs := p.diff()
	hookAfterPrepare = func() {
		put(t, p.host("p/precious.txt"), "keep me\n", 0o644)
	}
	defer func() { hookAfterPrepare = nil }()
	_, err := p.commit(cs, CommitOptions{})
	if err == nil || !strings.Contains(err.Error(), "reversed") {
		t.Fatalf("commit err = %v, want failed and reversed", err)
	}
	if got := readStr(t, p.host("p/precious.txt")); got != "keep me\n" {
		t.Errorf("the host's new directory lost its file: %q", got)
	}
	if got := readStr(t, p.host("a.txt")); got != "a\n" {
		t.Errorf("a.txt = %q after the reversed commit, want the host's", got)
	}
}

// TestReversalFollowsMovedDirectory: while a commit is applied, the host
// renames a directory it is writing into (and puts a symlink to outside
// the workspace at its path), and swaps a second one, so that a later op
// fails. The ops already applied went into the renamed directory through
// the fd the apply holds; the reversal must take them out of it there,
// not give up on the path and call the host as before.
func TestReversalFollowsMovedDirectory(t *testing.T) {
	p := newPod(t, func(h string) {
		chk(t, os.MkdirAll(filepath.Join(h, "sw"), 0o755))
		chk(t, os.MkdirAll(filepath.Join(h, "sw2"), 0o755))
		put(t, filepath.Join(h, "sw", "f0"), "old\n", 0o644)
	})
	for f := range 6 {
		put(t, p.in(fmt.Sprintf("sw/f%d", f)), "new\n", 0o644)
	}
	put(t, p.in("sw2/x"), "new\n", 0o644)
	cs := p.diff()
	before := snapshot(t, p.root.Host)
	var once sync.Once
	hookBeforeOp = func(i int) {
		if i != 3 {
			return
		}
		once.Do(func() {
			chk(t, os.Rename(p.host("sw"), p.host("sw.real")))
			chk(t, os.Symlink(p.outside, p.host("sw")))
			chk(t, os.Rename(p.host("sw2"), p.host("sw2.real")))
			chk(t, os.Symlink(p.outside, p.host("sw2")))
		})
	}
	defer func() { hookBeforeOp = nil }()
	_, err := p.commit(cs, CommitOptions{})
	if err == nil || !strings.Contains(err.Error(), "reversed, the host is as before") {
		t.Fatalf("commit err = %v, want failed and fully reversed", err)
	}
	if ents, _ := os.ReadDir(p.outside); len(ents) != 0 {
		t.Errorf("outside the workspace: %v, want nothing", ents)
	}
	for _, d := range []string{"sw", "sw2"} {
		chk(t, os.Remove(p.host(d)))
		chk(t, os.Rename(p.host(d+".real"), p.host(d)))
	}
	sameSnapshot(t, "host after the reversed commit", snapshot(t, p.root.Host), before)
}
