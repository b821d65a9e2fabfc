/* Tries i386 system calls through int $0x80 from a 64-bit process and
 * prints each raw result (a negative errno on failure). The seccomp tests
 * exec it after installing a filter: it must survive and see -EPERM. */
#include <stdio.h>

static long sys32(long nr, long a, long b, long c)
{
	long ret;
	__asm__ volatile("int $0x80"
			 : "=a"(ret)
			 : "a"(nr), "b"(a), "c"(b), "d"(c)
			 : "memory", "r8", "r9", "r10", "r11");
	return ret;
}

int main(void)
{
	printf("getpid %ld\n", sys32(20, 0, 0, 0));
	printf("mount %ld\n", sys32(21, 0, 0, 0));
	/* PTRACE_ATTACH to a pid above pid_max: harmless if ever allowed. */
	printf("ptrace %ld\n", sys32(26, 16, 0x3fffffff, 0));
	/* unshare(CLONE_NEWUSER) */
	printf("unshare %ld\n", sys32(310, 0x10000000, 0, 0));
	fflush(stdout);
	return 0;
}
