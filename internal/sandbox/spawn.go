package sandbox

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// InitArg is the hidden subcommand that runs the in-pod init (the same
// value as inside.Arg; package inside imports this one, not the reverse).
const InitArg = "__airlock_init"

// SetupError is a failure of the in-pod init before the command started.
type SetupError struct {
	Code  int    // ExitSetup, ExitNotExecutable or ExitNotFound
	Class string // ClassUnsupported, ClassNotFound or ClassOther
	Msg   string
}

func (e *SetupError) Error() string { return e.Msg }

// Is lets callers test errors.Is(err, errdefs.ErrUnsupported) when the
// kernel lacks a feature a wall needs, and errdefs.ErrNotFound for a
// missing command.
func (e *SetupError) Is(target error) bool {
	switch e.Class {
	case ClassUnsupported:
		return target == errdefs.ErrUnsupported
	case ClassNotFound:
		return target == errdefs.ErrNotFound
	}
	return false
}

// Process is a started pod: its init, PID 1 of the pod's PID namespace.
type Process struct {
	// Pid is the init's PID in the supervisor's PID namespace.
	Pid  int
	proc *os.Process
	done chan struct{}
	code int
	err  error
}

type started struct {
	proc *os.Process
	err  error
}

// Start starts the init and returns once it has started the command, or
// with the reason it did not (a *SetupError for failures inside the pod).
// No process of the pod is left running when Start fails.
func Start(spec *Spec) (*Process, error) {
	data, err := encodeSpec(spec)
	if err != nil {
		return nil, err
	}
	files, closeFiles, err := stdFiles(spec)
	if err != nil {
		return nil, err
	}
	defer closeFiles()
	specR, specW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("creating the spec pipe: %w", err)
	}
	defer specW.Close()
	statR, statW, err := os.Pipe()
	if err != nil {
		specR.Close()
		return nil, fmt.Errorf("creating the status pipe: %w", err)
	}
	statOpen := true
	defer func() {
		if statOpen {
			statR.Close()
		}
	}()
	p := &Process{done: make(chan struct{})}
	st := make(chan started, 1)
	go p.own(spec, append(files, specR, statW), st)
	s := <-st
	specR.Close()
	statW.Close()
	if s.err != nil {
		if errors.Is(s.err, syscall.EPERM) || errors.Is(s.err, syscall.EINVAL) || errors.Is(s.err, syscall.ENOSPC) || errors.Is(s.err, syscall.EUSERS) {
			// clone with the namespace flags is what fails here.
			return nil, fmt.Errorf("starting the pod's init in new mount, PID, UTS, IPC and network namespaces: %w — this kernel, a container or a seccomp policy forbids creating them (or the namespace limit in /proc/sys/user is reached); run airlock doctor", s.err)
		}
		return nil, fmt.Errorf("starting the pod's init: %w", s.err)
	}
	p.proc, p.Pid = s.proc, s.proc.Pid
	status := bufio.NewReader(statR)
	if err := p.handshake(spec, data, specW, status); err != nil {
		_ = p.proc.Kill()
		<-p.done
		return nil, err
	}
	if spec.OnExit != nil {
		statOpen = false
		go watchExit(statR, status, spec.OnExit)
	}
	return p, nil
}

// watchExit passes the exit line the init sends when the command ends to
// onExit; the pipe closes when the init is gone.
func watchExit(statR *os.File, status *bufio.Reader, onExit func(int)) {
	defer statR.Close()
	line, err := status.ReadString('\n')
	if err != nil {
		return
	}
	word, num, ok := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
	if code, err := strconv.Atoi(num); ok && word == StatusExit && err == nil {
		onExit(code)
	}
}

// own starts the init from a locked OS thread and waits for it there:
// Pdeathsig fires when the thread that forked the child exits, so the
// thread must outlive the child. The goroutine never unlocks, so the
// runtime retires the thread afterwards.
func (p *Process) own(spec *Spec, files []*os.File, st chan<- started) {
	runtime.LockOSThread()
	flags := uintptr(syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC)
	if spec.NewNet {
		flags |= syscall.CLONE_NEWNET
	}
	proc, err := os.StartProcess("/proc/self/exe", []string{"/proc/self/exe", InitArg}, &os.ProcAttr{
		Files: files,
		// The init reads no environment; this only spares the Go runtime
		// probing cgroups at start-up, and the init needs one P.
		Env: []string{"GOMAXPROCS=1"},
		Sys: &syscall.SysProcAttr{
			Cloneflags: flags,
			Pdeathsig:  syscall.SIGKILL,
			// A session of its own: terminal signals of the supervisor's
			// terminal never reach the pod except through Run.
			Setsid: true,
		},
	})
	st <- started{proc, err}
	if err != nil {
		close(p.done)
		return
	}
	ps, err := proc.Wait()
	p.code, p.err = exitCode(ps, err)
	close(p.done)
}

func exitCode(ps *os.ProcessState, err error) (int, error) {
	if err != nil {
		return ExitSetup, fmt.Errorf("waiting for the pod's init: %w", err)
	}
	ws := ps.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

// handshake sends the spec, runs OnStart, says go, and reads the status.
func (p *Process) handshake(spec *Spec, data []byte, specW *os.File, status *bufio.Reader) error {
	if _, err := specW.Write(data); err != nil {
		return p.initDied("sending the spec", err)
	}
	if spec.OnStart != nil {
		if err := spec.OnStart(p.Pid); err != nil {
			return err
		}
	}
	if _, err := specW.Write([]byte{'g'}); err != nil {
		return p.initDied("starting the init", err)
	}
	specW.Close()
	line, err := status.ReadString('\n')
	if err != nil {
		return p.initDied("reading the init's status", err)
	}
	return parseStatus(strings.TrimSuffix(line, "\n"))
}

// initDied explains a pipe failure by how the init ended.
func (p *Process) initDied(what string, err error) error {
	<-p.done
	if p.err != nil {
		return p.err
	}
	return fmt.Errorf("%s: the pod's init exited with status %d before starting the command (%v)", what, p.code, err)
}

func parseStatus(line string) error {
	if line == StatusOK {
		return nil
	}
	f := strings.SplitN(line, " ", 3)
	if len(f) != 3 {
		return fmt.Errorf("the pod's init sent a malformed status %q", line)
	}
	code, err := strconv.Atoi(f[0])
	if err != nil {
		return fmt.Errorf("the pod's init sent a malformed status %q", line)
	}
	return &SetupError{Code: code, Class: f[1], Msg: f[2]}
}

func encodeSpec(spec *Spec) ([]byte, error) {
	if len(spec.Args) == 0 {
		return nil, errdefs.Invalid("no command to run")
	}
	if !filepath.IsAbs(spec.RootDir) {
		return nil, errdefs.Invalid("the pod's root directory %q is not absolute", spec.RootDir)
	}
	body, err := json.Marshal(InitSpec{
		Hostname: spec.Hostname, Args: spec.Args, Env: spec.Env, Dir: spec.Dir,
		UID: spec.UID, GID: spec.GID, Mounts: spec.Mounts, RootDir: spec.RootDir,
		TTY: spec.TTY, Seccomp: spec.Seccomp, Landlock: spec.Landlock,
		Cgroup: spec.CgroupThreads,
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the pod spec: %w", err)
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...), nil
}

// stdFiles returns the init's fds 0-2, opening /dev/null for missing ones.
func stdFiles(spec *Spec) ([]*os.File, func(), error) {
	files := []*os.File{spec.Stdin, spec.Stdout, spec.Stderr}
	var opened []*os.File
	closeAll := func() {
		for _, f := range opened {
			f.Close()
		}
	}
	for i, f := range files {
		if f != nil {
			continue
		}
		null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("opening %s: %w", os.DevNull, err)
		}
		opened = append(opened, null)
		files[i] = null
	}
	return files, closeAll, nil
}

// Signal sends sig to the pod's init, which forwards it to the command
// (SIGKILL kills the init and with it the whole pod).
func (p *Process) Signal(sig os.Signal) error {
	err := p.proc.Signal(sig)
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

// Wait waits for the pod to end and returns the command's exit code
// (128+n when it was killed by signal n). It may be called more than once.
func (p *Process) Wait() (int, error) {
	<-p.done
	return p.code, p.err
}
