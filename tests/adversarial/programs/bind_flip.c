/* bind() of a unix socket to an address whose family another thread flips between
 * AF_INET and AF_UNIX; the path is on a read-only volume, where the VM may not make a
 * socket file. Nothing may appear there (the test looks from the host).
 *
 * usage: bind_flip TRIES SECONDS PATH
 * report: bound (escapes, if the file is the host's), einval (the kernel read AF_INET),
 * erofs (the AF_UNIX path, refused), other.
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
    long i, bound = 0, einval = 0, erofs = 0, other = 0;
    for (i = 0; attack_more(i); i++) {
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        if (bind(s, (struct sockaddr *)&target, length) == 0)
            bound++;
        else if (errno == EINVAL)
            einval++;
        else if (errno == EROFS)
            erofs++;
        else
            other++;
        close(s);
    }
    stop = 1;
    pthread_join(flipper, NULL);
    printf("{\"tries\": %ld, \"bound\": %ld, \"einval\": %ld, \"erofs\": %ld, \"other\": %ld}\n", i, bound, einval,
           erofs, other);
    return 0;
}
