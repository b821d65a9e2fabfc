package netwall

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	dialTimeout       = 5 * time.Second
	headerTimeout     = 30 * time.Second
	firstBytesTimeout = 30 * time.Second
	// bufSize holds a whole TLS record (16 KiB + header) so the SNI can be
	// read without consuming a byte of the stream.
	bufSize = 16*1024 + 5 + 1024
)

// decide is the one place a (host, port) is judged, for every proxy path.
// It returns the checked addresses the caller may dial, and only those.
func (w *Wall) decide(p *Policy, host string, port int) ([]netip.Addr, string, bool) {
	if !p.portAllowed(port) {
		return nil, "port " + strconv.Itoa(port) + " not allowed", false
	}
	if a, lit := ParseHostLiteral(host); lit {
		if !p.literalAllowed(a) {
			return nil, "IP literal " + a.String() + " not explicitly allowed", false
		}
		if ok, why := CheckAddr(a, p.AllowPrivate); !ok {
			return nil, "address " + a.String() + " denied: " + why, false
		}
		return []netip.Addr{a.Unmap()}, "IP literal allowed by policy", true
	}
	name := normName(host)
	ok, reason := p.nameVerdict(name)
	if !ok {
		return nil, reason, false
	}
	addrs, err := w.res.lookup(p, name)
	if err != nil {
		return nil, "resolving " + name + ": " + err.Error(), false
	}
	var good []netip.Addr
	var firstBad string
	for _, a := range addrs {
		if ok, why := CheckAddr(a, p.AllowPrivate); ok {
			good = append(good, a)
		} else if firstBad == "" {
			firstBad = name + " resolves to " + a.String() + ", denied: " + why
		}
	}
	if len(good) == 0 {
		return nil, firstBad, false
	}
	return good, reason, true
}

// dialChecked connects to the first reachable checked address: the
// connection is pinned to what decide approved, never re-resolved. It
// puts the address in ev; when none answers, it reports ev as an error
// and answers the client 502.
func (w *Wall) dialChecked(c net.Conn, ev *Event, addrs []netip.Addr, port int) (*net.TCPConn, bool) {
	var last error
	for _, a := range addrs {
		dst := netip.AddrPortFrom(a.Unmap(), uint16(port))
		up, err := w.dialer.Dial("tcp", dst.String())
		if err == nil {
			ev.Details["addr"] = dst.Addr().String()
			return up.(*net.TCPConn), true
		}
		last = err
	}
	if last == nil {
		last = errors.New("no address to dial") // decide approves at least one
	}
	ev.Verdict, ev.Reason = "error", "dialing "+fmt.Sprint(addrs)+": "+last.Error()
	w.report(*ev)
	writeStatus(c, http.StatusBadGateway, ev.Reason)
	return nil, false
}

func (w *Wall) acceptLoop(l net.Listener, handle func(*net.TCPConn)) {
	for {
		c, err := l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			time.Sleep(10 * time.Millisecond) // EMFILE and friends: back off, keep serving
			continue
		}
		tc := c.(*net.TCPConn)
		if !w.track(tc) {
			tc.Close()
			return
		}
		w.goServe(func() {
			defer w.untrack(tc)
			defer tc.Close()
			handle(tc)
		})
	}
}

func (w *Wall) serveExplicit(l net.Listener)    { w.acceptLoop(l, w.handleExplicit) }
func (w *Wall) serveTransparent(l net.Listener) { w.acceptLoop(l, w.handleTransparent) }

// handleExplicit serves a client that honours HTTP(S)_PROXY.
func (w *Wall) handleExplicit(c *net.TCPConn) {
	br := bufio.NewReaderSize(c, bufSize)
	_ = c.SetReadDeadline(time.Now().Add(headerTimeout))
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if req.Method == http.MethodConnect {
		w.handleConnect(c, br, req)
		return
	}
	w.handleForward(c, req)
}

// handleConnect serves one CONNECT tunnel. The upstream connection is made
// while the client prepares its first bytes; none of them is forwarded
// until the SNI (or Host) is seen to name the CONNECT target.
func (w *Wall) handleConnect(c *net.TCPConn, br *bufio.Reader, req *http.Request) {
	host, portStr, err := net.SplitHostPort(req.RequestURI)
	port, perr := strconv.Atoi(portStr)
	ev := Event{Kind: "connect", Details: map[string]any{"path": "connect", "host": host, "port": port}}
	if err != nil || perr != nil {
		w.refuse(c, ev, "malformed CONNECT target "+strconv.Quote(req.RequestURI))
		return
	}
	addrs, reason, ok := w.decide(w.policy(), host, port)
	if !ok {
		w.refuse(c, ev, reason)
		return
	}
	up, ok := w.dialChecked(c, &ev, addrs, port)
	if !ok {
		return
	}
	defer up.Close()
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	if inj := w.inj.Load(); inj != nil { // the vault's secrets: see inject.go
		w.serveTunnel(inj, c, br, up, normName(host), &ev, reason)
		w.report(ev)
		return
	}
	r := startRelay(c, up)
	_ = c.SetReadDeadline(time.Now().Add(firstBytesTimeout))
	fb, perr2 := peekFirst(br)
	_ = c.SetReadDeadline(time.Time{})
	if why, ok := tunnelMatches(fb, perr2, normName(host)); !ok {
		ev.Verdict, ev.Reason = "deny", why
		w.report(ev)
		r.abort()
		return
	}
	r.finish(br, &ev, reason)
	w.report(ev)
}

// tunnelMatches checks that what the client sends through a CONNECT tunnel
// is for the host the tunnel was allowed for.
func tunnelMatches(fb firstBytes, err error, host string) (string, bool) {
	switch {
	case fb.tls && err != nil:
		return "unreadable TLS ClientHello: " + err.Error(), false
	case fb.tls && fb.name == "":
		return "TLS without SNI in a tunnel to " + host, false
	case fb.tls && fb.name != host:
		return "TLS SNI " + strconv.Quote(fb.name) + " does not match CONNECT host " + strconv.Quote(host), false
	case fb.http && fb.name != host:
		return "HTTP Host " + strconv.Quote(fb.name) + " does not match CONNECT host " + strconv.Quote(host), false
	case err != nil && !fb.tls && !fb.http && !errors.Is(err, io.EOF):
		return "reading the tunnel's first bytes: " + err.Error(), false
	}
	return "", true
}

// handleForward serves one absolute-URI HTTP request (plain http only),
// pinned to the checked address, and closes the connection after it.
func (w *Wall) handleForward(c *net.TCPConn, req *http.Request) {
	port := 80
	if ps := req.URL.Port(); ps != "" {
		port, _ = strconv.Atoi(ps)
	}
	host := req.URL.Hostname()
	ev := Event{Kind: "connect", Details: map[string]any{"path": "proxy", "host": host, "port": port}}
	if req.URL.Scheme != "http" || host == "" {
		w.refuse(c, ev, "only absolute http:// URIs and CONNECT are proxied")
		return
	}
	addrs, reason, ok := w.decide(w.policy(), host, port)
	if !ok {
		w.refuse(c, ev, reason)
		return
	}
	if inj := w.inj.Load(); inj != nil { // plain http never carries a secret
		if s, where := inj.scanRequest(req, normName(host), false); s != nil {
			w.reportLeak(&ev, s, normName(host), where)
			w.refuse(c, ev, ev.Reason)
			return
		}
	}
	up, ok := w.dialChecked(c, &ev, addrs, port)
	if !ok {
		return
	}
	defer up.Close()
	up2, down, err := forwardOnce(c, up, req)
	ev.Details["bytes_up"], ev.Details["bytes_down"] = up2, down
	ev.Verdict, ev.Reason = "allow", reason
	if err != nil {
		ev.Verdict, ev.Reason = "error", err.Error()
	}
	w.report(ev)
}

// hopHeaders are per-connection headers a proxy must not pass on.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authorization",
	"Proxy-Authenticate", "Te", "Trailer", "Upgrade"}

func forwardOnce(c, up *net.TCPConn, req *http.Request) (int64, int64, error) {
	for _, h := range hopHeaders {
		req.Header.Del(h)
	}
	req.Host = req.URL.Host // the server sees the name that was checked
	req.Close = true
	cu := &countWriter{w: up}
	if err := req.Write(cu); err != nil {
		return cu.n, 0, fmt.Errorf("sending request upstream: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(up, 32*1024), req)
	if err != nil {
		writeStatus(c, http.StatusBadGateway, "reading upstream response: "+err.Error())
		return cu.n, 0, fmt.Errorf("reading upstream response: %w", err)
	}
	defer resp.Body.Close()
	resp.Close = true
	cd := &countWriter{w: c}
	err = resp.Write(cd)
	return cu.n, cd.n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (cw *countWriter) Write(b []byte) (int, error) {
	n, err := cw.w.Write(b)
	cw.n += int64(n)
	return n, err
}

// handleTransparent serves a connection the pod made without the proxy
// variables; nftables redirected it here. The name comes from the SNI or
// Host, and the original destination must be an address of that name.
func (w *Wall) handleTransparent(c *net.TCPConn) {
	ev := Event{Kind: "connect", Details: map[string]any{"path": "transparent"}}
	orig, err := originalDst(c)
	if err != nil {
		ev.Kind, ev.Verdict, ev.Reason = "leak", "deny", "no original destination: "+err.Error()
		w.report(ev)
		return
	}
	ev.Details["addr"], ev.Details["port"] = orig.Addr().String(), int(orig.Port())
	br := bufio.NewReaderSize(c, bufSize)
	_ = c.SetReadDeadline(time.Now().Add(firstBytesTimeout))
	fb, perr := peekFirst(br)
	_ = c.SetReadDeadline(time.Time{})
	ev.Details["host"] = fb.name
	reason, ok := w.checkTransparent(w.policy(), fb, perr, orig)
	if !ok {
		ev.Kind, ev.Verdict, ev.Reason = "leak", "deny", reason
		w.report(ev)
		return
	}
	up, err := w.dialer.Dial("tcp", netip.AddrPortFrom(orig.Addr().Unmap(), orig.Port()).String())
	if err != nil {
		ev.Verdict, ev.Reason = "error", "dialing "+orig.String()+": "+err.Error()
		w.report(ev)
		return
	}
	defer up.Close()
	if inj := w.inj.Load(); inj != nil {
		w.serveTunnel(inj, c, br, up.(*net.TCPConn), fb.name, &ev, reason)
		w.report(ev)
		return
	}
	startRelay(c, up.(*net.TCPConn)).finish(br, &ev, reason)
	w.report(ev)
}

func (w *Wall) checkTransparent(p *Policy, fb firstBytes, perr error, orig netip.AddrPort) (string, bool) {
	dst := orig.Addr().Unmap()
	switch {
	case fb.name == "" && perr != nil:
		return "direct connection to " + orig.String() + " without a readable TLS SNI or HTTP Host: " + perr.Error(), false
	case fb.name == "":
		return "direct connection to " + orig.String() + " names no host (no TLS SNI or HTTP Host)", false
	}
	if ok, why := CheckAddr(dst, p.AllowPrivate); !ok {
		return "address " + dst.String() + " denied: " + why, false
	}
	// fb.name as read: peekFirst already dropped an HTTP Host's port, and
	// a TLS SNI has none. Stripping "host:port" here would check
	// allowed.test for an SNI "allowed.test:443", which is what the
	// server gets, and "allowed.test" for a Host "[allowed.test:1]:80".
	addrs, reason, ok := w.decide(p, fb.name, int(orig.Port()))
	if !ok {
		return reason, false
	}
	if !slices.Contains(addrs, dst) && !w.res.handedOut(normName(fb.name), dst) {
		return fmt.Sprintf("destination %s is not an address the wall resolved for %s", dst, fb.name), false
	}
	return reason, true
}

// relay copies a checked connection both ways. The server-to-client side
// starts at once (server-first protocols work); the client-to-server side
// starts only in finish, after the caller's check. TCPConn to TCPConn
// copies use splice(2).
type relay struct {
	c, up *net.TCPConn
	down  chan int64
}

func startRelay(c, up *net.TCPConn) *relay {
	r := &relay{c: c, up: up, down: make(chan int64, 1)}
	go func() {
		n, _ := io.Copy(c, up)
		_ = c.CloseWrite()
		r.down <- n
	}()
	return r
}

// finish forwards what the check peeked, then the rest of the stream, and
// records the byte counts and verdict in ev.
func (r *relay) finish(br *bufio.Reader, ev *Event, reason string) {
	buffered, _ := br.Peek(br.Buffered())
	n0, err := r.up.Write(buffered)
	var n int64
	if err == nil {
		n, _ = io.Copy(r.up, r.c)
	}
	_ = r.up.CloseWrite()
	down := <-r.down
	ev.Details["bytes_up"], ev.Details["bytes_down"] = int64(n0)+n, down
	ev.Verdict, ev.Reason = "allow", reason
}

// abort ends both sides without forwarding a client byte.
func (r *relay) abort() {
	r.up.Close()
	r.c.Close()
	<-r.down
}

func (w *Wall) refuse(c net.Conn, ev Event, reason string) {
	ev.Verdict, ev.Reason = "deny", reason
	w.report(ev)
	writeStatus(c, http.StatusForbidden, reason)
}

func writeStatus(c io.Writer, code int, msg string) {
	body := "airlock: " + msg + "\n"
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		code, http.StatusText(code), len(body), body)
}

// hostOnly strips a port from a Host header value.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// originalDst returns where the pod meant to connect before nftables
// redirected the connection (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST).
func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	v4 := c.LocalAddr().(*net.TCPAddr).IP.To4() != nil
	var out netip.AddrPort
	var serr error
	err = rc.Control(func(fd uintptr) { out, serr = getOrigDst(fd, v4) })
	if err == nil {
		err = serr
	}
	return out, err
}

func getOrigDst(fd uintptr, v4 bool) (netip.AddrPort, error) {
	const soOriginalDst = 80 // SO_ORIGINAL_DST and IP6T_SO_ORIGINAL_DST
	if v4 {
		var sa unix.RawSockaddrInet4
		if err := getsockopt(fd, unix.SOL_IP, soOriginalDst, unsafe.Pointer(&sa), unsafe.Sizeof(sa)); err != nil {
			return netip.AddrPort{}, err
		}
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), ntohs(sa.Port)), nil
	}
	var sa unix.RawSockaddrInet6
	if err := getsockopt(fd, unix.SOL_IPV6, soOriginalDst, unsafe.Pointer(&sa), unsafe.Sizeof(sa)); err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), ntohs(sa.Port)), nil
}

func getsockopt(fd uintptr, level, opt int, p unsafe.Pointer, size uintptr) error {
	l := uint32(size)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return os.NewSyscallError("getsockopt SO_ORIGINAL_DST", e)
	}
	return nil
}

func ntohs(p uint16) uint16 {
	return binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&p))[:])
}
