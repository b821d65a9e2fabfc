package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/coalesce"
	"github.com/airlock-dev/airlock/internal/seccomp"
)

// The notify server answers the pod's seccomp notifications (the
// built-in profiles' notify rules, internal/seccomp/profiles.go): the
// socket() calls that would open packet, raw or ping sockets, and the
// connect() calls to addresses that are not IPv4 or IPv6. It audits what
// the pod tried and answers for the kernel:
//
//   - socket: audited as net.socket, refused with EPERM;
//   - connect to an abstract unix name that no socket in the pod's own
//     network namespace is bound to: audited as net.abstract, refused
//     with ECONNREFUSED;
//   - every other connect (paths, names bound in the pod, inet
//     addresses of unusual lengths) continues in the kernel unaudited.
//
// The walls do not depend on it. The pod's network namespace is what
// keeps the host's abstract sockets away (a connect that continues runs
// there, and the kernel reads its address again), the pod has no
// CAP_NET_RAW, and a dead server makes the kernel fail waiting calls
// with ENOSYS. What the server adds is the record. It answers every
// notification, and checks that the call is still pending after reading
// the caller's memory and /proc files, so that a recycled PID is never
// audited as the caller.

// notifyServer serves one pod's listener.
type notifyServer struct {
	l       *seccomp.Listener
	audit   *coalescer
	readMem func(pid int, addr uint64, buf []byte) (int, error) // seam for tests
}

// serveNotify starts serving the listener; stop closes it (the pod's
// waiting calls, if any are left, then fail with ENOSYS), waits for the
// server and writes the audit records still counted. flush writes what
// is counted so far, and returns once it is written: the supervisor
// calls it before run.exit, so that the counts of what the pod tried
// while it ran come before that record.
func serveNotify(f *os.File, audit AuditFunc) (stop, flush func(), err error) {
	l, err := seccomp.NewListener(f)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	s := &notifyServer{l: l, audit: newCoalescer(audit, coalescePeriod), readMem: readProcMem}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.serve()
	}()
	return func() {
		_ = l.Close()
		<-done
		s.audit.close()
	}, s.audit.flush, nil
}

func (s *notifyServer) serve() {
	for {
		n, err := s.l.Receive()
		if err != nil {
			if !errors.Is(err, seccomp.ErrListenerClosed) && !errors.Is(err, seccomp.ErrNoUsers) {
				s.audit.audit("seccomp.notify", map[string]any{"reason": err.Error()}, "error")
			}
			return
		}
		s.answer(n)
	}
}

// answer decides one notification; every path answers it.
func (s *notifyServer) answer(n seccomp.Notification) {
	switch {
	case n.Arch != unix.AUDIT_ARCH_X86_64:
		_ = s.l.Fail(n.ID, unix.EPERM) // the filter never notifies for another ABI
	case n.Nr == unix.SYS_SOCKET:
		s.socket(n)
	case n.Nr == unix.SYS_CONNECT:
		s.connect(n)
	default:
		// Only the built-in profiles are compiled with a listener, and
		// they notify for nothing else; refuse what we do not know.
		_ = s.l.Fail(n.ID, unix.EPERM)
	}
}

func (s *notifyServer) socket(n seccomp.Notification) {
	family, typ, proto := int(int32(n.Args[0])), int(int32(n.Args[1])), int(int32(n.Args[2]))
	who := procOf(n.Pid)
	valid := s.l.Valid(n.ID)
	_ = s.l.Fail(n.ID, unix.EPERM)
	if !valid {
		return // the caller is gone; who may be another process now
	}
	kind, reason := socketKind(family, typ)
	d := map[string]any{"kind": kind, "family": familyName(family), "type": typeName(typ), "protocol": protoNumberName(kind, proto), "reason": reason}
	who.add(d)
	s.audit.add("net.socket", d, "deny")
}

// socketKind names what a watched socket call asked for.
func socketKind(family, typ int) (kind, reason string) {
	switch {
	case family == unix.AF_PACKET || typ&0xf == 10: // SOCK_PACKET
		return "packet", "packet sockets reach below the network wall: a pod may not open them"
	case typ&0xf == unix.SOCK_RAW:
		return "raw", "raw sockets forge and sniff packets: a pod may not open them"
	default:
		return "ping", "ICMP does not leave a pod: ping sockets are refused"
	}
}

// connect reads the address the pod connects to. Only an abstract unix
// name that is not bound in the pod's network namespace is refused.
func (s *notifyServer) connect(n seccomp.Notification) {
	addr, size := n.Args[1], int(uint32(n.Args[2]))
	var buf [unix.SizeofSockaddrUnix]byte
	if addr == 0 || size < 3 || size > len(buf) {
		_ = s.l.Continue(n.ID) // nothing abstract to read; the kernel says what is wrong
		return
	}
	got, err := s.readMem(n.Pid, addr, buf[:size])
	if err != nil || got < 3 {
		_ = s.l.Continue(n.ID)
		return
	}
	sa := buf[:got]
	if family := int(sa[0]) | int(sa[1])<<8; family != unix.AF_UNIX || sa[2] != 0 {
		_ = s.l.Continue(n.ID) // a path, or not unix at all
		return
	}
	name := string(sa[3:])
	bound, lerr := boundAbstract(n.Pid, name)
	who := procOf(n.Pid)
	if !s.l.Valid(n.ID) {
		_ = s.l.Continue(n.ID)
		return // the caller is gone: what we read may be another process's
	}
	if bound || lerr != nil {
		// The pod's own service (or a listing we could not read): the
		// kernel connects in the pod's namespace, which holds the host's
		// abstract sockets out of reach either way.
		_ = s.l.Continue(n.ID)
		return
	}
	_ = s.l.Fail(n.ID, unix.ECONNREFUSED)
	d := map[string]any{"name": escapeAbstract(name),
		"reason": "no socket in the pod's network namespace has this abstract name: the host's abstract sockets are out of a pod's reach"}
	who.add(d)
	s.audit.add("net.abstract", d, "deny")
}

// readProcMem reads the caller's memory through /proc/<pid>/mem.
func readProcMem(pid int, addr uint64, buf []byte) (int, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/mem")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.ReadAt(buf, int64(addr))
}

// boundAbstract reports whether a socket in pid's network namespace is
// bound to the abstract name. /proc/<pid>/net/unix is that namespace's
// list; it shows an abstract name as "@" and the name's bytes, each NUL
// as "@". A name with a newline in it spans lines there, so it is looked
// for anywhere in the list, and its first line reads as another name: a
// pod process can make a name look bound. A false match only lets the
// kernel decide the connect in the pod's namespace, as it would without
// the watch: it hides the pod's own failing attempt from the trail, and
// reaches nothing.
func boundAbstract(pid int, name string) (bool, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/net/unix")
	if err != nil {
		return false, err
	}
	want := "@" + strings.ReplaceAll(name, "\x00", "@")
	if strings.Contains(name, "\n") {
		return bytes.Contains(data, []byte(" "+want+"\n")), nil
	}
	for i, line := range strings.Split(string(data), "\n") {
		if i == 0 {
			continue // header
		}
		// Num RefCount Protocol Flags Type St Inode Path: the path is
		// what follows the seventh field.
		f := strings.SplitN(line, " ", 8)
		if len(f) == 8 && f[7] == want {
			return true, nil
		}
	}
	return false, nil
}

// escapeAbstract shows an abstract name as ss(8) does, "@name", with
// every byte that is not printable ASCII (NULs too) as \xNN.
func escapeAbstract(name string) string {
	var b strings.Builder
	b.WriteByte('@')
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 0x20 && c < 0x7f && c != '\\' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "\\x%02x", c)
		}
	}
	return b.String()
}

// proc is what the audit record says about the caller.
type proc struct {
	pid, podPid int
	comm        string
}

// procOf reads the caller's command and its PID inside the pod (the last
// NSpid) from /proc/<pid>/status, one read; missing fields stay empty.
func procOf(pid int) proc {
	p := proc{pid: pid}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return p
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		switch string(k) {
		case "Name":
			p.comm = string(bytes.TrimSpace(v))
		case "NSpid":
			if f := strings.Fields(string(v)); len(f) > 0 {
				p.podPid, _ = strconv.Atoi(f[len(f)-1])
			}
		}
	}
	return p
}

func (p proc) add(d map[string]any) {
	d["host_pid"] = p.pid
	if p.podPid > 0 {
		d["pid"] = p.podPid
	}
	if p.comm != "" {
		d["comm"] = p.comm
	}
}

func familyName(f int) string {
	switch f {
	case unix.AF_INET:
		return "AF_INET"
	case unix.AF_INET6:
		return "AF_INET6"
	case unix.AF_PACKET:
		return "AF_PACKET"
	}
	return strconv.Itoa(f)
}

func typeName(t int) string {
	names := map[int]string{unix.SOCK_STREAM: "SOCK_STREAM", unix.SOCK_DGRAM: "SOCK_DGRAM", unix.SOCK_RAW: "SOCK_RAW",
		unix.SOCK_RDM: "SOCK_RDM", unix.SOCK_SEQPACKET: "SOCK_SEQPACKET", 10: "SOCK_PACKET"}
	if n, ok := names[t&0xf]; ok {
		return n
	}
	return strconv.Itoa(t & 0xf)
}

// protoNumberName names the protocol argument: an ethertype (in network
// byte order) for packet sockets, else an IP protocol.
func protoNumberName(kind string, p int) string {
	if kind == "packet" {
		return fmt.Sprintf("ethertype %#04x", int(uint16(p)>>8|uint16(p)<<8))
	}
	switch p {
	case 0:
		return "0"
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_ICMPV6:
		return "icmpv6"
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_RAW:
		return "raw"
	}
	return strconv.Itoa(p)
}

// coalescePeriod is how long repeats of one attempt are counted into one
// record: a pod looping over socket(SOCK_RAW) writes a few records a
// second, not one per call.
const coalescePeriod = 250 * time.Millisecond

// maxCoalesced bounds the distinct attempts counted at once (abstract
// names are the agent's to choose); beyond it, repeats are written as
// they come.
const maxCoalesced = 256

// coalescer writes the first of a run of identical records at once and
// counts the rest, writing their count once a period (the scheme of the
// network wall's drop log, package coalesce). The caller's pid is not
// part of the identity: the record names the first caller.
type coalescer struct {
	audit AuditFunc
	log   *coalesce.Log[string, attempt]
}

// attempt is the first record of a run.
type attempt struct {
	action, outcome string
	details         map[string]any
}

func newCoalescer(audit AuditFunc, every time.Duration) *coalescer {
	c := &coalescer{audit: audit}
	c.log = coalesce.New(every, coalesce.Limits[string, attempt]{Keys: maxCoalesced}, c.write)
	return c
}

func coalesceKey(action string, d map[string]any) string {
	var b strings.Builder
	b.WriteString(action)
	for _, k := range []string{"kind", "family", "type", "protocol", "name", "comm"} {
		if v, ok := d[k]; ok {
			fmt.Fprintf(&b, "\x00%s=%v", k, v)
		}
	}
	return b.String()
}

// add records one attempt.
func (c *coalescer) add(action string, d map[string]any, outcome string) {
	c.log.Add(coalesceKey(action, d), attempt{action: action, outcome: outcome, details: d})
}

// write writes the first record of a run as it is, and n repeats as a
// copy of it with their count.
func (c *coalescer) write(a attempt, n int) {
	d := a.details
	if n > 0 {
		d = maps.Clone(a.details)
		d["count"] = n
	}
	c.audit(a.action, d, a.outcome)
}

func (c *coalescer) flush() { c.log.Flush() }

// close stops the ticker and writes what is still counted.
func (c *coalescer) close() { c.log.Close() }
