/* One name of the volume exchanged with a symlink out of the VM, while the main thread stats
 * that name from its directory's fd and from its cwd (strict: the C loop serves these stats,
 * a name of one component with one fstatat or statx: hvfs/_native/served_quick.h).
 *
 * name_swap TRIES SECONDS VOLUME SIZE LINK [LINK...]
 *
 * VOLUME holds the file "f" and each LINK, a symlink whose target spells a host file outside
 * the VM's view (its host path, "../" up and out of the volume); SIZE is that file's size,
 * which nothing in the VM has. For each LINK in turn (its share of the tries), a thread
 * exchanges "f" and LINK (renameat2 RENAME_EXCHANGE, itself served by the manager) while the
 * main thread calls fstatat and statx on "f" from VOLUME's fd, following and not, and stat
 * on "f" from the cwd. Natively, in the VM, "f" is then the file, or the symlink, which
 * resolves to nothing there: a stat that follows it fails, one that does not finds the link.
 *
 * Counters: "inside" (the file), "links" (the symlink itself, not followed), "refused" (an
 * error), "escapes" (the host file's size), "odd" (anything else), "swaps".
 */
#include "attack.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static atomic_int stop;
static atomic_long swaps;
static const char *link_now;
static pthread_mutex_t aiming = PTHREAD_MUTEX_INITIALIZER;

static void *swap(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        pthread_mutex_lock(&aiming);
        if (syscall(SYS_renameat2, AT_FDCWD, "f", AT_FDCWD, link_now, 2 /* RENAME_EXCHANGE */) == 0)
            atomic_fetch_add(&swaps, 1);
        pthread_mutex_unlock(&aiming);
    }
    return NULL;
}

/* "f" and the link back in place (an even number of exchanges of "f" and aim). */
static int settle(const char *aim) {
    struct stat st;
    if (lstat("f", &st) < 0)
        return -1;
    if (S_ISLNK(st.st_mode) && syscall(SYS_renameat2, AT_FDCWD, "f", AT_FDCWD, aim, 2) < 0)
        return -1;
    return 0;
}

/* The size and kind of "f" as call k found it: 0, or -errno. */
static int look(int dir, int k, long long *size, mode_t *mode) {
    struct stat st;
    char raw[256];
    int got;
    switch (k) {
    case 0: got = fstatat(dir, "f", &st, 0); break;
    case 1: got = fstatat(dir, "f", &st, AT_SYMLINK_NOFOLLOW); break;
    case 2: got = stat("f", &st); break;
    default:
        if (syscall(SYS_statx, dir, "f", k == 3 ? 0 : AT_SYMLINK_NOFOLLOW, 0x7ff, raw) < 0)
            return -errno;
        uint16_t kind;
        memcpy(&kind, raw + 28, 2);
        memcpy(size, raw + 40, 8);
        *mode = kind;
        return 0;
    }
    if (got < 0)
        return -errno;
    *size = st.st_size;
    *mode = st.st_mode;
    return 0;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 6) {
        fprintf(stderr, "usage: name_swap TRIES SECONDS VOLUME SIZE LINK...\n");
        return 2;
    }
    if (chdir(argv[3]) < 0)
        return 3;
    long long secret_size = atoll(argv[4]);
    int links = argc - 5, dir = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct stat mine;
    if (dir < 0 || settle(argv[5]) < 0 || stat("f", &mine) < 0)
        return 4;
    link_now = argv[5];
    pthread_t swapper;
    pthread_create(&swapper, NULL, swap, NULL);
    long i = 0, inside = 0, linked = 0, refused = 0, escapes = 0, odd = 0;
    long share = attack_tries / links + 1;
    for (; attack_more(i); i++) {
        if (i % share == 0 && i > 0) { /* the next link: the exchanges paused, "f" put back */
            pthread_mutex_lock(&aiming);
            if (settle(link_now) < 0 || stat("f", &mine) < 0) {
                pthread_mutex_unlock(&aiming);
                break;
            }
            link_now = argv[5 + (i / share) % links];
            pthread_mutex_unlock(&aiming);
        }
        long long size = -1;
        mode_t mode = 0;
        int got = look(dir, (int)(i % 5), &size, &mode);
        if (got < 0)
            refused++;
        else if (size == secret_size)
            escapes++;
        else if (S_ISLNK(mode))
            linked++;
        else if (S_ISREG(mode) && size == mine.st_size)
            inside++;
        else
            odd++;
    }
    atomic_store(&stop, 1);
    pthread_join(swapper, NULL);
    printf("{\"tries\": %ld, \"inside\": %ld, \"links\": %ld, \"refused\": %ld, \"escapes\": %ld, \"odd\": %ld, "
           "\"swaps\": %ld}\n",
           i, inside, linked, refused, escapes, odd, atomic_load(&swaps));
    return 0;
}
