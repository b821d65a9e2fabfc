package seccomp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/testutil"
)

// The kernel tests run their attacks in a re-executed copy of the test
// binary, because a seccomp filter can never be removed from a process.
const (
	childEnv   = "AIRLOCK_SECCOMP_CHILD"   // mode: probe, exec, threads, bench
	profileEnv = "AIRLOCK_SECCOMP_PROFILE" // profile to install, or "none"
	argvEnv    = "AIRLOCK_SECCOMP_ARGV"    // JSON argv for mode exec
	loopsEnv   = "AIRLOCK_SECCOMP_LOOPS"   // iterations for mode bench
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(childMain(mode))
	}
	os.Exit(m.Run())
}

func childMain(mode string) int {
	if err := installFromEnv(); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	switch mode {
	case "probe":
		return probeMain()
	case "exec":
		var argv []string
		if err := json.Unmarshal([]byte(os.Getenv(argvEnv)), &argv); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 2
		}
		err := syscall.Exec(argv[0], argv, childCleanEnv())
		fmt.Fprintln(os.Stderr, "child: exec:", err)
		return 2
	case "threads":
		return threadsMain()
	case "bench":
		return benchMain()
	case "install":
		return installMain()
	}
	return 2
}

func installFromEnv() error {
	name := os.Getenv(profileEnv)
	switch name {
	case "none":
		return nil
	case "allow-all":
		// The cheapest possible filter: the kernel's own seccomp entry cost.
		return Install([]unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW}})
	}
	p, err := Profile(name)
	if err != nil {
		return err
	}
	prog, err := Compile(p)
	if err != nil {
		return err
	}
	return Install(prog)
}

func childCleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AIRLOCK_SECCOMP_") {
			env = append(env, kv)
		}
	}
	return env
}

// runChild runs the test binary in a child mode and returns its output.
func runChild(t testing.TB, mode, profile string, extraEnv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, profileEnv+"="+profile)
	cmd.Env = append(cmd.Env, extraEnv...)
	// A new session: no controlling terminal for vhangup or TIOCSTI to reach.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%w; stderr: %s", err, stderr.String())
	}
	return string(out), nil
}

func execUnder(t *testing.T, profile string, argv ...string) (string, error) {
	t.Helper()
	js, _ := json.Marshal(argv)
	return runChild(t, "exec", profile, argvEnv+"="+string(js))
}

// probe is one attack (or one ordinary call that must keep working).
type probe struct {
	name string
	want string // "EPERM", "ENOSYS" or "ok"
	call func() (uintptr, unix.Errno)
}

type probeResult struct {
	Name  string `json:"name"`
	Errno int    `json:"errno"`
}

var keep [][]byte // keeps probe strings alive while their addresses are in use

func cstr(s string) uintptr {
	b := append([]byte(s), 0)
	keep = append(keep, b)
	return uintptr(unsafe.Pointer(&b[0]))
}

func raw(nr uintptr, a ...uintptr) func() (uintptr, unix.Errno) {
	var v [6]uintptr
	copy(v[:], a)
	return func() (uintptr, unix.Errno) {
		r, _, e := unix.RawSyscall6(nr, v[0], v[1], v[2], v[3], v[4], v[5])
		return r, e
	}
}

// closing runs a call that returns an fd on success and closes it.
func closing(f func() (uintptr, unix.Errno)) func() (uintptr, unix.Errno) {
	return func() (uintptr, unix.Errno) {
		r, e := f()
		if e == 0 {
			unix.Close(int(r))
		}
		return r, e
	}
}

// rawFork clones with the given flags; the child exits at once.
func rawFork(flags uintptr) func() (uintptr, unix.Errno) {
	return func() (uintptr, unix.Errno) {
		r, _, e := unix.RawSyscall6(unix.SYS_CLONE, flags|uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
		if e != 0 {
			return r, e
		}
		if r == 0 {
			unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
		}
		var ws unix.WaitStatus
		unix.Wait4(int(r), &ws, 0, nil)
		return 0, 0
	}
}

const (
	noSuchPath = "/nonexistent-airlock/x"
	hugePid    = 0x3fffffff // above pid_max: harmless if a probe is ever let through
	minus1     = ^uintptr(0)
	highBits   = uintptr(0xdeadbeef) << 32
)

// deniedProbes try every syscall the task requires to be refused, with
// arguments that would fail harmlessly (ENOENT, EBADF, EINVAL, ...) if the
// filter ever let them through, so a control run proves the EPERM comes
// from the filter.
func deniedProbes() []probe {
	np := cstr(noSuchPath)
	empty := cstr("")
	buf := make([]byte, 8)
	iov := unix.Iovec{Base: &buf[0], Len: 8}
	iovp := uintptr(unsafe.Pointer(&iov))
	pid := uintptr(os.Getpid())
	d := func(name string, f func() (uintptr, unix.Errno)) probe { return probe{name, "EPERM", f} }
	return []probe{
		d("mount", raw(unix.SYS_MOUNT, 0, np, 0, 0, 0)),
		d("umount2", raw(unix.SYS_UMOUNT2, np, 0)),
		d("pivot_root", raw(unix.SYS_PIVOT_ROOT, np, np)),
		d("unshare", raw(unix.SYS_UNSHARE, unix.CLONE_NEWUTS)),
		d("setns", raw(unix.SYS_SETNS, minus1, 0)),
		d("ptrace", raw(unix.SYS_PTRACE, unix.PTRACE_ATTACH, hugePid)),
		d("process_vm_readv", raw(unix.SYS_PROCESS_VM_READV, pid, iovp, 1, iovp, 1, 0)),
		d("process_vm_writev", raw(unix.SYS_PROCESS_VM_WRITEV, pid, iovp, 1, iovp, 1, 0)),
		d("keyctl", raw(unix.SYS_KEYCTL, unix.KEYCTL_GET_KEYRING_ID, uintptr(^uint(2)), 0)),
		d("add_key", raw(unix.SYS_ADD_KEY, cstr("airlock-bogus"), cstr("d"), 0, 0, minus1)),
		d("request_key", raw(unix.SYS_REQUEST_KEY, cstr("airlock-bogus"), cstr("d"), 0, 0)),
		d("bpf", raw(unix.SYS_BPF, 0, 0, 0)),
		d("perf_event_open", raw(unix.SYS_PERF_EVENT_OPEN, 0, 0, minus1, minus1, 0)),
		d("userfaultfd", closing(raw(unix.SYS_USERFAULTFD, unix.O_CLOEXEC))),
		d("io_uring_setup", raw(unix.SYS_IO_URING_SETUP, 0, 0)),
		d("io_uring_enter", raw(unix.SYS_IO_URING_ENTER, minus1, 0, 0, 0, 0, 0)),
		d("io_uring_register", raw(unix.SYS_IO_URING_REGISTER, minus1, 0, 0, 0)),
		d("kexec_load", raw(unix.SYS_KEXEC_LOAD, 0, 0, 0, 0xdead0000)),
		d("kexec_file_load", raw(unix.SYS_KEXEC_FILE_LOAD, minus1, minus1, 0, 0, 0xdead0000)),
		d("init_module", raw(unix.SYS_INIT_MODULE, 0, 0, empty)),
		d("finit_module", raw(unix.SYS_FINIT_MODULE, minus1, empty, 0)),
		d("delete_module", raw(unix.SYS_DELETE_MODULE, cstr("airlock_no_such_module"), unix.O_NONBLOCK)),
		d("open_by_handle_at", raw(unix.SYS_OPEN_BY_HANDLE_AT, minus1, 0, 0)),
		d("name_to_handle_at", raw(unix.SYS_NAME_TO_HANDLE_AT, 0xffffff9c, np, 0, 0, 0)),
		d("swapon", raw(unix.SYS_SWAPON, np, 0)),
		d("swapoff", raw(unix.SYS_SWAPOFF, np)),
		d("reboot", raw(unix.SYS_REBOOT, 0, 0, 0, 0)),
		d("acct", raw(unix.SYS_ACCT, np)),
		d("quotactl", raw(unix.SYS_QUOTACTL, 0, np, 0, 0)),
		d("lookup_dcookie", raw(unix.SYS_LOOKUP_DCOOKIE, 0, 0, 0)),
		d("syslog", raw(unix.SYS_SYSLOG, 10, 0, 0)),
		d("uselib", raw(unix.SYS_USELIB, np)),
		d("personality(ADDR_NO_RANDOMIZE)", raw(unix.SYS_PERSONALITY, 0x0040000)),
		d("personality(READ_IMPLIES_EXEC, high bits)", raw(unix.SYS_PERSONALITY, highBits|0x0400000)),
		d("fanotify_init", closing(raw(unix.SYS_FANOTIFY_INIT, 0, 0))),
		d("clock_settime", raw(unix.SYS_CLOCK_SETTIME, unix.CLOCK_REALTIME, 0)),
		d("settimeofday", raw(unix.SYS_SETTIMEOFDAY, 0, 0)),
		d("adjtimex", raw(unix.SYS_ADJTIMEX, 0)),
		d("clock_adjtime", raw(unix.SYS_CLOCK_ADJTIME, 0, 0)),
		d("iopl", raw(unix.SYS_IOPL, 4)),
		d("ioperm", raw(unix.SYS_IOPERM, 0x10000, 1, 1)),
		d("vhangup", raw(unix.SYS_VHANGUP)),
		d("nfsservctl", raw(unix.SYS_NFSSERVCTL)),
		d("mount_setattr", raw(unix.SYS_MOUNT_SETATTR, minus1, empty, 0, 0, 0)),
		d("open_tree", closing(raw(unix.SYS_OPEN_TREE, minus1, np, 0))),
		d("move_mount", raw(unix.SYS_MOVE_MOUNT, minus1, empty, minus1, empty, 0)),
		d("fsopen", closing(raw(unix.SYS_FSOPEN, cstr("airlock-bogus-fs"), 0))),
		d("fsconfig", raw(unix.SYS_FSCONFIG, minus1, 0, 0, 0, 0)),
		d("fsmount", raw(unix.SYS_FSMOUNT, minus1, 0, 0)),
		d("fspick", closing(raw(unix.SYS_FSPICK, minus1, empty, 0))),
		d("clone(CLONE_NEWUSER)", rawFork(unix.CLONE_NEWUSER)),
		d("clone(CLONE_NEWNET, high bits)", rawFork(highBits|unix.CLONE_NEWNET)),
		d("x32 getpid", raw(unix.SYS_GETPID|x32SyscallBit)),
		d("x32 mount", raw(unix.SYS_MOUNT|x32SyscallBit, 0, np, 0, 0, 0)),
		d("x32 ptrace", raw(unix.SYS_PTRACE|x32SyscallBit, unix.PTRACE_ATTACH, hugePid)),
		d("x32 ioctl TIOCSTI", raw(16|x32SyscallBit, minus1, tiocsti, 0)),
		d("socket(AF_PACKET)", closing(raw(unix.SYS_SOCKET, unix.AF_PACKET, unix.SOCK_RAW, 0))),
		d("socket(AF_PACKET, high bits)", closing(raw(unix.SYS_SOCKET, highBits|unix.AF_PACKET, unix.SOCK_DGRAM, 0))),
		d("socket(AF_ALG)", closing(raw(unix.SYS_SOCKET, unix.AF_ALG, unix.SOCK_SEQPACKET, 0))),
		d("socket(AF_VSOCK)", closing(raw(unix.SYS_SOCKET, unix.AF_VSOCK, unix.SOCK_STREAM, 0))),
		d("socket(AF_KEY)", closing(raw(unix.SYS_SOCKET, unix.AF_KEY, unix.SOCK_RAW, 2))),
		d("socket(AF_BLUETOOTH)", closing(raw(unix.SYS_SOCKET, unix.AF_BLUETOOTH, unix.SOCK_RAW, 0))),
		d("socket(AF_NETLINK, NETLINK_AUDIT)", closing(raw(unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_AUDIT))),
		d("socket(AF_NETLINK, NETLINK_NETFILTER)", closing(raw(unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER))),
		d("socket(AF_INET, SOCK_RAW|SOCK_CLOEXEC)", closing(raw(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP))),
		d("socket(AF_INET6, SOCK_RAW|SOCK_NONBLOCK)", closing(raw(unix.SYS_SOCKET, unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_NONBLOCK, unix.IPPROTO_ICMPV6))),
		d("socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)", closing(raw(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP))),
		d("socket(AF_INET6, SOCK_DGRAM|SOCK_CLOEXEC, IPPROTO_ICMPV6)", closing(raw(unix.SYS_SOCKET, unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6))),
		d("socket(AF_INET, SOCK_PACKET)", closing(raw(unix.SYS_SOCKET, unix.AF_INET, sockPacket, 0x0300))),
		d("socketpair(AF_INET)", raw(unix.SYS_SOCKETPAIR, unix.AF_INET, unix.SOCK_STREAM, 0, uintptr(unsafe.Pointer(&[2]int32{})))),
		// PR_SET_MM_MAP_SIZE (17) just reports a size, so the control succeeds.
		d("prctl(PR_SET_MM)", raw(unix.SYS_PRCTL, prSetMM, 17, uintptr(unsafe.Pointer(new(uint32))), 0, 0)),
		d("ioctl(stdin, TIOCSTI)", raw(unix.SYS_IOCTL, 0, tiocsti, cstr("x"))),
		{"clone3", "ENOSYS", raw(unix.SYS_CLONE3, 0, 0)},
	}
}

// allowedProbes must keep working under the default profile.
func allowedProbes() []probe {
	ok := func(name string, f func() (uintptr, unix.Errno)) probe { return probe{name, "ok", f} }
	pair := [2]int32{}
	return []probe{
		ok("getpid", raw(unix.SYS_GETPID)),
		ok("fork", rawFork(0)),
		ok("socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC)", closing(raw(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0))),
		ok("socket(AF_INET6, SOCK_DGRAM)", closing(raw(unix.SYS_SOCKET, unix.AF_INET6, unix.SOCK_DGRAM, 0))),
		ok("socket(AF_UNIX)", closing(raw(unix.SYS_SOCKET, unix.AF_UNIX, unix.SOCK_STREAM, 0))),
		ok("socket(AF_NETLINK, NETLINK_ROUTE)", closing(raw(unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE))),
		ok("socketpair(AF_UNIX)", raw(unix.SYS_SOCKETPAIR, unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0, uintptr(unsafe.Pointer(&pair)))),
		// Without a listener the connect watch is an allow: an unbound
		// abstract name fails as the kernel says, not with EPERM.
		{"connect(AF_UNIX, unbound abstract)", "ECONNREFUSED", connectAbstract("airlock-kernel-test-unbound")},
		ok("personality(query)", raw(unix.SYS_PERSONALITY, 0xffffffff)),
		ok("prctl(PR_GET_NO_NEW_PRIVS)", raw(unix.SYS_PRCTL, unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)),
		ok("uname", raw(unix.SYS_UNAME, uintptr(unsafe.Pointer(&unix.Utsname{})))),
	}
}

func connectAbstract(name string) func() (uintptr, unix.Errno) {
	return func() (uintptr, unix.Errno) {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return 0, err.(unix.Errno)
		}
		defer unix.Close(fd)
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: "@" + name}); err != nil {
			return 0, err.(unix.Errno)
		}
		return 0, 0
	}
}

// ptyProbes attack a pseudo-terminal the child opened itself.
func ptyProbes() []probe {
	master, tty, err := pty.Open()
	if err != nil {
		return []probe{{"pty.Open", "ok", func() (uintptr, unix.Errno) { return 0, unix.EIO }}}
	}
	keepFiles = append(keepFiles, master, tty)
	fd := tty.Fd()
	var ws unix.Winsize
	return []probe{
		{"ioctl(pty, TIOCSTI | 0xdeadbeef<<32)", "EPERM", raw(unix.SYS_IOCTL, fd, highBits|tiocsti, cstr("x"))},
		{"ioctl(pty, TIOCSTI)", "EPERM", raw(unix.SYS_IOCTL, fd, tiocsti, cstr("x"))},
		{"ioctl(pty, TIOCLINUX | high bits)", "EPERM", raw(unix.SYS_IOCTL, fd, highBits|tioclinux, cstr("\x02"))},
		{"ioctl(pty, TIOCGWINSZ)", "ok", raw(unix.SYS_IOCTL, fd, unix.TIOCGWINSZ, uintptr(unsafe.Pointer(&ws)))},
	}
}

var keepFiles []*os.File

func allProbes() []probe {
	return append(append(deniedProbes(), allowedProbes()...), ptyProbes()...)
}

func probeMain() int {
	enc := json.NewEncoder(os.Stdout)
	for _, p := range allProbes() {
		_, e := p.call()
		enc.Encode(probeResult{p.name, int(e)})
	}
	fmt.Println(`{"name":"survived"}`)
	return 0
}

func parseProbes(t *testing.T, out string) map[string]unix.Errno {
	t.Helper()
	res := map[string]unix.Errno{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var r probeResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("child printed %q: %v", sc.Text(), err)
		}
		res[r.Name] = unix.Errno(r.Errno)
	}
	if _, ok := res["survived"]; !ok {
		t.Fatalf("child did not finish its probes; output:\n%s", out)
	}
	return res
}

func errnoString(e unix.Errno) string {
	if e == 0 {
		return "ok"
	}
	return unix.ErrnoName(e)
}

// TestKernelDefaultDenies runs every attack twice: once without a filter
// (control: the call fails, if at all, with something other than EPERM)
// and once under the default profile, where each must fail with EPERM
// while the process survives.
func TestKernelDefaultDenies(t *testing.T) {
	testutil.RequireRoot(t)
	control, err := runChild(t, "probe", "none")
	if err != nil {
		t.Fatalf("control child: %v", err)
	}
	filtered, err := runChild(t, "probe", "default")
	if err != nil {
		t.Fatalf("filtered child died or failed: %v", err)
	}
	ctl, got := parseProbes(t, control), parseProbes(t, filtered)
	var alreadyEPERM []string
	for _, p := range allProbes() {
		if g := errnoString(got[p.name]); g != p.want {
			t.Errorf("%s under the default profile: got %s, want %s (control without filter: %s)", p.name, g, p.want, errnoString(ctl[p.name]))
		}
		if p.want == "EPERM" && ctl[p.name] == unix.EPERM {
			alreadyEPERM = append(alreadyEPERM, p.name)
		}
		if p.want == "ok" && ctl[p.name] != 0 {
			t.Errorf("%s fails even without a filter (%s): the probe is broken", p.name, errnoString(ctl[p.name]))
		}
	}
	t.Logf("%d probes; already EPERM without the filter (the filter's EPERM is not distinguishable there): %v", len(got)-1, alreadyEPERM)
}

// The user-notification structures match the sizes the kernel's ioctl
// numbers encode (linux/seccomp.h).
func TestNotifyABI(t *testing.T) {
	if s := unsafe.Sizeof(seccompNotif{}); s != unix.SECCOMP_IOCTL_NOTIF_RECV>>16&0x3fff {
		t.Errorf("seccomp_notif is %d bytes; the ioctl says %d", s, unix.SECCOMP_IOCTL_NOTIF_RECV>>16&0x3fff)
	}
	if s := unsafe.Sizeof(seccompNotifResp{}); s != unix.SECCOMP_IOCTL_NOTIF_SEND>>16&0x3fff {
		t.Errorf("seccomp_notif_resp is %d bytes; the ioctl says %d", s, unix.SECCOMP_IOCTL_NOTIF_SEND>>16&0x3fff)
	}
}

func TestKernelStrictDeniesNetlink(t *testing.T) {
	testutil.RequireRoot(t)
	out, err := runChild(t, "probe", "strict")
	if err != nil {
		t.Fatalf("strict child: %v", err)
	}
	got := parseProbes(t, out)
	for name, want := range map[string]unix.Errno{
		"socket(AF_NETLINK, NETLINK_ROUTE)":         unix.EPERM,
		"socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC)": 0,
		"mount":                                unix.EPERM,
		"ioctl(pty, TIOCSTI | 0xdeadbeef<<32)": unix.EPERM,
	} {
		if got[name] != want {
			t.Errorf("%s under strict: got %s, want %s", name, errnoString(got[name]), errnoString(want))
		}
	}
}

// TestKernelI386ABI execs a C program after the filter is installed (the
// filter survives execve) and makes i386 system calls with int $0x80.
func TestKernelI386ABI(t *testing.T) {
	testutil.RequireRoot(t)
	gcc, err := exec.LookPath("gcc")
	testutil.RequireFeature(t, err == nil, "gcc to build the int $0x80 probe")
	bin := filepath.Join(t.TempDir(), "int80")
	if out, err := exec.Command(gcc, "-O2", "-o", bin, "testdata/int80.c").CombinedOutput(); err != nil {
		t.Fatalf("building int80: %v\n%s", err, out)
	}
	control, err := execUnder(t, "none", bin)
	testutil.RequireFeature(t, err == nil && strings.Contains(control, "getpid "), "i386 emulation (int $0x80) in the kernel")
	if v := int80Results(t, control)["getpid"]; v <= 0 {
		t.Fatalf("control: i386 getpid returned %d, want a pid", v)
	}
	out, err := execUnder(t, "default", bin)
	if err != nil {
		t.Fatalf("int80 under the filter died: %v\noutput: %s", err, out)
	}
	for name, v := range int80Results(t, out) {
		if v != -int64(unix.EPERM) {
			t.Errorf("i386 %s under the default profile returned %d, want -EPERM", name, v)
		}
	}
}

func int80Results(t *testing.T, out string) map[string]int64 {
	res := map[string]int64{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			t.Fatalf("int80 printed %q", line)
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			t.Fatalf("int80 printed %q", line)
		}
		res[f[0]] = v
	}
	if len(res) != 4 {
		t.Fatalf("int80 printed %d results, want 4:\n%s", len(res), out)
	}
	return res
}

// Ordinary programs keep working: a shell pipeline, date, git, and a Go
// program that starts threads and a subprocess.
func TestKernelOrdinaryPrograms(t *testing.T) {
	testutil.RequireRoot(t)
	out, err := execUnder(t, "default", "/bin/sh", "-c", "ls / | wc -l; date")
	if err != nil {
		t.Fatalf("sh under the default profile: %v", err)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 {
		t.Fatalf("sh printed %q, want a count and a date", out)
	}
	if git, err := exec.LookPath("git"); err == nil {
		out, err := execUnder(t, "default", git, "--version")
		if err != nil || !strings.HasPrefix(out, "git version") {
			t.Fatalf("git --version under the default profile: %q, %v", out, err)
		}
	}
	out, err = runChild(t, "threads", "default")
	if err != nil || strings.TrimSpace(out) != "threads ok" {
		t.Fatalf("Go threads under the default profile: %q, %v", out, err)
	}
}

// threadsMain runs under the filter: Go threads, goroutines, a child
// process (Go tries clone3 first, gets ENOSYS, and falls back to clone).
func threadsMain() int {
	done := make(chan int, 8)
	for i := 0; i < 8; i++ {
		go func(i int) {
			// Lock so that the runtime must create more OS threads.
			runtime.LockOSThread()
			time.Sleep(10 * time.Millisecond)
			done <- i
		}(i)
	}
	for i := 0; i < 8; i++ {
		<-done
	}
	out, err := exec.Command("/bin/echo", "sub").Output()
	if err != nil || string(out) != "sub\n" {
		fmt.Fprintln(os.Stderr, "subprocess:", err)
		return 1
	}
	fmt.Println("threads ok")
	return 0
}

func TestInstallRejectsBadProgram(t *testing.T) {
	if err := Install([]unix.SockFilter{{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS}}); err == nil {
		t.Fatal("Install accepted a program that does not end in RET")
	}
}
