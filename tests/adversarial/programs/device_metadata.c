/* The VM's /dev binds the host's own device nodes: try to change their metadata.
 *
 * device_metadata TRIES SECONDS
 *
 * Each try changes the mode, owner, times or xattrs of /dev/null, /dev/full, /dev/zero or
 * /dev/tty: by path, through /proc/self/fd/N, and by fd (fchmod, fchown, futimens,
 * fsetxattr, the AT_EMPTY_PATH forms, setxattrat's and removexattrat's among them). A thread meanwhile swaps fd SWAP between /dev/null
 * and a file of the VM's own, under fchmods of that number, so that both outcomes are
 * seen. Counters: "changed" (a call meant for a device returned 0), "refused", "io" (device
 * content I/O that worked: a write to /dev/null, a read of /dev/zero, ENOSPC from /dev/full),
 * "own_ok" and "race_refused" for the race. The host checks the nodes themselves.
 */
#include "attack.h"
#include "xattrat.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/xattr.h>
#include <unistd.h>

#define SWAP 20

static const char *devices[] = {"/dev/null", "/dev/full", "/dev/zero", "/dev/tty"};
static long changed, refused, io, own_ok, race_refused;
static atomic_int stop;
static int null_fd, own_fd;

static void meta(int result) {
    if (result == 0)
        changed++;
    else
        refused++;
}

static void by_path(const char *path) {
    struct timespec old[2] = {{978307200, 0}, {978307200, 0}};
    meta(chmod(path, 0667));
    meta(chown(path, geteuid(), getegid()));
    meta(lchown(path, geteuid(), getegid()));
    meta(utimes(path, NULL));
    meta(utimensat(AT_FDCWD, path, old, 0));
    meta(setxattr(path, "user.pwned", "1", 1, 0));
    meta(removexattr(path, "user.pwned"));
    meta(set_xattr_at(AT_FDCWD, path, 0, "user.pwned", "1"));
    meta(remove_xattr_at(AT_FDCWD, path, 0, "user.pwned"));
}

static void by_fd(int fd) {
    struct timespec old[2] = {{978307200, 0}, {978307200, 0}};
    char link[32];
    meta(fchmod(fd, 0667));
    meta(fchown(fd, geteuid(), getegid()));
    meta(futimens(fd, NULL));
    meta(futimens(fd, old));
    meta(utimensat(fd, "", NULL, AT_EMPTY_PATH));
    meta(fchownat(fd, "", geteuid(), getegid(), AT_EMPTY_PATH));
    meta((int)syscall(452 /* fchmodat2 */, fd, "", 0667, AT_EMPTY_PATH));
    meta(fsetxattr(fd, "user.pwned", "1", 1, 0));
    meta(fremovexattr(fd, "user.pwned"));
    meta(set_xattr_at(fd, "", AT_EMPTY_PATH, "user.pwned", "1"));
    meta(remove_xattr_at(fd, NULL, AT_EMPTY_PATH, "user.pwned"));
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    by_path(link);
}

static void content(void) {
    char buffer[16];
    if (write(null_fd, "x", 1) == 1) io++;
    int zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    if (zero >= 0 && read(zero, buffer, sizeof buffer) == sizeof buffer && buffer[0] == 0) io++;
    if (zero >= 0) close(zero);
    int full = open("/dev/full", O_WRONLY | O_CLOEXEC);
    if (full >= 0 && write(full, "x", 1) < 0 && errno == ENOSPC) io++;
    if (full >= 0) close(full);
}

static void *swapper(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        dup2(own_fd, SWAP);
        dup2(null_fd, SWAP);
    }
    return NULL;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    own_fd = open("/tmp/own", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (null_fd < 0 || own_fd < 0) return 3;
    long i = 0;
    double half = attack_now() + (attack_deadline - attack_now()) / 2;
    /* Each phase gets half of the tries as well as half of the time: a fast first phase must
     * not spend the whole budget and leave the race of the second none. */
    for (; attack_more(i) && i < attack_tries / 2 && attack_now() < half; i++) {
        const char *device = devices[i % 4];
        by_path(device);
        int fd = open(device, (i & 4 ? O_WRONLY : O_RDONLY) | O_NOCTTY | O_CLOEXEC);
        if (fd >= 0) {
            by_fd(fd);
            close(fd);
        }
        content();
    }
    pthread_t thread;
    pthread_create(&thread, NULL, swapper, NULL);
    for (; attack_more(i); i++) {
        if (fchmod(SWAP, 0644) == 0)
            own_ok++;
        else
            race_refused++;
    }
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    printf("{\"tries\": %ld, \"changed\": %ld, \"refused\": %ld, \"io\": %ld, \"own_ok\": %ld, \"race_refused\": %ld}\n",
           i, changed, refused, io, own_ok, race_refused);
    return 0;
}
