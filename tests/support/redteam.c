/* Red-team helper for tests/integration/test_redteam_kernel.py: the escape primitives a
 * busybox shell cannot reach, one per mode, each printing one line "RESULT <mode> <rc> <errno>".
 * Built static at test time (gcc -O2 -static) and copied into a busybox container.
 *
 *   clone-newuser      clone(CLONE_NEWUSER|SIGCHLD)       the child exits at once
 *   clone3-newns       clone3 with flags CLONE_NEWNS
 *   fork               clone(SIGCHLD): what every shell does (learned, never dangerous)
 *   uring              io_uring_setup(4)
 *   packet             socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)
 *   raw                socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)
 *   tcp                socket(AF_INET, SOCK_STREAM): the app's ordinary socket
 *   cgmove ROOT PROG.. make ROOT/<own v2 cgroup>/escape, move into it, print it, exec PROG
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_io_uring_setup
#define SYS_io_uring_setup 425
#endif

static int result(const char *mode, long rc)
{
    printf("RESULT %s %ld %d\n", mode, rc, rc < 0 ? errno : 0);
    fflush(stdout);
    return 0;
}

static long do_clone(unsigned long flags)
{
    long rc = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (rc == 0)
        _exit(0);
    if (rc > 0)
        waitpid((pid_t)rc, NULL, 0);
    return rc;
}

static int cgmove(const char *root, char **prog)
{
    char line[512] = "", path[1024];
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f)
        return result("cgmove-open", -1);
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "0::", 3) == 0)
            break;
    fclose(f);
    line[strcspn(line, "\n")] = 0;
    snprintf(path, sizeof(path), "%s%s/escape", root, line + 3);
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return result("cgmove-mkdir", -1);
    strncat(path, "/cgroup.procs", sizeof(path) - strlen(path) - 1);
    int fd = open(path, O_WRONLY);
    if (fd < 0)
        return result("cgmove-procs", -1);
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%d\n", getpid());
    if (write(fd, pid, n) != n)
        return result("cgmove-write", -1);
    close(fd);
    f = fopen("/proc/self/cgroup", "r");
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "0::", 3) == 0)
            printf("MOVED %s", line + 3);
    if (f)
        fclose(f);
    fflush(stdout);
    execv(prog[0], prog);
    return result("cgmove-exec", -1);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    const char *m = argv[1];
    if (!strcmp(m, "clone-newuser"))
        return result(m, do_clone(CLONE_NEWUSER));
    if (!strcmp(m, "fork"))
        return result(m, do_clone(0));
    if (!strcmp(m, "clone3-newns")) {
        struct clone_args ca;
        memset(&ca, 0, sizeof(ca));
        ca.flags = CLONE_NEWNS;
        ca.exit_signal = SIGCHLD;
        long rc = syscall(SYS_clone3, &ca, sizeof(ca));
        if (rc == 0)
            _exit(0);
        if (rc > 0)
            waitpid((pid_t)rc, NULL, 0);
        return result(m, rc);
    }
    if (!strcmp(m, "uring")) {
        unsigned char params[120];
        memset(params, 0, sizeof(params));
        return result(m, syscall(SYS_io_uring_setup, 4, params));
    }
    if (!strcmp(m, "packet"))
        return result(m, socket(AF_PACKET, SOCK_RAW, htons(0x0003)));
    if (!strcmp(m, "raw"))
        return result(m, socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    if (!strcmp(m, "tcp"))
        return result(m, socket(AF_INET, SOCK_STREAM, 0));
    if (!strcmp(m, "cgmove") && argc >= 4)
        return cgmove(argv[2], &argv[3]);
    return 2;
}
