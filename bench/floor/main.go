// Command floor measures what any design with Airlock's process shape
// pays before it builds a single wall: a Go supervisor that starts a Go
// init in new mount, PID, UTS, IPC and network namespaces, which execs
// the command; the supervisor waits. No mounts, no pivot_root, no
// seccomp, Landlock, cgroup, network wall or audit trail. bench/start.sh
// runs it beside `airlock run -- true` and bwrap, so the gap between the
// three can be read off one run.
//
//	floor CMD [ARGS...]
package main

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

const initArg = "__floor_init"

func main() {
	if len(os.Args) > 2 && os.Args[1] == initArg {
		// The init: exec the command in place (pid 1 of the new PID
		// namespace), as the pod's init would after building its view.
		path, err := exec.LookPath(os.Args[2])
		if err == nil {
			err = syscall.Exec(path, os.Args[2:], os.Environ())
		}
		fmt.Fprintln(os.Stderr, "floor init:", err)
		os.Exit(127)
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: floor CMD [ARGS...]")
		os.Exit(2)
	}
	cmd := exec.Command("/proc/self/exe", append([]string{initArg}, os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWNET,
		Setsid:     true,
	}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			os.Exit(ee.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(125)
	}
}
