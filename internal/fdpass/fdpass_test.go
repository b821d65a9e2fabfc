package fdpass

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// Files sent with Rights arrive as working descriptors, in order.
func TestRoundTrip(t *testing.T) {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sp[0])
	defer unix.Close(sp[1])
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := unix.Sendmsg(sp[0], []byte("x"), FileRights([]*os.File{r, w}), nil, 0); err != nil {
		t.Fatal(err)
	}
	oob := make([]byte, Space(2))
	_, oobn, _, _, err := unix.Recvmsg(sp[1], make([]byte, 1), oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Files(oob[:oobn], "got")
	if err != nil || len(got) != 2 {
		t.Fatalf("files %v, err %v", got, err)
	}
	defer got[0].Close()
	defer got[1].Close()
	if _, err := got[1].Write([]byte("via")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	if _, err := got[0].Read(b); err != nil || string(b) != "via" {
		t.Fatalf("read %q %v through the passed pipe", b, err)
	}
	if fds, err := FDs(nil); fds != nil || err != nil || Rights() != nil {
		t.Errorf("nothing to carry: %v %v %v", fds, err, Rights())
	}
}
