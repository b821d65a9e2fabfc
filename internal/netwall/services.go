package netwall

import (
	"fmt"
	"net"
	"strconv"
)

// podSockets are the wall's sockets inside the pod's namespace, all opened
// in one visit of the wall's thread there (each visit is a hand-off to a
// locked OS thread: under load, one costs more than the sockets).
type podSockets struct {
	proxy, trans4, trans6 net.Listener // trans6 is nil without IPv6 loopback
	dnsUDP                []net.PacketConn
	dnsTCP                []net.Listener
	nflog                 int // -1 when the drop log could not be opened
	nflogErr              error
}

// open runs on the wall's thread. IPv6 loopback may be missing; its
// sockets are then skipped.
func (s *podSockets) open() error {
	s.nflog = -1
	var err error
	if s.proxy, err = listenTCP("tcp4", "127.0.0.1", proxyPort); err != nil {
		return err
	}
	if s.trans4, err = listenTCP("tcp4", "127.0.0.1", transparentPort); err != nil {
		return err
	}
	s.trans6, _ = listenTCP("tcp6", "::1", transparentPort)
	for _, host := range []string{"127.0.0.1", "::1"} {
		addr := net.JoinHostPort(host, strconv.Itoa(dnsPort))
		pc, err := net.ListenPacket("udp", addr)
		if err == nil {
			var l net.Listener
			if l, err = net.Listen("tcp", addr); err == nil {
				s.dnsUDP, s.dnsTCP = append(s.dnsUDP, pc), append(s.dnsTCP, l)
				continue
			}
			pc.Close()
		}
		if host == "127.0.0.1" {
			return fmt.Errorf("opening the pod resolver on %s: %w", addr, err)
		}
	}
	s.nflog, s.nflogErr = openDropLog()
	return nil
}

func listenTCP(network, host string, port int) (net.Listener, error) {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	l, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s inside the pod: %w", addr, err)
	}
	return l, nil
}

// close releases what open made, for a Setup that fails half way.
func (s *podSockets) close() {
	for _, l := range append([]net.Listener{s.proxy, s.trans4, s.trans6}, s.dnsTCP...) {
		if l != nil {
			l.Close()
		}
	}
	for _, pc := range s.dnsUDP {
		pc.Close()
	}
}

// startFiltered opens the services inside the pod and starts serving
// them.
func (w *Wall) startFiltered() error {
	var s podSockets
	if err := w.thread.run(s.open); err != nil {
		s.close()
		return err
	}
	if s.nflogErr != nil {
		// The packets are dropped all the same; only their record is lost.
		w.report(Event{Kind: "drop", Verdict: "error", Reason: "dropped packets are not audited: " + s.nflogErr.Error()})
	} else {
		w.startDropLog(s.nflog)
	}
	serve := []struct {
		l     net.Listener
		serve func(net.Listener)
	}{{s.proxy, w.serveExplicit}, {s.trans4, w.serveTransparent}, {s.trans6, w.serveTransparent}}
	w.mu.Lock()
	for _, sv := range serve {
		if sv.l != nil {
			w.listeners = append(w.listeners, sv.l)
			w.goServe(func() { sv.serve(sv.l) })
		}
	}
	w.mu.Unlock()
	w.startDNS(s.dnsUDP, s.dnsTCP)
	return nil
}

// startDNS serves the resolver on its sockets, UDP and TCP. Close ends it
// by closing the sockets.
func (w *Wall) startDNS(udp []net.PacketConn, tcp []net.Listener) {
	w.mu.Lock()
	w.dnsConns = append(w.dnsConns, udp...)
	w.listeners = append(w.listeners, tcp...)
	w.mu.Unlock()
	for _, pc := range udp {
		w.goServe(func() { w.serveDNSPackets(pc) })
	}
	for _, l := range tcp {
		w.goServe(func() { w.acceptLoop(l, w.serveDNSConn) })
	}
}
