/* A directory of the named path exchanged with a symlink out of the VM, while the main thread
 * reads a link through it and checks access to it (strict: the C loop serves readlink and
 * access of a plain path: hvfs/_native/served_link.h).
 *
 * link_swap TRIES SECONDS VOLUME LINK [LINK...]
 *
 * VOLUME holds the directory "d", whose "secret" is a symlink to "../gone" (nothing), and each
 * LINK, a symlink whose target spells a host directory outside the VM's view (its host path,
 * "../" up and out of the volume) holding a regular file "secret". For each LINK in turn (its
 * share of the tries), a thread exchanges "d" and LINK (renameat2 RENAME_EXCHANGE, served by
 * the manager) while the main thread calls readlink and readlinkat of "d/secret" (from the
 * cwd, VOLUME's fd, and by its absolute path), and access, faccessat and faccessat2 of it,
 * following it and not. Natively, in the VM, "d/secret" is the dangling symlink, or nothing
 * (LINK resolves to nothing there).
 *
 * Counters: "inside" (the link's text, or access to the link itself), "refused" (ENOENT),
 * "escapes" (EINVAL from a readlink, which a regular file gives; access granted to what the
 * dangling link would follow), "odd" (anything else), "swaps".
 */
#include "attack.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define INSIDE "../gone"

static atomic_int stop;
static atomic_long swaps;
static const char *link_now;
static pthread_mutex_t aiming = PTHREAD_MUTEX_INITIALIZER;

static void *swap(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        pthread_mutex_lock(&aiming);
        if (syscall(SYS_renameat2, AT_FDCWD, "d", AT_FDCWD, link_now, 2 /* RENAME_EXCHANGE */) == 0)
            atomic_fetch_add(&swaps, 1);
        pthread_mutex_unlock(&aiming);
    }
    return NULL;
}

/* "d" and the link back in place. */
static int settle(const char *aim) {
    struct stat st;
    if (lstat("d", &st) < 0)
        return -1;
    if (S_ISLNK(st.st_mode) && syscall(SYS_renameat2, AT_FDCWD, "d", AT_FDCWD, aim, 2) < 0)
        return -1;
    return 0;
}

enum { INSIDE_SEEN, REFUSED, ESCAPED, ODD };

/* What call k of "d/secret" found. */
static int look(int dir, const char *absolute, int k) {
    char text[256];
    long got;
    switch (k) {
    case 0: got = syscall(SYS_readlink, "d/secret", text, sizeof text); break;
    case 1: got = syscall(SYS_readlinkat, dir, "d/secret", text, sizeof text); break;
    case 2: got = syscall(SYS_readlink, absolute, text, 3); break; /* cut short: "../" */
    case 3: got = syscall(SYS_access, "d/secret", F_OK); break;
    case 4: got = syscall(SYS_faccessat, dir, "d/secret", R_OK); break;
    case 5: got = syscall(SYS_faccessat2, dir, "d/secret", R_OK, AT_EACCESS); break;
    default: got = syscall(SYS_faccessat2, AT_FDCWD, absolute, F_OK, AT_SYMLINK_NOFOLLOW); break;
    }
    if (got < 0)
        return errno == ENOENT ? REFUSED : errno == EINVAL && k <= 2 ? ESCAPED : ODD;
    if (k == 2)
        return got == 3 && memcmp(text, INSIDE, 3) == 0 ? INSIDE_SEEN : ODD;
    if (k <= 1)
        return got == (long)strlen(INSIDE) && memcmp(text, INSIDE, (size_t)got) == 0 ? INSIDE_SEEN : ODD;
    return k == 6 ? INSIDE_SEEN : ESCAPED; /* the link followed found something */
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 5) {
        fprintf(stderr, "usage: link_swap TRIES SECONDS VOLUME LINK...\n");
        return 2;
    }
    if (chdir(argv[3]) < 0)
        return 3;
    char absolute[512];
    snprintf(absolute, sizeof absolute, "%s/d/secret", argv[3]);
    int links = argc - 4, dir = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0 || settle(argv[4]) < 0)
        return 4;
    link_now = argv[4];
    pthread_t swapper;
    pthread_create(&swapper, NULL, swap, NULL);
    long i = 0, counts[4] = {0};
    long share = attack_tries / links + 1;
    for (; attack_more(i); i++) {
        if (i % share == 0 && i > 0) { /* the next link: the exchanges paused, "d" put back */
            pthread_mutex_lock(&aiming);
            if (settle(link_now) < 0) {
                pthread_mutex_unlock(&aiming);
                break;
            }
            link_now = argv[4 + (i / share) % links];
            pthread_mutex_unlock(&aiming);
        }
        counts[look(dir, absolute, (int)(i % 7))]++;
    }
    atomic_store(&stop, 1);
    pthread_join(swapper, NULL);
    printf("{\"tries\": %ld, \"inside\": %ld, \"refused\": %ld, \"escapes\": %ld, \"odd\": %ld, \"swaps\": %ld}\n", i,
           counts[INSIDE_SEEN], counts[REFUSED], counts[ESCAPED], counts[ODD], atomic_load(&swaps));
    return 0;
}
