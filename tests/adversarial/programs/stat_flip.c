/* A stat's (or a read-only open's) path flipped, while the manager serves it, between a
 * file in the VM and a host file outside the VM's view (strict: every stat and open is
 * served; the C loop serves these).
 *
 * stat_flip TRIES SECONDS VOLUME INODE SIZE FORBIDDEN [FORBIDDEN...]
 *
 * The program works in VOLUME (its cwd), which holds "inside" (or the file $FLIP_INSIDE names,
 * relative to VOLUME: a name in a directory, say). INODE and SIZE are the host
 * secret's: a stat that returns them reached it, an escape. Each FORBIDDEN spells a path to
 * the secret (its host path, "../" ones up and out of the volume, a symlink on the volume
 * to it); for its share of the time, a thread flips a buffer between the allowed name
 * ("inside", spelt absolute or relative as FORBIDDEN is) and FORBIDDEN, while the main
 * thread calls stat, lstat and statx on it, and opens it O_RDONLY (then fstat of the fd it
 * got). The manager reads the path once, resolves the bytes it read in the VM's root, and
 * writes back what it found there, or installs what it opened there.
 *
 * Counters: "inside" (the stat of inside), "refused" (an error: no such file in the VM),
 * "escapes" (the secret's identity), "odd" (anything else), per call "CALL_tries".
 */
#include "flip.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#ifndef STATX_BASIC_STATS
#define STATX_BASIC_STATS 0x7ff
#endif

static const char *volume, *inside_name = "inside";
static unsigned long long secret;
static long long secret_size;
static struct stat mine;
static long odd, tries[4];

/* The inode and size of the path as call (0 stat, 1 lstat, 2 statx, 3 open) found it; -errno. */
static int look(int call, unsigned long long *inode, long long *size) {
    if (call == 3) {
        struct stat st;
        int fd = open(buffer, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return -errno;
        int got = fstat(fd, &st);
        close(fd);
        if (got < 0) return -EIO;
        *inode = st.st_ino;
        *size = st.st_size;
        return 0;
    }
    if (call == 2) {
        char raw[256];
        if (syscall(SYS_statx, AT_FDCWD, buffer, 0, STATX_BASIC_STATS, raw) < 0) return -errno;
        memcpy(inode, raw + 32, 8);
        memcpy(size, raw + 40, 8);
        return 0;
    }
    struct stat st;
    if ((call ? lstat(buffer, &st) : stat(buffer, &st)) < 0) return -errno;
    *inode = st.st_ino;
    *size = st.st_size;
    return 0;
}

static flip_racer aim(const char *target) {
    flip_aim(volume, target, inside_name);
    return flip;
}

static void attempt(long i) {
    int call = (int)(i % 4);
    unsigned long long inode = 0;
    long long size = -1;
    int got = look(call, &inode, &size);
    tries[call]++;
    if (got < 0)
        refused++;
    else if (inode == secret || size == secret_size)
        escapes++;
    else if (inode == mine.st_ino)
        inside++;
    else
        odd++;
}

int main(int argc, char **argv) {
    volume = flip_begin(argc, argv, 7, "stat_flip TRIES SECONDS VOLUME INODE SIZE FORBIDDEN...");
    secret = strtoull(argv[4], NULL, 10);
    secret_size = atoll(argv[5]);
    if (getenv("FLIP_INSIDE"))
        inside_name = getenv("FLIP_INSIDE");
    if (stat(inside_name, &mine) < 0)
        return 4;
    long count = flip_run(argc, argv, 6, aim, attempt);
    flip_report(count,
                ", \"odd\": %ld"
                ", \"stat_tries\": %ld, \"lstat_tries\": %ld, \"statx_tries\": %ld, \"open_tries\": %ld",
                odd, tries[0], tries[1], tries[2], tries[3]);
    return 0;
}
