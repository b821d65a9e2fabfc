package sandbox_test

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestView attacks the filesystem view from inside a pod: system dirs,
// copy-on-write roots, hidden secrets, private /tmp, /proc and /sys.
func TestView(t *testing.T) {
	f := newFixture(t, "ws")
	hostTmp := filepath.Join(f.base, "host-only-tmp-file")
	res := probes(t, f.probeSpec(t,
		"write:/usr/airlock-pwned",
		"write:/etc/passwd",
		"mkdir:/etc/airlock-pwned",
		"write:/airlock-pwned",
		"write:"+f.ws+"/file.txt",
		"write:"+f.ws+"/new.txt",
		"read:"+f.ws+"/file.txt",
		"write:"+f.home+"/.bashrc",
		"read:"+f.home+"/.ssh/id_rsa",
		"ls:"+f.home+"/.ssh",
		"write:"+f.home+"/.ssh/id_rsa",
		"mkdir:"+f.home+"/.ssh/x",
		"read:"+hostTmp,
		"write:/tmp/pod-file",
		"ls:/proc",
		"hostname:",
	))
	expect(t, res, "write:/usr/airlock-pwned", "err EROFS")
	expect(t, res, "write:/etc/passwd", "err EROFS")
	expect(t, res, "mkdir:/etc/airlock-pwned", "err EROFS")
	expect(t, res, "write:/airlock-pwned", "err EROFS")
	expect(t, res, "write:"+f.ws+"/file.txt", "ok")
	expect(t, res, "write:"+f.ws+"/new.txt", "ok")
	expect(t, res, "write:"+f.home+"/.bashrc", "ok")
	expect(t, res, "read:"+f.home+"/.ssh/id_rsa", "err ENOENT")
	expect(t, res, "ls:"+f.home+"/.ssh", "ok ")
	expect(t, res, "write:"+f.home+"/.ssh/id_rsa", "err EROFS")
	expect(t, res, "mkdir:"+f.home+"/.ssh/x", "err EROFS")
	expect(t, res, "read:"+hostTmp, "err ENOENT")
	expect(t, res, "write:/tmp/pod-file", "ok")
	// Only the init (1) and the probe itself; thread IDs push the probe's
	// PID past 2.
	var pids []string
	for _, n := range strings.Split(strings.TrimPrefix(res["ls:/proc"], "ok "), ",") {
		if _, err := strconv.Atoi(n); err == nil {
			pids = append(pids, n)
		}
	}
	if len(pids) != 2 || pids[0] != "1" {
		t.Errorf("/proc shows PIDs %v, want only the init and the probe", pids)
	}
	expect(t, res, "hostname:", "ok pod-test")

	// Writes landed in the uppers, not on the host.
	assertFile(t, filepath.Join(f.ws, "file.txt"), "host content")
	assertFile(t, filepath.Join(f.state, "ws/upper/file.txt"), "pwned")
	assertFile(t, filepath.Join(f.state, "ws/upper/new.txt"), "pwned")
	assertMissing(t, filepath.Join(f.ws, "new.txt"))
	assertFile(t, filepath.Join(f.home, ".bashrc"), "host rc")
	assertFile(t, filepath.Join(f.state, "home/upper/.bashrc"), "pwned")
	assertMissing(t, "/tmp/pod-file")
	assertMissing(t, "/usr/airlock-pwned")
}

// TestKernelInterfaces checks that /proc and /sys give nothing away and
// take no writes.
func TestKernelInterfaces(t *testing.T) {
	f := newFixture(t, "ws")
	res := probes(t, f.probeSpec(t,
		"read:/proc/kcore",
		"read:/proc/keys",
		"read:/proc/timer_list",
		"write:/proc/sysrq-trigger",
		"write:/proc/sys/kernel/hostname",
		"write:/proc/sys/vm/drop_caches",
		"write:/sys/kernel/mm/transparent_hugepage/enabled",
		"ls:/sys/firmware",
		"mkdir:/sys/airlock",
		"readlink:/proc/1/exe",
		"read:/proc/1/environ",
		"read:/proc/1/mem",
		"write:/dev/airlock",
		"write:/dev/null",
	))
	for _, op := range []string{"read:/proc/kcore", "read:/proc/keys", "read:/proc/timer_list"} {
		// ENOENT: this kernel has no such entry at all.
		if got := res[op]; got != "err EACCES" && got != "err EPERM" && got != "ok empty" && got != "err ENOENT" {
			t.Errorf("%s => %q, want it unreadable", op, got)
		}
	}
	expect(t, res, "write:/proc/sysrq-trigger", "err")
	expect(t, res, "write:/proc/sys/kernel/hostname", "err EROFS")
	expect(t, res, "write:/proc/sys/vm/drop_caches", "err EROFS")
	expect(t, res, "write:/sys/kernel/mm/transparent_hugepage/enabled", "err EROFS")
	expect(t, res, "ls:/sys/firmware", "ok ")
	if res["ls:/sys/firmware"] != "ok " {
		t.Errorf("/sys/firmware shows %q, want empty", res["ls:/sys/firmware"])
	}
	expect(t, res, "mkdir:/sys/airlock", "err EROFS")
	expect(t, res, "readlink:/proc/1/exe", "err EACCES")
	expect(t, res, "read:/proc/1/environ", "err EACCES")
	expect(t, res, "read:/proc/1/mem", "err EACCES")
	expect(t, res, "write:/dev/airlock", "err EROFS")
	expect(t, res, "write:/dev/null", "ok")
}

// TestPrivileges checks invariant 8 from the agent's side.
func TestPrivileges(t *testing.T) {
	f := newFixture(t, "ws")
	res := probes(t, f.probeSpec(t,
		"status:CapInh,CapPrm,CapEff,CapBnd,CapAmb,NoNewPrivs",
		"rlimit:",
	))
	// The probe is a Go program with fds of its own; a shell has none.
	code, out, err := run(t, f.spec(t, "sh", "-c", "ls /proc/$$/fd"))
	if code != 0 || err != nil || out != "0\n1\n2\n" {
		t.Errorf("agent's open fds: %q (code %d, err %v), want only 0 1 2", out, code, err)
	}
	zero := "0000000000000000"
	expect(t, res, "status:CapInh,CapPrm,CapEff,CapBnd,CapAmb,NoNewPrivs",
		"ok CapInh="+zero+" CapPrm="+zero+" CapEff="+zero+" CapBnd="+zero+" CapAmb="+zero+" NoNewPrivs=1")
	expect(t, res, "rlimit:", "ok 0 0")
}

// TestNoHostSockets: a unix socket listening on the host is out of reach,
// by path (private /run) and, with a network namespace, by abstract name.
func TestNoHostSockets(t *testing.T) {
	f := newFixture(t, "ws")
	path := "/run/airlock-sandbox-test-" + strconv.Itoa(os.Getpid()) + ".sock"
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // removes the socket file
	abstract := "@airlock-sandbox-test-" + strconv.Itoa(os.Getpid())
	aln, err := net.Listen("unix", abstract)
	if err != nil {
		t.Fatal(err)
	}
	defer aln.Close()
	spec := f.probeSpec(t, "connect:"+path, "connect:"+abstract)
	spec.NewNet = true
	res := probes(t, spec)
	expect(t, res, "connect:"+path, "err ENOENT")
	expect(t, res, "connect:"+abstract, "err ECONNREFUSED")
}

// TestGrantedSocket: a socket listed in Sockets is reachable.
func TestGrantedSocket(t *testing.T) {
	f := newFixture(t, "ws")
	path := "/run/airlock-sandbox-grant-" + strconv.Itoa(os.Getpid()) + ".sock"
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	f.view.Sockets = []string{path}
	res := probes(t, f.probeSpec(t, "connect:"+path))
	expect(t, res, "connect:"+path, "ok")
}

// TestWorkspacePathWithCommaAndColon: overlay options are passed verbatim.
func TestWorkspacePathWithCommaAndColon(t *testing.T) {
	f := newFixture(t, "ws,lowerdir=/etc:x")
	res := probes(t, f.probeSpec(t, "read:"+f.ws+"/file.txt", "write:"+f.ws+"/new.txt"))
	expect(t, res, "read:"+f.ws+"/file.txt", "ok host content")
	expect(t, res, "write:"+f.ws+"/new.txt", "ok")
	assertFile(t, filepath.Join(f.state, "ws/upper/new.txt"), "pwned")
	assertMissing(t, filepath.Join(f.ws, "new.txt"))
}

// TestSymlinkCannotRedirectMounts: a symlink planted in the workspace
// where a hidden path should be is resolved inside the view, so the hide
// still lands in the view and nothing outside it is touched.
func TestSymlinkCannotRedirectMounts(t *testing.T) {
	f := newFixture(t, "ws")
	mustWrite(t, filepath.Join(f.ws, "secrets", "token"), "TOKEN")
	if err := os.Symlink("secrets", filepath.Join(f.ws, "link")); err != nil {
		t.Fatal(err)
	}
	f.view.Hide = append(f.view.Hide, filepath.Join(f.ws, "link"), filepath.Join(f.ws, ".env"))
	mustWrite(t, filepath.Join(f.ws, ".env"), "API_KEY=1")
	res := probes(t, f.probeSpec(t, "read:"+f.ws+"/secrets/token", "read:"+f.ws+"/link/token", "read:"+f.ws+"/.env", "write:"+f.ws+"/.env"))
	expect(t, res, "read:"+f.ws+"/secrets/token", "err ENOENT")
	expect(t, res, "read:"+f.ws+"/link/token", "err ENOENT")
	expect(t, res, "read:"+f.ws+"/.env", "err EACCES")
	expect(t, res, "write:"+f.ws+"/.env", "err")
	assertFile(t, filepath.Join(f.ws, ".env"), "API_KEY=1")
}

func assertFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("reading %s: %v", path, err)
		return
	}
	if string(b) != want {
		t.Errorf("%s = %q, want %q", path, b, want)
	}
}

func assertMissing(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); err == nil {
		t.Errorf("%s exists on the host", path)
		os.Remove(path)
	}
}
