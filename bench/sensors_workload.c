/* Workloads for bench_sensors.py, run inside a container (static, no libc needed there).
 *   load exec SECONDS            fork + execve(self, "noop") in a loop
 *   load write SECONDS           open(O_CREAT|O_TRUNC) + write + close on 10 files
 *   load connect SECONDS IP PORT TCP connect + close to a peer
 *   load serve PORT              accept and close, forever (the peer)
 *   load flood SECONDS RATE      create RATE new files per second (novel events), unlink them
 * Prints: "<ops> <seconds> <cpu seconds> <failed>": the CPU time (user + system) of the loop
 * and its waited-for children (getrusage), which other processes' load does not inflate, and
 * how many connects failed (0 for the other loops). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "noop") == 0)
        return 0;
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
    if (argc < 3)
        return 2;
    double seconds = atof(argv[2]), start = now(), end = start + seconds;
    long ops = 0, failed = 0;
    char path[64];
    if (strcmp(argv[1], "exec") == 0) {
        while (now() < end) {
            pid_t p = fork();
            if (p == 0) {
                execl("/proc/self/exe", "load", "noop", (char *)0);
                _exit(127);
            }
            waitpid(p, 0, 0);
            ops++;
        }
    } else if (strcmp(argv[1], "write") == 0) {
        while (now() < end) {
            snprintf(path, sizeof(path), "/tmp/bench-%ld", ops % 10);
            int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            write(fd, "x\n", 2);
            close(fd);
            ops++;
        }
    } else if (strcmp(argv[1], "connect") == 0 && argc >= 5) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[4]))};
        inet_pton(AF_INET, argv[3], &a.sin_addr);
        while (now() < end) {
            int s = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(s, (struct sockaddr *)&a, sizeof(a)) != 0)
                failed++;
            close(s);
            ops++;
        }
    } else if (strcmp(argv[1], "flood") == 0 && argc >= 4) {
        double rate = atof(argv[3]);
        while (now() < end) {
            double due = start + ops / rate;
            while (now() < due)
                ;
            snprintf(path, sizeof(path), "/tmp/flood-%ld", ops);
            int fd = open(path, O_WRONLY | O_CREAT, 0644);
            close(fd);
            unlink(path);
            ops++;
        }
    } else {
        return 2;
    }
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    double cpu = self.ru_utime.tv_sec + self.ru_utime.tv_usec / 1e6 + self.ru_stime.tv_sec + self.ru_stime.tv_usec / 1e6
               + kids.ru_utime.tv_sec + kids.ru_utime.tv_usec / 1e6 + kids.ru_stime.tv_sec + kids.ru_stime.tv_usec / 1e6;
    printf("%ld %.3f %.6f %ld\n", ops, now() - start, cpu, failed);
    return 0;
}
