/* The ptrace driver's kept socket (hvfs/intercept/ptrace/kept.py), attacked from inside.
 *
 * Under the ptrace driver a served open is received on a socket the driver keeps in each
 * process, at a number from 1000 up. While one thread opens /data/f-N over and over
 * (each file gets its own name written into it), another tampers with every number in
 * 1000..1063: closes it, dup2s over it a socket of its own with a decoy file queued,
 * sends the decoy on it (the kept socket is connected to itself), or takes what is
 * queued. And the process forks children that, with their copies of its sockets, wait on
 * every self-connected one (as the driver's are) to receive first whatever is sent on
 * it, and write "stolen" into whatever they get.
 *
 * The host checks what the files hold: each /data/f-N its own name (or nothing, when its
 * open failed), the decoy untouched, "stolen" nowhere.
 *
 *     kept_socket TRIES SECONDS
 */
#include "attack.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define LOW 1000
#define COUNT 64
#define WATCHED 512 /* where a child looks for self-connected sockets */

static atomic_int stop;
static atomic_long tampered, closed, replaced, presends, taken;
static int decoy, decoy_pair[2];

static int take(int fd) {
    char byte;
    char control[CMSG_SPACE(sizeof(int) * 4)];
    struct iovec iov = {&byte, 1};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    if (recvmsg(fd, &msg, MSG_DONTWAIT) < 0)
        return -1;
    int got = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            memcpy(&got, CMSG_DATA(c), sizeof got);
    return got;
}

static int send_fd(int socket, int fd) {
    char byte = 'd';
    char control[CMSG_SPACE(sizeof(int))] = {0};
    struct iovec iov = {&byte, 1};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    return sendmsg(socket, &msg, MSG_DONTWAIT) < 0 ? -1 : 0;
}

static void *tamper(void *unused) {
    (void)unused;
    for (long i = 0; !atomic_load(&stop); i++) {
        int fd = LOW + (int)(i % COUNT);
        switch ((i / COUNT) % 4) {
        case 0:
            if (close(fd) == 0)
                atomic_fetch_add(&closed, 1);
            break;
        case 1: /* a socket of its own at that number, a decoy queued in it */
            send_fd(decoy_pair[1], decoy);
            if (dup2(decoy_pair[0], fd) == fd)
                atomic_fetch_add(&replaced, 1);
            break;
        case 2: { /* (what went to its own pair's other end is taken back first: room for more) */
            int back;
            while ((back = take(decoy_pair[1])) >= 0)
                close(back);
            if (send_fd(fd, decoy) == 0)
                atomic_fetch_add(&presends, 1);
            break;
        }
        default: { /* the same fd table: allowed, only counted */
            int got = take(fd);
            if (got >= 0) {
                atomic_fetch_add(&taken, 1);
                close(got);
            }
        }
        }
        atomic_fetch_add(&tampered, 1);
        if (!(i & 63))
            usleep(50);
    }
    return NULL;
}

/* A child with copies of its parent's sockets: whatever it receives is marked. */
static int is_decoy(int fd) {
    struct stat a, b;
    return fstat(fd, &a) == 0 && fstat(decoy, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
}

/* Whether fd is a socket connected to itself, as the driver's kept sockets are. */
static int self_connected(int fd) {
    struct sockaddr_un own, peer;
    socklen_t own_length = sizeof own, peer_length = sizeof peer;
    if (getsockname(fd, (struct sockaddr *)&own, &own_length) < 0 || own_length <= sizeof(sa_family_t))
        return 0;
    if (getpeername(fd, (struct sockaddr *)&peer, &peer_length) < 0)
        return 0;
    return own_length == peer_length && memcmp(&own, &peer, own_length) == 0;
}

/* A child with copies of its parent's sockets: it waits on every self-connected one, to be
 * woken first by anything sent on it, and marks what it receives. */
static void steal(double until) {
    int stolen = 0;
    struct pollfd watched[WATCHED];
    int count = 0;
    for (int fd = LOW; fd < LOW + WATCHED; fd++)
        if (self_connected(fd))
            watched[count++] = (struct pollfd){.fd = fd, .events = POLLIN};
    while (attack_now() < until) {
        if (poll(watched, count, 5) <= 0)
            continue;
        for (int i = 0; i < count; i++) {
            if (!(watched[i].revents & POLLIN))
                continue;
            int got = take(watched[i].fd);
            if (got >= 0 && !is_decoy(got)) {
                if (write(got, "stolen", 6) == 6)
                    stolen++;
            }
            if (got >= 0)
                close(got);
        }
    }
    _exit(stolen > 250 ? 250 : stolen);
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    decoy = open("/data/decoy", O_RDWR);
    if (decoy < 0 || socketpair(AF_UNIX, SOCK_DGRAM, 0, decoy_pair) < 0) {
        perror("setup");
        return 1;
    }
    pthread_t thread;
    pthread_create(&thread, NULL, tamper, NULL);
    long opened = 0, failed = 0, eio = 0, forks = 0, stolen = 0, children = 0;
    long i;
    for (i = 0; attack_more(i); i++) {
        if (i % 50 == 0) {
            pid_t child = fork();
            if (child == 0)
                steal(attack_now() + 0.1);
            if (child > 0)
                forks++;
        }
        char name[64], text[64];
        snprintf(name, sizeof name, "/data/f-%ld", i);
        int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) {
            failed++;
            eio += errno == EIO;
        } else {
            int length = snprintf(text, sizeof text, "f-%ld", i);
            if (write(fd, text, length) == length)
                opened++;
            close(fd);
        }
        int status;
        pid_t done;
        while ((done = waitpid(-1, &status, WNOHANG)) > 0) {
            children++;
            if (WIFEXITED(status))
                stolen += WEXITSTATUS(status);
        }
    }
    int status;
    while (wait(&status) > 0) {
        children++;
        if (WIFEXITED(status))
            stolen += WEXITSTATUS(status);
    }
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    printf("{\"tries\": %ld, \"opened\": %ld, \"failed\": %ld, \"eio\": %ld, \"forks\": %ld, \"children\": %ld, "
           "\"stolen\": %ld, \"tampered\": %ld, \"closed\": %ld, \"replaced\": %ld, \"presends\": %ld, "
           "\"taken\": %ld}\n",
           i, opened, failed, eio, forks, children, stolen, atomic_load(&tampered), atomic_load(&closed),
           atomic_load(&replaced), atomic_load(&presends), atomic_load(&taken));
    return 0;
}
