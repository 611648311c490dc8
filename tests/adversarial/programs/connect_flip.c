/* connect() of a unix socket to an address whose family another thread flips between
 * AF_INET and AF_UNIX: a decision made on one read of the address must not be what the
 * kernel acts on after reading it again. The path names a host socket on a volume not
 * marked "sockets", which the VM must never reach.
 *
 * usage: connect_flip TRIES SECONDS PATH
 * report: connected (escapes), einval (the kernel read AF_INET), eacces (hvfs refused the
 * AF_UNIX path), other.
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

static volatile int stop;
static struct sockaddr_un target;

static void *flip(void *unused) {
    volatile sa_family_t *family = &target.sun_family;
    for (unsigned long n = 0; !stop; n++) *family = (n >> 4) & 1 ? AF_UNIX : AF_INET;
    return unused;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    target.sun_family = AF_UNIX;
    strncpy(target.sun_path, argv[3], sizeof target.sun_path - 1);
    socklen_t length = offsetof(struct sockaddr_un, sun_path) + strlen(argv[3]) + 1;
    pthread_t flipper;
    pthread_create(&flipper, NULL, flip, NULL);
    long i, connected = 0, einval = 0, eacces = 0, other = 0;
    for (i = 0; attack_more(i); i++) {
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(s, (struct sockaddr *)&target, length) == 0)
            connected++;
        else if (errno == EINVAL)
            einval++;
        else if (errno == EACCES)
            eacces++;
        else
            other++;
        close(s);
    }
    stop = 1;
    pthread_join(flipper, NULL);
    printf("{\"tries\": %ld, \"connected\": %ld, \"einval\": %ld, \"eacces\": %ld, \"other\": %ld}\n", i, connected,
           einval, eacces, other);
    return 0;
}
