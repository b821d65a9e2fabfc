package inside

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/sandbox"
)

// forwarded are the signals the init passes on to the agent.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// prepare checks, inside the view, that the command can start at all.
func prepare(spec *sandbox.InitSpec) (string, error) {
	if spec.Dir != "" {
		if fi, err := os.Stat(spec.Dir); err != nil || !fi.IsDir() {
			return "", fail(sandbox.ClassNotFound, "working directory %s does not exist inside the pod; pass -w with a directory of the workspace", spec.Dir)
		}
	}
	return lookPath(spec.Args[0], getenv(spec.Env, "PATH"), spec.Dir)
}

// lookPath finds the command as a shell would: names with a slash as
// given, others in PATH. 127 when nothing is there, 126 when only
// non-executable files are.
func lookPath(name, path, dir string) (string, error) {
	if name == "" {
		return "", &failure{code: sandbox.ExitNotFound, class: sandbox.ClassNotFound, msg: "the command name is empty"}
	}
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if ok, err := executable(p); !ok {
			return "", notRunnable(name, err)
		}
		return p, nil
	}
	if path == "" {
		path = defaultPath
	}
	var denied error
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, name)
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		ok, err := executable(p)
		if ok {
			return p, nil
		}
		if denied == nil && !errors.Is(err, os.ErrNotExist) {
			denied = err
		}
	}
	if denied != nil {
		return "", notRunnable(name, denied)
	}
	return "", &failure{code: sandbox.ExitNotFound, class: sandbox.ClassNotFound, msg: name + ": command not found"}
}

func executable(p string) (bool, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return false, err
	}
	if fi.IsDir() {
		return false, unix.EISDIR
	}
	if fi.Mode()&0o111 == 0 {
		return false, unix.EACCES
	}
	return true, nil
}

func notRunnable(name string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return &failure{code: sandbox.ExitNotFound, class: sandbox.ClassNotFound, msg: name + ": " + err.Error()}
	}
	return &failure{code: sandbox.ExitNotExecutable, class: sandbox.ClassOther, msg: name + ": " + err.Error()}
}

func getenv(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// startAgent forks the agent with plain clone (syscall.ForkExec, no pidfd,
// no clone3: the seccomp policy answers ENOSYS to clone3) in a session of
// its own, so it cannot push input into a terminal it does not own. With
// a TTY, stdio is the pod's own pty slave three times, and it becomes the
// agent's controlling terminal.
func startAgent(spec *sandbox.InitSpec, path string, stdio [3]int) (int, error) {
	pid, err := syscall.ForkExec(path, spec.Args, &syscall.ProcAttr{
		Dir:   spec.Dir,
		Env:   spec.Env,
		Files: []uintptr{uintptr(stdio[0]), uintptr(stdio[1]), uintptr(stdio[2])},
		Sys: &syscall.SysProcAttr{
			Setsid:     true,
			Setctty:    spec.TTY,
			Ctty:       0,
			Credential: &syscall.Credential{Uid: uint32(spec.UID), Gid: uint32(spec.GID), Groups: []uint32{}},
		},
	})
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOMEM) {
		// The fork itself failed: the command is fine, the pod is full.
		return 0, fail(sandbox.ClassOther, "starting %s: %v (the pod's process or memory limit is reached: airlock stats, airlock limit)", spec.Args[0], err)
	}
	if err != nil {
		return 0, notRunnable(spec.Args[0], err)
	}
	return pid, nil
}

// supervise forwards signals to the agent and reaps every process that
// ends up with the init as parent, until the agent exits; its status
// becomes the init's (128+n for signal n). Leaving kills the rest of the
// pod: the kernel ends a PID namespace with its init.
func supervise(agent int, sigs <-chan os.Signal) int {
	exited := make(chan int, 1)
	go reap(agent, exited)
	for {
		select {
		case s := <-sigs:
			_ = unix.Kill(agent, s.(syscall.Signal))
		case code := <-exited:
			return code
		}
	}
}

func reap(agent int, exited chan<- int) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			exited <- sandbox.ExitSetup
			return
		}
		if pid != agent {
			continue
		}
		if ws.Signaled() {
			exited <- 128 + int(ws.Signal())
		} else {
			exited <- ws.ExitStatus()
		}
		return
	}
}

// notifySignals returns the forwarded signals, queued since the init
// started (start.go).
func notifySignals() <-chan os.Signal {
	<-early.done
	return early.sigs
}

// openTerminal allocates the agent's pty in the pod's own devpts, after
// pivot_root: the agent sees /dev/pts/N of its own file system, so
// ttyname and `tty` work, and no host terminal is ever inside the pod.
// The slave belongs to the agent's user; the master goes to the
// supervisor, which copies between it and the person's terminal.
func openTerminal(spec *sandbox.InitSpec) (master, slave int, err error) {
	master, err = unix.Open("/dev/pts/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, -1, sysFail("opening /dev/pts/ptmx for the agent's terminal", err)
	}
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(master)
		return -1, -1, sysFail("unlocking the agent's terminal", err)
	}
	if spec.Rows > 0 && spec.Cols > 0 {
		if err := unix.IoctlSetWinsize(master, unix.TIOCSWINSZ, &unix.Winsize{Row: spec.Rows, Col: spec.Cols}); err != nil {
			unix.Close(master)
			return -1, -1, sysFail("sizing the agent's terminal", err)
		}
	}
	// TIOCGPTPEER opens the slave through the master, never by a path
	// the view could have redirected.
	fd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(master), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		err = errno
	}
	slave = int(fd)
	if err != nil {
		unix.Close(master)
		return -1, -1, sysFail("opening the agent's terminal", err)
	}
	// The pod's devpts makes every pty the agent's (its uid= and gid=
	// options); the chown is for a devpts that did not, and a serving
	// init, which has no CAP_CHOWN left, needs none.
	var st unix.Stat_t
	if err := unix.Fstat(slave, &st); err == nil && int(st.Uid) == spec.UID && int(st.Gid) == spec.GID {
		return master, slave, nil
	}
	if err := unix.Fchown(slave, spec.UID, spec.GID); err != nil {
		unix.Close(master)
		unix.Close(slave)
		return -1, -1, sysFail("giving the agent its terminal", err)
	}
	return master, slave, nil
}
