/* The fd, not the address, changes under the check: another thread keeps dup2()ing an
 * INET socket and a unix socket onto the same fd number while this one calls connect(),
 * sendmsg() and bind() on that number with a unix-socket path. A decision taken on the
 * socket the fd named when it was checked must be carried out on that very socket; had
 * the kernel been let to look the number up again, it could find the unix socket there.
 *
 * usage: fd_swap TRIES SECONDS STREAM_PATH DGRAM_PATH READONLY_PATH
 *   STREAM_PATH: a host listening socket; DGRAM_PATH: a host datagram socket (both on a
 *   volume not marked "sockets"); READONLY_PATH: a name on a read-only volume.
 * report per call (connect_*, sendmsg_*, bind_*): ok (escapes), inet (the kernel had the
 * INET socket: EAFNOSUPPORT), refused (hvfs had the unix one: EACCES, or EROFS for bind),
 * other.
 */
#include "attack.h"

#include <errno.h>
#include <stddef.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define NUMBER 100

static volatile int stop, inet_fd, unix_fd;

static void *swap(void *unused) {
    while (!stop) {
        dup2(inet_fd, NUMBER);
        dup2(unix_fd, NUMBER);
    }
    return unused;
}

struct counts {
    long tries, ok, inet, refused, other;
    int other_errno; /* the last one, to tell what it was */
};

static socklen_t address(struct sockaddr_un *a, const char *path) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    strncpy(a->sun_path, path, sizeof a->sun_path - 1);
    return offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1;
}

/* Races one call for a third of the budget. */
static void race(const char *call, int inet_type, int unix_type, const char *path, int refusal, struct counts *c,
                 double until) {
    struct sockaddr_un target;
    socklen_t length = address(&target, path);
    char byte = 'x';
    struct iovec iov = {&byte, 1};
    struct msghdr message = {.msg_name = &target, .msg_namelen = length, .msg_iov = &iov, .msg_iovlen = 1};
    inet_fd = socket(AF_INET, inet_type, 0);
    unix_fd = socket(AF_UNIX, unix_type, 0);
    dup2(inet_fd, NUMBER); /* the number is a socket from the first try on */
    stop = 0;
    pthread_t swapper;
    pthread_create(&swapper, NULL, swap, NULL);
    for (long i = 0; attack_more(i) && attack_now() < until; i++) {
        int result;
        if (strcmp(call, "connect") == 0)
            result = connect(NUMBER, (struct sockaddr *)&target, length);
        else if (strcmp(call, "sendmsg") == 0)
            result = sendmsg(NUMBER, &message, MSG_DONTWAIT) < 0 ? -1 : 0;
        else
            result = bind(NUMBER, (struct sockaddr *)&target, length);
        c->tries++;
        if (result == 0)
            c->ok++;
        else if (errno == EAFNOSUPPORT)
            c->inet++;
        else if (errno == refusal)
            c->refused++;
        else {
            c->other++;
            c->other_errno = errno;
        }
    }
    stop = 1;
    pthread_join(swapper, NULL);
    close(NUMBER);
    close(inet_fd);
    close(unix_fd);
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 6) {
        fprintf(stderr, "usage: %s TRIES SECONDS STREAM_PATH DGRAM_PATH READONLY_PATH\n", argv[0]);
        return 2;
    }
    double start = attack_now(), third = (attack_deadline - start) / 3;
    struct counts c = {0}, s = {0}, b = {0};
    race("connect", SOCK_STREAM, SOCK_STREAM, argv[3], EACCES, &c, start + third);
    race("sendmsg", SOCK_DGRAM, SOCK_DGRAM, argv[4], EACCES, &s, start + 2 * third);
    race("bind", SOCK_STREAM, SOCK_STREAM, argv[5], EROFS, &b, attack_deadline);
    printf("{\"tries\": %ld", c.tries + s.tries + b.tries);
    struct counts *all[] = {&c, &s, &b};
    const char *names[] = {"connect", "sendmsg", "bind"};
    for (int k = 0; k < 3; k++)
        printf(", \"%s_tries\": %ld, \"%s_ok\": %ld, \"%s_inet\": %ld, \"%s_refused\": %ld, \"%s_other\": %ld, "
               "\"%s_other_errno\": %d",
               names[k], all[k]->tries, names[k], all[k]->ok, names[k], all[k]->inet, names[k], all[k]->refused,
               names[k], all[k]->other, names[k], all[k]->other_errno);
    printf("}\n");
    return 0;
}
