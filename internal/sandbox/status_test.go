package sandbox

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// send writes one record with fds attached, as the init does.
func send(t *testing.T, w *os.File, rec string, fds ...int) {
	t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(int(w.Fd()), []byte(rec), oob, nil, 0); err != nil {
		t.Fatal(err)
	}
}

func devNull(t *testing.T) int {
	t.Helper()
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// The status channel keeps records whole and files with their names; a
// record whose names and files disagree is refused without leaking a
// descriptor, and the init's close reads as EOF.
func TestStatusRecords(t *testing.T) {
	r, w, err := statusPair()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a, b := devNull(t), devNull(t)
	before := openFDs(t)

	send(t, w, StatusOK+" "+FileTerminal+" "+FileNotify, a, b)
	rec, files, err := readRecord(r)
	if err != nil {
		t.Fatal(err)
	}
	handed, err := parseStatus(rec, files)
	if err != nil || len(handed) != 2 || handed[FileTerminal] == nil || handed[FileNotify] == nil {
		t.Fatalf("ok with two files: %v, %v", handed, err)
	}
	closeFiles([]*os.File{handed[FileTerminal], handed[FileNotify]})

	send(t, w, StatusOK+" "+FileTerminal, a, b) // one name, two files
	rec, files, err = readRecord(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseStatus(rec, files); err == nil {
		t.Fatalf("a record naming one file but carrying two was accepted")
	}
	send(t, w, "125 - the view failed", a) // a failure carries no files
	rec, files, err = readRecord(r)
	if err != nil {
		t.Fatal(err)
	}
	var se *SetupError
	if _, err := parseStatus(rec, files); !errors.As(err, &se) || se.Code != 125 || se.Msg != "the view failed" {
		t.Fatalf("failure record: %v", err)
	}
	if n := openFDs(t); n != before {
		t.Errorf("%d descriptors open after the records, %d before: refused files leaked", n, before)
	}
	w.Close()
	if _, _, err := readRecord(r); err != io.EOF {
		t.Fatalf("after the init closed its end: %v, want EOF", err)
	}
}

// The seccomp program crosses the spec pipe as one string and arrives
// instruction for instruction.
func TestProgramJSON(t *testing.T) {
	prog := Program{{Code: 0x20, K: 4}, {Code: 0x15, Jt: 1, Jf: 0xfe, K: 0xc000003e}, {Code: 0x6, K: 0x7fff0000}}
	data, err := json.Marshal(InitSpec{Args: []string{"true"}, Seccomp: prog})
	if err != nil {
		t.Fatal(err)
	}
	var got InitSpec
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Seccomp, prog) {
		t.Errorf("round trip: %v, want %v", got.Seccomp, prog)
	}
	if err := json.Unmarshal([]byte(`{"seccomp":"AAAA"}`), &got); err == nil {
		t.Errorf("3 bytes decoded as a program")
	}
	if data, _ := json.Marshal(InitSpec{}); strings.Contains(string(data), "seccomp") {
		t.Errorf("no program still encoded: %s", data)
	}
}
