/* An unlink's path flipped, while the manager serves it, between a file in the VM and a host
 * file outside the VM's view (the C loop serves the unlink of a plain path,
 * hvfs/_native/served_mutate.h; the rest is Python's).
 *
 * unlink_flip TRIES SECONDS VOLUME FORBIDDEN [FORBIDDEN...]
 *
 * The program works in VOLUME (its cwd). Each FORBIDDEN spells the host's secret (its host
 * path, "../" ones up and out of the volume, through a symlink on the volume to its
 * directory); for its share of the time a thread flips a buffer between the allowed name
 * ("victim", spelt absolute or relative as FORBIDDEN is) and FORBIDDEN, while the main thread
 * makes "victim" again and unlinks the buffer (unlink and unlinkat, in turn). FORBIDDEN
 * "swap:HOSTDIR" is another race: the path is VOLUME/swapdir/secret, and the thread exchanges
 * (RENAME_EXCHANGE) swapdir, a directory of the volume, with a symlink to HOSTDIR.
 *
 * Counters: "inside" (an unlink removed the volume's file), "refused" (an error), "escapes"
 * (an unlink that succeeded while the volume's file is still there: something else went),
 * "tries", "unlinkat_tries".
 */
#include "flip.h"

static const char *volume;
static long at_tries;
static const char *victim = "victim";

static flip_racer aim(const char *target) {
    victim = "victim";
    if (strncmp(target, "swap:", 5) != 0) {
        flip_aim(volume, target, "victim");
        return flip;
    }
    victim = "secret";
    return flip_aim_swapdir(volume, target, "secret");
}

static void attempt(long i) {
    int fd = openat(flip_home, victim, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0)
        close(fd);
    int got = i % 2 ? unlinkat(AT_FDCWD, buffer, 0) : unlink(buffer);
    at_tries += i % 2;
    struct stat there;
    if (got < 0)
        refused++;
    else if (fstatat(flip_home, victim, &there, AT_SYMLINK_NOFOLLOW) < 0)
        inside++;
    else
        escapes++;
}

int main(int argc, char **argv) {
    volume = flip_begin(argc, argv, 5, "unlink_flip TRIES SECONDS VOLUME FORBIDDEN...");
    long tries = flip_run(argc, argv, 4, aim, attempt);
    flip_report(tries, ", \"unlinkat_tries\": %ld", at_tries);
    return 0;
}
