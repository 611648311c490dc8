/* The two programs the exec race flips between, built from this one source.
 *
 * Built plain, it exits 0. Built with -DBLOCKLISTED (the test puts that binary's SHA-256
 * on the scanner's blocklist), it leaves a mark the host can see, a line appended to
 * /out/ran, and exits 42: if it ever runs, the scanner was beaten.
 */
#include <fcntl.h>
#include <unistd.h>

int main(void) {
#ifdef BLOCKLISTED
    int fd = open("/out/ran", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        (void)write(fd, "ran\n", 4);
        close(fd);
    }
    return 42;
#else
    return 0;
#endif
}
