/* Restart-window probe (bench_protect.py, part 4): run as a container's own command, it
 * connects to HOST:PORT every millisecond for DURATION ms from its very start and prints
 * one line: attempts, how many connected, and when (ms since start) the last connect
 * succeeded and the first was refused. Then it sleeps so the container stays up. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &sa.sin_addr);
    double start = now_ms(), duration = atof(argv[3]);
    int attempts = 0, allowed = 0;
    double last_allowed = -1, first_refused = -1;
    while (now_ms() - start < duration) {
        double t = now_ms() - start;
        int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        int rc = connect(s, (struct sockaddr *)&sa, sizeof sa), ok = 0;
        if (rc < 0 && errno == EINPROGRESS) {
            struct pollfd p = {.fd = s, .events = POLLOUT};
            if (poll(&p, 1, 5) == 1) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
                ok = err == 0;
            }
        } else if (rc == 0) {
            ok = 1;
        }
        close(s);
        attempts++;
        if (ok) {
            allowed++;
            last_allowed = t;
        } else if (first_refused < 0) {
            first_refused = t;
        }
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
    printf("attempts=%d allowed=%d last_allowed_ms=%.1f first_refused_ms=%.1f\n", attempts, allowed,
           last_allowed, first_refused);
    fflush(stdout);
    for (;;) pause();
}
