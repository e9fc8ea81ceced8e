/* Floods for tests/integration/test_floods.py and bench/bench_stress.py, run inside a container
 * (static, nothing else needed there).
 *   flood links N [SELF]          make N hard links /tmp/fl/pNNNNN of this binary (SELF,
 *                                 default /flood)
 *   flood exec SECONDS N          fork + execve the N links round robin (N distinct
 *                                 "unknown programs"; the link is the path executed)
 *   flood connect SECONDS PORTS BASE IP...  TCP connect + close to each IP on ports
 *                                 BASE..BASE+PORTS-1, round robin (closed ports answer
 *                                 with a reset at once: many connections, no waiting)
 *   flood serve PORT              accept and close, forever
 * Prints: "<ops> <seconds>". */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void link_path(char *buf, size_t n, long i)
{
    snprintf(buf, n, "/tmp/fl/p%05ld", i);
}

int main(int argc, char **argv)
{
    char path[64];
    if (argc >= 2 && strcmp(argv[1], "noop") == 0)
        return 0;
    if (argc >= 3 && strcmp(argv[1], "links") == 0) {
        long n = atol(argv[2]);
        const char *self = argc >= 4 ? argv[3] : "/flood";
        mkdir("/tmp", 01777);
        mkdir("/tmp/fl", 0755);
        for (long i = 0; i < n; i++) {
            link_path(path, sizeof(path), i);
            if (link(self, path) && errno != EEXIST) {
                perror(path);
                return 1;
            }
        }
        printf("%ld 0\n", n);
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "serve") == 0) {
        int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
        if (bind(s, (struct sockaddr *)&a, sizeof(a)) || listen(s, 1024))
            return 1;
        for (;;) {
            int c = accept(s, 0, 0);
            if (c >= 0)
                close(c);
        }
    }
    if (argc < 4)
        return 2;
    double seconds = atof(argv[2]), start = now(), end = start + seconds;
    long ops = 0;
    if (strcmp(argv[1], "exec") == 0) {
        long n = atol(argv[3]);
        if (n < 1)
            return 2;
        while (now() < end) {
            link_path(path, sizeof(path), ops % n);
            pid_t p = fork();
            if (p == 0) {
                execl(path, "flood", "noop", (char *)0);
                _exit(127);
            }
            waitpid(p, 0, 0);
            ops++;
        }
    } else if (strcmp(argv[1], "connect") == 0 && argc >= 6) {
        long ports = atol(argv[3]), base = atol(argv[4]);
        int nips = argc - 5;
        if (ports < 1)
            return 2;
        struct sockaddr_in a = {.sin_family = AF_INET};
        while (now() < end) {
            for (int i = 0; i < nips && now() < end; i++) {
                inet_pton(AF_INET, argv[5 + i], &a.sin_addr);
                a.sin_port = htons(base + ops / nips % ports);
                int s = socket(AF_INET, SOCK_STREAM, 0);
                connect(s, (struct sockaddr *)&a, sizeof(a));
                close(s);
                ops++;
            }
        }
    } else {
        return 2;
    }
    printf("%ld %.3f\n", ops, now() - start);
    return 0;
}
