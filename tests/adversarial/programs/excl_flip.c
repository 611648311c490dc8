/* An O_CREAT|O_EXCL creation's path flipped, while the manager serves it, between a new name
 * in the VM and a new name in a host directory outside the VM's view (the C loop serves a
 * plain creation, hvfs/_native/served_write.h; the rest is Python's).
 *
 * excl_flip TRIES SECONDS VOLUME FORBIDDEN [FORBIDDEN...]
 *
 * The program works in VOLUME (its cwd). Each FORBIDDEN spells a new name in the host
 * directory (its host path, "../" ones up and out of the volume, through a symlink on the
 * volume to it); for its share of the time a thread flips a buffer between the allowed name
 * ("made", spelt absolute or relative as FORBIDDEN is) and FORBIDDEN, while the main thread
 * creates it (O_WRONLY|O_CREAT|O_EXCL, as tar does), writes a byte, and looks whether what it
 * made is VOLUME's "made" (then removes it for the next try). FORBIDDEN "swap:HOSTDIR" is
 * another race: the path is VOLUME/swapdir/made, and the thread exchanges (RENAME_EXCHANGE)
 * swapdir, a directory of the volume, with a symlink to HOSTDIR, again and again.
 *
 * Counters: "inside" (a creation made the volume's file), "refused" (an error), "escapes"
 * (a file made that is not the volume's), "tries".
 */
#include "flip.h"

#include <errno.h>

static const char *volume;
static long exists;

static flip_racer aim(const char *target) {
    if (strncmp(target, "swap:", 5) != 0) {
        flip_aim(volume, target, "made");
        return flip;
    }
    return flip_aim_swapdir(volume, target, "made");
}

static void attempt(long i) {
    (void)i;
    int fd = open(buffer, O_WRONLY | O_CREAT | O_EXCL | O_NOCTTY | O_NONBLOCK | O_CLOEXEC, 0600);
    if (fd < 0) {
        refused++;
        exists += errno == EEXIST;
        return;
    }
    struct stat got, there;
    if (fstat(fd, &got) < 0 || write(fd, "w", 1) != 1)
        got.st_ino = 0;
    close(fd);
    if (fstatat(flip_home, "made", &there, AT_SYMLINK_NOFOLLOW) == 0 && there.st_ino == got.st_ino) {
        inside++;
        unlinkat(flip_home, "made", 0);
    } else {
        escapes++;
    }
}

int main(int argc, char **argv) {
    volume = flip_begin(argc, argv, 5, "excl_flip TRIES SECONDS VOLUME FORBIDDEN...");
    long tries = flip_run(argc, argv, 4, aim, attempt);
    flip_report(tries, ", \"exists\": %ld", exists);
    return 0;
}
