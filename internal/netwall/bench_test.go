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
// pod through the wall. In https-conn and download every iteration runs
// the three paths in turn (direct, transparent, CONNECT), so that a load
// spike from elsewhere on the machine hits all three alike; the figures
// are medians, and added-ms is the median of the per-iteration
// differences from direct.
func BenchmarkWall(b *testing.B) {
	testutil.RequireRoot(b)
	inet := newInternet(b)
	pod := startPod(b)
	w, err := Setup(pod.pid(), testPolicy(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { w.Close() })
	tlsConf := &tls.Config{ServerName: "allowed.test", RootCAs: inet.Cert.Pool}
	paths := func(port string) []benchPath {
		return []benchPath{
			{"direct", func() (net.Conn, error) { return net.Dial("tcp", "198.18.0.2:"+port) }},
			{"transparent", func() (net.Conn, error) { return pod.dial("tcp", "198.18.0.2:"+port) }},
			{"connect", func() (net.Conn, error) { return connectTunnel(pod, "allowed.test:"+port) }},
		}
	}
	b.Run("https-conn", func(b *testing.B) {
		benchPaths(b, paths("443"), 0, func(dial func() (net.Conn, error)) error { return httpsOnce(tlsConf, dial) })
	})
	const size = 256 << 20
	b.Run("download", func(b *testing.B) {
		benchPaths(b, paths("80"), size, func(dial func() (net.Conn, error)) error { return downloadOnce(size, dial) })
	})
	hostUDP := func() (net.Conn, error) { return net.Dial("udp", "198.18.0.2:53") }
	podUDP := func() (net.Conn, error) { return pod.dial("udp", "127.0.0.1:53") }
	same := func(int) string { return "www.allowed.test." }
	fresh := func(i int) string { return fmt.Sprintf("u%d-%d.allowed.test.", time.Now().UnixNano(), i) }
	b.Run("resolver/direct-upstream", func(b *testing.B) { benchResolver(b, hostUDP, fresh) })
	b.Run("resolver/wall-uncached", func(b *testing.B) { benchResolver(b, podUDP, fresh) })
	b.Run("resolver/wall-cached", func(b *testing.B) { benchResolver(b, podUDP, same) })
}

// benchPath is one way from the client to the test internet's web server.
type benchPath struct {
	name string
	dial func() (net.Conn, error)
}

// benchPaths runs once on every path per iteration and reports each path's
// median time (and, with size, throughput) and the wall paths' added time.
func benchPaths(b *testing.B, paths []benchPath, size int64, once func(func() (net.Conn, error)) error) {
	durs := make([][]time.Duration, len(paths))
	for b.Loop() {
		for i, p := range paths {
			start := time.Now()
			if err := once(p.dial); err != nil {
				b.Fatalf("%s: %v", p.name, err)
			}
			durs[i] = append(durs[i], time.Since(start))
		}
	}
	for i, p := range paths {
		med := medianDur(durs[i])
		b.ReportMetric(float64(med.Microseconds())/1000, p.name+"-ms")
		if size > 0 {
			b.ReportMetric(float64(size)/med.Seconds()/1e6, p.name+"-MB/s")
		}
		if i > 0 {
			diffs := make([]time.Duration, len(durs[i]))
			for k := range diffs {
				diffs[k] = durs[i][k] - durs[0][k]
			}
			b.ReportMetric(float64(medianDur(diffs).Microseconds())/1000, p.name+"-added-ms")
		}
	}
}

func medianDur(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
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

// httpsOnce makes one new TLS connection and one small GET.
func httpsOnce(conf *tls.Config, dial func() (net.Conn, error)) error {
	c, err := dial()
	if err != nil {
		return err
	}
	tc := tls.Client(c, conf)
	defer tc.Close()
	if _, err := io.WriteString(tc, "GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}

// downloadOnce makes one new connection and one GET of size bytes. The
// client reads 256 KiB at a time, as a download tool does (io.Discard
// would read 8 KiB at a time and measure its own syscalls).
func downloadOnce(size int64, dial func() (net.Conn, error)) error {
	c, err := dial()
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /big?n=%d HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n", size)
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, err := c.Read(buf)
		n += int64(k)
		if err != nil {
			break
		}
	}
	if n < size {
		return fmt.Errorf("downloaded %d of %d bytes", n, size)
	}
	return nil
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
