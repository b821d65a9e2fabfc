package netwall

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// ParsePublish reads a port publication, "[HOST_IP:]HOST_PORT:POD_PORT".
// Without HOST_IP the host side binds 127.0.0.1: a dev server in the pod is
// reachable from the host's browser, not from the host's network. An IPv6
// host address goes in brackets: "[::1]:8080:80".
func ParsePublish(s string) (host netip.AddrPort, podPort int, err error) {
	bad := errdefs.Invalid("publish %q: use [HOST_IP:]HOST_PORT:POD_PORT, such as 8080:80 or 0.0.0.0:8080:80", s)
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return host, 0, bad
	}
	hostPart, podPart := s[:i], s[i+1:]
	if !strings.Contains(hostPart, ":") {
		hostPart = "127.0.0.1:" + hostPart
	}
	host, err = netip.ParseAddrPort(hostPart)
	p, perr := strconv.ParseUint(podPart, 10, 16)
	if err != nil || perr != nil || p == 0 || host.Port() == 0 || host.Addr().Zone() != "" {
		return netip.AddrPort{}, 0, bad
	}
	return host, int(p), nil
}

// Publish makes the pod's loopback port podPort reachable at hostAddr on the
// host (default 127.0.0.1:podPort). The host socket is in the host's
// namespace; each forwarded connection is made from a socket created
// inside the pod's namespace.
func (w *Wall) Publish(hostAddr string, podPort int) error {
	if podPort <= 0 || podPort > 65535 {
		return errdefs.Invalid("publish port %d: use 1-65535", podPort)
	}
	if hostAddr == "" {
		hostAddr = "127.0.0.1:" + strconv.Itoa(podPort)
	}
	l, err := net.Listen("tcp", hostAddr)
	if err != nil {
		return fmt.Errorf("publishing pod port %d on %s (is the address free?): %w", podPort, hostAddr, err)
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		l.Close()
		return fmt.Errorf("publishing pod port %d: %w", podPort, errdefs.ErrConflict)
	}
	w.listeners = append(w.listeners, l)
	w.mu.Unlock()
	w.goServe(func() {
		w.acceptLoop(l, func(c *net.TCPConn) {
			up, err := w.dialPodPort(podPort)
			if err != nil {
				return
			}
			defer up.Close()
			r := startRelay(c, up)
			_, _ = io.Copy(up, c)
			_ = up.CloseWrite()
			<-r.down
		})
	})
	return nil
}

// dialPodPort connects to a server on the pod's loopback: 127.0.0.1, or
// ::1 for servers that bind "localhost" as IPv6 (Node does).
func (w *Wall) dialPodPort(port int) (*net.TCPConn, error) {
	c, err := w.dialInPod(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err == nil {
		return c, nil
	}
	if c6, err6 := w.dialInPod(net.JoinHostPort("::1", strconv.Itoa(port))); err6 == nil {
		return c6, nil
	}
	return nil, err
}
