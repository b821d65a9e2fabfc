package netwall

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/internal/testutil"
	"github.com/miekg/dns"
)

// BenchmarkWall measures, side by side in one run, a direct connection
// from the host to the test internet against the same work from inside a
// pod through the wall.
func BenchmarkWall(b *testing.B) {
	testutil.RequireRoot(b)
	inet := newInternet(b)
	pod := startPod(b)
	w, err := Setup(pod.pid(), testPolicy(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { w.Close() })
	hostDial := func(network, addr string) (net.Conn, error) { return net.Dial(network, addr) }
	tlsConf := &tls.Config{ServerName: "allowed.test", RootCAs: inet.pool}

	b.Run("https-conn/direct", func(b *testing.B) {
		benchHTTPS(b, tlsConf, func() (net.Conn, error) { return hostDial("tcp", "198.18.0.2:443") })
	})
	b.Run("https-conn/wall-transparent", func(b *testing.B) {
		benchHTTPS(b, tlsConf, func() (net.Conn, error) { return pod.dial("tcp", "198.18.0.2:443") })
	})
	b.Run("https-conn/wall-connect", func(b *testing.B) {
		benchHTTPS(b, tlsConf, func() (net.Conn, error) { return connectTunnel(pod, "allowed.test:443") })
	})
	const size = 256 << 20
	b.Run("download/direct", func(b *testing.B) {
		benchDownload(b, size, func() (net.Conn, error) { return hostDial("tcp", "198.18.0.2:80") })
	})
	b.Run("download/wall-transparent", func(b *testing.B) {
		benchDownload(b, size, func() (net.Conn, error) { return pod.dial("tcp", "198.18.0.2:80") })
	})
	b.Run("download/wall-connect", func(b *testing.B) {
		benchDownload(b, size, func() (net.Conn, error) { return connectTunnel(pod, "allowed.test:80") })
	})
	hostUDP := func() (net.Conn, error) { return net.Dial("udp", "198.18.0.2:53") }
	podUDP := func() (net.Conn, error) { return pod.dial("udp", "127.0.0.1:53") }
	same := func(int) string { return "www.allowed.test." }
	fresh := func(i int) string { return fmt.Sprintf("u%d-%d.allowed.test.", time.Now().UnixNano(), i) }
	b.Run("resolver/direct-upstream", func(b *testing.B) { benchResolver(b, hostUDP, fresh) })
	b.Run("resolver/wall-uncached", func(b *testing.B) { benchResolver(b, podUDP, fresh) })
	b.Run("resolver/wall-cached", func(b *testing.B) { benchResolver(b, podUDP, same) })
}

func connectTunnel(pod *testPod, target string) (net.Conn, error) {
	c, err := pod.dial("tcp", "127.0.0.1:3128")
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	// Read the reply byte by byte up to the blank line, so nothing of the
	// tunnel is buffered away from the caller.
	var hdr []byte
	one := make([]byte, 1)
	for !slices.Equal(tail(hdr, 4), []byte("\r\n\r\n")) {
		if _, err := c.Read(one); err != nil {
			c.Close()
			return nil, err
		}
		hdr = append(hdr, one[0])
	}
	if string(hdr[9:12]) != "200" {
		c.Close()
		return nil, fmt.Errorf("CONNECT %s: %s", target, hdr)
	}
	return c, nil
}

func tail(b []byte, n int) []byte { return b[max(0, len(b)-n):] }

// benchHTTPS: one new TLS connection and one small GET per iteration.
func benchHTTPS(b *testing.B, conf *tls.Config, dial func() (net.Conn, error)) {
	for b.Loop() {
		c, err := dial()
		if err != nil {
			b.Fatal(err)
		}
		tc := tls.Client(c, conf)
		io.WriteString(tc, "GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		tc.Close()
	}
}

// benchDownload: one new connection and one GET of size bytes per
// iteration. The client reads 256 KiB at a time, as a download tool does
// (io.Discard would read 8 KiB at a time and measure its own syscalls).
func benchDownload(b *testing.B, size int64, dial func() (net.Conn, error)) {
	b.SetBytes(size)
	buf := make([]byte, 256<<10)
	for b.Loop() {
		c, err := dial()
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(c, "GET /big?n=%d HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n", size)
		var n int64
		for {
			k, err := c.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		c.Close()
		if n < size {
			b.Fatalf("downloaded %d of %d bytes", n, size)
		}
	}
}

// benchResolver reports the latency of queries for name(i), one at a
// time over one UDP socket from dial.
func benchResolver(b *testing.B, dial func() (net.Conn, error), name func(int) string) {
	c, err := dial()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	co := &dns.Conn{Conn: c}
	var lat []time.Duration
	for i := 0; b.Loop(); i++ {
		q := new(dns.Msg).SetQuestion(name(i), dns.TypeA)
		start := time.Now()
		if err := co.WriteMsg(q); err != nil {
			b.Fatal(err)
		}
		if _, err := co.ReadMsg(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// BenchmarkSetup measures Setup for a fresh pod namespace (links, rules,
// drop log, resolver and proxy sockets): what a filtered pod adds to its
// start. Close is timed apart and reported as close-µs.
func BenchmarkSetup(b *testing.B) {
	testutil.RequireRoot(b)
	var closing time.Duration
	n := 0
	for b.Loop() {
		b.StopTimer()
		pod := startPod(b)
		b.StartTimer()
		w, err := Setup(pod.pid(), testPolicy(), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		start := time.Now()
		w.Close()
		closing += time.Since(start)
		n++
		pod.stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(closing.Microseconds())/float64(n), "close-µs")
}
