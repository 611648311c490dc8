/* A host file the VM holds an fd of: try to write it, or change its metadata.
 *
 * inherited_fds TRIES SECONDS SOURCE
 *   SOURCE "stdin": the host file is fd 0 (hvfs run ... < F);
 *   SOURCE a socket path: a host process on a mount marked "sockets" passes the fd
 *   (SCM_RIGHTS), which is then also put at fd 0.
 *
 * Phase 1 reopens the file for writing through every magic-link spelling and changes its
 * metadata by fd and by path (the *xattrat calls' AT_EMPTY_PATH forms among them); phase 2 races a thread that swaps which file fd SWAP is
 * (the host file or one of the VM's own) against reopens and fchmods of fd SWAP.
 * Counters: "escaped" (a write-open of the host file succeeded, or a metadata change of it
 * returned 0), "refused", and for the race "own_ok" (the VM's own file was reopened) and
 * "swaps"; the host checks the file itself. "regular" says whether fd 0 was a regular file:
 * once hvfs run hands a VM a pipe as stdin, reopening that pipe is no escape.
 */
#include "attack.h"
#include "received_fd.h"
#include "xattrat.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#define SWAP 20
#define OWN "/tmp/own"

static struct stat target;
static long escaped, refused, own_ok, race_refused, meta_ok_race, meta_refused_race;
static atomic_long swaps;
static atomic_int stop;
static int own_fd;

static int is_target(int fd) {
    struct stat st;
    return S_ISREG(target.st_mode) && fstat(fd, &st) == 0 && st.st_dev == target.st_dev &&
           st.st_ino == target.st_ino;
}

/* An open for writing through `path`: an escape if it opened the host file. */
static void try_open(const char *path, int flags) {
    int fd = open(path, flags | O_CLOEXEC, 0644);
    if (fd < 0) {
        refused++;
        return;
    }
    if (is_target(fd)) {
        escaped++;
        if (write(fd, "PWNED\n", 6) < 0) perror("write");
    }
    close(fd);
}

static void try_openat2(int dirfd, const char *path, int flags) {
    struct { unsigned long long flags, mode, resolve; } how = {(unsigned long long)(flags | O_CLOEXEC), 0, 0};
    int fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    if (fd < 0) {
        refused++;
        return;
    }
    if (is_target(fd)) escaped++;
    close(fd);
}

/* A metadata change meant for the host file: 0 is an escape. */
static void meta(int result) {
    if (result == 0 && S_ISREG(target.st_mode))
        escaped++;
    else
        refused++;
}

static void by_fd(int fd) {
    struct timespec old[2] = {{978307200, 0}, {978307200, 0}};
    meta(fchmod(fd, 04777));
    meta(fchown(fd, geteuid(), getegid()));
    meta(fchown(fd, 1234, 1234));
    meta(futimens(fd, NULL));
    meta(futimens(fd, old));
    meta((int)syscall(SYS_utimensat, fd, NULL, NULL, 0));
    meta(utimensat(fd, "", NULL, AT_EMPTY_PATH));
    meta(fsetxattr(fd, "user.pwned", "1", 1, 0));
    meta(fremovexattr(fd, "user.hvfs"));
    meta(set_xattr_at(fd, "", AT_EMPTY_PATH, "user.pwned", "1"));
    meta(set_xattr_at(fd, NULL, AT_EMPTY_PATH, "user.pwned", "1"));
    meta(remove_xattr_at(fd, "", AT_EMPTY_PATH, "user.hvfs"));
    meta(fchownat(fd, "", geteuid(), getegid(), AT_EMPTY_PATH));
    meta((int)syscall(452 /* fchmodat2 */, fd, "", 0777, AT_EMPTY_PATH));
    meta(ftruncate(fd, 0));
}

static void by_path(const char *path) {
    meta(chmod(path, 04777));
    meta(chown(path, geteuid(), getegid()));
    meta(utimes(path, NULL));
    meta(truncate(path, 0));
    meta(setxattr(path, "user.pwned", "1", 1, 0));
    meta(removexattr(path, "user.hvfs"));
    meta(set_xattr_at(AT_FDCWD, path, 0, "user.pwned", "1"));
    meta(remove_xattr_at(AT_FDCWD, path, 0, "user.hvfs"));
}

static void *swapper(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        dup2(own_fd, SWAP);
        dup2(0, SWAP);
        atomic_fetch_add(&swaps, 1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 4) return 2;
    if (strcmp(argv[3], "stdin") != 0) {
        int fd = receive_fd(argv[3]);
        dup2(fd, 0);
        close(fd);
    }
    if (fstat(0, &target) < 0) return 3;
    own_fd = open(OWN, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    symlink("/proc/self/fd/0", "/tmp/link");
    symlink("/dev/fd/0", "/tmp/link2");
    symlink("/proc/self/fd", "/tmp/fds");
    int procfds = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
    int procdir = open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC);
    char spellings[16][96];
    int n = 0;
    pid_t pid = getpid(), tid = (pid_t)syscall(SYS_gettid);
    snprintf(spellings[n++], 96, "/proc/self/fd/0");
    snprintf(spellings[n++], 96, "/proc/thread-self/fd/0");
    snprintf(spellings[n++], 96, "/proc/%d/fd/0", pid);
    snprintf(spellings[n++], 96, "/proc/%d/task/%d/fd/0", pid, tid);
    snprintf(spellings[n++], 96, "/proc/self/task/%d/fd/0", tid);
    snprintf(spellings[n++], 96, "/dev/fd/0");
    snprintf(spellings[n++], 96, "/dev/stdin");
    snprintf(spellings[n++], 96, "//proc/./self//fd/0");
    snprintf(spellings[n++], 96, "/proc/self/fd/../fd/0");
    snprintf(spellings[n++], 96, "/proc/self/cwd/../proc/self/fd/0");
    snprintf(spellings[n++], 96, "/tmp/link");
    snprintf(spellings[n++], 96, "/tmp/link2");
    snprintf(spellings[n++], 96, "/tmp/fds/0");
    snprintf(spellings[n++], 96, "/proc/self/root/proc/self/fd/0");
    const int flags[] = {O_WRONLY, O_RDWR, O_RDONLY | O_TRUNC, O_WRONLY | O_APPEND, O_WRONLY | O_CREAT | O_TRUNC};
    const int nflags = sizeof flags / sizeof *flags;

    long i = 0;
    double half = attack_now() + (attack_deadline - attack_now()) / 2;
    /* Each phase gets half of the tries as well as half of the time: a fast first phase must
     * not spend the whole budget and leave the race of the second none. */
    for (; attack_more(i) && i < attack_tries / 2 && attack_now() < half; i++) {
        const char *path = spellings[i % n];
        int f = flags[(i / n) % nflags];
        try_open(path, f);
        try_openat2(AT_FDCWD, path, f);
        if (i % n == 0) {
            int fd = openat(procfds, "0", f | O_CLOEXEC);
            if (fd >= 0 && is_target(fd)) escaped++;
            if (fd >= 0) close(fd); else refused++;
            fd = openat(procdir, "self/fd/0", f | O_CLOEXEC);
            if (fd >= 0 && is_target(fd)) escaped++;
            if (fd >= 0) close(fd); else refused++;
            by_fd(0);
        }
        by_path(path);
    }
    long phase1 = i;

    pthread_t thread;
    pthread_create(&thread, NULL, swapper, NULL);
    char swapped[32];
    snprintf(swapped, sizeof swapped, "/proc/self/fd/%d", SWAP);
    for (; attack_more(i); i++) {
        int fd = open(swapped, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (is_target(fd)) {
                escaped++;
                if (write(fd, "PWNED\n", 6) < 0) perror("write");
            } else {
                own_ok++;
            }
            close(fd);
        } else {
            race_refused++;
        }
        if (fchmod(SWAP, 0600) == 0)
            meta_ok_race++;
        else
            meta_refused_race++;
    }
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    printf("{\"regular\": %d, \"tries\": %ld, \"phase1\": %ld, \"escaped\": %ld, \"refused\": %ld, \"own_ok\": %ld, "
           "\"race_refused\": %ld, \"meta_ok_race\": %ld, \"meta_refused_race\": %ld, \"swaps\": %ld}\n",
           S_ISREG(target.st_mode) ? 1 : 0, i, phase1, escaped, refused, own_ok, race_refused, meta_ok_race, meta_refused_race,
           atomic_load(&swaps));
    return 0;
}
