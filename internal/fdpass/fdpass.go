// Package fdpass packs and unpacks the file descriptors a unix socket
// message carries (SCM_RIGHTS), for the status channel between the
// supervisor and the pod's init and for the control socket. It imports
// nothing but the standard library and x/sys: the in-pod init uses it.
package fdpass

import (
	"os"

	"golang.org/x/sys/unix"
)

// Space is the control-message buffer size for up to n descriptors.
func Space(n int) int { return unix.CmsgSpace(n * 4) }

// Rights is the control message carrying fds; nil for none.
func Rights(fds ...int) []byte {
	if len(fds) == 0 {
		return nil
	}
	return unix.UnixRights(fds...)
}

// FileRights is Rights for open files.
func FileRights(files []*os.File) []byte {
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	return Rights(fds...)
}

// FDs returns every descriptor the control messages in oob carry, in
// order. The caller owns them, also when the error is not nil (what
// could be parsed is returned).
func FDs(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	var fds []int
	for _, m := range msgs {
		got, _ := unix.ParseUnixRights(&m)
		fds = append(fds, got...)
	}
	return fds, err
}

// Files is FDs as files named name.
func Files(oob []byte, name string) ([]*os.File, error) {
	fds, err := FDs(oob)
	files := make([]*os.File, 0, len(fds))
	for _, fd := range fds {
		files = append(files, os.NewFile(uintptr(fd), name))
	}
	return files, err
}
