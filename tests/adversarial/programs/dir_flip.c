/* A mkdir's, rmdir's or metadata change's path flipped, while the manager serves it, between a
 * name in the VM and a host name outside the VM's view (the C loop serves those of a plain path,
 * hvfs/_native/served_dirs.h and served_pathmeta.h; the rest is Python's).
 *
 * dir_flip TRIES SECONDS VOLUME OP FORBIDDEN [FORBIDDEN...]
 *
 * OP is "mkdir", "rmdir" or "meta", and the name it works on in VOLUME (its cwd) "made", "keep"
 * or "victim". Each FORBIDDEN spells a host name next to the volume (its host path, "../" ones
 * up and out of the volume, through a symlink on the volume to its directory); a thread flips a
 * buffer between the allowed name (spelt absolute or relative as FORBIDDEN is) and FORBIDDEN,
 * while the main thread calls OP on the buffer: mkdir and mkdirat (then removes the volume's
 * directory itself), rmdir and unlinkat(AT_REMOVEDIR) (after making the volume's directory
 * itself), or in turn chmod and fchmodat (to alternate modes), lchown and fchownat with
 * AT_SYMLINK_NOFOLLOW (to its own ids), utimensat with and without AT_SYMLINK_NOFOLLOW (to times
 * of the try's own). FORBIDDEN "swap:HOSTDIR" is the other race: the name is in VOLUME/swapdir,
 * which a thread exchanges (RENAME_EXCHANGE) with a symlink to HOSTDIR ("secret" for "meta").
 *
 * Counters: "inside" (the call changed the volume's name), "refused" (an error), "escapes" (a
 * call that succeeded while the volume's name is not as it made it: something else changed),
 * "tries", "at_tries" (the *at calls among them).
 */
#include "flip.h"

static const char *volume, *op, *name;
static long at_tries;

static flip_racer aim(const char *target) {
    name = strcmp(op, "mkdir") == 0 ? "made" : strcmp(op, "rmdir") == 0 ? "keep" : "victim";
    if (strncmp(target, "swap:", 5) != 0) {
        flip_aim(volume, target, name);
        return flip;
    }
    if (strcmp(op, "meta") == 0)
        name = "secret";
    return flip_aim_swapdir(volume, target, name);
}

static void made(long i) {
    int got = i % 2 ? mkdirat(AT_FDCWD, buffer, 0755) : mkdir(buffer, 0755);
    struct stat there;
    if (got < 0)
        refused++;
    else if (fstatat(flip_home, name, &there, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(there.st_mode))
        inside++;
    else
        escapes++;
    unlinkat(flip_home, name, AT_REMOVEDIR);
}

static void removed(long i) {
    mkdirat(flip_home, name, 0755);
    int got = i % 2 ? unlinkat(AT_FDCWD, buffer, AT_REMOVEDIR) : rmdir(buffer);
    struct stat there;
    if (got < 0)
        refused++;
    else if (fstatat(flip_home, name, &there, AT_SYMLINK_NOFOLLOW) < 0)
        inside++;
    else
        escapes++;
}

static void changed(long i) {
    int fd = openat(flip_home, name, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0)
        close(fd);
    mode_t mode = (i / 3) % 2 ? 0640 : 0604;
    struct timespec times[2] = {{i, 0}, {i, 0}};
    int got, kind = i % 3;
    if (kind == 0)
        got = i % 2 ? fchmodat(AT_FDCWD, buffer, mode, 0) : chmod(buffer, mode);
    else if (kind == 1)
        got = i % 2 ? fchownat(AT_FDCWD, buffer, getuid(), getgid(), AT_SYMLINK_NOFOLLOW)
                    : lchown(buffer, getuid(), getgid());
    else
        got = utimensat(AT_FDCWD, buffer, times, i % 2 ? AT_SYMLINK_NOFOLLOW : 0);
    struct stat there;
    if (got < 0)
        refused++;
    else if (fstatat(flip_home, name, &there, AT_SYMLINK_NOFOLLOW) < 0)
        escapes++;
    else if (kind == 0 && (there.st_mode & 07777) != mode)
        escapes++;
    else if (kind == 2 && there.st_mtime != i)
        escapes++;
    else
        inside++;
}

static void attempt(long i) {
    at_tries += i % 2;
    if (strcmp(op, "mkdir") == 0)
        made(i);
    else if (strcmp(op, "rmdir") == 0)
        removed(i);
    else
        changed(i);
}

int main(int argc, char **argv) {
    volume = flip_begin(argc, argv, 6, "dir_flip TRIES SECONDS VOLUME OP FORBIDDEN...");
    op = argv[4];
    long tries = flip_run(argc, argv, 5, aim, attempt);
    flip_report(tries, ", \"at_tries\": %ld", at_tries);
    return 0;
}
