/* Times sendmsg() on a connected socket: prints microseconds per call (median of 5
 * batches; each message is read back between calls, outside the timed part).
 * usage: sendbench unix|udp ITERATIONS */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A connected pair: out[0] sends, out[1] receives. */
static int pair(const char *kind, int out[2]) {
    if (strcmp(kind, "unix") == 0) return socketpair(AF_UNIX, SOCK_DGRAM, 0, out);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    out[1] = socket(AF_INET, SOCK_DGRAM, 0);
    if (bind(out[1], (struct sockaddr *)&a, sizeof a) || getsockname(out[1], (struct sockaddr *)&a, &n)) return -1;
    out[0] = socket(AF_INET, SOCK_DGRAM, 0);
    return connect(out[0], (struct sockaddr *)&a, sizeof a);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s unix|udp ITERATIONS\n", argv[0]);
        return 2;
    }
    int fds[2];
    if (pair(argv[1], fds)) { perror("socket pair"); return 1; }
    long n = atol(argv[2]) / 5;
    char payload[64] = "a datagram of sixty-four bytes, sent again and again", back[64];
    struct iovec iov = {payload, sizeof payload};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    double batches[5];
    for (int b = 0; b < 5; b++) {
        double spent = 0;
        for (long i = 0; i < n; i++) {
            double start = now_us();
            if (sendmsg(fds[0], &msg, 0) != sizeof payload) { perror("sendmsg"); return 1; }
            spent += now_us() - start;
            if (recv(fds[1], back, sizeof back, 0) != sizeof back) { perror("recv"); return 1; }
        }
        batches[b] = spent / n;
    }
    qsort(batches, 5, sizeof batches[0], cmp);
    printf("%.3f\n", batches[2]);
    return 0;
}
