package netwall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/coalesce"
)

// The drop log puts what the pod's filter chain drops in the audit trail:
// UDP other than DNS, ICMP, and any other packet that is neither loopback
// nor redirected to the wall. The last rule of the chain copies the first
// bytes of such a packet to NFLOG group dropGroup (rate-limited in the
// kernel) before the chain's policy drops it; the supervisor reads the
// group from a netlink socket opened inside the pod's namespace (groups
// are per namespace, so the host's are untouched).
//
// An agent can send a flood of packets, so the trail gets the first packet
// to each (protocol, address, port) at once, and then, every
// dropSummaryEvery, how many more there were.
const (
	dropGroup        = 1
	dropSnaplen      = 64 // an IPv6 header (40) and the ports
	dropRate         = 1000
	dropSummaryEvery = 5 * time.Second
	dropMaxKeys      = 4096
	dropMaxFresh     = 100 // new destinations reported at once per period; more are summed up as "(many)"
)

// nfnetlink_log wire constants (linux/netfilter/nfnetlink_log.h).
const (
	nfulnlMsgPacket = 0
	nfulnlMsgConfig = 1
	nfulaCfgCmd     = 1
	nfulaCfgMode    = 2
	nfulaCfgQthresh = 5
	nfulaPayload    = 9
	nfulnlCmdBind   = 1
	nfulnlCopyPkt   = 2
)

type dropKey struct {
	proto byte
	dst   netip.AddrPort
}

// drop is what the drop log counts: the drops to one key, or (lost) the
// messages the kernel could not queue.
type drop struct {
	dropKey
	lost bool
}

// dropLog reads one NFLOG group and reports each drop through report.
type dropLog struct {
	f      *os.File
	report func(Event)
	log    *coalesce.Log[drop, drop]
	read1  chan struct{} // closed when read returns
}

func newDropLog(f *os.File, report func(Event), every time.Duration) *dropLog {
	d := &dropLog{f: f, report: report, read1: make(chan struct{})}
	d.log = coalesce.New(every, coalesce.Limits[drop, drop]{Keys: dropMaxKeys, Fresh: dropMaxFresh, Spill: spillDrop}, d.write)
	return d
}

// spillDrop counts a destination past the bounds with the others of its
// protocol, as "(many)".
func spillDrop(k, _ drop) (drop, drop) {
	k.dst = netip.AddrPort{}
	return k, k
}

// openDropLog opens and binds the NFLOG socket. It runs on the wall's
// thread inside the pod's namespace: the group is the pod's.
func openDropLog() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
	if err != nil {
		return -1, fmt.Errorf("opening the drop log: %w", os.NewSyscallError("socket NETLINK_NETFILTER", err))
	}
	if err := bindDropGroup(fd); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("binding the drop log to NFLOG group %d (is nfnetlink_log in the kernel?): %w", dropGroup, err)
	}
	return fd, nil
}

// startDropLog starts reading the NFLOG socket fd.
func (w *Wall) startDropLog(fd int) {
	d := newDropLog(os.NewFile(uintptr(fd), "nflog"), w.report, dropSummaryEvery)
	w.drops = d
	w.goServe(d.read)
}

// bindDropGroup binds fd to the group and asks for the packets' first
// bytes, each delivered at once.
func bindDropGroup(fd int) error {
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("bind", err)
	}
	mode := binary.BigEndian.AppendUint32(nil, dropSnaplen)
	mode = append(mode, nfulnlCopyPkt, 0)
	for i, attr := range []struct {
		typ  uint16
		data []byte
	}{
		{nfulaCfgCmd, []byte{nfulnlCmdBind}},
		{nfulaCfgMode, mode},
		{nfulaCfgQthresh, binary.BigEndian.AppendUint32(nil, 1)},
	} {
		if err := nflogConfig(fd, uint32(i+1), attr.typ, attr.data); err != nil {
			return err
		}
	}
	return nil
}

// nflogConfig sends one NFULNL_MSG_CONFIG with one attribute and waits
// for the kernel's acknowledgement.
func nflogConfig(fd int, seq uint32, typ uint16, data []byte) error {
	attr := binary.NativeEndian.AppendUint16(nil, uint16(4+len(data)))
	attr = binary.NativeEndian.AppendUint16(attr, typ)
	attr = append(attr, data...)
	for len(attr)%4 != 0 {
		attr = append(attr, 0)
	}
	body := append([]byte{unix.AF_UNSPEC, unix.NFNETLINK_V0}, binary.BigEndian.AppendUint16(nil, dropGroup)...)
	body = append(body, attr...)
	msg := binary.NativeEndian.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+len(body)))
	msg = binary.NativeEndian.AppendUint16(msg, unix.NFNL_SUBSYS_ULOG<<8|nfulnlMsgConfig)
	msg = binary.NativeEndian.AppendUint16(msg, unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	msg = binary.NativeEndian.AppendUint32(msg, seq)
	msg = binary.NativeEndian.AppendUint32(msg, 0)
	msg = append(msg, body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("sendto", err)
	}
	buf := make([]byte, 4096)
	deadline := time.Now().Add(2 * time.Second)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EAGAIN && time.Now().After(deadline) {
			return errors.New("nfnetlink_log did not answer within 2s")
		}
		if err == unix.EAGAIN || err == unix.EINTR {
			if err == unix.EAGAIN {
				pollIn(fd)
			}
			continue
		}
		if err != nil {
			return os.NewSyscallError("recvfrom", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type == unix.NLMSG_ERROR && m.Header.Seq == seq && len(m.Data) >= 4 {
				if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
					return os.NewSyscallError("nfnetlink_log config", unix.Errno(-errno))
				}
				return nil
			}
		}
	}
}

// pollIn waits up to 100 ms for fd to become readable.
func pollIn(fd int) {
	_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 100)
}

// read reports dropped packets until close sets a read deadline; close
// then drains what the kernel has queued.
func (d *dropLog) read() {
	defer close(d.read1)
	rc, err := d.f.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 64*1024)
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil {
			return // the deadline: close reads what is still queued
		}
		d.handle(buf[:n], rerr)
	}
}

// drain reads, without waiting, every message still queued: once the
// deadline is set the poller returns at once, without reading, so what
// the kernel queued just before close would otherwise be lost.
func (d *dropLog) drain() {
	rc, err := d.f.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 64*1024)
	_ = rc.Control(func(fd uintptr) {
		for {
			n, _, rerr := unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			if rerr == unix.EAGAIN || rerr == unix.EBADF {
				return
			}
			d.handle(buf[:max(n, 0)], rerr)
		}
	})
}

// handle counts what one read of the NFLOG socket returned.
func (d *dropLog) handle(b []byte, rerr error) {
	switch {
	case rerr == unix.ENOBUFS:
		d.log.Count(drop{lost: true}, drop{lost: true})
		return
	case rerr != nil:
		return
	}
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NFNL_SUBSYS_ULOG<<8|nfulnlMsgPacket {
			if k, ok := parseDropped(m.Data); ok {
				d.saw(k)
			}
		}
	}
}

// parseDropped finds the payload attribute of one NFULNL_MSG_PACKET and
// reads protocol, destination and port from the packet's headers.
func parseDropped(b []byte) (dropKey, bool) {
	if len(b) < 4 {
		return dropKey{}, false
	}
	for b = b[4:]; len(b) >= 4; {
		l := int(binary.NativeEndian.Uint16(b))
		typ := binary.NativeEndian.Uint16(b[2:]) & 0x3fff
		if l < 4 || l > len(b) {
			return dropKey{}, false
		}
		if typ == nfulaPayload {
			return parsePacket(b[4:l])
		}
		b = b[min(len(b), (l+3)&^3):]
	}
	return dropKey{}, false
}

// parsePacket reads an IPv4 or IPv6 header and the destination port of
// TCP, UDP, UDP-Lite and SCTP (0 for other protocols).
func parsePacket(p []byte) (dropKey, bool) {
	if len(p) < 1 {
		return dropKey{}, false
	}
	var k dropKey
	var l4 []byte
	var dst netip.Addr
	switch p[0] >> 4 {
	case 4:
		ihl := int(p[0]&15) * 4
		if len(p) < 20 || ihl < 20 || len(p) < ihl {
			return dropKey{}, false
		}
		k.proto, dst, l4 = p[9], netip.AddrFrom4([4]byte(p[16:20])), p[ihl:]
	case 6:
		if len(p) < 40 {
			return dropKey{}, false
		}
		// Extension headers are not followed: the port reads as 0.
		k.proto, dst, l4 = p[6], netip.AddrFrom16([16]byte(p[24:40])), p[40:]
	default:
		return dropKey{}, false
	}
	var port uint16
	switch k.proto {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_UDPLITE, unix.IPPROTO_SCTP:
		if len(l4) >= 4 {
			port = binary.BigEndian.Uint16(l4[2:4])
		}
	}
	k.dst = netip.AddrPortFrom(dst, port)
	return k, true
}

// saw reports the first drop of a key at once and counts the rest; every
// dropSummaryEvery, the counts since the last report are reported and
// quiet keys forgotten.
func (d *dropLog) saw(k dropKey) { d.log.Add(drop{dropKey: k}, drop{dropKey: k}) }

func (d *dropLog) write(k drop, n int) {
	if k.lost {
		d.report(Event{Kind: "drop", Details: map[string]any{"lost": n}, Verdict: "deny",
			Reason: "the kernel dropped log messages of dropped packets: the pod sent faster than they could be read"})
		return
	}
	d.report(dropEvent(k.dropKey, max(n, 1))) // the first drop is a count of 1
}

// close reads what the kernel has queued, stops, and reports what was
// still counted.
func (d *dropLog) close() {
	_ = d.f.SetReadDeadline(time.Now())
	<-d.read1
	d.drain()
	d.f.Close()
	d.log.Close()
}

func dropEvent(k dropKey, count int) Event {
	det := map[string]any{"proto": protoName(k.proto), "count": count}
	if k.dst.IsValid() {
		det["addr"], det["port"] = k.dst.Addr().String(), int(k.dst.Port())
	} else {
		det["addr"] = "(many)"
	}
	reason := "only TCP (through the proxy) and DNS (to the pod's resolver) leave the pod"
	switch k.proto {
	case unix.IPPROTO_UDP:
		reason = "UDP other than DNS does not leave the pod"
	case unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6:
		reason = "ICMP does not leave the pod"
	}
	return Event{Kind: "drop", Details: det, Verdict: "deny", Reason: reason}
}

func protoName(p byte) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_ICMPV6:
		return "icmpv6"
	case unix.IPPROTO_SCTP:
		return "sctp"
	case unix.IPPROTO_UDPLITE:
		return "udplite"
	}
	return strconv.Itoa(int(p))
}
