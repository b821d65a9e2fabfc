// Package inside is the in-pod init: the airlock binary re-executed as
// PID 1 of a pod's new namespaces. It reads its spec from the supervisor,
// waits for the go-ahead, builds the filesystem view, pivots into it,
// hardens itself, starts the agent and stays PID 1: it forwards signals,
// reaps every orphan, and exits with the agent's status.
//
// Order matters and is fixed: mounts and pivot_root; hostname; then
// hardening (fds > 2 close-on-exec, RLIMIT_CORE 0, not dumpable, no
// capabilities for the agent, no_new_privs, Landlock), seccomp LAST, then
// the agent. Any failure before the agent starts is reported as one record
// on the status socket and the init exits 125 (126/127 for a command that cannot
// be run): the agent never starts without every wall it asked for.
//
// The init runs on one locked OS thread: credentials and most prctl
// settings are per thread, and the agent is forked from that thread.
// Seccomp (TSYNC) and Landlock cover every thread of the init.
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
	spec, ok := readSpec()
	if !ok {
		os.Exit(sandbox.ExitSetup) // the supervisor gave up before "go"
	}
	sigs := notifySignals() // queued from now on, forwarded once the agent runs
	var h handoff
	agent, err := setup(spec, &h)
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
	var oob []byte
	if len(h.fds) > 0 {
		oob = unix.UnixRights(h.fds...)
	}
	err := unix.Sendmsg(int(status.Fd()), []byte(rec), oob, nil, 0)
	for _, fd := range h.fds {
		unix.Close(fd)
	}
	return err
}

// readSpec reads the spec and then blocks for the go byte; EOF at any
// point means the supervisor aborted.
func readSpec() (*sandbox.InitSpec, bool) {
	in := os.NewFile(sandbox.SpecFD, "spec")
	defer in.Close()
	var n [4]byte
	if _, err := io.ReadFull(in, n[:]); err != nil {
		return nil, false
	}
	body := make([]byte, binary.BigEndian.Uint32(n[:])+1)
	if _, err := io.ReadFull(in, body); err != nil {
		return nil, false
	}
	spec := new(sandbox.InitSpec)
	if err := json.Unmarshal(body[:len(body)-1], spec); err != nil {
		return nil, false
	}
	return spec, true
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

// setup builds every wall and starts the agent; it returns the agent's
// PID and adds to h what the supervisor must get.
func setup(spec *sandbox.InitSpec, h *handoff) (int, error) {
	if err := joinCgroup(spec.Cgroup); err != nil {
		return 0, err
	}
	if err := buildView(spec); err != nil {
		return 0, err
	}
	path, err := prepare(spec)
	if err != nil {
		return 0, err
	}
	stdio := [3]int{0, 1, 2}
	if spec.TTY {
		master, slave, err := openTerminal(spec)
		if err != nil {
			return 0, err
		}
		defer unix.Close(slave) // the agent holds it now
		h.add(sandbox.FileTerminal, master)
		stdio = [3]int{slave, slave, slave}
	}
	if err := harden(spec, h); err != nil {
		return 0, err
	}
	return startAgent(spec, path, stdio)
}
