/* Pid 1's steps into the VM, each named in the error the manager shows. */
#include "init.h"

#include <arpa/inet.h>
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#ifndef SECCOMP_FILTER_FLAG_NEW_LISTENER
#define SECCOMP_FILTER_FLAG_NEW_LISTENER (1UL << 3)
#endif
#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif

static int failed(int chan, const char *step) {
    send_error(chan, step, errno, NULL);
    return -1;
}

int enter_boot_view(int chan, const struct message *plan) {
    const char *boot = msg_string(plan, T_BOOT, 0);
    const char *hostname = msg_string(plan, T_HOSTNAME, 0);
    int spare = msg_int(plan, T_SPARE, 0) != 0; /* its hostname comes with START */
    if (boot == NULL || (hostname == NULL && !spare)) {
        send_error(chan, "plan", EINVAL, "the plan lacks the boot view or the hostname");
        return -1;
    }
    char path[4096];
    /* A mount namespace of pid 1's own: its pivot_root must not move the launcher's root
     * too (pivot_root moves every process of the namespace that stood on the old root),
     * which keeps working in the manager's view of the host after pid 1 is in the VM. */
    if (unshare(CLONE_NEWNS) < 0) return failed(chan, "private mounts");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) return failed(chan, "private mounts");
    /* The boot view came from the manager's namespace, so it is locked here; a bind of
     * it onto itself gives pivot_root a mount it may move. */
    if (mount(boot, boot, NULL, MS_BIND | MS_REC, NULL) < 0) return failed(chan, "bind boot view");
    snprintf(path, sizeof path, "%s/proc", boot);
    if (mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) return failed(chan, "mount /proc");
    snprintf(path, sizeof path, "%s/dev/pts", boot);
    if (mount("devpts", path, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620") < 0)
        return failed(chan, "mount /dev/pts");
    if (chdir(boot) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
        return failed(chan, "pivot_root");
    if (hostname != NULL && sethostname(hostname, strlen(hostname)) < 0) return failed(chan, "hostname");
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq request;
    memset(&request, 0, sizeof request);
    strcpy(request.ifr_name, "lo");
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &request) < 0) return failed(chan, "loopback");
    request.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &request) < 0) return failed(chan, "loopback");
    close(s);
    return 0;
}

int open_terminal(int chan, const struct message *plan, int *master, int *slave) {
    char name[64];
    *master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*master < 0 || grantpt(*master) < 0 || unlockpt(*master) < 0 || ptsname_r(*master, name, sizeof name) != 0)
        return failed(chan, "terminal");
    *slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*slave < 0) return failed(chan, "terminal");
    size_t length;
    const uint8_t *size = msg_get(plan, T_WINSIZE, 0, &length);
    if (size != NULL && length == sizeof(struct winsize)) ioctl(*slave, TIOCSWINSZ, size);
    return 0;
}

/* Landlock access rights, by the ABI version that brought them (the headers may be older). */
#define FS_WRITES_V1 ((1ULL << 1) | (0x1FFULL << 4)) /* write_file; remove_dir ... make_sym */
#define FS_REFER (1ULL << 13)                         /* ABI 2 */
#define FS_TRUNCATE (1ULL << 14)                      /* ABI 3 */

/* The VM may change files only beneath its own root. Everything there is the manager's
 * anyway (the boot view is read-only, its writable files are handed out by the manager),
 * so this forbids nothing a VM may do; what it stops is the kernel acting, on a call the
 * manager let continue, on a host file a magic link (/proc/self/fd/N of an inherited or
 * received fd) names after a racing thread rewrote the path: such a file lies beneath no
 * root of the VM's. A second wall, in the kernel, behind the manager's own checks; absent
 * on kernels without Landlock (5.13+, and enabled), where the manager's checks stand alone. */
static int restrict_writes(int chan) {
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    if (abi < 1) return 0;
    uint64_t handled = FS_WRITES_V1 | (abi >= 2 ? FS_REFER : 0) | (abi >= 3 ? FS_TRUNCATE : 0);
    struct {
        uint64_t handled_access_fs;
    } attr = {handled};
    int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0);
    if (ruleset < 0) return failed(chan, "landlock");
    int root = open("/", O_PATH | O_CLOEXEC | O_DIRECTORY);
    struct landlock_path_beneath_attr beneath = {.allowed_access = handled, .parent_fd = root};
    if (root < 0 || syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &beneath, 0) < 0 ||
        syscall(SYS_landlock_restrict_self, ruleset, 0) < 0)
        return failed(chan, "landlock");
    close(root);
    close(ruleset);
    return 0;
}

/* Loads the VM's filter on this process; returns the listener fd, or with T_TRACED (the
 * ptrace driver: a SECCOMP_RET_TRACE filter, which has no listener) a pidfd of this
 * process, by which the manager names the pid 1 it seizes. Until then a trapped call
 * fails with ENOSYS (RET_TRACE without a tracer), which fails closed; and pid 1 makes
 * none before the manager's START, which the manager sends only once it traces pid 1:
 * that is the wait for the tracer. */
int install_filter(int chan, const struct message *plan) {
    size_t length;
    const uint8_t *program = msg_get(plan, T_FILTER, 0, &length);
    if (program == NULL || length == 0 || length % sizeof(struct sock_filter) != 0) {
        send_error(chan, "seccomp filter", EINVAL, "the plan carries no filter");
        return -1;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return failed(chan, "no_new_privs");
    if (restrict_writes(chan) < 0) return -1;
    struct sock_fprog prog = {(unsigned short)(length / sizeof(struct sock_filter)), (struct sock_filter *)program};
    if (msg_int(plan, T_TRACED, 0)) {
        long self = syscall(SYS_pidfd_open, getpid(), 0);
        if (self < 0) return failed(chan, "pidfd_open");
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) return failed(chan, "seccomp filter");
        return (int)self;
    }
    long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                      SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, &prog);
    if (fd < 0 && errno == EINVAL) /* before 5.19: served requests are safe to repeat */
        fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
    if (fd < 0) return failed(chan, "seccomp filter");
    return (int)fd;
}

static int set_address(int s, unsigned long request, const char *name, uint32_t address) {
    struct ifreq r;
    memset(&r, 0, sizeof r);
    snprintf(r.ifr_name, sizeof r.ifr_name, "%s", name);
    struct sockaddr_in *in = (struct sockaddr_in *)&r.ifr_addr;
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = address;
    return ioctl(s, request, &r);
}

static int configure_interface(const char *name, const uint8_t *address, int prefix) {
    uint32_t mask = prefix <= 0 ? 0 : htonl(0xFFFFFFFFu << (32 - prefix));
    uint32_t raw;
    memcpy(&raw, address, 4);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    struct ifreq r;
    memset(&r, 0, sizeof r);
    snprintf(r.ifr_name, sizeof r.ifr_name, "%s", name);
    int result = -1;
    if (set_address(s, SIOCSIFADDR, name, raw) == 0 && set_address(s, SIOCSIFNETMASK, name, mask) == 0 &&
        ioctl(s, SIOCGIFFLAGS, &r) == 0) {
        r.ifr_flags |= IFF_UP;
        result = ioctl(s, SIOCSIFFLAGS, &r);
    }
    int saved = errno;
    close(s);
    errno = saved;
    return result;
}

/* What the manager set up outside the VM, applied before the command starts. */
int apply_start(int chan, const struct message *start) {
    const char *hostname = msg_string(start, T_HOSTNAME, 0); /* a spare's */
    if (hostname != NULL && sethostname(hostname, strlen(hostname)) < 0) return failed(chan, "hostname");
    const char *interface = msg_string(start, T_NET_IFACE, 0);
    if (interface != NULL) {
        size_t length;
        const uint8_t *address = msg_get(start, T_NET_ADDR, 0, &length);
        if (address == NULL || length != 4) {
            send_error(chan, "network", EINVAL, "no address for the VM's link");
            return -1;
        }
        if (configure_interface(interface, address, (int)msg_int(start, T_NET_PREFIX, 24)) < 0)
            return failed(chan, "network");
    }
    int64_t noexec = msg_int(start, T_MEMFD_NOEXEC, -1);
    if (noexec >= 0) {
        /* Code run from a memfd was never written to a file: refuse to run it (6.3+).
         * Rootless, the sysctl is the host root's; the manager then scans what runs. */
        int fd = open("/proc/sys/vm/memfd_noexec", O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            char text[16];
            int n = snprintf(text, sizeof text, "%d", (int)noexec);
            if (write(fd, text, (size_t)n) < 0 && errno != EPERM && errno != EACCES && errno != EINVAL) {
                close(fd);
                return failed(chan, "memfd_noexec");
            }
            close(fd);
        }
    }
    size_t length;
    const uint8_t *limit;
    for (size_t i = 0; (limit = msg_get(start, T_RLIMIT, i, &length)) != NULL; i++) {
        if (length != 12) continue;
        uint32_t resource;
        uint64_t value;
        memcpy(&resource, limit, 4);
        memcpy(&value, limit + 4, 8);
        struct rlimit r = {value, value};
        if (setrlimit((int)resource, &r) < 0) {
            char step[32];
            snprintf(step, sizeof step, "limit %u", resource);
            return failed(chan, step);
        }
    }
    return 0;
}
