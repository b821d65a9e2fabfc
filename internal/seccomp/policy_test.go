package seccomp

import (
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// requiredDenied are the calls Airlock promises never to allow (DESIGN.md
// invariant 8 and the seccomp brief), in every built-in profile.
var requiredDenied = []string{
	"mount", "umount2", "pivot_root", "unshare", "setns", "ptrace", "process_vm_readv", "process_vm_writev",
	"keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
	"io_uring_setup", "io_uring_enter", "io_uring_register", "kexec_load", "kexec_file_load",
	"init_module", "finit_module", "delete_module", "open_by_handle_at", "name_to_handle_at",
	"swapon", "swapoff", "reboot", "acct", "quotactl", "lookup_dcookie", "syslog", "uselib",
	"fanotify_init", "clock_settime", "settimeofday", "adjtimex", "clock_adjtime", "iopl", "ioperm",
	"vhangup", "nfsservctl", "mount_setattr", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
}

// dockerUnconditional is Docker's default profile's unconditional x86_64
// allowlist, kept here independently of profiles.go: the default profile
// may allow nothing outside it except the argument-filtered calls and the
// newer variants listed below.
const dockerUnconditional = `accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown clock_adjtime
clock_getres clock_gettime clock_nanosleep close close_range connect copy_file_range creat dup dup2 dup3 epoll_create
epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat
exit exit_group faccessat faccessat2 fadvise64 fallocate fanotify_mark fchdir fchmod fchmodat fchown fchownat fcntl
fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstatfs fsync ftruncate futex futex_waitv futimesat
getcpu getcwd getdents getdents64 getegid geteuid getgid getgroups getitimer getpeername getpgid getpgrp getpid getppid
getpriority getrandom getresgid getresuid getrlimit get_robust_list getrusage getsid getsockname getsockopt get_thread_area
gettid gettimeofday getuid getxattr inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy
io_getevents io_pgetevents ioprio_get ioprio_set io_setup io_submit io_uring_enter io_uring_register io_uring_setup kill
landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lgetxattr link linkat listen listxattr llistxattr
lremovexattr lseek lsetxattr lstat madvise membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock
mlock2 mlockall mmap mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedsend mq_unlink mremap msgctl msgget
msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat open openat openat2 pause pidfd_open
pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll prctl pread64 preadv preadv2 prlimit64
process_mrelease pselect6 pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recvfrom recvmmsg recvmsg
remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask
rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam
sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval sched_setaffinity sched_setattr
sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop sendfile sendmmsg sendmsg sendto
setfsgid setfsuid setgid setgroups setitimer setpgid setpriority setregid setresgid setresuid setreuid setrlimit
set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setxattr shmat shmctl shmdt shmget shutdown
sigaltstack signalfd signalfd4 socketpair splice stat statfs statx symlink symlinkat sync sync_file_range syncfs sysinfo tee
tgkill time timer_create timer_delete timer_getoverrun timer_gettime timer_settime timerfd_create timerfd_gettime
timerfd_settime times tkill truncate umask uname unlink unlinkat utime utimensat utimes vfork vmsplice wait4 waitid write
writev arch_prctl modify_ldt clone socket personality`

var newerVariants = []string{"fchmodat2", "futex_wake", "futex_wait", "futex_requeue", "cachestat",
	"map_shadow_stack", "mseal", "getxattrat", "setxattrat", "listxattrat", "removexattrat", "clone3"}

func profiles(t *testing.T) []*Policy {
	var out []*Policy
	for _, n := range []string{"default", "strict"} {
		p, err := Profile(n)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// argVectors are argument vectors an attacker would try on a denied call.
func argVectors(p *Policy) [][6]uint64 {
	rnd := rand.New(rand.NewSource(3))
	vals := interesting(p)
	out := [][6]uint64{{}, {^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}}
	for i := 0; i < 500; i++ {
		var a [6]uint64
		for j := range a {
			a[j] = vals[rnd.Intn(len(vals))]
		}
		out = append(out, a)
	}
	return out
}

func TestRequiredDenials(t *testing.T) {
	for _, p := range profiles(t) {
		vecs := argVectors(p)
		for _, name := range requiredDenied {
			nr, ok := Number(name)
			if !ok {
				t.Fatalf("%s is not in the x86_64 table", name)
			}
			for _, a := range vecs {
				if v := p.Eval(unix.AUDIT_ARCH_X86_64, nr, a); v != (Verdict{Errno, unix.EPERM}) {
					t.Fatalf("%s: %s with args %#x gives %s, want errno(EPERM)", p.Name, name, a, v)
				}
			}
			if act, reason := Explain(p, name); act != "errno(EPERM)" || reason == "" {
				t.Errorf("%s: Explain(%s) = %q, %q", p.Name, name, act, reason)
			}
		}
	}
}

func TestNoAllowOutsideDocker(t *testing.T) {
	allowed := map[string]bool{}
	for _, n := range strings.Fields(dockerUnconditional) {
		allowed[n] = true
	}
	for _, n := range newerVariants {
		allowed[n] = true
	}
	for _, p := range profiles(t) {
		if p.Default != Errno || p.defaultVerdict().Errno != unix.EPERM {
			t.Errorf("%s: default is %s, want errno(EPERM)", p.Name, p.defaultVerdict())
		}
		for _, r := range p.Rules {
			if r.Action != Errno && !allowed[r.Name] {
				t.Errorf("%s: %s is allowed, but Docker's default profile does not allow it", p.Name, r.Name)
			}
		}
	}
}

// The attacks on the network wall that the supervisor should see reach it
// in both profiles, however the flags are spelt, and fail without it; the
// ordinary sockets and connects it does not need stay in the kernel.
func TestWatchedNetworkCalls(t *testing.T) {
	socket, _ := Number("socket")
	connect, _ := Number("connect")
	const hi = 0xdeadbeef00000000
	watched := map[string][6]uint64{
		"packet":           {unix.AF_PACKET, unix.SOCK_RAW, 0x300},
		"packet dgram":     {unix.AF_PACKET, unix.SOCK_DGRAM | unix.SOCK_CLOEXEC, 8},
		"inet sock_packet": {unix.AF_INET, 10, 0x300},
		"raw":              {unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP},
		"raw nonblock hi":  {hi | unix.AF_INET, unix.SOCK_RAW | unix.SOCK_NONBLOCK, unix.IPPROTO_UDP},
		"raw6":             {unix.AF_INET6, unix.SOCK_RAW | unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6},
		"ping":             {unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP},
		"ping hi":          {unix.AF_INET, unix.SOCK_DGRAM | unix.SOCK_CLOEXEC, hi | unix.IPPROTO_ICMP},
		"ping6":            {unix.AF_INET6, unix.SOCK_DGRAM, unix.IPPROTO_ICMPV6},
		"connect unix":     {3, 0, 110},
		"connect abstract": {3, 0, 2 + 1 + 5},
		"connect hi16":     {3, 0, 1<<32 | 17},
	}
	ordinary := map[string][6]uint64{
		"tcp":              {unix.AF_INET, unix.SOCK_STREAM | unix.SOCK_CLOEXEC, 0},
		"udp":              {unix.AF_INET, unix.SOCK_DGRAM, 0},
		"tcp6":             {unix.AF_INET6, unix.SOCK_STREAM, unix.IPPROTO_TCP},
		"udp6":             {unix.AF_INET6, unix.SOCK_DGRAM, unix.IPPROTO_UDP},
		"unix":             {unix.AF_UNIX, unix.SOCK_STREAM, 0},
		"connect inet":     {3, 0, 16},
		"connect inet6":    {3, 0, 28},
		"connect inet6 hi": {3, 0, hi | 28},
	}
	for _, p := range profiles(t) {
		u := p.Unwatched()
		for name, a := range watched {
			nr := socket
			if strings.HasPrefix(name, "connect") {
				nr = connect
			}
			if v := p.Eval(unix.AUDIT_ARCH_X86_64, nr, a); v.Action != Notify {
				t.Errorf("%s: %s %#x gives %s, want notify", p.Name, name, a, v)
			}
			want := Verdict{Errno, unix.EPERM}
			if nr == connect {
				want = Verdict{Action: Allow}
			}
			if v := u.Eval(unix.AUDIT_ARCH_X86_64, nr, a); v != want {
				t.Errorf("%s without a listener: %s %#x gives %s, want %s", p.Name, name, a, v, want)
			}
		}
		for name, a := range ordinary {
			nr := socket
			if strings.HasPrefix(name, "connect") {
				nr = connect
			}
			if v := p.Eval(unix.AUDIT_ARCH_X86_64, nr, a); v.Action != Allow {
				t.Errorf("%s: %s %#x gives %s, want allow", p.Name, name, a, v)
			}
		}
	}
}

func TestPersonalityOnlyDockerValues(t *testing.T) {
	p, _ := Profile("default")
	nr, _ := Number("personality")
	for _, v := range []uint64{0, 8, 0x20000, 0x20008, 0xffffffff} {
		if got := p.Eval(unix.AUDIT_ARCH_X86_64, nr, [6]uint64{v}); got.Action != Allow {
			t.Errorf("personality(%#x) = %s, want allow", v, got)
		}
	}
	for _, v := range []uint64{0x0040000, 0x0400000, 0x0200000, 1<<33 /* low bits 0 */ | 0x0040000} {
		if got := p.Eval(unix.AUDIT_ARCH_X86_64, nr, [6]uint64{v}); got.Action == Allow {
			t.Errorf("personality(%#x) allowed", v)
		}
	}
}

func TestEveryRuleHasAReason(t *testing.T) {
	for _, p := range profiles(t) {
		if err := p.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	bad := &Policy{Name: "x", Default: Errno, Rules: []Rule{{Name: "read", Action: Allow}}}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "rule 1 (read)") {
		t.Fatalf("a rule without a reason gave %v", err)
	}
}

func TestExplain(t *testing.T) {
	p, _ := Profile("default")
	act, reason := Explain(p, "clone")
	if act != "errno(EPERM) if arg0 & 0x7e020080 != 0; allow" {
		t.Errorf("Explain(clone) = %q", act)
	}
	if !strings.Contains(reason, "namespaces") {
		t.Errorf("Explain(clone) reason = %q", reason)
	}
	if act, _ := Explain(p, "getpid"); act != "allow" {
		t.Errorf("Explain(getpid) = %q", act)
	}
	if act, _ := Explain(p, "listns"); act != "errno(EPERM)" {
		t.Errorf("Explain(listns), not in the policy, = %q", act)
	}
	if act, _ := Explain(p, "no_such_call"); act != "unknown" {
		t.Errorf("Explain(no_such_call) = %q", act)
	}
}

const goodYAML = `version: 1
name: tiny
default: errno
default_errno: EACCES
rules:
  - names: [read, write, exit_group]
    action: allow
    reason: basic I/O
  - name: ioctl
    action: errno
    args:
      - {index: 1, op: eq, mask: 0xffffffff, value: 0x5412}
    reason: no TIOCSTI
  - name: ioctl
    action: allow
    reason: other ioctls
  - name: clone3
    action: errno
    errno: ENOSYS
    reason: fall back to clone
  - name: socket
    action: notify
    errno: EACCES
    args:
      - {index: 0, op: eq, mask: 0xffffffff, value: 17}
    reason: watch packet sockets
  - name: connect
    action: notify
    fallback: allow
    reason: watch connects
`

func TestParseFile(t *testing.T) {
	p, err := ParseFile([]byte(goodYAML))
	if err != nil {
		t.Fatal(err)
	}
	ioctl, _ := Number("ioctl")
	for _, c := range []struct {
		nr   uint32
		args [6]uint64
		want Verdict
	}{
		{ioctl, [6]uint64{0, 0xdeadbeef00005412}, Verdict{Errno, unix.EPERM}},
		{ioctl, [6]uint64{0, unix.TIOCGWINSZ}, Verdict{Action: Allow}},
		{0, [6]uint64{}, Verdict{Action: Allow}},
		{435, [6]uint64{}, Verdict{Errno, unix.ENOSYS}},
		{39, [6]uint64{}, Verdict{Errno, unix.EACCES}},
		{41, [6]uint64{17}, Verdict{Action: Notify}},
		{42, [6]uint64{}, Verdict{Action: Notify}},
	} {
		if got := p.Eval(unix.AUDIT_ARCH_X86_64, c.nr, c.args); got != c.want {
			t.Errorf("nr %d args %#x: %s, want %s", c.nr, c.args, got, c.want)
		}
	}
	// Without a listener (how a policy file is always installed) the
	// notify rules take their fallbacks.
	u := p.Unwatched()
	if got := u.Eval(unix.AUDIT_ARCH_X86_64, 41, [6]uint64{17}); got != (Verdict{Errno, unix.EACCES}) {
		t.Errorf("unwatched packet socket: %s, want errno(EACCES)", got)
	}
	if got := u.Eval(unix.AUDIT_ARCH_X86_64, 42, [6]uint64{}); got != (Verdict{Action: Allow}) {
		t.Errorf("unwatched connect: %s, want allow", got)
	}
	checkAgainstEval(t, p, 2000, 4)

	js := `{"version": 1, "name": "j", "default": "kill", "rules": [{"name": "getpid", "action": "allow", "reason": "r"}]}`
	if _, err := ParseFile([]byte(js)); err != nil {
		t.Fatalf("JSON policy: %v", err)
	}
}

func TestParseFileErrors(t *testing.T) {
	head := "version: 1\nname: bad\ndefault: errno\nrules:\n  - {name: read, action: allow, reason: ok}\n"
	for rule, want := range map[string]string{
		"  - {name: getpid, action: allow, reasn: typo}":                                                    "reasn",
		"  - {name: get_pid, action: allow, reason: r}":                                                     `rule 2 (get_pid): unknown x86_64 syscall "get_pid"`,
		"  - {name: getpid, action: allow}":                                                                 "rule 2 (getpid): no reason",
		"  - {name: getpid, action: permit, reason: r}":                                                     `rule 2 (getpid): unknown action "permit"`,
		"  - {name: getpid, action: errno, errno: EWHAT, reason: r}":                                        `rule 2 (getpid): unknown errno "EWHAT"`,
		"  - {name: getpid, action: allow, errno: EPERM, reason: r}":                                        "rule 2 (getpid): errno is set",
		"  - {name: ioctl, action: allow, args: [{index: 6, op: eq}], reason: r}":                           "rule 2 (ioctl): argument index 6",
		"  - {name: ioctl, action: allow, args: [{op: eq}], reason: r}":                                     "rule 2 (ioctl): args[0]: index is missing",
		"  - {name: ioctl, action: allow, args: [{index: 1, op: gt}], reason: r}":                           `rule 2 (ioctl): args[0]: unknown op "gt"`,
		"  - {name: ioctl, action: allow, args: [{index: 1, op: eq, mask: 0xff, value: 0x100}], reason: r}": "rule 2 (ioctl): value 0x100 has bits outside mask",
		"  - {name: read, names: [write], action: allow, reason: r}":                                        "rule 2 (read): give exactly one of name or names",
		"  - {name: getpid, action: errno, fallback: allow, reason: r}":                                     "rule 2 (getpid): fallback is set but the action is errno",
		"  - {name: getpid, action: notify, fallback: maybe, reason: r}":                                    `rule 2 (getpid): unknown fallback "maybe"`,
		"  - {name: getpid, action: notify, fallback: allow, errno: EPERM, reason: r}":                      "rule 2 (getpid): errno is set",
	} {
		_, err := ParseFile([]byte(head + rule + "\n"))
		if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("rule %s: error %v, want one containing %q", rule, err, want)
		}
	}
	if _, err := ParseFile([]byte("version: 1\nname: n\ndefault: notify\n")); err == nil || !strings.Contains(err.Error(), "default cannot be notify") {
		t.Errorf("default notify: %v", err)
	}
	if _, err := ParseFile([]byte("name: v0\ndefault: errno\n")); err == nil || !strings.Contains(err.Error(), "version") {
		t.Errorf("missing version: %v", err)
	}
	if _, err := ParseFile([]byte(head + "---\nname: two\n")); err == nil {
		t.Error("two YAML documents accepted")
	}
}

func TestProfileByName(t *testing.T) {
	if _, err := Profile("defualt"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("misspelt profile: %v", err)
	}
	path := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(path, []byte(goodYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Profile(path)
	if err != nil || p.Name != "tiny" {
		t.Fatalf("Profile(%s) = %v, %v", path, p, err)
	}
	if _, err := Profile(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "reading seccomp policy file") {
		t.Errorf("missing file: %v", err)
	}
}
