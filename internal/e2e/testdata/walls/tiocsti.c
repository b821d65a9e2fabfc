// tiocsti pushes a command into its own terminal's input queue, the
// classic way for a sandboxed program to make the shell outside it run
// something. It tries the plain request and one with high bits set in the
// 64-bit argument (the kernel reads the request as 32 bits, a filter that
// compares 64 would miss it). Then TIOCLINUX's paste-selection, the same
// injection through the console, plain and with high bits. Prints
// "NAME ret=R errno=E" per attempt.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void)
{
	const char *cmd = "id\n";
	unsigned long reqs[] = {TIOCSTI, TIOCSTI | (1UL << 32)};
	for (int i = 0; i < 2; i++) {
		long r = 0;
		for (const char *p = cmd; *p && r == 0; p++) {
			errno = 0;
			r = syscall(SYS_ioctl, 0, reqs[i], p);
		}
		printf("TIOCSTI%d ret=%ld errno=%d\n", i, r, r < 0 ? errno : 0);
	}
	unsigned long lin[] = {TIOCLINUX, TIOCLINUX | (0xdeadbeefUL << 32)};
	for (int i = 0; i < 2; i++) {
		char sub = 3; /* TIOCL_PASTESEL */
		errno = 0;
		long r = syscall(SYS_ioctl, 0, lin[i], &sub);
		printf("TIOCLINUX%d ret=%ld errno=%d\n", i, r, r < 0 ? errno : 0);
	}
	puts("survived");
	return 0;
}
