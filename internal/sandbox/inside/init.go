// Package inside is the in-pod init: the airlock binary re-executed as
// PID 1 of a pod's new namespaces. It reads its spec from the supervisor,
// builds the filesystem view, pivots into it, waits for the go-ahead,
// hardens itself, starts the agent and stays PID 1: it forwards signals,
// reaps every orphan, and exits with the agent's status.
//
// The start has two halves, split by the supervisor's "go" byte, which it
// sends once its hooks (network wall, vault, cgroup placement on v2, the
// durable run.start record) are in place:
//
//   - Before go, the init does everything that depends only on its spec
//     and that no hook looks at, while the hooks run: it joins its v1
//     cgroup; makes the view's mounts, pivot_root and the hostname; checks
//     the working directory and looks the command up (126/127); and
//     allocates the agent's pty in the pod's devpts. The hooks reach the
//     init through its network namespace alone (/proc/<pid>/ns/net, which
//     pivot_root does not change), never through its mounts.
//   - After go, what a hook must precede or what would change how the
//     supervisor sees the init: hardening (fds > 2 close-on-exec,
//     RLIMIT_CORE 0, not dumpable, no capabilities for the agent,
//     no_new_privs, Landlock), seccomp LAST, then the agent.
//
// Any failure before the agent starts is reported as one record on the
// status socket and the init exits 125 (126/127 for a command that cannot
// be run): the agent never starts without every wall it asked for. A
// failure before go is held until go (or the supervisor's abort) so that
// the supervisor's hooks never race a dying init, and the report is the
// same as if the step had run after go.
//
// A serving init (spec.Serve, airlock start) does the same up to and with
// the hardening, starts no agent, and then starts each command the
// supervisor sends it from the same hardened thread (serve.go).
//
// The init runs on one locked OS thread: credentials and most prctl
// settings are per thread, and the agent is forked from that thread.
// Seccomp (TSYNC) covers every thread of the init; Landlock the locked
// thread, from which the agent is forked (harden.go says why).
package inside

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/fdpass"
	"github.com/airlock-dev/airlock/internal/sandbox"
)

// Arg is the hidden subcommand under which the binary runs as the init.
const Arg = sandbox.InitArg

// failure is a setup error with the exit code and class to report.
type failure struct {
	code  int
	class string
	msg   string
}

func (f *failure) Error() string { return f.msg }

func fail(class, format string, args ...any) *failure {
	return &failure{code: sandbox.ExitSetup, class: class, msg: fmt.Sprintf(format, args...)}
}

// Main runs the init and never returns.
func Main() {
	runtime.LockOSThread()
	status := os.NewFile(sandbox.StatusFD, "status")
	in := os.NewFile(sandbox.SpecFD, "spec")
	spec, ok := readSpec(in)
	if !ok {
		os.Exit(sandbox.ExitSetup) // the supervisor gave up before sending it
	}
	var h handoff
	// The supervisor's hooks run while the init prepares; a failure waits
	// for go like everything else, so the supervisor finds the init alive
	// and waiting whatever happened here.
	ready, err := beforeGo(spec, &h)
	if !awaitGo(in) {
		os.Exit(sandbox.ExitSetup) // the supervisor aborted the start
	}
	if err != nil {
		report(status, err)
	}
	if spec.Serve {
		<-early.done // no command may exist before the init is safe from its signals
		if err := harden(spec, &h); err != nil {
			report(status, err)
		}
		if err := h.send(status); err != nil {
			os.Exit(sandbox.ExitSetup)
		}
		os.Exit(serve(status, spec))
	}
	sigs := notifySignals() // queued from now on, forwarded once the agent runs
	agent, err := afterGo(spec, ready, &h)
	if err != nil {
		report(status, err)
	}
	if err := h.send(status); err != nil {
		// The agent runs but the supervisor cannot have what it needs
		// to serve it (its terminal, its notifications): end the pod.
		_ = unix.Kill(agent, unix.SIGKILL)
		report(status, fail(sandbox.ClassOther, "handing files to the supervisor: %v", err))
	}
	code := supervise(agent, sigs)
	// Said before exiting: the supervisor writes its records while the
	// kernel takes the pod's mounts down.
	_, _ = io.WriteString(status, sandbox.StatusExit+" "+strconv.Itoa(code))
	os.Exit(code)
}

// handoff collects the files the supervisor gets with the ok record.
type handoff struct {
	names []string
	fds   []int
}

func (h *handoff) add(name string, fd int) {
	h.names = append(h.names, name)
	h.fds = append(h.fds, fd)
}

// send writes the ok record with the files attached, then closes the
// init's copies: the supervisor owns them from here.
func (h *handoff) send(status *os.File) error {
	rec := sandbox.StatusOK
	if len(h.names) > 0 {
		rec += " " + strings.Join(h.names, " ")
	}
	err := unix.Sendmsg(int(status.Fd()), []byte(rec), fdpass.Rights(h.fds...), nil, 0)
	for _, fd := range h.fds {
		unix.Close(fd)
	}
	return err
}

// readSpec reads the spec; EOF means the supervisor aborted.
func readSpec(in *os.File) (*sandbox.InitSpec, bool) {
	var n [4]byte
	if _, err := io.ReadFull(in, n[:]); err != nil {
		return nil, false
	}
	body := make([]byte, binary.BigEndian.Uint32(n[:]))
	if _, err := io.ReadFull(in, body); err != nil {
		return nil, false
	}
	spec := new(sandbox.InitSpec)
	if err := json.Unmarshal(body, spec); err != nil {
		return nil, false
	}
	return spec, true
}

// awaitGo blocks for the go byte, which the supervisor sends once its
// hooks are done, and closes the spec pipe. false means the supervisor
// closed the pipe instead: it aborted the start.
func awaitGo(in *os.File) bool {
	defer in.Close()
	var b [1]byte
	_, err := io.ReadFull(in, b[:])
	return err == nil
}

func report(status *os.File, err error) {
	f, ok := err.(*failure)
	if !ok {
		f = &failure{code: sandbox.ExitSetup, class: sandbox.ClassOther, msg: err.Error()}
	}
	_, _ = io.WriteString(status, strconv.Itoa(f.code)+" "+f.class+" "+oneLine(f.msg))
	os.Exit(f.code)
}

func oneLine(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '\n' || c == '\r' {
			b[i] = ' '
		}
	}
	return string(b)
}

// ready is what beforeGo prepared for the agent's start.
type ready struct {
	path  string // the command, looked up in the view
	stdio [3]int // the agent's fds 0-2
	slave int    // the pty slave the init holds until the agent has it, or -1
}

// beforeGo builds every part of the pod that no hook of the supervisor
// depends on and that gives the agent nothing yet, in this order:
//
//   - the v1 cgroup, first: the init's main thread, from which the agent
//     is forked, is then in the group, and the kernel memory of the view
//     is charged to it. The group exists before the spec is sent. (On v2
//     the supervisor moves the init with the hooks, so the view's few
//     mount objects may be charged to the supervisor's group instead; the
//     agent, started after go, is in the pod's group either way.)
//   - the view, pivot_root and the hostname: the hooks enter only the
//     init's network namespace, which neither changes;
//   - the working directory and the command, looked up in the view, so
//     a missing one is still 127 and one that cannot run 126;
//   - the agent's pty, from the pod's own devpts (after pivot_root); the
//     master goes to h, for the ok record.
//
// Landlock stays after go with the rest of the hardening: the init stays
// an ordinary process while the hooks run, and applied here it gained
// nothing.
func beforeGo(spec *sandbox.InitSpec, h *handoff) (*ready, error) {
	if err := joinCgroup(spec.Cgroup); err != nil {
		return nil, err
	}
	if err := buildView(spec); err != nil {
		return nil, err
	}
	if spec.Serve {
		return nil, nil // each command is looked up when it comes (serve.go)
	}
	path, err := prepare(spec)
	if err != nil {
		return nil, err
	}
	r := &ready{path: path, stdio: [3]int{0, 1, 2}, slave: -1}
	if spec.TTY {
		master, slave, err := openTerminal(spec)
		if err != nil {
			return nil, err
		}
		h.add(sandbox.FileTerminal, master)
		r.stdio, r.slave = [3]int{slave, slave, slave}, slave
	}
	return r, nil
}

// afterGo hardens the init, seccomp last, and starts the agent; it
// returns the agent's PID and adds to h what the supervisor must get.
// These come after go: the agent must not exist before the supervisor's
// hooks have walled it in, and the init stays an ordinary, inspectable
// process (dumpable, with its capabilities) while they run.
func afterGo(spec *sandbox.InitSpec, r *ready, h *handoff) (int, error) {
	if r.slave >= 0 {
		defer unix.Close(r.slave) // the agent holds it now
	}
	if err := harden(spec, h); err != nil {
		return 0, err
	}
	return startAgent(spec, r.path, r.stdio)
}
