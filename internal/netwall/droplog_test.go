package netwall

import (
	"encoding/binary"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParsePacket(t *testing.T) {
	v4 := make([]byte, 28)
	v4[0], v4[9] = 0x45, unix.IPPROTO_UDP
	copy(v4[16:20], []byte{198, 18, 0, 2})
	v4[22], v4[23] = 0x27, 0x0f // dport 9999
	v6 := make([]byte, 48)
	v6[0], v6[6] = 0x60, unix.IPPROTO_TCP
	copy(v6[24:40], netip.MustParseAddr("2001:db8::9").AsSlice())
	v6[42], v6[43] = 0x01, 0xbb // dport 443
	icmp := make([]byte, 28)
	icmp[0], icmp[9] = 0x45, unix.IPPROTO_ICMP
	copy(icmp[16:20], []byte{10, 0, 0, 1})
	for _, c := range []struct {
		pkt  []byte
		want string
		ok   bool
	}{
		{v4, "17 198.18.0.2:9999", true},
		{v6, "6 [2001:db8::9]:443", true},
		{icmp, "1 10.0.0.1:0", true},
		{v4[:10], "", false},
		{v6[:30], "", false},
		{[]byte{0x45}, "", false},
		{[]byte{0x10, 0, 0}, "", false},
	} {
		k, ok := parsePacket(c.pkt)
		got := ""
		if ok {
			got = protoNum(k.proto) + " " + k.dst.String()
		}
		if ok != c.ok || got != c.want {
			t.Errorf("parsePacket(%x) = %q %v, want %q %v", c.pkt, got, ok, c.want, c.ok)
		}
	}
}

func protoNum(p byte) string { return map[byte]string{1: "1", 6: "6", 17: "17"}[p] }

// A flood reports each destination once at once, then sums; past
// dropMaxFresh new destinations a period, they are summed as "(many)".
func TestDropLogAggregates(t *testing.T) {
	var evs []Event
	d := newDropLog(nil, func(e Event) { evs = append(evs, e) }, time.Hour)
	defer d.log.Close()
	a := dropKey{unix.IPPROTO_UDP, netip.MustParseAddrPort("198.18.0.2:9999")}
	for range 50 {
		d.saw(a)
	}
	if len(evs) != 1 || evs[0].Details["count"] != 1 || evs[0].Details["port"] != 9999 || evs[0].Details["proto"] != "udp" {
		t.Fatalf("first drop: %v", evs)
	}
	d.log.Flush()
	if len(evs) != 2 || evs[1].Details["count"] != 49 {
		t.Fatalf("summary: %v", evs)
	}
	for i := range 2 * dropMaxFresh {
		d.saw(dropKey{unix.IPPROTO_UDP, netip.AddrPortFrom(netip.MustParseAddr("198.18.0.2"), uint16(1000+i))})
	}
	if len(evs) != 2+dropMaxFresh+1 { // and one for the first of the many
		t.Fatalf("%d events reported at once for %d new destinations, want %d", len(evs)-2, 2*dropMaxFresh, dropMaxFresh+1)
	}
	if last := evs[len(evs)-1]; last.Details["addr"] != "(many)" {
		t.Errorf("past the cap: %v", last)
	}
	d.log.Flush()
	if last := evs[len(evs)-1]; last.Details["addr"] != "(many)" || last.Details["count"] != dropMaxFresh-1 {
		t.Errorf("summary of the many: %v", last)
	}
}

// nflogPacket is one NFULNL_MSG_PACKET netlink message whose payload
// attribute holds pkt.
func nflogPacket(pkt []byte) []byte {
	attrLen := 4 + len(pkt)
	body := make([]byte, 4, 4+(attrLen+3)&^3) // nfgenmsg
	body = binary.NativeEndian.AppendUint16(body, uint16(attrLen))
	body = binary.NativeEndian.AppendUint16(body, nfulaPayload)
	body = append(body, pkt...)
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	msg := binary.NativeEndian.AppendUint32(nil, uint32(unix.SizeofNlMsghdr+len(body)))
	msg = binary.NativeEndian.AppendUint16(msg, unix.NFNL_SUBSYS_ULOG<<8|nfulnlMsgPacket)
	msg = binary.NativeEndian.AppendUint16(msg, 0)
	msg = binary.NativeEndian.AppendUint32(msg, 0)
	msg = binary.NativeEndian.AppendUint32(msg, 0)
	return append(msg, body...)
}

// A drop the kernel queued just before close is still reported: once the
// read deadline is set the reader stops without reading, and close must
// drain the socket itself.
func TestDropLogCloseDrainsQueued(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	var got []Event
	var mu sync.Mutex
	d := newDropLog(os.NewFile(uintptr(fds[0]), "nflog"), func(e Event) { mu.Lock(); got = append(got, e); mu.Unlock() }, time.Hour)
	close(d.read1) // no reader ran: as if it stopped at the deadline before this message came
	v4 := make([]byte, 28)
	v4[0], v4[9] = 0x45, unix.IPPROTO_UDP
	copy(v4[16:20], []byte{198, 19, 45, 2})
	v4[22], v4[23] = 0x14, 0xe9 // dport 5353
	if _, err := unix.Write(fds[1], nflogPacket(v4)); err != nil {
		t.Fatal(err)
	}
	d.close()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].Details["addr"] != "198.19.45.2" || got[0].Details["port"] != 5353 {
		t.Fatalf("events after close: %+v, want the queued drop to 198.19.45.2:5353", got)
	}
}
