/* Exec attacks an attacker inside a container can run against Stockade
 * (tests/integration/test_redteam_exec.py). Built static, copied into a busybox container
 * as /x/race, /x/a (a copy the profile allows) and /x/b (a copy it does not).
 *
 *   race N          N times: a child execs "/x/a" while a second thread flips that very
 *                   buffer to "/x/b" (a TOCTOU on the path string); tallies what ran
 *   storm P N       P processes each exec /x/b N times
 *   execas MS ARGV0 PATH ARGS..  exec PATH with argv[0] = ARGV0; report what became of it
 *   mark            what /x/a and /x/b run as: /x/b leaves a mark in /x/escaped, exits 3
 *   learn           exec /x/a once (so that the profile learns it)
 *   idle            sleep forever (the container's main process)
 *
 * Tallies print as "ok=N bad=N killed=N other=N": ok = /x/a ran, bad = /x/b ran,
 * killed = SIGKILL before it ran.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;
static char target[16] = "/x/a";
static volatile int go = 1;
static int hold = 0;
static volatile int started = 0;  /* spins each value is held: varied per child, so some land in the window */

static void *flipper(void *arg)
{
    (void)arg;
    volatile char *c = &target[3];
    started = 1;
    while (go) {
        *c = 'b';
        for (volatile int i = 0; i < hold; i++) {}
        *c = 'a';
        for (volatile int i = 0; i < hold; i++) {}
    }
    return NULL;
}

struct tally { int ok, bad, killed, other; };

static void account(struct tally *t, int status)
{
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        t->killed++;
    else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        t->ok++;
    else if (WIFEXITED(status) && WEXITSTATUS(status) == 3)
        t->bad++;
    else
        t->other++;
}

static int race(int n)
{
    struct tally t = {0};
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            pthread_t th;
            hold = (i * 37) % 1500;
            pthread_create(&th, NULL, flipper, NULL);
            while (!started) {}  /* both threads on a CPU at once: the race is real */
            for (volatile int spin = 0; spin < (i % 64) * 50; spin++) {}  /* vary the phase */
            char *argv[] = {target, "mark", NULL};
            execve(target, argv, environ);
            _exit(127);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        account(&t, status);
    }
    printf("ok=%d bad=%d killed=%d other=%d\n", t.ok, t.bad, t.killed, t.other);
    return 0;
}

static int storm(int procs, int n)
{
    int fds[2];
    if (pipe(fds) != 0)
        return 1;
    for (int p = 0; p < procs; p++) {
        if (fork() == 0) {
            struct tally t = {0};
            for (int i = 0; i < n; i++) {
                pid_t pid = fork();
                if (pid == 0) {
                    char *argv[] = {"/x/b", "mark", NULL};
                    execve("/x/b", argv, environ);
                    _exit(127);
                }
                if (pid < 0) { t.other++; continue; }
                int status = 0;
                waitpid(pid, &status, 0);
                account(&t, status);
            }
            write(fds[1], &t, sizeof(t));
            _exit(0);
        }
    }
    close(fds[1]);
    struct tally all = {0}, t;
    while (read(fds[0], &t, sizeof(t)) == sizeof(t)) {
        all.ok += t.ok; all.bad += t.bad; all.killed += t.killed; all.other += t.other;
    }
    while (wait(NULL) > 0) {}
    printf("ok=%d bad=%d killed=%d other=%d\n", all.ok, all.bad, all.killed, all.other);
    return 0;
}

static int listening(int port)
{
    const char *tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    char line[512], want[16];
    int found = 0;
    snprintf(want, sizeof(want), ":%04X ", port);
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(tables[i], "r");
        if (!f)
            continue;
        while (fgets(line, sizeof(line), f)) {
            if (strstr(line, want) && strstr(line, " 0A "))
                found = 1;
        }
        fclose(f);
    }
    return found;
}

static int execas(int ms, char *argv0, char *path, char **rest)
{
    pid_t pid = fork();
    if (pid == 0) {
        rest[-1] = argv0;  /* rest[-1] was PATH's slot: argv = {ARGV0, ARGS...} */
        execve(path, &rest[-1], environ);
        _exit(127);
    }
    int status = 0;
    for (int waited = 0; waited < ms; waited += 50) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            if (WIFSIGNALED(status))
                printf("signal=%d\n", WTERMSIG(status));
            else
                printf("exit=%d\n", WEXITSTATUS(status));
            return 0;
        }
        usleep(50 * 1000);
    }
    printf("alive listening4445=%d\n", listening(4445));
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return 0;
}

static int mark(void)
{
    char exe[256] = {0};
    if (readlink("/proc/self/exe", exe, sizeof(exe) - 1) < 0)
        return 4;
    if (strcmp(exe, "/x/b") == 0) {
        int fd = open("/x/escaped", O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            write(fd, "x", 1);
            close(fd);
        }
        return 3;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "mark") == 0)
        return mark();
    if (argc >= 3 && strcmp(argv[1], "race") == 0)
        return race(atoi(argv[2]));
    if (argc >= 4 && strcmp(argv[1], "storm") == 0)
        return storm(atoi(argv[2]), atoi(argv[3]));
    if (argc >= 5 && strcmp(argv[1], "execas") == 0)
        return execas(atoi(argv[2]), argv[3], argv[4], &argv[5]);
    if (argc >= 2 && strcmp(argv[1], "learn") == 0) {
        pid_t pid = fork();
        if (pid == 0) {
            char *a[] = {"/x/a", "mark", NULL};
            execve("/x/a", a, environ);
            _exit(127);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        printf("learn status=%d\n", status);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "idle") == 0) {
        for (;;)
            pause();
    }
    fprintf(stderr, "usage: race N | storm P N | execas MS ARGV0 PATH ARGS.. | mark | learn | idle\n");
    return 2;
}
