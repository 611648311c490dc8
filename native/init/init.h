/* hvfs-init: a VM's launcher and pid 1.
 *
 * The manager spawns this program (posix_spawn, so no Python code runs between fork and
 * exec) in the manager's user namespace with a clean environment and its channel to the
 * manager as fd 3. It is exec'd there, before the VM's user namespace exists, so the
 * kernel records the manager's user namespace as the owner of its memory (mm->user_ns).
 * It then makes itself non-dumpable: ptrace, process_vm_readv, pidfd_getfd and
 * /proc/PID/{mem,environ} on it or on its children before they exec need CAP_SYS_PTRACE
 * in the manager's user namespace, which the VM's root never has and the manager does.
 * Its memory holds only what it was sent: the VM's own command and settings.
 *
 * As the launcher it unshares the VM's namespaces, lets the manager write the id maps,
 * and forks pid 1; then it is the VM's shim (shim.c): it holds what must outlive a
 * manager (the seccomp listener, the VM's writable view, the manager's end of pid 1's
 * channel), gives them to the next manager, answers the VM's requests with EIO when no
 * manager came back in time, and reports pid 1's exit status. Pid 1 enters the
 * boot view, installs the seccomp filter, hands the listener to the manager, starts the
 * command, reaps, forwards signals, and starts the processes of `hvfs exec`.
 *
 * Messages (proto.c) are one SOCK_SEQPACKET datagram each: records of
 * [u8 tag][u32 length, little-endian][bytes], the first one the message type; strings
 * end with a NUL inside their record. hvfs/sandbox/protocol.py is the other side.
 *
 * Once pid 1 has installed the seccomp filter, it never passes fds with SCM_RIGHTS: every
 * sendmsg is a request to the manager, which is not serving the VM yet when pid 1 hands
 * it the listener. Pid 1 names its fds instead (T_FD), sending with send(), which the
 * filter lets through; the manager takes them with pidfd_getfd and says so (MSG_TAKEN,
 * or MSG_START for the listener), and only then pid 1 closes them.
 */
#ifndef HVFS_INIT_H
#define HVFS_INIT_H

#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Message types: manager to init, then init to manager. */
enum {
    MSG_PLAN = 1,
    MSG_MAPPED = 2,
    MSG_START = 3,
    MSG_EXEC = 4,
    MSG_TAKEN = 5,
    MSG_DEPOSIT = 6,
    MSG_WITHDRAW = 7,
    MSG_UNSHARED = 10,
    MSG_INIT = 11,
    MSG_READY = 12,
    MSG_STARTED = 13,
    MSG_ERROR = 14,
    MSG_EXEC_STARTED = 15,
    MSG_EXEC_EXITED = 16,
    MSG_DEPOSITED = 17,
    MSG_VM_EXITED = 18,
};

/* Record tags. */
enum {
    T_TYPE = 1,
    T_HOSTNAME = 2,
    T_BOOT = 3,
    T_WORKDIR = 4,
    T_USER = 5,
    T_TTY = 6,
    T_WINSIZE = 7,
    T_GRACE_MS = 8,
    T_ARG = 9,
    T_ENV = 10,
    T_HOME_SET = 11,
    T_FILTER = 12,
    T_RLIMIT = 13,
    T_MEMFD_NOEXEC = 14,
    T_NET_IFACE = 15,
    T_NET_ADDR = 16,
    T_NET_PREFIX = 17,
    T_ID = 18,
    T_PID = 19,
    T_CODE = 20,
    T_STEP = 21,
    T_ERRNO = 22,
    T_TEXT = 23,
    T_FD = 24,
    T_SHIM = 25,
    T_WAIT_MS = 26,
    T_ROLE = 27,
    T_TRACED = 28,
    T_SPARE = 29, /* a warm spare: the run's program, stdio and hostname come with START */
    T_MOUNTS = 30, /* pid 1's mount namespace (an nsfs fd), for the manager to hold */
};

#define MAX_MESSAGE (1 << 20)
#define MAX_FDS 32
#define SHIM_FD 3 /* the launcher's link to the manager */
#define VM_FD 4   /* pid 1's channel to the manager */

struct message {
    uint8_t *data;
    size_t size;
    int type;
    int fds[MAX_FDS];
    int nfds;
};

struct builder {
    uint8_t *data;
    size_t size;
    size_t capacity;
};

/* proto.c */
int msg_receive(int chan, struct message *m);
void msg_free(struct message *m);
const uint8_t *msg_get(const struct message *m, int tag, size_t index, size_t *length);
size_t msg_count(const struct message *m, int tag);
const char *msg_string(const struct message *m, int tag, size_t index);
int64_t msg_int(const struct message *m, int tag, int64_t missing);
char **msg_strings(const struct message *m, int tag);
void build_begin(struct builder *b, int type);
void build_bytes(struct builder *b, int tag, const void *data, size_t length);
void build_string(struct builder *b, int tag, const char *text);
void build_int(struct builder *b, int tag, int64_t value);
int build_send(int chan, struct builder *b, const int *fds, int nfds);
int send_simple(int chan, int type);
void send_error(int chan, const char *step, int error, const char *text);

/* boot.c: each returns 0, or -1 after sending an error naming the step. */
int enter_boot_view(int chan, const struct message *plan);
int open_terminal(int chan, const struct message *plan, int *master, int *slave);
int install_filter(int chan, const struct message *plan);
int apply_start(int chan, const struct message *start);

/* spawn.c */
struct program {
    char **argv;
    char **env;
    const char *workdir;
    const char *user;
    int home_set;
};
int program_from(const struct message *m, struct program *p);
void program_free(struct program *p);
pid_t spawn(const struct program *p, int terminal, const int *stdio);

void default_handled_signals(void);
int exit_code(int status);
double now(void);

/* shim.c */
__attribute__((noreturn)) void shim(int link, const struct message *plan, pid_t pid1);

#endif
