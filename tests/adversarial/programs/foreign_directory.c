/* A host directory the VM holds an fd of: try to change what is in it.
 *
 * foreign_directory TRIES SECONDS SOCKET HOST_PATH
 *
 * A host process passes the directory over SOCKET (a mount marked "sockets"). The manager
 * sees a relative path's base as a path string (HOST_PATH), so the program first makes
 * decoys at that path in the VM: a FIFO and a symlink to /dev/null named like the host's
 * file F, whose write-opens the kernel would serve. Then it opens F for writing, creates,
 * removes, renames, links, chmods and sets xattrs (of F, and with setxattrat's AT_EMPTY_PATH
 * of the directory itself), relative to the directory fd and, after fchdir, to the cwd; a
 * thread meanwhile swaps the directory fd with one of the VM's own. Counters:
 * "escaped" (a call that could only have acted on the host directory returned success),
 * "refused", "own_ok" (the same call relative to the VM's own directory worked: the race
 * ran) and "reads" (reading the host file through the fd still works).
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
#include <sys/un.h>
#include <unistd.h>

#define SWAP 20

static long escaped, refused, own_ok, reads;
static int host_fd, own_fd;
static atomic_int stop;
static struct stat host_dir;

/* Whether fd SWAP (or the cwd) named the host directory when a call returned. */
static int is_host(int dirfd) {
    struct stat st;
    int r = dirfd == AT_FDCWD ? stat(".", &st) : fstat(dirfd, &st);
    return r == 0 && st.st_dev == host_dir.st_dev && st.st_ino == host_dir.st_ino;
}

/* Under the race, fd SWAP may have changed since the call: only the host tells (and the
 * opened file's own identity, below); a success there counts as the VM's own. */
static void outcome(int result, int dirfd) {
    if (result < 0)
        refused++;
    else if (dirfd != SWAP && is_host(dirfd))
        escaped++;
    else
        own_ok++;
}

static void attack(int dirfd) {
    int fd = openat(dirfd, "F", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        struct stat st;
        fstat(fd, &st);
        if (S_ISREG(st.st_mode) && st.st_dev == host_dir.st_dev) {
            escaped++;
            if (write(fd, "PWNED\n", 6) < 0) perror("write");
        } else {
            own_ok++;
        }
        close(fd);
    } else {
        refused++;
    }
    outcome(mkdirat(dirfd, "made", 0755), dirfd);
    outcome(unlinkat(dirfd, "G", 0), dirfd);
    outcome(symlinkat("/etc/passwd", dirfd, "S"), dirfd);
    outcome(renameat(dirfd, "F", dirfd, "R"), dirfd);
    outcome(fchmodat(dirfd, "F", 0777, 0), dirfd);
    outcome(set_xattr_at(dirfd, "F", 0, "user.pwned", "1"), dirfd);
    /* The directory itself: the fd, or (AT_FDCWD) the cwd, which set- and getxattrat take. */
    outcome(set_xattr_at(dirfd, "", AT_EMPTY_PATH, "user.pwned", "1"), dirfd);
    fd = openat(dirfd, "N", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    outcome(fd, dirfd);
    if (fd >= 0) close(fd);
    /* Undo what worked on the VM's own directory, so that the next try can work again. */
    unlinkat(own_fd, "made", AT_REMOVEDIR);
    unlinkat(own_fd, "S", 0);
    unlinkat(own_fd, "N", 0);
    renameat(own_fd, "R", own_fd, "F");
}

static void *swapper(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        dup2(own_fd, SWAP);
        dup2(host_fd, SWAP);
    }
    return NULL;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 5) return 2;
    host_fd = receive_fd(argv[3]);
    if (fstat(host_fd, &host_dir) < 0) return 3;
    const char *host_path = argv[4];
    char decoy[512];
    /* The decoys: the host directory's path, in the VM, with a FIFO and a symlink to a device. */
    snprintf(decoy, sizeof decoy, "mkdir -p '%s' && mkfifo '%s/F' && ln -s /dev/null '%s/G'", host_path, host_path,
             host_path);
    if (system(decoy) != 0) return 3;
    own_fd = open("/tmp/own", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (own_fd < 0) {
        mkdir("/tmp/own", 0755);
        own_fd = open("/tmp/own", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    close(openat(own_fd, "F", O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    close(openat(own_fd, "G", O_WRONLY | O_CREAT | O_CLOEXEC, 0644));

    long i = 0;
    double half = attack_now() + (attack_deadline - attack_now()) / 2;
    /* Each phase gets half of the tries as well as half of the time: a fast first phase must
     * not spend the whole budget and leave the race of the second none. */
    for (; attack_more(i) && i < attack_tries / 2 && attack_now() < half; i++) {
        attack(host_fd);
        if (fchdir(host_fd) == 0) {
            attack(AT_FDCWD);
            char buffer[8];
            int fd = open("F", O_RDONLY | O_CLOEXEC);
            if (fd >= 0 && read(fd, buffer, sizeof buffer) > 0) reads++;
            if (fd >= 0) close(fd);
            if (chdir("/") < 0) return 3;
        }
    }
    pthread_t thread;
    pthread_create(&thread, NULL, swapper, NULL);
    for (; attack_more(i); i++) attack(SWAP);
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    printf("{\"tries\": %ld, \"escaped\": %ld, \"refused\": %ld, \"own_ok\": %ld, \"reads\": %ld}\n", i, escaped,
           refused, own_ok, reads);
    return 0;
}
