// syscalls tries every syscall class the seccomp wall denies, three ways:
// the native x86_64 number, the x32 alias (nr | 0x40000000) and the i386
// number through int $0x80. Arguments are chosen so that a call the filter
// let through would succeed or fail with something other than EPERM where
// the kernel allows it without capabilities. One line per attempt:
//   NAME ABI ret=R errno=E
// and "survived" at the end: the test wants errno=1 (EPERM) everywhere.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define X32 0x40000000L
#define NO_I386 -1L /* the i386 ABI has no such call */

static char buf[64], src[64] = "secret";
static struct iovec liov = {buf, sizeof buf}, riov = {src, sizeof src};
static struct perf_event_attr pattr;
static unsigned char uring_params[120];

struct call {
	const char *name;
	long nr64, nr32;
	long a[6];
};

static void report(const char *name, const char *abi, long ret, int err)
{
	printf("%s %s ret=%ld errno=%d\n", name, abi, ret, ret < 0 ? err : 0);
	fflush(stdout);
}

static long int80(long nr, long a0, long a1, long a2)
{
	long ret;
	__asm__ volatile("int $0x80"
			 : "=a"(ret)
			 : "a"(nr), "b"(a0), "c"(a1), "d"(a2), "S"(0L), "D"(0L)
			 : "memory", "r8", "r9", "r10", "r11");
	return ret;
}

int main(void)
{
	pattr.size = sizeof pattr;
	pattr.type = PERF_TYPE_SOFTWARE;
	pattr.config = PERF_COUNT_SW_CPU_CLOCK;
	pattr.exclude_kernel = 1;
	pattr.exclude_hv = 1;
	pid_t me = getpid();
	struct call calls[] = {
		{"mount", 165, 21, {(long)"none", (long)"/tmp", (long)"tmpfs", 0, 0}},
		{"umount2", 166, 52, {(long)"/tmp", 0}},
		{"pivot_root", 155, 217, {(long)".", (long)"."}},
		{"unshare", 272, 310, {CLONE_NEWUSER}},
		{"setns", 308, 346, {-1, 0}},
		{"ptrace", 101, 26, {2 /* PEEKDATA */, 999999, 0, 0}},
		{"process_vm_readv", 310, 347, {me, (long)&liov, 1, (long)&riov, 1, 0}},
		{"process_vm_writev", 311, 348, {me, (long)&riov, 1, (long)&liov, 1, 0}},
		{"keyctl", 250, 288, {0 /* GET_KEYRING_ID */, -3 /* session */, 0}},
		{"add_key", 248, 286, {(long)"user", (long)"airlock-wall", (long)"x", 1, -2 /* process */}},
		{"request_key", 249, 287, {(long)"user", (long)"airlock-wall", 0, 0}},
		{"bpf", 321, 357, {0 /* MAP_CREATE */, 0, 0}},
		{"perf_event_open", 298, 336, {(long)&pattr, 0, -1, -1, 0}},
		{"userfaultfd", 323, 374, {1 /* UFFD_USER_MODE_ONLY */}},
		{"io_uring_setup", 425, 425, {1, (long)uring_params}},
		{"io_uring_enter", 426, 426, {-1, 0, 0, 0, 0, 0}},
		{"io_uring_register", 427, 427, {-1, 0, 0, 0}},
		{"kexec_load", 246, 283, {0, 0, 0, 0}},
		{"kexec_file_load", 320, NO_I386, {-1, -1, 0, (long)"", 0}},
		{"init_module", 175, 128, {0, 0, (long)""}},
		{"finit_module", 313, 350, {-1, (long)"", 0}},
		{"delete_module", 176, 129, {(long)"airlock_no_such_module", 04000 /* O_NONBLOCK */}},
		{"open_by_handle_at", 304, 342, {-1, 0, 0}},
		{"socket_packet", 41, 359, {17 /* AF_PACKET */, 3 /* SOCK_RAW */, 0}},
		{"socket_alg", 41, 359, {38 /* AF_ALG */, 5 /* SOCK_SEQPACKET */, 0}},
		{"socket_vsock", 41, 359, {40 /* AF_VSOCK */, 1 /* SOCK_STREAM */, 0}},
		{"socket_netlink_audit", 41, 359, {16 /* AF_NETLINK */, 3 /* SOCK_RAW */, 9 /* NETLINK_AUDIT */}},
		{"socket_netlink_netfilter", 41, 359, {16 /* AF_NETLINK */, 3 | 02000000 /* SOCK_RAW|SOCK_CLOEXEC */, 12 /* NETLINK_NETFILTER */}},
	};
	for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
		struct call *c = &calls[i];
		long *a = c->a;
		errno = 0;
		long r = syscall(c->nr64, a[0], a[1], a[2], a[3], a[4], a[5]);
		report(c->name, "x86_64", r, errno);
		errno = 0;
		r = syscall(c->nr64 | X32, a[0], a[1], a[2], a[3], a[4], a[5]);
		report(c->name, "x32", r, errno);
		if (c->nr32 == NO_I386)
			continue;
		// int $0x80 truncates to 32 bits: pointers above 4 GiB become
		// garbage, so pass only small integers; the filter decides first.
		r = int80(c->nr32, (int)a[0], 0, 0);
		report(c->name, "i386", r, r < 0 && r > -4096 ? (int)-r : 0);
	}
	puts("survived");
	return 0;
}
