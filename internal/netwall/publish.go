package netwall

import (
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

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
