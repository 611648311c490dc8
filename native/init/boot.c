/* Pid 1's steps into the VM, each named in the error the manager shows. */
#include "init.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
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
    if (boot == NULL || hostname == NULL) {
        send_error(chan, "plan", EINVAL, "the plan lacks the boot view or the hostname");
        return -1;
    }
    char path[4096];
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
    if (sethostname(hostname, strlen(hostname)) < 0) return failed(chan, "hostname");
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

/* Loads the VM's filter on this process; returns the listener fd. */
int install_filter(int chan, const struct message *plan) {
    size_t length;
    const uint8_t *program = msg_get(plan, T_FILTER, 0, &length);
    if (program == NULL || length == 0 || length % sizeof(struct sock_filter) != 0) {
        send_error(chan, "seccomp filter", EINVAL, "the plan carries no filter");
        return -1;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return failed(chan, "no_new_privs");
    struct sock_fprog prog = {(unsigned short)(length / sizeof(struct sock_filter)), (struct sock_filter *)program};
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
