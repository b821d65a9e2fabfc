package netwall

import (
	"net/netip"
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
