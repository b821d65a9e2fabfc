package seccomp

import "golang.org/x/sys/unix"

// The built-in profiles. Each rule carries its reason; docs/seccomp.md is
// generated from these tables (go test -run TestDocsUpToDate -update).
// The tables that need code to build (deny, allow, concat) are functions
// rather than package variables: every start of the binary, the in-pod init
// included, would otherwise build them, and only the supervisor needs them.

// Clone flags that create a namespace. CLONE_NEWTIME (0x80) shares bits with
// the exit signal in clone(), where no valid signal sets it, so denying it
// costs nothing and covers kernels that ever start honouring it.
const cloneNewMask = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
	unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET |
	unix.CLONE_NEWCGROUP | unix.CLONE_NEWTIME

const (
	tiocsti   = 0x5412
	tioclinux = 0x541C
	// sockTypeMask drops SOCK_NONBLOCK|SOCK_CLOEXEC from socket's type.
	sockTypeMask = 0xf
	prSetMM      = 35
	// sockPacket is SOCK_PACKET, the obsolete type that the kernel turns
	// (AF_INET, SOCK_PACKET) into a packet socket for (net/socket.c).
	sockPacket = 10
	// Address lengths of sockaddr_in and sockaddr_in6.
	sizeofSockaddrInet4 = 16
	sizeofSockaddrInet6 = 28
)

// watchedSockets are the socket() calls the supervisor sees and refuses
// (EPERM, as the rules without a listener do): every one is an attack on
// the network wall, and the audit trail should show it. They come before
// the rules that allow AF_INET and AF_INET6, in both profiles. The pod has
// no CAP_NET_RAW, so the kernel would refuse most of them anyway; seccomp
// refuses them first and says so.
func watchedSockets() []Rule {
	return []Rule{
		{Name: "socket", Action: Notify, Args: []ArgCond{arg(0, Eq, Low32, unix.AF_PACKET)},
			Reason: "Packet sockets read and forge link-layer frames below every rule of the network wall; the attempt is audited (net.socket) and refused."},
		{Name: "socket", Action: Notify, Args: []ArgCond{arg(0, Eq, Low32, unix.AF_INET), arg(1, Eq, sockTypeMask, sockPacket)},
			Reason: "(AF_INET, SOCK_PACKET) is the obsolete spelling of a packet socket, which the kernel still honours; audited and refused as one."},
		{Name: "socket", Action: Notify, Args: []ArgCond{arg(0, Eq, Low32, unix.AF_INET), arg(1, Eq, sockTypeMask, unix.SOCK_RAW)},
			Reason: "Raw IP sockets forge packets and sniff traffic; SOCK_NONBLOCK and SOCK_CLOEXEC are masked off before the type is compared. Audited and refused."},
		{Name: "socket", Action: Notify, Args: []ArgCond{arg(0, Eq, Low32, unix.AF_INET6), arg(1, Eq, sockTypeMask, unix.SOCK_RAW)},
			Reason: "Raw IPv6 sockets, as for IPv4."},
		{Name: "socket", Action: Notify, Args: []ArgCond{arg(0, Eq, Low32, unix.AF_INET), arg(1, Eq, sockTypeMask, unix.SOCK_DGRAM), arg(2, Eq, Low32, unix.IPPROTO_ICMP)},
			Reason: "ICMP \"ping\" sockets: ICMP never leaves a pod, so the socket is refused where the attempt can be audited rather than dropped silently later."},
		{Name: "socket", Action: Notify, Args: []ArgCond{arg(0, Eq, Low32, unix.AF_INET6), arg(1, Eq, sockTypeMask, unix.SOCK_DGRAM), arg(2, Eq, Low32, unix.IPPROTO_ICMPV6)},
			Reason: "ICMPv6 ping sockets, as for IPv4."},
	}
}

// watchedConnect makes unix-socket connects visible to the supervisor.
// BPF cannot read the address, only its length: connects the length says
// are IPv4 or IPv6 (which the network wall sees anyway) stay in the
// kernel's fast path, everything else is shown to the supervisor.
func watchedConnect() []Rule {
	return []Rule{
		{Name: "connect", Action: Notify, Fallback: FallbackAllow,
			Args:   []ArgCond{arg(2, Ne, Low32, sizeofSockaddrInet4), arg(2, Ne, Low32, sizeofSockaddrInet6)},
			Reason: "A connect whose address length is neither a sockaddr_in's (16) nor a sockaddr_in6's (28), in practice a unix socket, goes to the supervisor, which reads the address: a path, or an abstract name bound in the pod's own network namespace, goes ahead; an abstract name bound nowhere in it (one the agent hoped to find on the host) is audited (net.abstract) and refused with ECONNREFUSED. The pod's network namespace is what keeps host abstract sockets out of reach; this makes the attempt visible. Without a listener the connect is allowed, as before."},
		{Name: "connect", Action: Allow, Reason: "Sockets once created (creation is filtered by family); the network wall decides where they reach."},
	}
}

// allow makes one unconditional Allow rule per name.
func allow(reason string, names ...string) []Rule {
	out := make([]Rule, len(names))
	for i, n := range names {
		out[i] = Rule{Name: n, Action: Allow, Reason: reason}
	}
	return out
}

// deny makes one unconditional Errno(EPERM) rule per name. The default
// would deny them too; the explicit rule records why and keeps a later
// edit of the allowlist from letting them in unnoticed (a test checks it).
func deny(reason string, names ...string) []Rule {
	out := make([]Rule, len(names))
	for i, n := range names {
		out[i] = Rule{Name: n, Action: Errno, Reason: reason}
	}
	return out
}

func arg(i int, op Op, mask, value uint64) ArgCond {
	return ArgCond{Index: i, Op: op, Mask: mask, Value: value}
}

// dockerAllowed is Docker's unconditional x86_64 allowlist (moby
// profiles/seccomp/default.json), minus what Airlock denies on purpose
// (deniedRules) and minus the calls that get argument filters below.
var dockerAllowed = []struct {
	reason string
	names  []string
}{
	{"File and directory I/O that ordinary programs need; the file-system wall (overlay, Landlock) decides what they reach.", []string{
		"read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "preadv2", "pwritev", "pwritev2",
		"open", "openat", "openat2", "creat", "close", "close_range", "lseek", "dup", "dup2", "dup3",
		"fcntl", "flock", "fsync", "fdatasync", "sync", "syncfs", "sync_file_range", "fallocate", "fadvise64", "readahead",
		"truncate", "ftruncate", "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs",
		"access", "faccessat", "faccessat2", "getcwd", "chdir", "fchdir", "getdents", "getdents64",
		"mkdir", "mkdirat", "rmdir", "rename", "renameat", "renameat2", "link", "linkat", "unlink", "unlinkat",
		"symlink", "symlinkat", "readlink", "readlinkat", "chmod", "fchmod", "fchmodat", "chown", "fchown", "fchownat", "lchown",
		"umask", "utime", "utimes", "utimensat", "futimesat", "mknod", "mknodat",
		"getxattr", "lgetxattr", "fgetxattr", "setxattr", "lsetxattr", "fsetxattr", "listxattr", "llistxattr", "flistxattr",
		"removexattr", "lremovexattr", "fremovexattr",
		"copy_file_range", "sendfile", "splice", "tee", "vmsplice",
		"inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "fanotify_mark",
		"pipe", "pipe2", "memfd_create", "memfd_secret",
	}},
	{"Memory management used by every runtime and loader.", []string{
		"brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync", "remap_file_pages",
		"mlock", "mlock2", "mlockall", "munlock", "munlockall", "membarrier", "pkey_alloc", "pkey_free", "pkey_mprotect",
	}},
	{"Process, thread and signal life cycle (fork, exec, wait, signals within the pod's PID namespace).", []string{
		"execve", "execveat", "exit", "exit_group", "fork", "vfork", "wait4", "waitid", "kill", "tkill", "tgkill",
		"pidfd_open", "pidfd_send_signal", "process_mrelease", "restart_syscall", "pause",
		"rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
		"rt_sigtimedwait", "rt_tgsigqueueinfo", "sigaltstack", "signalfd", "signalfd4",
		"set_tid_address", "set_robust_list", "get_robust_list", "rseq", "arch_prctl", "modify_ldt",
		"get_thread_area", "set_thread_area", "futex", "futex_waitv",
	}},
	{"Identity and limits: reading them is harmless; changing them is bounded by the capabilities the pod no longer has.", []string{
		"getpid", "getppid", "gettid", "getuid", "geteuid", "getgid", "getegid", "getgroups", "getresuid", "getresgid",
		"getpgid", "getpgrp", "getsid", "setsid", "setpgid", "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
		"setfsuid", "setfsgid", "setgroups", "capget", "capset",
		"getrlimit", "setrlimit", "prlimit64", "getrusage", "getpriority", "setpriority", "ioprio_get", "ioprio_set",
		"sched_getaffinity", "sched_setaffinity", "sched_getattr", "sched_setattr", "sched_getparam", "sched_setparam",
		"sched_getscheduler", "sched_setscheduler", "sched_get_priority_max", "sched_get_priority_min",
		"sched_rr_get_interval", "sched_yield", "getcpu", "uname", "sysinfo", "times", "getrandom",
	}},
	{"Clocks, timers and waiting; reading time is harmless (setting it is denied below).", []string{
		"clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time", "alarm",
		"getitimer", "setitimer", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime",
		"timerfd_create", "timerfd_gettime", "timerfd_settime",
	}},
	{"Event loops and polling.", []string{
		"poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old",
		"epoll_wait", "epoll_wait_old", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2",
	}},
	{"Sockets once created (creation is filtered by family); the network wall decides where they reach.", []string{
		"bind", "listen", "accept", "accept4", "shutdown", "getsockname", "getpeername", "getsockopt", "setsockopt",
		"sendto", "sendmsg", "sendmmsg", "recvfrom", "recvmsg", "recvmmsg",
	}},
	{"System V and POSIX IPC, private to the pod's IPC namespace.", []string{
		"msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop", "semctl", "shmget", "shmat", "shmdt", "shmctl",
		"mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
	}},
	{"Legacy asynchronous I/O (io_submit and friends), allowed by Docker; io_uring is not.", []string{
		"io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
	}},
	{"Self-sandboxing only ever narrows what the caller may do (Landlock, nested seccomp filters).", []string{
		"landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self", "seccomp",
	}},
	{"Newer variants of calls allowed above, in Docker's current profile (glibc and Go use them when present).", []string{
		"fchmodat2", "futex_wake", "futex_wait", "futex_requeue", "cachestat", "map_shadow_stack", "mseal",
		"getxattrat", "setxattrat", "listxattrat", "removexattrat",
	}},
}

// deniedRules are the calls Airlock always refuses, with why.
func deniedRules() [][]Rule {
	return [][]Rule{
		deny("Mounting rearranges the file system the walls are built from; the in-pod init has already mounted everything the pod needs.",
			"mount", "umount2", "pivot_root", "mount_setattr", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "chroot"),
		deny("New namespaces would let the agent build its own root, user and network views, escaping the walls and exposing kernel attack surface reachable only from user namespaces.",
			"unshare", "setns"),
		deny("Reading or writing another process's memory or registers breaks the boundary between processes (and can hijack the supervisor's helpers).",
			"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "process_madvise"),
		deny("Kernel keyrings are not namespaced: keys can leak between pods and the host.",
			"keyctl", "add_key", "request_key"),
		deny("eBPF, perf and userfaultfd are large kernel attack surfaces behind many privilege escalations; userfaultfd also makes kernel races easy to win.",
			"bpf", "perf_event_open", "userfaultfd"),
		deny("io_uring performs file and network operations outside seccomp's view and has been a steady source of kernel exploits.",
			"io_uring_setup", "io_uring_enter", "io_uring_register"),
		deny("Loading kernels or kernel modules is taking over the machine.",
			"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module"),
		deny("File handles bypass path-based checks: open_by_handle_at let containers read host files (the 'shocker' escape), and name_to_handle_at feeds it.",
			"open_by_handle_at", "name_to_handle_at"),
		deny("Machine administration: swap, reboot, process accounting, quotas, kernel log, host and domain names.",
			"swapon", "swapoff", "reboot", "acct", "quotactl", "quotactl_fd", "syslog", "sethostname", "setdomainname"),
		deny("Obsolete calls with a history of bugs and no use in a modern program.",
			"lookup_dcookie", "uselib", "nfsservctl", "_sysctl", "sysfs", "ustat", "vhangup"),
		deny("fanotify_init watches the whole file system (needs CAP_SYS_ADMIN; refused early).",
			"fanotify_init"),
		deny("Setting or adjusting the clock changes time for the whole host. adjtimex and clock_adjtime are refused even when they only read, because the mode that says whether they write lives in memory seccomp cannot see.",
			"clock_settime", "settimeofday", "adjtimex", "clock_adjtime"),
		deny("Raw I/O port access reaches hardware directly.",
			"iopl", "ioperm"),
		deny("NUMA memory policy calls need CAP_SYS_NICE in Docker's profile and nothing in a pod needs them.",
			"mbind", "set_mempolicy", "get_mempolicy", "migrate_pages", "move_pages", "set_mempolicy_home_node"),
	}
}

// filteredRules are the calls allowed only for some arguments.
func filteredRules() []Rule {
	return concat([]Rule{
		{Name: "clone", Action: Errno, Args: []ArgCond{arg(0, AnySet, cloneNewMask, 0)},
			Reason: "clone may not create namespaces (CLONE_NEW* flags in arg0); plain fork and thread creation stay allowed."},
		{Name: "clone", Action: Allow, Reason: "Process and thread creation."},
		{Name: "clone3", Action: Errno, Errno: unix.ENOSYS,
			Reason: "clone3 keeps its flags in memory seccomp cannot read; ENOSYS makes glibc and Go fall back to clone, whose flags are checked."},
		{Name: "ioctl", Action: Errno, Args: []ArgCond{arg(1, Eq, Low32, tiocsti)},
			Reason: "TIOCSTI pushes keystrokes into a terminal's input: a classic escape into the shell that started the pod. The kernel reads the request as 32 bits, so only those are compared."},
		{Name: "ioctl", Action: Errno, Args: []ArgCond{arg(1, Eq, Low32, tioclinux)},
			Reason: "TIOCLINUX can paste console selections into the input, the same injection as TIOCSTI."},
		{Name: "ioctl", Action: Allow, Reason: "Terminals, files and sockets need ioctl; the dangerous requests are denied above."},
		{Name: "socket", Action: Allow, Args: []ArgCond{arg(0, Eq, Low32, unix.AF_UNIX)},
			Reason: "Unix sockets within the pod."}},
		watchedSockets(), []Rule{
			{Name: "socket", Action: Allow, Args: []ArgCond{arg(0, Eq, Low32, unix.AF_INET)},
				Reason: "TCP and UDP over IPv4, through the network wall."},
			{Name: "socket", Action: Allow, Args: []ArgCond{arg(0, Eq, Low32, unix.AF_INET6)},
				Reason: "TCP and UDP over IPv6, through the network wall."},
			{Name: "socket", Action: Allow, Args: []ArgCond{arg(0, Eq, Low32, unix.AF_NETLINK), arg(2, Eq, Low32, unix.NETLINK_ROUTE)},
				Reason: "NETLINK_ROUTE only: glibc's getaddrinfo and if_nameindex read interfaces and addresses through it. Every other netlink protocol (audit, netfilter, ...), AF_ALG, AF_VSOCK, AF_KEY, Bluetooth and all other families fall to the default."},
			{Name: "socketpair", Action: Allow, Args: []ArgCond{arg(0, Eq, Low32, unix.AF_UNIX)},
				Reason: "Only AF_UNIX implements socketpair."},
			{Name: "personality", Action: Allow, Args: []ArgCond{arg(0, Eq, Low32, 0)}, Reason: personalityReason},
			{Name: "personality", Action: Allow, Args: []ArgCond{arg(0, Eq, Low32, 0x0008)}, Reason: personalityReason},
			{Name: "personality", Action: Allow, Args: []ArgCond{arg(0, Eq, Low32, 0x20000)}, Reason: personalityReason},
			{Name: "personality", Action: Allow, Args: []ArgCond{arg(0, Eq, Low32, 0x20008)}, Reason: personalityReason},
			{Name: "personality", Action: Allow, Args: []ArgCond{arg(0, Eq, Low32, 0xffffffff)}, Reason: personalityReason},
			{Name: "prctl", Action: Errno, Args: []ArgCond{arg(0, Eq, Low32, prSetMM)},
				Reason: "PR_SET_MM rewrites a process's memory map descriptors (exe link, auxv, stack), which checkpoint tools need and agents do not. PR_SET_PTRACER is left alone: ptrace is denied outright."},
			{Name: "prctl", Action: Allow, Reason: "Thread names, no_new_privs, dumpable, seccomp and the like."}},
		watchedConnect())
}

const personalityReason = "Only the personas Docker allows: PER_LINUX, PER_LINUX32, UNAME26 and the query 0xffffffff; others such as ADDR_NO_RANDOMIZE switch off ASLR or READ_IMPLIES_EXEC make data executable."

func defaultPolicy() *Policy {
	p := &Policy{Name: "default", Default: Errno}
	for _, g := range dockerAllowed {
		p.Rules = append(p.Rules, allow(g.reason, g.names...)...)
	}
	p.Rules = append(p.Rules, filteredRules()...)
	for _, g := range deniedRules() {
		p.Rules = append(p.Rules, g...)
	}
	return p
}

// strictRules replace every default rule for the syscalls they name
// (connect keeps its default rules: strict has no other).
func strictRules() []Rule {
	return concat([]Rule{
		{Name: "socket", Action: Allow, Args: []ArgCond{arg(0, Eq, Low32, unix.AF_UNIX)},
			Reason: "strict: Unix sockets within the pod."}},
		watchedSockets(), []Rule{
			{Name: "socket", Action: Allow, Args: []ArgCond{arg(0, Eq, Low32, unix.AF_INET), arg(1, Eq, sockTypeMask, unix.SOCK_STREAM)},
				Reason: "strict: TCP over IPv4 only (the network wall proxies TCP)."},
			{Name: "socket", Action: Allow, Args: []ArgCond{arg(0, Eq, Low32, unix.AF_INET), arg(1, Eq, sockTypeMask, unix.SOCK_DGRAM)},
				Reason: "strict: UDP over IPv4 (DNS to the pod's resolver)."},
			{Name: "socket", Action: Allow, Args: []ArgCond{arg(0, Eq, Low32, unix.AF_INET6), arg(1, Eq, sockTypeMask, unix.SOCK_STREAM)},
				Reason: "strict: TCP over IPv6."},
			{Name: "socket", Action: Allow, Args: []ArgCond{arg(0, Eq, Low32, unix.AF_INET6), arg(1, Eq, sockTypeMask, unix.SOCK_DGRAM)},
				Reason: "strict: UDP over IPv6."},
			{Name: "personality", Action: Allow, Args: []ArgCond{arg(0, Eq, Low32, 0xffffffff)},
				Reason: "strict: the persona may be queried, never changed."},
			{Name: "prctl", Action: Errno, Args: []ArgCond{arg(0, Eq, Low32, prSetMM)}, Reason: "strict: as in default."},
			{Name: "prctl", Action: Errno, Args: []ArgCond{arg(0, Eq, Low32, unix.PR_SET_DUMPABLE)},
				Reason: "strict: a process stays as dumpable as it was started, so a compromised helper cannot reopen itself to others."},
			{Name: "prctl", Action: Allow, Reason: "strict: other prctl options."},
		})
}

// strictDenied are allowed by default and refused by strict. Netlink needs
// no rule here: strict's socket rules simply do not allow AF_NETLINK.
func strictDenied() []Rule {
	return concat(
		deny("strict: legacy AIO is rarely used by agents and their tools and has had kernel bugs.",
			"io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents"),
		deny("strict: vmsplice, remap_file_pages and modify_ldt are old, rarely used interfaces behind past privilege escalations.",
			"vmsplice", "remap_file_pages", "modify_ldt"),
		deny("strict: System V and POSIX message queues and fanotify marks are not needed by build tools.",
			"msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
			"mq_notify", "mq_getsetattr", "fanotify_mark"),
		deny("strict: memory locking and secret memory pin RAM the memory wall cannot reclaim.",
			"mlock", "mlock2", "mlockall", "memfd_secret"),
	)
}

func concat(groups ...[]Rule) []Rule {
	var out []Rule
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

func strictPolicy() *Policy {
	p := defaultPolicy()
	p.Name = "strict"
	replaced := map[string]bool{}
	for _, r := range concat(strictRules(), strictDenied()) {
		replaced[r.Name] = true
	}
	var kept []Rule
	for _, r := range p.Rules {
		if !replaced[r.Name] {
			kept = append(kept, r)
		}
	}
	p.Rules = concat(kept, strictRules(), strictDenied())
	return p
}
