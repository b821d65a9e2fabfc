package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/fdpass"
)

// ExecOptions is one command for a serving pod (Spec.Serve).
type ExecOptions struct {
	Args []string // Args[0] is looked up in the PATH of Env inside the view
	Env  []string
	Dir  string // working directory inside the view
	// TTY gives the command a new pty of the pod's devpts (Exec.Terminal
	// is its master); else Stdin, Stdout and Stderr (nil: /dev/null) are
	// its fds 0-2, passed to it as they are.
	TTY                   bool
	Rows, Cols            uint16
	Stdin, Stdout, Stderr *os.File
}

// Exec is a command running in a serving pod.
type Exec struct {
	ID  uint64
	Pid int // in the pod's PID namespace
	// Terminal is the master of the command's pty (TTY only); the caller
	// owns it.
	Terminal *os.File
	p        *Process
	done     chan struct{}
	code     int
}

// ErrPodStopped is what Exec returns once a serving pod is gone.
var ErrPodStopped = errors.New("the pod has stopped")

// serving is the supervisor's side of a serving init's channel.
type serving struct {
	sock    *os.File
	mu      sync.Mutex
	next    uint64
	pending map[uint64]chan execReply
	execs   map[uint64]*Exec
	gone    bool
}

type execReply struct {
	e   *Exec
	err error
}

// serve reads the init's records until it is gone.
func (p *Process) serve(sock *os.File) {
	s := &serving{sock: sock, pending: map[uint64]chan execReply{}, execs: map[uint64]*Exec{}}
	p.srv = s
	go func() {
		defer sock.Close()
		for {
			rec, files, err := readRecord(sock)
			if err != nil {
				break
			}
			s.record(p, rec, files)
		}
		s.mu.Lock()
		s.gone = true
		for id, ch := range s.pending {
			ch <- execReply{err: ErrPodStopped}
			delete(s.pending, id)
		}
		for id, e := range s.execs {
			e.finish(128 + int(syscall.SIGKILL)) // killed with the pod
			delete(s.execs, id)
		}
		s.mu.Unlock()
	}()
}

func (s *serving) record(p *Process, rec string, files []*os.File) {
	f := strings.SplitN(rec, " ", 5)
	if len(f) < 3 {
		closeFiles(files)
		return
	}
	id, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		closeFiles(files)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch f[0] {
	case StatusStarted:
		ch := s.pending[id]
		delete(s.pending, id)
		pid, _ := strconv.Atoi(f[2])
		e := &Exec{ID: id, Pid: pid, p: p, done: make(chan struct{})}
		if len(f) > 3 && f[3] == FileTerminal && len(files) == 1 {
			e.Terminal, files = files[0], nil
		}
		closeFiles(files)
		s.execs[id] = e
		if ch != nil {
			ch <- execReply{e: e}
		}
	case StatusFailed:
		closeFiles(files)
		ch := s.pending[id]
		delete(s.pending, id)
		if ch == nil || len(f) < 4 {
			return
		}
		code, _ := strconv.Atoi(f[2])
		msg := ""
		if len(f) == 5 {
			msg = f[4]
		}
		ch <- execReply{err: &SetupError{Code: code, Class: f[3], Msg: msg}}
	case StatusExit:
		closeFiles(files)
		if e := s.execs[id]; e != nil {
			code, _ := strconv.Atoi(f[2])
			e.finish(code)
			delete(s.execs, id)
		}
	default:
		closeFiles(files)
	}
}

func (e *Exec) finish(code int) {
	e.code = code
	close(e.done)
}

func (s *serving) send(rec string, files []*os.File) error {
	oob := fdpass.FileRights(files)
	rc, err := s.sock.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), []byte(rec), oob, nil, 0)
		return serr != unix.EAGAIN
	}); err != nil {
		return err
	}
	if errors.Is(serr, unix.EPIPE) || errors.Is(serr, unix.ECONNRESET) {
		return ErrPodStopped
	}
	return serr
}

// Exec starts a command in a serving pod and returns once it runs, or
// with why not: a *SetupError (126, 127, 125) from the pod, or
// ErrPodStopped.
func (p *Process) Exec(o ExecOptions) (*Exec, error) {
	s := p.srv
	if s == nil {
		return nil, fmt.Errorf("internal error: exec in a pod that does not serve commands")
	}
	if len(o.Args) == 0 {
		return nil, fmt.Errorf("no command to run")
	}
	var files []*os.File
	if !o.TTY {
		std, closeStd, err := stdFiles(o.Stdin, o.Stdout, o.Stderr)
		if err != nil {
			return nil, err
		}
		defer closeStd()
		files = std
	}
	s.mu.Lock()
	if s.gone {
		s.mu.Unlock()
		return nil, ErrPodStopped
	}
	s.next++
	id := s.next
	ch := make(chan execReply, 1)
	s.pending[id] = ch
	s.mu.Unlock()
	body, err := json.Marshal(ExecSpec{ID: id, Args: o.Args, Env: o.Env, Dir: o.Dir, TTY: o.TTY, Rows: o.Rows, Cols: o.Cols})
	if err == nil {
		rec := StatusExec + " " + string(body)
		if len(body) > inlineSpec {
			// A record is one datagram, which the socket's buffer bounds
			// (about 200 KiB); a long command line goes in a memfd.
			var mf *os.File
			if mf, err = specFile(body); err == nil {
				defer mf.Close()
				rec, files = StatusExec+" "+ExecSpecInFile, append(files, mf)
			}
		}
		if err == nil {
			err = s.send(rec, files)
		}
	}
	if err != nil {
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
		return nil, fmt.Errorf("sending the command to the pod: %w", err)
	}
	r := <-ch
	return r.e, r.err
}

// inlineSpec is the largest ExecSpec sent in the record itself.
const inlineSpec = 64 << 10

// specFile returns a sealed memfd holding body, read from the start.
func specFile(body []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("airlock-exec", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("creating a memfd for the command line: %w", err)
	}
	f := os.NewFile(uintptr(fd), "exec-spec")
	if _, err := f.Write(body); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing the command line: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SEAL|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE); err != nil {
		f.Close()
		return nil, fmt.Errorf("sealing the command line: %w", err)
	}
	return f, nil
}

// Signal sends sig to the command (its first process).
func (e *Exec) Signal(sig syscall.Signal) error {
	return e.p.srv.send(StatusSignal+" "+strconv.FormatUint(e.ID, 10)+" "+strconv.Itoa(int(sig)), nil)
}

// Hangup sends SIGHUP (then SIGCONT) to the command's process group, as a
// terminal that went away does.
func (e *Exec) Hangup() error {
	return e.p.srv.send(StatusHangup+" "+strconv.FormatUint(e.ID, 10), nil)
}

// Done is closed once the command has ended.
func (e *Exec) Done() <-chan struct{} { return e.done }

// Wait returns the command's exit status (128+n for signal n; 137 when
// the pod stopped under it).
func (e *Exec) Wait() int {
	<-e.done
	return e.code
}

// Stop asks a serving pod to end: every process gets SIGTERM, and the
// init exits once they are gone or grace is over (the kernel kills the
// rest). Wait returns when it is over.
func (p *Process) Stop(grace time.Duration) error {
	if p.srv == nil {
		return fmt.Errorf("internal error: stop of a pod that does not serve commands")
	}
	err := p.srv.send(StatusStop+" "+strconv.FormatInt(grace.Milliseconds(), 10), nil)
	if errors.Is(err, ErrPodStopped) || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}
