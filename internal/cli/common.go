package cli

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/airlock-dev/airlock/internal/audit"
	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/layer"
	"github.com/airlock-dev/airlock/internal/pod"
)

func openStore() (*pod.Store, error) {
	return pod.Open(pod.DefaultHome())
}

// podForDir finds the pod whose workspace is dir or one of its parents.
func podForDir(s *pod.Store, dir string) (*pod.Pod, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	for d := dir; ; d = filepath.Dir(d) {
		p, err := s.ForWorkspace(d)
		if err == nil {
			return p, nil
		}
		if d == "/" {
			break
		}
	}
	return nil, errdefs.NotFound("no pod for %s; create one with airlock init or airlock run", dir)
}

// resolvePod returns the named pod, or the pod of the current directory
// when name is empty.
func resolvePod(s *pod.Store, name string) (*pod.Pod, error) {
	if name != "" {
		if err := pod.ValidateName(name); err != nil {
			return nil, err
		}
		return s.Get(name)
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("finding the current directory: %w", err)
	}
	return podForDir(s, cwd)
}

// splitPod handles "VERB [POD] [PATH...]": the first argument names a pod
// when a pod of that name exists; otherwise every argument is a path and
// the pod is the current directory's.
func splitPod(s *pod.Store, args []string) (*pod.Pod, []string, error) {
	if len(args) > 0 && pod.ValidateName(args[0]) == nil {
		if p, err := s.Get(args[0]); err == nil {
			return p, args[1:], nil
		}
	}
	p, err := resolvePod(s, "")
	return p, args, err
}

// openPod resolves the pod and, under its lock, finishes or reverses any
// commit or undo that a crash interrupted, so every command starts from a
// consistent host and layer.
func openPod(s *pod.Store, name string) (*pod.Pod, error) {
	p, err := resolvePod(s, name)
	if err != nil {
		return nil, err
	}
	return p, recoverPod(p)
}

// openPodArgs opens the store, takes the pod from args (splitPod) and
// recovers it (recoverPod); it returns the arguments left.
func openPodArgs(args []string) (*pod.Pod, []string, error) {
	s, err := openStore()
	if err != nil {
		return nil, nil, err
	}
	p, rest, err := splitPod(s, args)
	if err != nil {
		return nil, nil, err
	}
	return p, rest, recoverPod(p)
}

func recoverPod(p *pod.Pod) error {
	unlock, err := p.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := p.OpenLayer(); err != nil { // a disk-capped pod's: recovery cleans the layer
		return err
	}
	done, err := layer.Recover(p.JournalDir())
	if err != nil {
		return fmt.Errorf("recovering an interrupted commit of pod %s: %w", p.Name, err)
	}
	for _, id := range done {
		record(p, "commit.recover", map[string]any{"commit": id}, "ok")
	}
	return nil
}

// actor names the person behind this command for the audit trail.
func actor() string {
	if su := os.Getenv("SUDO_USER"); su != "" && os.Geteuid() == 0 {
		return su + " (sudo)"
	}
	uid := os.Getuid()
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return "uid " + strconv.Itoa(uid)
}

// record appends one event to the pod's audit trail. A failure to audit is
// reported but does not undo the action already taken.
func record(p *pod.Pod, action string, details map[string]any, outcome string) {
	if err := appendAudit(p, audit.Event{Pod: p.Name, Actor: actor(), Action: action, Details: details, Outcome: outcome}); err != nil {
		fmt.Fprintln(os.Stderr, "airlock: warning: "+oneLine(fmt.Sprintf("writing the audit trail of %s: %v", p.Name, err)))
	}
}

func appendAudit(p *pod.Pod, e audit.Event) error {
	key, err := audit.KeyFor(pod.DefaultHome())
	if err != nil {
		return err
	}
	l, err := audit.Open(p.AuditPath(), key)
	if err != nil {
		return err
	}
	defer l.Close()
	_, err = l.Append(e)
	return err
}

// trail keeps one pod's audit trail open for a long command: a run appends
// an event per DNS query and per connection, and opening the trail for
// each (key read, open, fsync at close) costs about half a millisecond.
// Events are written at once as ever; actions in audit.Durable are synced
// as they are written, the rest when the trail closes. Safe for
// concurrent use.
type trail struct {
	p    *pod.Pod
	once sync.Once
	l    *audit.Log
	err  error
	// prepared is closed once prepare's background open is over.
	prepared chan struct{}
}

func (t *trail) open() {
	t.once.Do(func() {
		key, err := audit.KeyFor(pod.DefaultHome())
		if err == nil {
			t.l, err = audit.Open(t.p.AuditPath(), key)
		}
		t.err = err
	})
}

// prepare opens the trail and reads its end in the background, ahead of
// the first record (which reports any error); close waits for it.
func (t *trail) prepare() {
	t.prepared = make(chan struct{})
	go func() {
		defer close(t.prepared)
		t.open()
		if t.err == nil {
			_ = t.l.Prepare()
		}
	}()
}

func (t *trail) record(action string, details map[string]any, outcome string) {
	t.open()
	err := t.err
	if err == nil {
		_, err = t.l.Append(audit.Event{Pod: t.p.Name, Actor: actor(), Action: action, Details: details, Outcome: outcome})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "airlock: warning: "+oneLine(fmt.Sprintf("writing the audit trail of %s: %v", t.p.Name, err)))
	}
}

// sync makes the records so far durable.
func (t *trail) sync() {
	t.open()
	if t.err == nil {
		if err := t.l.Sync(); err != nil {
			fmt.Fprintln(os.Stderr, "airlock: warning: "+oneLine(fmt.Sprintf("syncing the audit trail of %s: %v", t.p.Name, err)))
		}
	}
}

func (t *trail) close() {
	if t.prepared != nil {
		<-t.prepared
	}
	if t.l != nil {
		if err := t.l.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "airlock: warning: "+oneLine(fmt.Sprintf("syncing the audit trail of %s: %v", t.p.Name, err)))
		}
	}
}

// refuseRunning stops layer-changing commands while the overlay is mounted.
func refuseRunning(p *pod.Pod, verb string) error {
	if pid, running := p.Running(); running {
		err := errdefs.Busy("pod %s is running (supervisor pid %d); %s needs it stopped: airlock stop %s (or exit its agent)", p.Name, pid, verb, p.Name)
		record(p, verb, nil, "refused: pod running")
		return err
	}
	return nil
}

// lockStopped takes the pod's lock for verb, which needs the pod
// stopped: it refuses a running pod before it waits for the lock, and
// again once it holds it (a run may have started meanwhile).
func lockStopped(p *pod.Pod, verb string) (unlock func(), err error) {
	if err := refuseRunning(p, verb); err != nil {
		return nil, err
	}
	if unlock, err = p.Lock(); err != nil {
		return nil, err
	}
	if err := refuseRunning(p, verb); err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}

// displayPaths lists the escaped display paths of changes.
func displayPaths(cs []layer.Change) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = layer.EscapeName(c.Display())
	}
	return out
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}
