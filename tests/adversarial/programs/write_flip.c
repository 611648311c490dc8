/* A write-open's path flipped, while the manager serves it, between a file in the VM and a
 * host file outside the VM's view (strict: the C loop serves a plain write-open of a file
 * that exists, hvfs/_native/served_write.h; the rest is Python's).
 *
 * write_flip TRIES SECONDS VOLUME INODE SIZE FORBIDDEN [FORBIDDEN...]
 *
 * The program works in VOLUME (its cwd), which holds "inside". INODE and SIZE are the host
 * secret's. Each FORBIDDEN spells a path to the secret (its host path, "../" ones up and out
 * of the volume, a symlink on the volume to it); for its share of the time a thread flips a
 * buffer between the allowed name ("inside", spelt absolute or relative as FORBIDDEN is) and
 * FORBIDDEN, while the main thread write-opens it with O_CREAT|O_TRUNC (O_WRONLY, O_RDWR,
 * O_APPEND, creat), writes a byte and looks at what it got (fstat). FORBIDDEN "swap" is
 * another race: the path is VOLUME/swapped, fixed, and the thread renames over it, in turn,
 * a regular file of the volume and a symlink to the secret's host path (HOST, the last
 * argument's value after "swap:").
 *
 * Counters: "inside" (the write-open got a file of the VM), "refused" (an error), "escapes"
 * (the secret's identity), "odd" (anything else), per flag set "FLAGS_tries".
 */
#include "flip.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

static const char *volume;
static unsigned long long secret;
static long long secret_size;
static struct stat mine;
static int swapping;
static long odd, tries[4];

/* The volume's "swapped" is a regular file, then a symlink to the host secret, in turn. */
static void *swap(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        int fd = open("swap.file", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0)
            close(fd);
        rename("swap.file", "swapped");
        dwell();
        unlink("swap.link");
        if (symlink(host, "swap.link") == 0)
            rename("swap.link", "swapped");
        dwell();
    }
    return NULL;
}

/* The write-open of buffer with the flags of try kind, a byte written; -errno, or 0 with what it got. */
static int write_open(int kind, struct stat *st) {
    static const int flags[3] = {O_WRONLY | O_CREAT | O_TRUNC, O_RDWR | O_CREAT | O_TRUNC,
                                 O_WRONLY | O_CREAT | O_APPEND};
    int fd = kind == 3 ? creat(buffer, 0644) : open(buffer, flags[kind] | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    int got = fstat(fd, st);
    if (write(fd, "w", 1) != 1)
        got = -1;
    close(fd);
    return got < 0 ? -EIO : 0;
}

static flip_racer aim(const char *target) {
    swapping = strncmp(target, "swap:", 5) == 0;
    if (!swapping) {
        flip_aim(volume, target, "inside");
        return flip;
    }
    snprintf(host, sizeof host, "%s", target + 5);
    snprintf(buffer, sizeof buffer, "%s/swapped", volume);
    return swap;
}

static void attempt(long i) {
    int kind = (int)(i % 4);
    struct stat st;
    int got = write_open(kind, &st);
    tries[kind]++;
    if (got < 0)
        refused++;
    else if (st.st_ino == secret || st.st_size == secret_size)
        escapes++;
    else if (st.st_ino == mine.st_ino || swapping)
        inside++; /* swapping: the volume's own file, made by the other thread */
    else
        odd++;
}

int main(int argc, char **argv) {
    volume = flip_begin(argc, argv, 7, "write_flip TRIES SECONDS VOLUME INODE SIZE FORBIDDEN...");
    secret = strtoull(argv[4], NULL, 10);
    secret_size = atoll(argv[5]);
    if (stat("inside", &mine) < 0)
        return 4;
    long count = flip_run(argc, argv, 6, aim, attempt);
    flip_report(count,
                ", \"odd\": %ld"
                ", \"wronly_tries\": %ld, \"rdwr_tries\": %ld, \"append_tries\": %ld, \"creat_tries\": %ld",
                odd, tries[0], tries[1], tries[2], tries[3]);
    return 0;
}
