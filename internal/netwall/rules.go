package netwall

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Addresses the pod's loopback carries so that connect() to any address
// finds a route (and so reaches the OUTPUT hook) instead of failing with
// ENETUNREACH. Both come from documentation ranges: they never collide
// with anything real and CheckAddr denies them.
var (
	podAddr4 = netip.AddrFrom4([4]byte{192, 0, 2, 1})
	podAddr6 = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1})
)

// Ports of the services the wall opens inside the pod's namespace.
const (
	dnsPort         = 53
	proxyPort       = 3128
	transparentPort = 3129
)

// installRules writes the pod's nftables ruleset (one inet table, so IPv4
// and IPv6 share it):
//
//	nat output:    daddr local -> accept; udp/tcp dport 53 -> redirect :53;
//	               tcp -> redirect :3129
//	filter output: daddr local -> accept; everything else -> log to the
//	               drop log (rate-limited), drop (policy)
//
// "local" is loopback and the pod's own addresses. After the redirect the
// packet's destination is loopback, so the filter chain passes exactly
// what was redirected (and the replies, addressed to the pod's own
// address) and drops the rest (other UDP, ICMP, raw, SCTP, ...). The rules live in the pod's namespace; the agent
// has no CAP_NET_ADMIN there to change them.
func installRules(nsFD int) error {
	c, err := nftables.New(nftables.WithNetNSFd(nsFD))
	if err != nil {
		return fmt.Errorf("opening nftables in the pod namespace: %w", err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "airlock"})
	drop := nftables.ChainPolicyDrop
	nat := c.AddChain(&nftables.Chain{Name: "nat_out", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
	filter := c.AddChain(&nftables.Chain{Name: "filter_out", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	for _, chain := range []*nftables.Chain{nat, filter} {
		for _, p := range localDsts() {
			c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: daddrIn(p, accept())})
		}
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: nat, Exprs: l4port(unix.IPPROTO_UDP, dnsPort, redirect(dnsPort))})
	c.AddRule(&nftables.Rule{Table: t, Chain: nat, Exprs: l4port(unix.IPPROTO_TCP, dnsPort, redirect(dnsPort))})
	c.AddRule(&nftables.Rule{Table: t, Chain: nat, Exprs: l4(unix.IPPROTO_TCP, redirect(transparentPort))})
	c.AddRule(&nftables.Rule{Table: t, Chain: filter, Exprs: logDrops()})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("installing the pod's nftables rules (is nf_tables with nat/redir in the kernel?): %w", err)
	}
	return nil
}

// logDrops copies the first bytes of a packet about to be dropped to the
// drop log (droplog.go), at most dropRate a second; the chain's policy then
// drops it.
func logDrops() []expr.Any {
	return []expr.Any{
		&expr.Limit{Type: expr.LimitTypePkts, Rate: dropRate, Unit: expr.LimitTimeSecond, Burst: dropRate},
		&expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_SNAPLEN | 1<<unix.NFTA_LOG_QTHRESHOLD,
			Group: dropGroup, Snaplen: dropSnaplen, QThreshold: 1},
	}
}

func accept() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }

// localDsts are the destinations that never leave the pod: loopback and
// the pod's own addresses (replies to redirected connections go there).
func localDsts() []netip.Prefix {
	return []netip.Prefix{
		netip.PrefixFrom(netip.AddrFrom4([4]byte{127, 0, 0, 0}), 8),
		netip.PrefixFrom(podAddr4, 32),
		netip.PrefixFrom(netip.IPv6Loopback(), 128),
		netip.PrefixFrom(podAddr6, 128),
	}
}

// daddrIn matches packets whose destination is in p (byte-aligned p only).
func daddrIn(p netip.Prefix, then []expr.Any) []expr.Any {
	proto, off := byte(unix.NFPROTO_IPV4), uint32(16)
	if p.Addr().Is6() {
		proto, off = unix.NFPROTO_IPV6, 24
	}
	n := uint32(p.Bits() / 8)
	return append([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()[:n]},
	}, then...)
}

func l4(proto byte, then []expr.Any) []expr.Any {
	return append([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}, then...)
}

func l4port(proto byte, port uint16, then []expr.Any) []expr.Any {
	return l4(proto, append([]expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(port)},
	}, then...))
}

// redirect sends the packet to port on the loopback address of its family.
func redirect(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: be16(port)},
		&expr.Redir{RegisterProtoMin: 1},
	}
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
