package sandbox

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/fdpass"
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
	Pid int
	// Files are what the init handed over with its first status record,
	// by name (FileTerminal, FileNotify); the caller owns and closes them.
	Files map[string]*os.File
	proc  *os.Process
	srv   *serving // a serving pod's channel (Spec.Serve)
	done  chan struct{}
	code  int
	err   error
}

type started struct {
	proc *os.Process
	err  error
}

// Start starts the init and returns once it has started the command, or
// with the reason it did not (a *SetupError for failures inside the pod).
// No process of the pod is left running when Start fails. With
// spec.Early, the init Spawn started ahead is the one that gets the spec.
func Start(spec *Spec) (*Process, error) {
	pd := spec.Early
	if pd == nil {
		var err error
		pd, err = Spawn(SpawnOptions{NewNet: spec.NewNet, TTY: spec.TTY, Stdin: spec.Stdin, Stdout: spec.Stdout, Stderr: spec.Stderr})
		if err != nil {
			return nil, err
		}
	}
	p, err := pd.start(spec)
	if err != nil {
		pd.Abort()
		return nil, err
	}
	return p, nil
}

// SpawnOptions are what the init must have from its first instruction:
// its namespaces and its fds 0-2 (nil: /dev/null). With TTY the init
// gets /dev/null whatever they are: it makes the pod's own terminal, and
// the host's never enters the pod.
type SpawnOptions struct {
	NewNet, TTY           bool
	Stdin, Stdout, Stderr *os.File
}

// Pending is an init started ahead of its spec: it execs and boots its Go
// runtime (1.5-2 ms) while the supervisor builds the walls, then waits on
// the spec pipe. Start (through Spec.Early) sends it the spec; Abort ends
// it. It is single-use.
type Pending struct {
	p            *Process
	newNet       bool
	specW, statR *os.File
	used         bool // start was called
	over         bool // the pod started, or Abort ended the init
}

// Spawn starts an init that waits for its spec.
func Spawn(o SpawnOptions) (*Pending, error) {
	if o.TTY {
		o.Stdin, o.Stdout, o.Stderr = nil, nil, nil
	}
	files, closeFiles, err := stdFiles(o.Stdin, o.Stdout, o.Stderr)
	if err != nil {
		return nil, err
	}
	defer closeFiles()
	specR, specW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("creating the spec pipe: %w", err)
	}
	statR, statW, err := statusPair()
	if err != nil {
		specR.Close()
		specW.Close()
		return nil, err
	}
	p := &Process{done: make(chan struct{})}
	st := make(chan started, 1)
	go p.own(o.NewNet, append(files, specR, statW), st)
	s := <-st
	specR.Close()
	statW.Close()
	if s.err != nil {
		specW.Close()
		statR.Close()
		if errors.Is(s.err, syscall.EPERM) || errors.Is(s.err, syscall.EINVAL) || errors.Is(s.err, syscall.ENOSPC) || errors.Is(s.err, syscall.EUSERS) {
			// clone with the namespace flags is what fails here.
			return nil, fmt.Errorf("starting the pod's init in new mount, PID, UTS, IPC and network namespaces: %w — this kernel, a container or a seccomp policy forbids creating them (or the namespace limit in /proc/sys/user is reached); run airlock doctor", s.err)
		}
		return nil, fmt.Errorf("starting the pod's init: %w", s.err)
	}
	p.proc, p.Pid = s.proc, s.proc.Pid
	return &Pending{p: p, newNet: o.NewNet, specW: specW, statR: statR}, nil
}

// Pid is the init's host PID. Its namespaces exist from the spawn on, so
// a wall that needs only them (the network wall) can be built at once.
func (pd *Pending) Pid() int { return pd.p.Pid }

// Abort ends an init that has not started a command (closing the spec
// pipe makes it exit) and waits for it. It is a no-op after a successful
// start.
func (pd *Pending) Abort() {
	if pd.over {
		return
	}
	pd.over = true
	pd.close()
	_ = pd.p.proc.Kill()
	<-pd.p.done
}

func (pd *Pending) close() {
	if pd.specW != nil {
		pd.specW.Close()
		pd.specW = nil
	}
	if pd.statR != nil {
		pd.statR.Close()
		pd.statR = nil
	}
}

// start sends spec to the waiting init and runs the handshake. On error
// the caller aborts.
func (pd *Pending) start(spec *Spec) (*Process, error) {
	if pd.used {
		return nil, fmt.Errorf("internal error: a pending init was started twice")
	}
	pd.used = true
	if spec.NewNet != pd.newNet {
		return nil, fmt.Errorf("internal error: the init was spawned with new-network %v for a spec that wants %v", pd.newNet, spec.NewNet)
	}
	data, err := encodeSpec(spec)
	if err != nil {
		return nil, err
	}
	p := pd.p
	if err := p.handshake(spec, data, pd.specW, pd.statR); err != nil {
		return nil, err
	}
	if err := p.handListener(spec); err != nil {
		return nil, err
	}
	pd.over = true
	pd.specW = nil // the handshake closed it
	if spec.Serve {
		p.serve(pd.statR)
	} else if spec.OnExit != nil {
		go watchExit(pd.statR, spec.OnExit)
	} else {
		pd.statR.Close()
	}
	pd.statR = nil
	return p, nil
}

// handListener passes the seccomp listener the init handed back to
// spec.SeccompListener. A pod whose filter has a listener that nobody
// serves would hang in every watched call, so one asked for and not
// received ends the start.
func (p *Process) handListener(spec *Spec) error {
	if spec.SeccompListener == nil || len(spec.Seccomp) == 0 {
		return nil
	}
	f := p.Files[FileNotify]
	if f == nil {
		return fmt.Errorf("the pod's init handed back no seccomp listener")
	}
	delete(p.Files, FileNotify)
	spec.SeccompListener(f)
	return nil
}

// statusPair makes the status channel: a SOCK_SEQPACKET pair, so each
// record arrives whole and the init can attach files to one.
func statusPair() (supervisor, init *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the status socket: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "status"), os.NewFile(uintptr(fds[1]), "status-init"), nil
}

// maxHanded bounds the files one status record may carry.
const maxHanded = 4

// readRecord reads one status record and the files attached to it (the
// caller owns them). io.EOF means the init closed its end.
func readRecord(f *os.File) (string, []*os.File, error) {
	buf := make([]byte, 64<<10)
	oob := make([]byte, fdpass.Space(maxHanded))
	var n, oobn int
	var err error
	rc, err := f.SyscallConn()
	if err != nil {
		return "", nil, err
	}
	if cerr := rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, err = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
		return err != unix.EAGAIN
	}); cerr != nil {
		return "", nil, cerr
	}
	if err != nil {
		return "", nil, err
	}
	files, perr := fdpass.Files(oob[:oobn], "handed")
	if perr != nil {
		closeFiles(files)
		return "", nil, fmt.Errorf("reading the init's status: %w", perr)
	}
	if n == 0 && len(files) == 0 {
		return "", nil, io.EOF
	}
	return string(buf[:n]), files, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// watchExit passes the exit record the init sends when the command ends
// to onExit; the socket reads EOF when the init is gone.
func watchExit(statR *os.File, onExit func(int)) {
	defer statR.Close()
	rec, files, err := readRecord(statR)
	closeFiles(files) // an exit record carries none
	if err != nil {
		return
	}
	word, num, ok := strings.Cut(rec, " ")
	if code, err := strconv.Atoi(num); ok && word == StatusExit && err == nil {
		onExit(code)
	}
}

// own starts the init from a locked OS thread and waits for it there:
// Pdeathsig fires when the thread that forked the child exits, so the
// thread must outlive the child. The goroutine never unlocks, so the
// runtime retires the thread afterwards.
func (p *Process) own(newNet bool, files []*os.File, st chan<- started) {
	runtime.LockOSThread()
	flags := uintptr(syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC)
	if newNet {
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
// The init builds its view while OnStart runs, and holds any failure of
// that until go: the status is read only after go.
func (p *Process) handshake(spec *Spec, data []byte, specW *os.File, status *os.File) error {
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
	rec, files, err := readRecord(status)
	if err != nil {
		return p.initDied("reading the init's status", err)
	}
	p.Files, err = parseStatus(rec, files)
	return err
}

// initDied explains a pipe failure by how the init ended.
func (p *Process) initDied(what string, err error) error {
	<-p.done
	if p.err != nil {
		return p.err
	}
	return fmt.Errorf("%s: the pod's init exited with status %d before starting the command (%v)", what, p.code, err)
}

// parseStatus reads the init's first record: "ok" and the names of the
// files attached to it, or a failure. Files are closed unless returned.
func parseStatus(rec string, files []*os.File) (map[string]*os.File, error) {
	if word, names, _ := strings.Cut(rec, " "); word == StatusOK {
		f := strings.Fields(names)
		if len(f) != len(files) {
			closeFiles(files)
			return nil, fmt.Errorf("the pod's init named %d files (%q) and sent %d", len(f), names, len(files))
		}
		handed := make(map[string]*os.File, len(f))
		for i, name := range f {
			handed[name] = files[i]
		}
		return handed, nil
	}
	closeFiles(files)
	f := strings.SplitN(rec, " ", 3)
	if len(f) != 3 {
		return nil, fmt.Errorf("the pod's init sent a malformed status %q", rec)
	}
	code, err := strconv.Atoi(f[0])
	if err != nil {
		return nil, fmt.Errorf("the pod's init sent a malformed status %q", rec)
	}
	return nil, &SetupError{Code: code, Class: f[1], Msg: f[2]}
}

func encodeSpec(spec *Spec) ([]byte, error) {
	if len(spec.Args) == 0 && !spec.Serve {
		return nil, errdefs.Invalid("no command to run")
	}
	if !filepath.IsAbs(spec.RootDir) {
		return nil, errdefs.Invalid("the pod's root directory %q is not absolute", spec.RootDir)
	}
	body, err := json.Marshal(InitSpec{
		Hostname: spec.Hostname, Args: spec.Args, Env: spec.Env, Dir: spec.Dir,
		UID: spec.UID, GID: spec.GID, Mounts: spec.Mounts, RootDir: spec.RootDir,
		TTY: spec.TTY, Rows: spec.Rows, Cols: spec.Cols, Seccomp: spec.Seccomp, Landlock: spec.Landlock,
		SeccompNotify: spec.SeccompListener != nil && len(spec.Seccomp) > 0,
		Cgroup:        spec.CgroupThreads,
		Serve:         spec.Serve,
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the pod spec: %w", err)
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...), nil
}

// stdFiles returns the init's fds 0-2, opening /dev/null for missing ones.
func stdFiles(stdin, stdout, stderr *os.File) ([]*os.File, func(), error) {
	files := []*os.File{stdin, stdout, stderr}
	var opened []*os.File
	closeAll := func() {
		for _, f := range opened {
			f.Close()
		}
	}
	for i, f := range files {
		if f != nil {
			if err := checkStdio(i, f); err != nil {
				closeAll()
				return nil, nil, err
			}
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

// checkStdio refuses to hand the pod an fd 0-2 that is a directory or an
// O_PATH descriptor: a directory of the host's file system, held open
// inside the pod, is a way out of its view (openat or fchdir from it walk
// the host's tree, not the pod's).
func checkStdio(n int, f *os.File) error {
	name := [3]string{"standard input", "standard output", "standard error"}[n]
	fd := int(f.Fd())
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return fmt.Errorf("checking %s: %w", name, err)
	}
	if fl&unix.O_PATH != 0 {
		return errdefs.Invalid("%s is an O_PATH descriptor; a pod gets only files, pipes, sockets and terminals as its stdio", name)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("checking %s: %w", name, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return errdefs.Invalid("%s is a directory; a pod gets only files, pipes, sockets and terminals as its stdio (a host directory open inside the pod would lead out of its view)", name)
	}
	return nil
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
