package netwall

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The few rtnetlink requests configureLinks makes: lo up, one address and
// one default route per family. They are written here over the netlink
// package nftables already uses, rather than through a general rtnetlink
// library whose package init and size every start of the binary paid for.

// loIndex is the loopback device's index, the same in every network
// namespace (LOOPBACK_IFINDEX, include/net/flow.h).
const loIndex = 1

// rtnl is a route netlink socket opened in the pod's network namespace.
type rtnl struct{ c *netlink.Conn }

func dialRtnl(nsFD int) (*rtnl, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: nsFD})
	if err != nil {
		return nil, err
	}
	return &rtnl{c}, nil
}

func (r *rtnl) Close() error { return r.c.Close() }

// do sends one request and waits for the kernel's acknowledgement.
func (r *rtnl) do(typ uint16, flags netlink.HeaderFlags, body []byte, attrs *netlink.AttributeEncoder) error {
	if attrs != nil {
		b, err := attrs.Encode()
		if err != nil {
			return err
		}
		body = append(body, b...)
	}
	_, err := r.c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request | netlink.Acknowledge | flags},
		Data:   body,
	})
	return err
}

// linkUp sets IFF_UP on the link (RTM_NEWLINK with a struct ifinfomsg).
func (r *rtnl) linkUp(index int) error {
	ifi := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(ifi[4:], uint32(index))
	binary.NativeEndian.PutUint32(ifi[8:], unix.IFF_UP)  // ifi_flags
	binary.NativeEndian.PutUint32(ifi[12:], unix.IFF_UP) // ifi_change
	return r.do(unix.RTM_NEWLINK, 0, ifi, nil)
}

// addrAdd adds a host address (a /32 or /128) to the link.
func (r *rtnl) addrAdd(index int, a netip.Addr, flags uint8) error {
	ifa := make([]byte, unix.SizeofIfAddrmsg)
	ifa[0], ifa[1], ifa[2] = family(a), uint8(a.BitLen()), flags
	binary.NativeEndian.PutUint32(ifa[4:], uint32(index))
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(unix.IFA_LOCAL, a.AsSlice())
	ae.Bytes(unix.IFA_ADDRESS, a.AsSlice())
	return r.do(unix.RTM_NEWADDR, netlink.Create|netlink.Excl, ifa, ae)
}

// defaultRouteAdd adds a default route in the main table out of the link,
// with src as the preferred source address.
func (r *rtnl) defaultRouteAdd(index int, src netip.Addr, scope uint8) error {
	rtm := make([]byte, unix.SizeofRtMsg)
	rtm[0] = family(src)
	rtm[4], rtm[5], rtm[6], rtm[7] = unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, scope, unix.RTN_UNICAST
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(unix.RTA_DST, make([]byte, src.BitLen()/8))
	ae.Bytes(unix.RTA_PREFSRC, src.AsSlice())
	ae.Uint32(unix.RTA_OIF, uint32(index))
	return r.do(unix.RTM_NEWROUTE, netlink.Create|netlink.Excl, rtm, ae)
}

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// configureLinks brings lo up and, in filtered mode, gives the pod default
// routes through lo. The kernel here may lack the dummy driver, so lo
// stands in for it: any packet the NAT rules do not redirect is dropped by
// the filter chain before it is looped back.
func configureLinks(nsFD int, filtered bool) error {
	r, err := dialRtnl(nsFD)
	if err != nil {
		return fmt.Errorf("opening netlink in the pod namespace: %w", err)
	}
	defer r.Close()
	if err := r.linkUp(loIndex); err != nil {
		return fmt.Errorf("bringing lo up in the pod namespace: %w", err)
	}
	if !filtered {
		return nil
	}
	if err := r.addrAdd(loIndex, podAddr4, 0); err != nil {
		return fmt.Errorf("adding %s to the pod's lo: %w", podAddr4, err)
	}
	if err := r.defaultRouteAdd(loIndex, podAddr4, unix.RT_SCOPE_LINK); err != nil {
		return fmt.Errorf("adding the pod's default IPv4 route: %w", err)
	}
	// IPv6 is best effort: without it, IPv6 connects fail with ENETUNREACH,
	// which is just as closed.
	if r.addrAdd(loIndex, podAddr6, unix.IFA_F_NODAD) == nil {
		_ = r.defaultRouteAdd(loIndex, podAddr6, unix.RT_SCOPE_UNIVERSE)
	}
	return nil
}
