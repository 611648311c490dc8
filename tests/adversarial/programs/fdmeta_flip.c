/* A metadata change through an fd whose number a second thread keeps swapping, while the
 * manager serves it, between a file of the VM and a host file the VM received from outside
 * (the C loop serves fchmod, fchown and futimens of the VM's own files,
 * hvfs/_native/served_fdmeta.h; the rest is Python's, which refuses a file from outside).
 *
 * fdmeta_flip TRIES SECONDS VOLUME SOCKET
 *
 * The program works in VOLUME (its cwd), where it makes "victim" (a write-open: a file of
 * the VM's writable view); a host process at SOCKET (a mount marked "sockets") hands it a
 * host file, open read-only (enough for fchmod, fchown and futimens natively). A thread
 * dup2s the one and the other over fd NUMBER in turn while the main thread calls fchmod,
 * fchown and futimens on NUMBER, in turn, each try with a mode or times of its own.
 *
 * Counters: "inside" (the call changed the victim: its mode or times are the try's), "refused"
 * (an error: EPERM for the host file), "escapes" (a fchmod or futimens that succeeded while the
 * victim did not take it: something else did), "tries", "chown_ok" (a fchown that succeeded:
 * the host checks the file's owner and ctime), "fchmod_tries", "futimens_tries".
 */
#include "flip.h"
#include "received_fd.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>

#define NUMBER 77

static int own_fd = -1, host_fd = -1;
static long chown_ok, fchmod_tries, futimens_tries;

static void *swap(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        dup2(own_fd, NUMBER);
        dwell();
        dup2(host_fd, NUMBER);
        dwell();
    }
    return NULL;
}

static flip_racer aim(const char *target) {
    (void)target;
    return swap;
}

static void attempt(long i) {
    struct stat there;
    int got, took = 0;
    if (i % 3 == 0) {
        mode_t mode = (i / 3) % 2 ? 0640 : 0604;
        got = fchmod(NUMBER, mode);
        took = got == 0 && fstat(own_fd, &there) == 0 && (there.st_mode & 07777) == mode;
        fchmod_tries++;
    } else if (i % 3 == 1) {
        got = fchown(NUMBER, getuid(), getgid());
        took = got == 0;
        chown_ok += got == 0;
    } else {
        struct timespec times[2] = {{.tv_sec = 1000000 + i, .tv_nsec = 0}, {.tv_sec = 2000000 + i, .tv_nsec = 0}};
        got = futimens(NUMBER, times);
        took = got == 0 && fstat(own_fd, &there) == 0 && there.st_mtim.tv_sec == 2000000 + i;
        futimens_tries++;
    }
    if (got < 0)
        refused++;
    else if (took)
        inside++;
    else
        escapes++;
}

int main(int argc, char **argv) {
    flip_begin(argc, argv, 5, "fdmeta_flip TRIES SECONDS VOLUME SOCKET");
    own_fd = open("victim", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    host_fd = receive_fd(argv[4]);
    if (own_fd < 0 || host_fd < 0)
        exit(4);
    long tries = flip_run(argc, argv, 4, aim, attempt);
    flip_report(tries, ", \"chown_ok\": %ld, \"fchmod_tries\": %ld, \"futimens_tries\": %ld", chown_ok, fchmod_tries,
                futimens_tries);
    return 0;
}
