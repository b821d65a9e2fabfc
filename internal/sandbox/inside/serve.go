package inside

import (
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/fdpass"
	"github.com/airlock-dev/airlock/internal/sandbox"
)

// A serving init (sandbox.Spec.Serve) is a started pod: it builds the
// view and every wall as for one command, then, instead of one agent,
// starts each command the supervisor sends it, until "stop" or the
// supervisor's end (EOF on the status socket).
//
// Every command is forked from the init's locked main thread, after
// hardening: it inherits the same Landlock domain, seccomp filter,
// no_new_privs, empty capability sets and cgroup as a one-command pod's
// agent, and like it gets a session of its own and the invoking user's
// uid. Only the command line, environment, working directory and
// terminal differ from one command to the next. Commands share the pod's
// PID namespace: what one leaves running in the background lives until
// the pod stops, as in a shell.
type server struct {
	status int // the status socket
	spec   *sandbox.InitSpec
	mu     sync.Mutex // held from fork to the started record, so exit comes after it
	ids    map[int]uint64
	// spawned wakes the reaper once there are children again.
	spawned chan struct{}
}

// serve answers the supervisor's requests on the main thread until the
// pod is stopped, and returns the init's exit status.
func serve(status *os.File, spec *sandbox.InitSpec) int {
	s := &server{status: int(status.Fd()), spec: spec, ids: map[int]uint64{}, spawned: make(chan struct{}, 1)}
	go s.reap()
	buf := make([]byte, 256<<10)
	oob := make([]byte, fdpass.Space(4)) // fds 0-2 and a spec file
	for {
		n, oobn, _, _, err := unix.Recvmsg(s.status, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || (n == 0 && oobn == 0) {
			return 0 // the supervisor is gone: leaving ends the pod
		}
		fds, _ := fdpass.FDs(oob[:oobn])
		word, rest, _ := strings.Cut(string(buf[:n]), " ")
		switch word {
		case sandbox.StatusExec:
			s.exec(rest, fds)
		case sandbox.StatusSignal:
			id, num, _ := strings.Cut(rest, " ")
			if sig, err := strconv.Atoi(num); err == nil && sig > 0 && sig < 65 {
				s.signal(id, unix.Signal(sig), false)
			}
		case sandbox.StatusHangup:
			s.signal(rest, unix.SIGHUP, true)
		case sandbox.StatusStop:
			ms, _ := strconv.Atoi(rest)
			s.stop(time.Duration(ms) * time.Millisecond)
			return 0
		}
		closeAll(fds) // exec has dup'ed what the command needed into it
	}
}

// maxSpecFile bounds an exec spec sent in a file.
const maxSpecFile = 64 << 20

// readSpecFile reads an exec spec from a memfd, from its start.
func readSpecFile(fd int) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Size > maxSpecFile {
		return nil, unix.E2BIG
	}
	b := make([]byte, st.Size)
	for off := 0; off < len(b); {
		n, err := unix.Pread(fd, b[off:], int64(off))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, unix.EIO
		}
		off += n
	}
	return b, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// exec starts one command: looked up in the view (126/127 as for a
// one-command pod), with the files the supervisor attached as its fds
// 0-2, or a new pty of the pod's devpts.
func (s *server) exec(body string, fds []int) {
	var es sandbox.ExecSpec
	raw := []byte(body)
	if body == sandbox.ExecSpecInFile && len(fds) > 0 {
		var err error
		raw, err = readSpecFile(fds[len(fds)-1])
		fds = fds[:len(fds)-1]
		if err != nil {
			raw = nil
		}
	}
	if err := json.Unmarshal(raw, &es); err != nil || len(es.Args) == 0 {
		s.send(sandbox.StatusFailed+" "+strconv.FormatUint(es.ID, 10)+" "+strconv.Itoa(sandbox.ExitSetup)+" "+sandbox.ClassOther+" malformed exec request", nil)
		return
	}
	spec := *s.spec
	spec.Args, spec.Env, spec.Dir, spec.TTY, spec.Rows, spec.Cols = es.Args, es.Env, es.Dir, es.TTY, es.Rows, es.Cols
	id := strconv.FormatUint(es.ID, 10)
	failed := func(err error) {
		f, ok := err.(*failure)
		if !ok {
			f = &failure{code: sandbox.ExitSetup, class: sandbox.ClassOther, msg: err.Error()}
		}
		s.send(sandbox.StatusFailed+" "+id+" "+strconv.Itoa(f.code)+" "+f.class+" "+oneLine(f.msg), nil)
	}
	path, err := prepare(&spec)
	if err != nil {
		failed(err)
		return
	}
	var stdio [3]int
	master := -1
	switch {
	case spec.TTY:
		m, slave, err := openTerminal(&spec)
		if err != nil {
			failed(err)
			return
		}
		defer unix.Close(slave)
		defer unix.Close(m)
		master, stdio = m, [3]int{slave, slave, slave}
	case len(fds) == 3:
		stdio = [3]int{fds[0], fds[1], fds[2]}
	default:
		failed(fail(sandbox.ClassOther, "the exec request carried %d files instead of 3", len(fds)))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pid, err := startAgent(&spec, path, stdio)
	if err != nil {
		failed(err)
		return
	}
	s.ids[pid] = es.ID
	select {
	case s.spawned <- struct{}{}:
	default:
	}
	rec := sandbox.StatusStarted + " " + id + " " + strconv.Itoa(pid)
	var files []int
	if master >= 0 {
		rec += " " + sandbox.FileTerminal
		files = []int{master}
	}
	if err := s.send(rec, files); err != nil {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
}

// signal passes sig to the command with this id; group sends it to the
// command's whole process group (its session leader's), as a terminal
// hangup does, followed by SIGCONT so that stopped jobs see it.
func (s *server) signal(id string, sig unix.Signal, group bool) {
	want, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for pid, got := range s.ids {
		if got != want {
			continue
		}
		if group {
			_ = unix.Kill(-pid, sig)
			_ = unix.Kill(-pid, unix.SIGCONT)
		} else {
			_ = unix.Kill(pid, sig)
		}
	}
}

// stop asks every process of the pod to end (SIGTERM) and waits up to
// grace for them; the init's exit then kills whatever is left.
func (s *server) stop(grace time.Duration) {
	_ = unix.Kill(-1, unix.SIGTERM) // from PID 1: every process of the pod but the init
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && (othersAlive() || s.running()) {
		time.Sleep(5 * time.Millisecond)
	}
}

// running reports whether a command's end is still to be reported: the
// reaper removes a command and sends its exit under s.mu, so once none
// is left, every end has been said.
func (s *server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids) > 0
}

// othersAlive reports whether the pod's /proc lists any process but the
// init (the pod's own proc: it shows its PID namespace alone).
func othersAlive() bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil && n != 1 {
			return true
		}
	}
	return false
}

// reap waits for every child of the init (the commands, and the orphans
// the kernel hands to PID 1) and reports each command's end.
func (s *server) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.ECHILD) {
			<-s.spawned
			continue
		}
		if err != nil {
			return
		}
		code := ws.ExitStatus()
		if ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		s.mu.Lock()
		if id, ok := s.ids[pid]; ok {
			delete(s.ids, pid)
			_ = s.send(sandbox.StatusExit+" "+strconv.FormatUint(id, 10)+" "+strconv.Itoa(code), nil)
		}
		s.mu.Unlock()
	}
}

func (s *server) send(rec string, fds []int) error {
	oob := fdpass.Rights(fds...)
	for {
		err := unix.Sendmsg(s.status, []byte(rec), oob, nil, 0)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
