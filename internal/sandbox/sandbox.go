// Package sandbox is the host side of the process boundary: it plans a
// pod's filesystem view as data (PlanView), starts the in-pod init in new
// mount, PID, UTS and IPC namespaces (and a network namespace on request),
// hands it the spec, waits for it and forwards signals and terminal I/O.
//
// The in-pod init (package inside) builds the walls; this side only
// decides what they are. Invariants:
//
//   - The init inherits fds 0-2 and two channels only: the spec pipe (the
//     spec, then a one-byte "go" once Spec.OnStart has placed the init in
//     its network, and in its cgroup unless the init joins that itself)
//     and the status socket (SOCK_SEQPACKET: one record, started with the
//     files it hands back, or why not; then the command's exit).
//   - Between the spec and "go" the init builds what OnStart does not
//     depend on (its v1 cgroup, the view and pivot_root, the command's
//     look-up, the pty) while OnStart runs; it hardens itself and starts
//     the agent only after "go". It reports nothing before "go": a
//     failure there waits for it, so OnStart always finds the init alive.
//   - The init may be spawned before its spec exists (Spawn): it boots
//     and waits on the spec pipe, and builds nothing until it has one.
//   - The init dies with the supervisor: it is started from a locked OS
//     thread with Pdeathsig SIGKILL, and that thread lives until the init
//     is reaped. When the init dies the kernel kills every process in the
//     pod's PID namespace, and its mount namespace, with every mount of the
//     view, goes with it: nothing is mounted on the host.
//   - A serving pod (Spec.Serve) keeps the status socket as a two-way
//     channel after the first record: Process.Exec sends a command with
//     its stdio attached, and the init answers with its start and, later,
//     its end. No fd 0-2 of any pod is a directory or an O_PATH
//     descriptor.
//   - Fail closed: Start returns an error, and the command never runs, when
//     any wall cannot be built.
package sandbox

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// MountKind says how the init builds one entry of the view.
type MountKind string

const (
	// KindBind bind-mounts Source (recursively) at Target.
	KindBind MountKind = "bind"
	// KindOverlay mounts an overlay of Lower, Upper and Work at Target.
	KindOverlay MountKind = "overlay"
	// KindTmpfs mounts a private, empty tmpfs at Target.
	KindTmpfs MountKind = "tmpfs"
	// KindHide makes Target invisible: a directory becomes an empty
	// read-only tmpfs, anything else a bind of /dev/null that cannot be
	// opened (nodev). A missing Target is skipped.
	KindHide MountKind = "hide"
	// KindDev builds a minimal /dev at Target.
	KindDev MountKind = "dev"
	// KindProc mounts a fresh proc at Target with sensitive entries masked.
	KindProc MountKind = "proc"
	// KindSys mounts a fresh read-only sysfs at Target with firmware and
	// security entries masked.
	KindSys MountKind = "sys"
	// KindSymlink creates Target as a symbolic link to Source (a host
	// path such as /bin that is a symlink keeps being one).
	KindSymlink MountKind = "symlink"
)

// Mount is one step of building the view, in view paths (the same as host
// paths).
type Mount struct {
	Kind     MountKind `json:"kind"`
	Source   string    `json:"source,omitempty"`
	Target   string    `json:"target"`
	ReadOnly bool      `json:"ro,omitempty"`
	// Lower, Upper and Work are the overlay directories (KindOverlay).
	Lower string `json:"lower,omitempty"`
	Upper string `json:"upper,omitempty"`
	Work  string `json:"work,omitempty"`
	// Optional entries whose source or target does not exist are skipped
	// instead of failing the start.
	Optional bool `json:"optional,omitempty"`
	// Reason says why the entry exists; it names the entry in errors.
	Reason string `json:"reason,omitempty"`
}

// LandlockSpec is the Landlock rule set applied to the agent (view paths).
type LandlockSpec struct {
	// Required makes a kernel without Landlock a start failure.
	Required  bool     `json:"required,omitempty"`
	ReadOnly  []string `json:"ro,omitempty"`
	ReadWrite []string `json:"rw,omitempty"`
	Exec      []string `json:"exec,omitempty"`
}

// Spec describes one pod process tree.
type Spec struct {
	Hostname string
	Args     []string // the command; Args[0] is looked up in the PATH of Env inside the view
	Env      []string
	Dir      string // working directory inside the view
	UID, GID int
	Mounts   []Mount // the view, in mount order (see PlanView)
	// RootDir is an empty host directory (in the pod's state directory)
	// on which the init mounts the view's root tmpfs, inside its own mount
	// namespace.
	RootDir string
	// TTY gives the agent a terminal: the init allocates a pty in the
	// pod's own devpts (so ttyname works and no host terminal enters the
	// pod), the agent gets it as its controlling terminal, and Start
	// hands the master back as Process.Files[FileTerminal]. Rows and
	// Cols are its size at start.
	TTY        bool
	Rows, Cols uint16
	NewNet     bool
	// Serve starts no command: the init builds the view and every wall,
	// then serves Process.Exec until Process.Stop or the supervisor's
	// end. Args, Env, Dir and TTY are then per Exec, not here.
	Serve bool
	// Seccomp is a classic BPF program, installed last (nil: none).
	Seccomp []unix.SockFilter
	// SeccompListener, when set, makes the init install Seccomp (a
	// seccomp.CompileNotify program) with a user-notification listener
	// and hand it back; Start passes it here before it returns. The
	// callee owns it and must serve it at once: the agent is running,
	// and each call its notify rules match waits for an answer.
	SeccompListener func(*os.File)
	Landlock        *LandlockSpec // nil: none
	// CgroupThreads are the files through which the init moves its main
	// thread into the pod's cgroup as soon as it has the spec, before it
	// builds the view (cgroup Group.ThreadFiles): the agent, forked from
	// that thread, and all its descendants are born in the group. The
	// files must exist when Start is called. Empty: OnStart places the
	// init.
	CgroupThreads []string
	// Early, when set, is the init Spawn started ahead for this spec
	// (same NewNet; its fds 0-2 are the ones it was spawned with).
	Early *Pending
	// Stdin, Stdout, Stderr default to /dev/null when nil.
	Stdin, Stdout, Stderr *os.File
	// OnStart runs with the init's host PID once the init has the spec,
	// while it builds the view, and before it hardens itself or starts
	// the agent: whatever OnStart sets up (the network wall, the cgroup
	// on v2) is in place before the agent exists. OnStart may use the
	// init's network namespace (/proc/<pid>/ns/net); it must not rely on
	// the init's mounts, root or working directory, which change under
	// it, nor change what the view's mounts are made of (their sources
	// are opened meanwhile). An error aborts the start.
	OnStart func(pid int) error
	// OnExit, when set, is called once with the command's exit code as
	// soon as the init reports it, before the kernel tears the pod's
	// namespaces down (unmounting an overlay syncs its upper file
	// system, a millisecond or more): the supervisor writes its exit
	// records meanwhile. Wait still returns the code once the pod is gone.
	OnExit func(code int)
}

// InitSpec is the part of a Spec the supervisor sends to the in-pod init,
// as JSON over the spec pipe. Only package inside reads it.
type InitSpec struct {
	Hostname string   `json:"hostname,omitempty"`
	Args     []string `json:"args"`
	Env      []string `json:"env,omitempty"`
	Dir      string   `json:"dir,omitempty"`
	UID      int      `json:"uid"`
	GID      int      `json:"gid"`
	Mounts   []Mount  `json:"mounts,omitempty"`
	RootDir  string   `json:"root"`
	TTY      bool     `json:"tty,omitempty"`
	Rows     uint16   `json:"rows,omitempty"` // the terminal's size, with TTY
	Cols     uint16   `json:"cols,omitempty"`
	Seccomp  Program  `json:"seccomp,omitempty"`
	// SeccompNotify: install Seccomp with a listener (FileNotify).
	SeccompNotify bool          `json:"seccomp_notify,omitempty"`
	Landlock      *LandlockSpec `json:"landlock,omitempty"`
	Cgroup        []string      `json:"cgroup,omitempty"` // Spec.CgroupThreads
	Serve         bool          `json:"serve,omitempty"`
}

// ExecSpec is one command a serving init starts (Spec.Serve), as JSON
// after the word StatusExec. Only package inside reads it.
type ExecSpec struct {
	ID   uint64   `json:"id"`
	Args []string `json:"args"`
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
	TTY  bool     `json:"tty,omitempty"`
	Rows uint16   `json:"rows,omitempty"`
	Cols uint16   `json:"cols,omitempty"`
}

// The init's file descriptors beyond 0-2 and its status record format.
const (
	// SpecFD carries a 4-byte big-endian length, the JSON InitSpec, then
	// one "go" byte.
	SpecFD = 3
	// StatusFD is a SOCK_SEQPACKET socket; every message is one record.
	// The first is StatusOK followed by the names of the files it
	// carries (SCM_RIGHTS, in that order: FileTerminal, FileNotify), or
	// "<code> <class> <message>" where code is the exit code the run
	// should report (125 setup failure, 126 not executable, 127 not
	// found) and class is one of ClassUnsupported, ClassNotFound,
	// ClassOther. After StatusOK, one more record, StatusExit and the
	// command's exit code, when it ends.
	StatusFD = 4

	StatusOK   = "ok"
	StatusExit = "exit"

	// A serving init (Spec.Serve) keeps the status socket after StatusOK
	// as a two-way channel. The supervisor sends
	//   "exec <ExecSpec JSON>" with fds 0-2 attached (none with TTY), or
	//   "exec @" with the JSON in one more file after them,
	//   "signal <id> <signal number>", "hangup <id>", "stop <grace ms>";
	// the init answers each exec with
	//   "started <id> <pid in the pod>" (with FileTerminal for a TTY), or
	//   "failed <id> <code> <class> <message>",
	// and says "exit <id> <code>" when that command ends. After "stop"
	// it sends SIGTERM to every process of the pod and exits once they
	// are gone or the grace is over; the kernel kills the rest.
	StatusExec    = "exec"
	StatusStarted = "started"
	StatusFailed  = "failed"
	StatusSignal  = "signal"
	StatusHangup  = "hangup"
	StatusStop    = "stop"
	// ExecSpecInFile, as the body of an exec record, says the ExecSpec
	// is in the last file attached (a sealed memfd): one too large for a
	// record.
	ExecSpecInFile   = "@"
	ClassUnsupported = "unsupported"
	ClassNotFound    = "notfound"
	ClassOther       = "-"

	// FileTerminal is the master of the agent's terminal, allocated in
	// the pod's own devpts when the spec asks for a TTY.
	FileTerminal = "terminal"
	// FileNotify is the seccomp user-notification listener of the pod.
	FileNotify = "seccomp-notify"
)

// Exit codes for failures before the command runs (as in POSIX shells and
// container runtimes).
const (
	ExitSetup         = 125
	ExitNotExecutable = 126
	ExitNotFound      = 127
)

// Program is a classic BPF program as the init receives it: in JSON, one
// base64 string of its instructions (8 bytes each, little-endian fields),
// not one object per instruction. A seccomp profile runs to hundreds of
// instructions, and decoding them as objects cost the init 0.2 ms of
// reflection on its way to building the walls.
type Program []unix.SockFilter

const insnSize = 8 // code (2), jt (1), jf (1), k (4)

// MarshalJSON encodes p as one base64 string.
func (p Program) MarshalJSON() ([]byte, error) {
	raw := make([]byte, 0, len(p)*insnSize)
	for _, in := range p {
		raw = binary.LittleEndian.AppendUint16(raw, in.Code)
		raw = append(raw, in.Jt, in.Jf)
		raw = binary.LittleEndian.AppendUint32(raw, in.K)
	}
	return json.Marshal(raw)
}

// UnmarshalJSON decodes what MarshalJSON made.
func (p *Program) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return fmt.Errorf("decoding the seccomp program: %w", err)
	}
	if len(raw)%insnSize != 0 {
		return fmt.Errorf("decoding the seccomp program: %d bytes is not a whole number of instructions", len(raw))
	}
	prog := make(Program, len(raw)/insnSize)
	for i := range prog {
		in := raw[i*insnSize:]
		prog[i] = unix.SockFilter{Code: binary.LittleEndian.Uint16(in), Jt: in[2], Jf: in[3], K: binary.LittleEndian.Uint32(in[4:])}
	}
	*p = prog
	return nil
}
