package sandbox

import (
	"errors"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// AwaitingGo (TIOCINQ is FIONREAD) reports whether pd's init has read its whole spec and sits
// in read(2) on the spec pipe: it is waiting for "go", everything before
// it done.
func AwaitingGo(pd *Pending) bool {
	n, err := unix.IoctlGetInt(int(pd.specW.Fd()), unix.TIOCINQ)
	if err != nil || n != 0 {
		return false
	}
	// The init reads on its main thread (tid = pid), blocking: the pipe
	// it inherits is not in non-blocking mode.
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pd.p.Pid) + "/syscall")
	return err == nil && strings.HasPrefix(string(b), strconv.Itoa(unix.SYS_READ)+" 0x"+strconv.FormatInt(SpecFD, 16)+" ")
}

// StatusSent reports whether pd's init has sent a status record, or
// closed its end, that the supervisor has not read yet.
func StatusSent(pd *Pending) bool {
	buf := make([]byte, 1)
	_, _, err := unix.Recvfrom(int(pd.statR.Fd()), buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	return !errors.Is(err, unix.EAGAIN)
}
