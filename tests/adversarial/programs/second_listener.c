/* A seccomp filter of the VM's own, stacked on hvfs's, to answer its own mutations.
 *
 * second_listener TRIES SECONDS RO_FILE VOLUME HOST_FILE
 *
 * A filter that sends the VM's mutations (open, openat, creat, unlink, unlinkat, chmod,
 * fchmodat, truncate, rename, renameat, renameat2) to a listener of the VM's own: had it
 * been installed, a thread of the VM would answer each with SECCOMP_USER_NOTIF_FLAG_CONTINUE
 * and the kernel would do the call on its own, past the manager. Two threads try to
 * install it (SECCOMP_FILTER_FLAG_NEW_LISTENER, alone and with TSYNC, and from forked
 * children), while a third keeps mutating: RO_FILE and HOST_FILE must stay refused,
 * VOLUME/served-N must keep being written by the manager. Forked children then stack
 * filters that take no listener (RET_USER_NOTIF with none, RET_ALLOW, RET_TRACE, RET_LOG)
 * and check that hvfs's filter still sends their mutations to the manager. Finally it
 * looks for a listener fd in any process of the VM to steal with pidfd_getfd.
 *
 * Report: "calls" (tally.h), "installed" (a listener it got), "escaped" (a mutation that
 * succeeded where it must not), "stolen" (a listener fd taken from a process of the VM),
 * "scanned" (the fds looked at), "served" (writes to the volume, done by the manager).
 */
#include "tally.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SECCOMP_FILTER_FLAG_TSYNC_ESRCH
#define SECCOMP_FILTER_FLAG_TSYNC_ESRCH (1UL << 4)
#endif
#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif

static const char *ro_file, *volume, *host_file;
static atomic_long installed, escaped, stolen, served, scanned;
static atomic_int stop;

static const int mutations[] = {
#ifdef SYS_open
    SYS_open, SYS_creat, SYS_unlink, SYS_chmod, SYS_rename,
#endif
    SYS_openat, SYS_unlinkat, SYS_fchmodat, SYS_truncate, SYS_renameat, SYS_renameat2,
};
#define MUTATIONS (sizeof mutations / sizeof mutations[0])

/* A filter returning ACTION for the mutations and ALLOW for the rest. */
static struct sock_fprog filter(unsigned action) {
    static _Thread_local struct sock_filter code[2 * MUTATIONS + 2];
    int n = 0;
    code[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    for (unsigned i = 0; i < MUTATIONS; i++) {
        code[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, mutations[i], 0, 1);
        code[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, action);
    }
    code[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    return (struct sock_fprog){.len = n, .filter = code};
}

static long install(unsigned long flags, unsigned action) {
    struct sock_fprog program = filter(action);
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &program);
}

/* Answers every notification on LISTENER with CONTINUE: the call runs past the manager. */
static void *answer(void *listener) {
    int fd = (int)(long)listener;
    struct seccomp_notif request;
    struct seccomp_notif_resp response;
    for (;;) {
        memset(&request, 0, sizeof request);
        if (ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &request) < 0) return NULL;
        memset(&response, 0, sizeof response);
        response.id = request.id;
        response.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &response);
    }
}

/* What a listener of its own would be used for: mutations the manager must refuse. */
static void exploit(int listener) {
    atomic_fetch_add(&installed, 1);
    pthread_t thread;
    pthread_create(&thread, NULL, answer, (void *)(long)listener);
    int fd = open(ro_file, O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd >= 0) atomic_fetch_add(&escaped, 1), close(fd);
    if (chmod(ro_file, 0777) == 0) atomic_fetch_add(&escaped, 1);
    if (truncate(host_file, 0) == 0) atomic_fetch_add(&escaped, 1);
    close(listener);
    pthread_detach(thread);
}

static int i_listener, i_listener_tsync, i_listener_killable, i_listener_child;

static void *installer(void *unused) {
    (void)unused;
    for (long i = 0; attack_more(i) && !atomic_load(&stop); i++) {
        long fd = install(SECCOMP_FILTER_FLAG_NEW_LISTENER, SECCOMP_RET_USER_NOTIF);
        tally_result(i_listener, fd);
        if (fd >= 0) exploit((int)fd);
        fd = install(SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_TSYNC | SECCOMP_FILTER_FLAG_TSYNC_ESRCH,
                     SECCOMP_RET_USER_NOTIF);
        tally_result(i_listener_tsync, fd);
        if (fd >= 0) exploit((int)fd);
        fd = install(SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, SECCOMP_RET_USER_NOTIF);
        tally_result(i_listener_killable, fd);
        if (fd >= 0) exploit((int)fd);
        if ((i & 63) == 0) { /* a fresh process, single-threaded */
            pid_t child = fork();
            if (child == 0) {
                fd = install(SECCOMP_FILTER_FLAG_NEW_LISTENER, SECCOMP_RET_USER_NOTIF);
                tally_result(i_listener_child, fd);
                if (fd >= 0) exploit((int)fd);
                _exit(0);
            }
            waitpid(child, NULL, 0);
        }
    }
    return NULL;
}

static int i_ro, i_host, i_volume;

/* The mutations hvfs's filter sends to the manager: refused (RO_FILE, HOST_FILE) or served. */
static void mutate(long n) {
    int fd = open(ro_file, O_WRONLY | O_TRUNC | O_CLOEXEC);
    tally_result(i_ro, fd);
    if (fd >= 0) atomic_fetch_add(&escaped, 1), close(fd);
    fd = open(host_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    tally_result(i_host, fd);
    if (fd >= 0) atomic_fetch_add(&escaped, 1), close(fd);
    char path[512];
    snprintf(path, sizeof path, "%s/served-%ld", volume, n % 16);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    tally_result(i_volume, fd);
    if (fd >= 0 && write(fd, "served\n", 7) == 7) atomic_fetch_add(&served, 1);
    if (fd >= 0) close(fd);
}

static void *mutator(void *unused) {
    (void)unused;
    for (long i = 0; !atomic_load(&stop); i++) mutate(i);
    return NULL;
}

/* In a child: stack a filter with ACTION (no listener), then mutate as above. */
static void stacked(const char *name, unsigned action) {
    char call[64];
    snprintf(call, sizeof call, "seccomp:%s", name);
    int i_install = tally_call(call);
    snprintf(call, sizeof call, "%s:write_ro", name);
    int ro = tally_call(call);
    snprintf(call, sizeof call, "%s:write_host", name);
    int host = tally_call(call);
    snprintf(call, sizeof call, "%s:write_volume", name);
    int vol = tally_call(call);
    pid_t child = fork();
    if (child == 0) {
        tally_result(i_install, install(0, action));
        i_ro = ro, i_host = host, i_volume = vol;
        for (long i = 0; i < 200; i++) mutate(i);
        _exit(0);
    }
    waitpid(child, NULL, 0);
}

/* Any process of the VM holding a seccomp listener: take it with pidfd_getfd. */
static void steal(void) {
    int i_steal = tally_call("pidfd_getfd:listener");
    DIR *proc = opendir("/proc");
    struct dirent *p;
    while (proc && (p = readdir(proc))) {
        int pid = atoi(p->d_name);
        if (pid <= 0) continue;
        char path[300];
        snprintf(path, sizeof path, "/proc/%d/fd", pid);
        DIR *fds = opendir(path);
        struct dirent *f;
        while (fds && (f = readdir(fds))) {
            char link[600], target[256] = {0};
            snprintf(link, sizeof link, "%s/%s", path, f->d_name);
            if (readlink(link, target, sizeof target - 1) < 0) continue;
            scanned++;
            if (!strstr(target, "seccomp")) continue;
            long pidfd = syscall(SYS_pidfd_open, pid, 0);
            long fd = pidfd < 0 ? -1 : syscall(SYS_pidfd_getfd, pidfd, atoi(f->d_name), 0);
            tally_result(i_steal, fd);
            if (fd >= 0) atomic_fetch_add(&stolen, 1), close((int)fd);
            if (pidfd >= 0) close((int)pidfd);
        }
        if (fds) closedir(fds);
    }
    if (proc) closedir(proc);
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    if (argc < 6) {
        fprintf(stderr, "usage: %s TRIES SECONDS RO_FILE VOLUME HOST_FILE\n", argv[0]);
        return 2;
    }
    attack_deadline = attack_now() + (attack_deadline - attack_now()) / 2;
    ro_file = argv[3], volume = argv[4], host_file = argv[5];
    tally_init();
    i_listener = tally_call("seccomp:new_listener");
    i_listener_tsync = tally_call("seccomp:new_listener_tsync");
    i_listener_killable = tally_call("seccomp:new_listener_wait_killable_recv");
    i_listener_child = tally_call("seccomp:new_listener_in_child");
    i_ro = tally_call("racing:write_ro");
    i_host = tally_call("racing:write_host");
    i_volume = tally_call("racing:write_volume");
    pthread_t installers[2], mutating;
    pthread_create(&mutating, NULL, mutator, NULL);
    for (int t = 0; t < 2; t++) pthread_create(&installers[t], NULL, installer, NULL);
    for (int t = 0; t < 2; t++) pthread_join(installers[t], NULL);
    atomic_store(&stop, 1);
    pthread_join(mutating, NULL);
    stacked("notify_without_listener", SECCOMP_RET_USER_NOTIF);
    stacked("allow", SECCOMP_RET_ALLOW);
    stacked("trace", SECCOMP_RET_TRACE);
    stacked("log", SECCOMP_RET_LOG);
    steal();
    printf("{\"tries\": %ld, \"installed\": %ld, \"escaped\": %ld, \"stolen\": %ld, \"scanned\": %ld, "
           "\"served\": %ld, ",
           tally_total(), atomic_load(&installed), atomic_load(&escaped), atomic_load(&stolen), atomic_load(&scanned),
           atomic_load(&served));
    tally_print();
    printf("}\n");
    return 0;
}
