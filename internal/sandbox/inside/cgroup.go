package inside

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/sandbox"
)

// joinCgroup moves the init's main thread into the pod's cgroup by
// writing "0" (the writing thread) to each hierarchy's tasks file, before
// the view is built and long before the agent is forked from this same
// thread: the agent and everything it starts are born in the group, with
// its limits, freezer and kill.
//
// This thread is the thread group leader, so the init itself is listed in
// the group's cgroup.procs, and its memory (charged to the leader's mm) is
// the group's too. The Go runtime's other threads of the init (created
// before this point) stay where the supervisor is: their CPU time is not
// the pod's, nor are they frozen with it. They only run the init's
// own code (signal forwarding, reaping), never the agent's.
func joinCgroup(files []string) error {
	if len(files) == 0 {
		return nil
	}
	if unix.Gettid() != unix.Getpid() {
		return fail(sandbox.ClassOther, "joining the pod's cgroup: the init is not on its main thread")
	}
	for _, f := range files {
		if err := writeZero(f); err != nil {
			return fail(sandbox.ClassOther, "joining the pod's cgroup: %v", err)
		}
	}
	return nil
}

func writeZero(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString("0")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}
