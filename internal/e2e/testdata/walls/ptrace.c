// ptrace forks a sibling and tries to attach to it, then to the pod's
// init (PID 1, the runtime), the way an agent would try to read another
// process's memory. Prints "TARGET OP ret=R errno=E" per attempt.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static void try(const char *target, pid_t pid)
{
	char buf[16];
	struct iovec l = {buf, sizeof buf}, r = {(void *)0x400000, sizeof buf};
	errno = 0;
	long ret = ptrace(PTRACE_ATTACH, pid, 0, 0);
	printf("%s attach ret=%ld errno=%d\n", target, ret, ret < 0 ? errno : 0);
	if (ret == 0)
		ptrace(PTRACE_DETACH, pid, 0, 0);
	errno = 0;
	ret = ptrace(PTRACE_SEIZE, pid, 0, 0);
	printf("%s seize ret=%ld errno=%d\n", target, ret, ret < 0 ? errno : 0);
	if (ret == 0)
		ptrace(PTRACE_DETACH, pid, 0, 0);
	errno = 0;
	ret = process_vm_readv(pid, &l, 1, &r, 1, 0);
	printf("%s vm_readv ret=%ld errno=%d\n", target, ret, ret < 0 ? errno : 0);
}

int main(void)
{
	pid_t child = fork();
	if (child == 0) {
		pause();
		_exit(0);
	}
	try("sibling", child);
	try("init", 1);
	kill(child, SIGKILL);
	waitpid(child, 0, 0);
	puts("survived");
	return 0;
}
