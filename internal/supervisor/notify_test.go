package supervisor

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/seccomp"
	"github.com/airlock-dev/airlock/internal/testutil"
)

// notifyChildEnv makes the test binary the attacker: it installs the
// default profile with a listener, hands the listener to the test over
// fd 3, and runs its probes (notifyChildMain).
const notifyChildEnv = "AIRLOCK_NOTIFY_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(notifyChildEnv) != "" {
		os.Exit(notifyChildMain())
	}
	os.Exit(m.Run())
}

// notifyChildMain prints one "label result" line per probe; result is
// "ok" or the errno's name.
func notifyChildMain() int {
	hostName, path := os.Getenv("AIRLOCK_NOTIFY_HOST"), os.Getenv("AIRLOCK_NOTIFY_PATH")
	own := fmt.Sprintf("airlock-own-%d", rand.Int64())
	// Bound before the filter: the pod's own service.
	ownFd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		err = unix.Bind(ownFd, &unix.SockaddrUnix{Name: "@" + own})
	}
	if err == nil {
		err = unix.Listen(ownFd, 8)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: own listener:", err)
		return 2
	}
	p, err := seccomp.Profile("default")
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	prog, err := seccomp.CompileNotify(p)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	lf, err := seccomp.InstallNotify(prog)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	if err := unix.Sendmsg(3, []byte("listener"), unix.UnixRights(int(lf.Fd())), nil, 0); err != nil {
		fmt.Fprintln(os.Stderr, "child: sending the listener:", err)
		return 2
	}
	lf.Close()
	unix.Close(3)
	sock := func(family, typ, proto int) error {
		fd, err := unix.Socket(family, typ, proto)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}
	dial := func(sa unix.Sockaddr) error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Connect(fd, sa)
	}
	probes := []struct {
		label string
		f     func() error
	}{
		{"raw", func() error { return sock(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP) }},
		{"raw6", func() error { return sock(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_NONBLOCK, unix.IPPROTO_ICMPV6) }},
		{"packet", func() error { return sock(unix.AF_PACKET, unix.SOCK_RAW, 0x0300) }},
		{"inet-packet", func() error { return sock(unix.AF_INET, 10, 0x0300) }},
		{"ping", func() error { return sock(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP) }},
		{"tcp", func() error { return sock(unix.AF_INET, unix.SOCK_STREAM, 0) }},
		{"udp6", func() error { return sock(unix.AF_INET6, unix.SOCK_DGRAM, 0) }},
		{"host-abstract", func() error { return dial(&unix.SockaddrUnix{Name: "@" + hostName}) }},
		{"own-abstract", func() error { return dial(&unix.SockaddrUnix{Name: "@" + own}) }},
		{"path", func() error { return dial(&unix.SockaddrUnix{Name: path}) }},
	}
	// Repeats of one attempt are coalesced into one record with a count.
	for i := 0; i < 50; i++ {
		probes = append(probes, probes[0])
	}
	for _, pr := range probes {
		res := "ok"
		if err := pr.f(); err != nil {
			res = unix.ErrnoName(err.(unix.Errno))
		}
		fmt.Println(pr.label, res)
	}
	return 0
}

type auditRec struct {
	action, outcome string
	details         map[string]any
}

// The listener of a real filtered process: raw, packet and ping sockets
// fail with EPERM and are audited with what was asked; a connect to an
// abstract name outside the process's network namespace is refused and
// audited, reaching nothing; its own abstract socket, a path socket and
// ordinary TCP/UDP sockets work, unaudited.
func TestNotifyServerRealChild(t *testing.T) {
	testutil.RequireRoot(t)
	hostName := fmt.Sprintf("airlock-host-%d", rand.Int64())
	hostL, err := net.Listen("unix", "@"+hostName)
	if err != nil {
		t.Fatal(err)
	}
	defer hostL.Close()
	var hostHits sync.WaitGroup
	hits := 0
	hostHits.Go(func() {
		for {
			c, err := hostL.Accept()
			if err != nil {
				return
			}
			hits++
			c.Close()
		}
	})
	path := filepath.Join(t.TempDir(), "s")
	pathL, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer pathL.Close()

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "ours"), os.NewFile(uintptr(fds[1]), "theirs")
	defer ours.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), notifyChildEnv+"=1", "AIRLOCK_NOTIFY_HOST="+hostName, "AIRLOCK_NOTIFY_PATH="+path)
	cmd.ExtraFiles = []*os.File{theirs}
	// Its own network namespace, as a pod has: the host's abstract
	// socket is not there.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	listener := recvFile(t, ours)
	var mu sync.Mutex
	var recs []auditRec
	stop, _, err := serveNotify(listener, func(action string, d map[string]any, outcome string) {
		mu.Lock()
		defer mu.Unlock()
		recs = append(recs, auditRec{action, outcome, d})
	})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		label, res, _ := strings.Cut(sc.Text(), " ")
		if prev, ok := got[label]; ok && prev != res {
			t.Errorf("%s: %s, then %s", label, prev, res)
		}
		got[label] = res
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	stop()
	hostL.Close()
	hostHits.Wait()

	for label, want := range map[string]string{
		"raw": "EPERM", "raw6": "EPERM", "packet": "EPERM", "inet-packet": "EPERM", "ping": "EPERM",
		"host-abstract": "ECONNREFUSED",
		"tcp":           "ok", "udp6": "ok", "own-abstract": "ok", "path": "ok",
	} {
		if got[label] != want {
			t.Errorf("%s: %q, want %s", label, got[label], want)
		}
	}
	if hits != 0 {
		t.Errorf("SECURITY: the host's abstract socket accepted %d connections", hits)
	}
	want := []struct {
		action string
		fields map[string]any
	}{
		{"net.socket", map[string]any{"kind": "raw", "family": "AF_INET", "type": "SOCK_RAW", "protocol": "icmp"}},
		{"net.socket", map[string]any{"kind": "raw", "family": "AF_INET6", "type": "SOCK_RAW", "protocol": "icmpv6"}},
		{"net.socket", map[string]any{"kind": "packet", "family": "AF_PACKET", "type": "SOCK_RAW", "protocol": "ethertype 0x0003"}},
		{"net.socket", map[string]any{"kind": "packet", "family": "AF_INET", "type": "SOCK_PACKET"}},
		{"net.socket", map[string]any{"kind": "ping", "family": "AF_INET", "type": "SOCK_DGRAM", "protocol": "icmp"}},
		{"net.abstract", map[string]any{"name": "@" + hostName}},
	}
	for _, w := range want {
		if !hasRec(recs, w.action, w.fields) {
			t.Errorf("no %s record with %v in %v", w.action, w.fields, recs)
		}
	}
	total := 0
	for _, r := range recs {
		if r.outcome != "deny" {
			t.Errorf("record %v: outcome %q, want deny", r, r.outcome)
		}
		if r.details["pid"] == nil || r.details["comm"] == nil {
			t.Errorf("record %v names no pid or command", r)
		}
		if d := r.details; d["kind"] == "raw" && d["family"] == "AF_INET" {
			n, _ := d["count"].(int)
			total += max(n, 1)
		}
		if name, _ := r.details["name"].(string); strings.Contains(name, "airlock-own-") {
			t.Errorf("the process's own abstract socket was audited: %v", r)
		}
	}
	if total != 51 {
		t.Errorf("51 raw socket calls are counted as %d", total)
	}
	if len(recs) > len(want)+3 {
		t.Errorf("%d records for %d distinct attempts: repeats are not coalesced: %v", len(recs), len(want), recs)
	}
}

func recvFile(t *testing.T, sock *os.File) *os.File {
	t.Helper()
	_ = sock.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf, oob := make([]byte, 64), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatalf("receiving the listener: %v", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("receiving the listener: %v (%d messages)", err, len(msgs))
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("receiving the listener: %v", err)
	}
	return os.NewFile(uintptr(fds[0]), "seccomp-notify")
}

func hasRec(recs []auditRec, action string, fields map[string]any) bool {
next:
	for _, r := range recs {
		if r.action != action {
			continue
		}
		for k, v := range fields {
			if r.details[k] != v {
				continue next
			}
		}
		return true
	}
	return false
}

// The pod's socket list decides which abstract names are its own; a
// pathname that merely ends in "@name" does not count.
func TestBoundAbstract(t *testing.T) {
	testutil.RequireRoot(t)
	name := fmt.Sprintf("airlock-b-%d", rand.Int64())
	l, err := net.Listen("unix", "@"+name+"\x00x")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	decoy := filepath.Join(t.TempDir(), "a @"+name)
	d, err := net.Listen("unix", decoy)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for n, want := range map[string]bool{name + "\x00x": true, name: false, name + "\x00": false, "": false} {
		got, err := boundAbstract(os.Getpid(), n)
		if err != nil || got != want {
			t.Errorf("boundAbstract(%q) = %v, %v; want %v", n, got, err, want)
		}
	}
	// A name with a newline spans two lines of the list and is found.
	nl, err := net.Listen("unix", "@"+name+"\nline")
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	for n, want := range map[string]bool{name + "\nline": true, name + "\nother": false} {
		got, err := boundAbstract(os.Getpid(), n)
		if err != nil || got != want {
			t.Errorf("boundAbstract(%q) = %v, %v; want %v", n, got, err, want)
		}
	}
}

func TestEscapeAbstract(t *testing.T) {
	if got := escapeAbstract("a/b\x00c\n\\"); got != `@a/b\x00c\x0a\x5c` {
		t.Errorf("escapeAbstract = %s", got)
	}
}

// A flood of one attempt is a few records; a flood of distinct names is
// bounded in memory, every attempt still written.
func TestCoalescer(t *testing.T) {
	var mu sync.Mutex
	var recs []auditRec
	c := newCoalescer(func(a string, d map[string]any, o string) {
		mu.Lock()
		recs = append(recs, auditRec{a, o, d})
		mu.Unlock()
	}, time.Hour)
	for i := 0; i < 1000; i++ {
		c.add("net.socket", map[string]any{"kind": "raw", "comm": "x", "pid": i}, "deny")
	}
	for i := 0; i < maxCoalesced+10; i++ {
		c.add("net.abstract", map[string]any{"name": fmt.Sprint(i)}, "deny")
	}
	c.close()
	if len(recs) != maxCoalesced+10+2 {
		t.Fatalf("%d records", len(recs))
	}
	if recs[0].details["pid"] != 0 || recs[len(recs)-1].details["count"] != 999 {
		t.Errorf("first %v, last %v", recs[0], recs[len(recs)-1])
	}
}
