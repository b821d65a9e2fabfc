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
	b.Run("resolver-cached", func(b *testing.B) { benchResolver(b, pod) })
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

func benchDownload(b *testing.B, size int64, dial func() (net.Conn, error)) {
	b.SetBytes(size)
	for b.Loop() {
		c, err := dial()
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(c, "GET /big?n=%d HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n", size)
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		if n < size {
			b.Fatalf("downloaded %d of %d bytes", n, size)
		}
	}
}

// benchResolver reports the latency of cached queries from inside the pod.
func benchResolver(b *testing.B, pod *testPod) {
	c, err := pod.dial("udp", "127.0.0.1:53")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	co := &dns.Conn{Conn: c}
	q := new(dns.Msg).SetQuestion("www.allowed.test.", dns.TypeA)
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		if err := co.WriteMsg(q); err != nil {
			b.Fatal(err)
		}
		if m, err := co.ReadMsg(); err != nil || len(m.Answer) != 1 {
			b.Fatalf("%v %v", m, err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkSetup measures Setup + Close for a fresh pod namespace.
func BenchmarkSetup(b *testing.B) {
	testutil.RequireRoot(b)
	for b.Loop() {
		b.StopTimer()
		pod := startPod(b)
		b.StartTimer()
		w, err := Setup(pod.pid(), testPolicy(), nil)
		if err != nil {
			b.Fatal(err)
		}
		w.Close()
		b.StopTimer()
		pod.stop()
		b.StartTimer()
	}
}
