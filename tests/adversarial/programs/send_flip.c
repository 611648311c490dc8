/* Datagrams to a destination another thread flips: sendto() to an address whose first
 * sun_path byte flips between '/' (a host datagram socket, on a volume not marked
 * "sockets") and NUL (the same bytes as an abstract name, bound in the VM), then
 * sendmsg() whose msg_name also flips between NULL (the connected peer, in the VM) and
 * that address. The host socket must receive nothing.
 *
 * usage: send_flip TRIES SECONDS PATH
 * report: delivered (to the VM's own sockets), eacces (hvfs refused the host path),
 * other, and the same per call (sendto_*, sendmsg_*).
 */
#include "attack.h"

#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static volatile int stop;
static struct sockaddr_un target;
static struct msghdr message;

static void *flip(void *unused) {
    volatile char *first = &target.sun_path[0];
    void *volatile *name = &message.msg_name;
    for (unsigned long n = 0; !stop; n++) {
        *first = (n >> 4) & 1 ? '/' : '\0';
        *name = (n >> 5) & 1 ? (void *)&target : NULL;
    }
    return unused;
}

struct counts {
    long tries, delivered, eacces, other;
};

static void count(struct counts *c, ssize_t result) {
    c->tries++;
    if (result >= 0)
        c->delivered++;
    else if (errno == EACCES)
        c->eacces++;
    else
        c->other++;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    const char *path = argv[3];
    socklen_t length = offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1;
    target.sun_family = AF_UNIX;
    strncpy(target.sun_path, path, sizeof target.sun_path - 1);

    /* The VM's own receiver: the abstract name the flipped address spells. */
    struct sockaddr_un abstract = target;
    abstract.sun_path[0] = '\0';
    int receiver = socket(AF_UNIX, SOCK_DGRAM, 0), sender = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (bind(receiver, (struct sockaddr *)&abstract, length) || connect(sender, (struct sockaddr *)&abstract, length)) {
        perror("abstract receiver");
        return 1;
    }
    char byte = 'x', sink[16];
    struct iovec iov = {&byte, 1};
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_namelen = length;

    pthread_t flipper;
    pthread_create(&flipper, NULL, flip, NULL);
    struct counts to = {0}, msg = {0};
    double half = attack_deadline - (attack_deadline - attack_now()) / 2;
    long i;
    for (i = 0; attack_more(i); i++) {
        int first_half = attack_now() < half && i < attack_tries / 2;
        if (first_half)
            count(&to, sendto(sender, &byte, 1, MSG_DONTWAIT, (struct sockaddr *)&target, length));
        else
            count(&msg, sendmsg(sender, &message, MSG_DONTWAIT));
        while (recv(receiver, sink, sizeof sink, MSG_DONTWAIT) > 0) continue;
    }
    stop = 1;
    pthread_join(flipper, NULL);
    printf("{\"tries\": %ld, \"delivered\": %ld, \"eacces\": %ld, \"other\": %ld, "
           "\"sendto_tries\": %ld, \"sendto_delivered\": %ld, \"sendto_eacces\": %ld, "
           "\"sendmsg_tries\": %ld, \"sendmsg_delivered\": %ld, \"sendmsg_eacces\": %ld}\n",
           i, to.delivered + msg.delivered, to.eacces + msg.eacces, to.other + msg.other, to.tries, to.delivered,
           to.eacces, msg.tries, msg.delivered, msg.eacces);
    return 0;
}
