/* Every way around the manager that the filter refuses, tried again and again, from
 * several threads at once, with arguments aimed at the host and at a :ro mount.
 *
 * refused_calls TRIES SECONDS RO VOLUME [handle=TYPE:HEX ...] [sweep=NAME:NR ...]
 *   io_uring (and, had the ring been given, an IORING_OP_OPENAT of RO/f for writing);
 *   name_to_handle_at, and open_by_handle_at of the handles given (a host file's and a
 *   host directory's, made on the host) from mount fds of VOLUME, RO and /; the mount
 *   family against RO (remount read-write, clear MOUNT_ATTR_RDONLY, detach, clone the
 *   tree and write through it); unshare, clone and setns with each namespace flag, clone3
 *   while a thread flips its flags in memory; chroot, bpf, userfaultfd, perf_event_open,
 *   keyctl, add_key, request_key; and every NAME:NR of the sweep with zeroes and with
 *   all-ones arguments.
 * refused_calls handle-of PATH            (natively, on the host) prints PATH's handle
 * refused_calls open-by-handle MOUNT HANDLE (natively) opens it: the handle is real
 * refused_calls io_uring PATH             (natively) truncates PATH through io_uring
 *
 * A decision of the BPF alone needs no long race: the calls run for a quarter of the
 * budget. The report holds "calls" (see tally.h), "escaped" (a payload that worked: a
 * ring that opened, a handle that opened, a tree written through), and "after": the
 * write-opens of RO/f (EROFS) and VOLUME/served (ok) once everything was tried.
 */
#include "tally.h"

#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <linux/keyctl.h>
#include <linux/mount.h>
#include <linux/perf_event.h>
#include <linux/sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 2
#define MNT_DETACH 2
#define UFFD_USER_MODE_ONLY 1
#define NR_open_tree_attr 467
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x80
#endif

static const char *ro, *volume;
static char ro_f[512], ro_dir_new[512], vol_bound[512], vol_old[512], vol_f[512];
static atomic_long escaped;
static atomic_int stop;

/* ---- io_uring: the ring, and an IORING_OP_OPENAT through it ---- */

static long uring_openat(int ring, struct io_uring_params *p, const char *path, int flags) {
    size_t sq_size = p->sq_off.array + p->sq_entries * sizeof(unsigned);
    size_t cq_size = p->cq_off.cqes + p->cq_entries * sizeof(struct io_uring_cqe);
    if (p->features & IORING_FEAT_SINGLE_MMAP) sq_size = cq_size = sq_size > cq_size ? sq_size : cq_size;
    char *sq = mmap(NULL, sq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQ_RING);
    if (sq == MAP_FAILED) return -errno;
    char *cq = sq;
    if (!(p->features & IORING_FEAT_SINGLE_MMAP))
        cq = mmap(NULL, cq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_CQ_RING);
    struct io_uring_sqe *sqes = mmap(NULL, p->sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                                     MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQES);
    if (cq == MAP_FAILED || sqes == MAP_FAILED) return -errno;
    unsigned *tail = (unsigned *)(sq + p->sq_off.tail), *mask = (unsigned *)(sq + p->sq_off.ring_mask);
    unsigned *array = (unsigned *)(sq + p->sq_off.array);
    unsigned t = *tail, index = t & *mask;
    memset(&sqes[index], 0, sizeof sqes[index]);
    sqes[index].opcode = IORING_OP_OPENAT;
    sqes[index].fd = AT_FDCWD;
    sqes[index].addr = (uint64_t)(uintptr_t)path;
    sqes[index].len = 0644;
    sqes[index].open_flags = flags;
    array[index] = index;
    __atomic_store_n(tail, t + 1, __ATOMIC_RELEASE);
    long result = syscall(SYS_io_uring_enter, ring, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0);
    if (result >= 0) {
        unsigned *head = (unsigned *)(cq + p->cq_off.head), *cmask = (unsigned *)(cq + p->cq_off.ring_mask);
        struct io_uring_cqe *cqes = (struct io_uring_cqe *)(cq + p->cq_off.cqes);
        unsigned h = __atomic_load_n(head, __ATOMIC_ACQUIRE);
        result = cqes[h & *cmask].res;
        __atomic_store_n(head, h + 1, __ATOMIC_RELEASE);
    } else {
        result = -errno;
    }
    return result;
}

static long try_io_uring(void) {
    struct io_uring_params p = {0};
    long ring = syscall(SYS_io_uring_setup, 4, &p);
    if (ring < 0) return ring;
    int e = errno;
    long fd = uring_openat((int)ring, &p, ro_f, O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd >= 0) {
        atomic_fetch_add(&escaped, 1);
        close((int)fd);
    }
    close((int)ring);
    errno = e;
    return ring;
}

/* ---- file handles ---- */

static struct file_handle *handles[4];
static int handle_count, mount_fds[3];

static struct file_handle *parse_handle(const char *text) {
    /* TYPE:HEX */
    int type = atoi(text);
    const char *hex = strchr(text, ':');
    if (!hex) exit(2);
    size_t bytes = strlen(++hex) / 2;
    struct file_handle *h = calloc(1, sizeof *h + bytes);
    h->handle_type = type;
    h->handle_bytes = bytes;
    for (size_t i = 0; i < bytes; i++) sscanf(hex + 2 * i, "%2hhx", &h->f_handle[i]);
    return h;
}

static long try_handle(int mount, int which, int flags) {
    if (which >= handle_count || mount_fds[mount] < 0) {
        errno = EBADF;
        return -1;
    }
    long fd = syscall(SYS_open_by_handle_at, mount_fds[mount], handles[which], flags);
    if (fd >= 0) {
        atomic_fetch_add(&escaped, 1);
        close((int)fd);
    }
    return fd;
}

static long try_name_to_handle(const char *path) {
    static _Thread_local struct file_handle *h;
    if (!h) h = malloc(sizeof *h + MAX_HANDLE_SZ);
    h->handle_bytes = MAX_HANDLE_SZ;
    int mount_id;
    return syscall(SYS_name_to_handle_at, AT_FDCWD, path, h, &mount_id, 0);
}

/* ---- the mount family ---- */

static long try_open_tree(int attr) {
    struct mount_attr clear = {.attr_clr = MOUNT_ATTR_RDONLY};
    long tree = attr ? syscall(NR_open_tree_attr, AT_FDCWD, ro, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC, &clear,
                               sizeof clear)
                     : syscall(SYS_open_tree, AT_FDCWD, ro, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (tree < 0) return tree;
    /* A detached copy of the :ro mount: made writable, it would reach the host's files. */
    syscall(SYS_mount_setattr, (int)tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &clear, sizeof clear);
    int fd = openat((int)tree, "f", O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd >= 0) {
        atomic_fetch_add(&escaped, 1);
        close(fd);
    }
    close((int)tree);
    return 0;
}

static long try_fs_fd(long fd) {
    if (fd >= 0) close((int)fd);
    return fd;
}

/* ---- namespaces ---- */

static long try_clone(unsigned long flags) {
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid((pid_t)pid, NULL, __WALL);
    return pid;
}

static struct clone_args clone3_args = {.exit_signal = SIGCHLD};

static void *flip_clone3(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        __atomic_store_n(&clone3_args.flags, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&clone3_args.flags, CLONE_NEWUSER | CLONE_NEWNS, __ATOMIC_RELAXED);
    }
    return NULL;
}

static long try_clone3(size_t size) {
    long pid = syscall(SYS_clone3, &clone3_args, size);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid((pid_t)pid, NULL, __WALL);
    return pid;
}

static int ns_fds[3];

/* ---- the rest ---- */

static long try_bpf(void) {
    union bpf_attr attr = {.map_type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 4, .max_entries = 1};
    return try_fs_fd(syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
}

static long try_perf(void) {
    struct perf_event_attr attr = {.type = PERF_TYPE_SOFTWARE,
                                   .size = sizeof attr,
                                   .config = PERF_COUNT_SW_TASK_CLOCK,
                                   .disabled = 1,
                                   .exclude_kernel = 1};
    return try_fs_fd(syscall(SYS_perf_event_open, &attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC));
}

/* ---- the battery ---- */

struct attempt {
    const char *name;
    long (*call)(long);
    long argument;
};

static long a_io_uring_setup(long unused) { return (void)unused, try_io_uring(); }
static long a_io_uring_enter(long unused) { return (void)unused, syscall(SYS_io_uring_enter, 0, 1, 1, 0, NULL, 0); }
static long a_io_uring_register(long unused) { return (void)unused, syscall(SYS_io_uring_register, 0, 0, NULL, 0); }
static long a_name_to_handle(long which) { return try_name_to_handle(which ? ro_f : vol_f); }
static long a_open_by_handle(long arg) { return try_handle((int)(arg / 8), (int)(arg / 2 % 4), arg % 2 ? O_RDWR : O_RDONLY); }
static long a_mount_tmpfs(long unused) { return (void)unused, syscall(SYS_mount, "none", ro, "tmpfs", 0, NULL); }
static long a_mount_remount(long unused) {
    return (void)unused, syscall(SYS_mount, NULL, ro, NULL, MS_REMOUNT | MS_BIND, NULL);
}
static long a_mount_bind(long unused) { return (void)unused, syscall(SYS_mount, ro, vol_bound, NULL, MS_BIND, NULL); }
static long a_umount(long unused) { return (void)unused, syscall(SYS_umount2, ro, MNT_DETACH); }
static long a_pivot_root(long unused) { return (void)unused, syscall(SYS_pivot_root, volume, vol_old); }
static long a_chroot(long unused) { return (void)unused, syscall(SYS_chroot, volume); }
static long a_move_mount(long unused) {
    return (void)unused, syscall(SYS_move_mount, AT_FDCWD, ro, AT_FDCWD, vol_bound, 0);
}
static long a_open_tree(long attr) { return try_open_tree((int)attr); }
static long a_fsopen(long unused) { return (void)unused, try_fs_fd(syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC)); }
static long a_fsconfig(long unused) { return (void)unused, syscall(SYS_fsconfig, 0, FSCONFIG_CMD_CREATE, NULL, NULL, 0); }
static long a_fsmount(long unused) { return (void)unused, try_fs_fd(syscall(SYS_fsmount, 0, FSMOUNT_CLOEXEC, 0)); }
static long a_fspick(long unused) {
    return (void)unused, try_fs_fd(syscall(SYS_fspick, AT_FDCWD, ro, FSPICK_CLOEXEC));
}
static long a_mount_setattr(long unused) {
    struct mount_attr clear = {.attr_clr = MOUNT_ATTR_RDONLY};
    return (void)unused, syscall(SYS_mount_setattr, AT_FDCWD, ro, AT_RECURSIVE, &clear, sizeof clear);
}
static long a_unshare(long flags) { return syscall(SYS_unshare, flags); }
static long a_clone(long flags) { return try_clone((unsigned long)flags); }
static long a_clone3(long size) { return try_clone3((size_t)size); }
static long a_setns(long which) {
    return syscall(SYS_setns, ns_fds[which], which == 0 ? 0 : which == 1 ? CLONE_NEWNS | CLONE_NEWUTS : CLONE_NEWUSER);
}
static long a_bpf(long unused) { return (void)unused, try_bpf(); }
static long a_userfaultfd(long unused) {
    return (void)unused, try_fs_fd(syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY));
}
static long a_perf(long unused) { return (void)unused, try_perf(); }
static long a_keyctl(long unused) { return (void)unused, syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL); }
static long a_add_key(long unused) {
    return (void)unused, syscall(SYS_add_key, "user", "hvfs", "x", 1, KEY_SPEC_PROCESS_KEYRING);
}
static long a_request_key(long unused) {
    return (void)unused, syscall(SYS_request_key, "user", "hvfs", NULL, KEY_SPEC_PROCESS_KEYRING);
}
static long a_zeroes(long nr) { return syscall(nr, 0, 0, 0, 0, 0, 0); }
static long a_ones(long nr) { return syscall(nr, -1L, -1L, -1L, -1L, -1L, -1L); }

static struct attempt battery[TALLY_CALLS];
static int battery_count, battery_index[TALLY_CALLS];

static void add(const char *name, long (*call)(long), long argument) {
    battery[battery_count] = (struct attempt){name, call, argument};
    battery_index[battery_count++] = tally_call(name);
}

static void build(void) {
    add("io_uring_setup", a_io_uring_setup, 0);
    add("io_uring_enter", a_io_uring_enter, 0);
    add("io_uring_register", a_io_uring_register, 0);
    add("name_to_handle_at:volume", a_name_to_handle, 0);
    add("name_to_handle_at:ro", a_name_to_handle, 1);
    static const char *mounts[] = {"volume", "ro", "root"};
    static char handle_names[3][4][2][64];
    for (int m = 0; m < 3; m++)
        for (int h = 0; h < handle_count; h++)
            for (int w = 0; w < 2; w++) {
                snprintf(handle_names[m][h][w], 64, "open_by_handle_at:%s_%d_%s", mounts[m], h, w ? "rw" : "ro");
                add(handle_names[m][h][w], a_open_by_handle, m * 8 + h * 2 + w);
            }
    add("mount:tmpfs_over_ro", a_mount_tmpfs, 0);
    add("mount:remount_ro_writable", a_mount_remount, 0);
    add("mount:bind_ro", a_mount_bind, 0);
    add("umount2:detach_ro", a_umount, 0);
    add("pivot_root", a_pivot_root, 0);
    add("chroot", a_chroot, 0);
    add("move_mount", a_move_mount, 0);
    add("open_tree:clone_ro", a_open_tree, 0);
    add("open_tree_attr:clone_ro_writable", a_open_tree, 1);
    add("fsopen", a_fsopen, 0);
    add("fsconfig", a_fsconfig, 0);
    add("fsmount", a_fsmount, 0);
    add("fspick", a_fspick, 0);
    add("mount_setattr:clear_rdonly", a_mount_setattr, 0);
    static const struct {
        const char *name;
        long flag;
    } namespaces[] = {{"newns", CLONE_NEWNS},   {"newcgroup", CLONE_NEWCGROUP}, {"newuts", CLONE_NEWUTS},
                      {"newipc", CLONE_NEWIPC}, {"newuser", CLONE_NEWUSER},     {"newpid", CLONE_NEWPID},
                      {"newnet", CLONE_NEWNET}, {"newtime", CLONE_NEWTIME}};
    static char ns_names[8][2][48];
    for (int n = 0; n < 8; n++) {
        snprintf(ns_names[n][0], 48, "unshare:%s", namespaces[n].name);
        add(ns_names[n][0], a_unshare, namespaces[n].flag);
        if (namespaces[n].flag == CLONE_NEWTIME) continue; /* in clone() that bit is the exit signal's */
        snprintf(ns_names[n][1], 48, "clone:%s", namespaces[n].name);
        add(ns_names[n][1], a_clone, namespaces[n].flag);
    }
    /* The kernel reads only the low 32 bits of the flags; the filter must too. */
    add("unshare:newns_high_bits", a_unshare, CLONE_NEWNS | (1L << 32));
    add("clone:newuser_high_bits", a_clone, CLONE_NEWUSER | (1L << 32));
    add("clone:all", a_clone,
        CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET);
    add("clone3:flipped_flags", a_clone3, sizeof clone3_args);
    add("clone3:v0_size", a_clone3, 64);
    add("setns:mnt", a_setns, 0);
    add("setns:pidfd_of_1", a_setns, 1);
    add("setns:user", a_setns, 2);
    add("bpf:map_create", a_bpf, 0);
    add("userfaultfd:user_mode_only", a_userfaultfd, 0);
    add("perf_event_open:task_clock", a_perf, 0);
    add("keyctl:join_session_keyring", a_keyctl, 0);
    add("add_key", a_add_key, 0);
    add("request_key", a_request_key, 0);
}

static atomic_long tries;

static void *worker(void *unused) {
    (void)unused;
    for (long round = 0; attack_more(round) && !atomic_load(&stop); round++) {
        for (int i = 0; i < battery_count; i++) {
            struct attempt *a = &battery[i];
            tally_result(battery_index[i], a->call(a->argument));
            atomic_fetch_add(&tries, 1);
        }
    }
    return NULL;
}

/* ---- native helpers, run on the host by the test ---- */

static int native(int argc, char **argv) {
    if (strcmp(argv[1], "handle-of") == 0 && argc == 3) {
        struct file_handle *h = malloc(sizeof *h + MAX_HANDLE_SZ);
        h->handle_bytes = MAX_HANDLE_SZ;
        int mount_id;
        if (syscall(SYS_name_to_handle_at, AT_FDCWD, argv[2], h, &mount_id, 0) < 0) return perror(argv[2]), 1;
        printf("%d:", h->handle_type);
        for (unsigned i = 0; i < h->handle_bytes; i++) printf("%02x", h->f_handle[i]);
        printf("\n");
        return 0;
    }
    if (strcmp(argv[1], "open-by-handle") == 0 && argc == 4) {
        int mount = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        long fd = syscall(SYS_open_by_handle_at, mount, parse_handle(argv[3]), O_RDONLY);
        if (fd < 0) return perror("open_by_handle_at"), 1;
        char link[64], target[4096] = {0};
        snprintf(link, sizeof link, "/proc/self/fd/%ld", fd);
        if (readlink(link, target, sizeof target - 1) < 0) return 1;
        printf("%s\n", target);
        return 0;
    }
    if (strcmp(argv[1], "io_uring") == 0 && argc == 3) {
        struct io_uring_params p = {0};
        long ring = syscall(SYS_io_uring_setup, 4, &p);
        if (ring < 0) return perror("io_uring_setup"), 1;
        long fd = uring_openat((int)ring, &p, argv[2], O_WRONLY | O_TRUNC | O_CLOEXEC);
        if (fd < 0) return fprintf(stderr, "openat: %s\n", strerror((int)-fd)), 1;
        printf("opened\n");
        return 0;
    }
    fprintf(stderr, "usage: %s handle-of PATH | open-by-handle MOUNT HANDLE | io_uring PATH\n", argv[0]);
    return 2;
}

int main(int argc, char **argv) {
    if (argc > 1 && !(argv[1][0] >= '0' && argv[1][0] <= '9')) return native(argc, argv);
    attack_begin(argc, argv);
    if (argc < 5) {
        fprintf(stderr, "usage: %s TRIES SECONDS RO VOLUME [handle=TYPE:HEX...] [sweep=NAME:NR...]\n", argv[0]);
        return 2;
    }
    attack_deadline = attack_now() + (attack_deadline - attack_now()) / 4;
    tally_init();
    ro = argv[3];
    volume = argv[4];
    snprintf(ro_f, sizeof ro_f, "%s/f", ro);
    snprintf(ro_dir_new, sizeof ro_dir_new, "%s/new", ro);
    snprintf(vol_f, sizeof vol_f, "%s/f", volume);
    snprintf(vol_bound, sizeof vol_bound, "%s/bound", volume);
    snprintf(vol_old, sizeof vol_old, "%s/old", volume);
    mkdir(vol_bound, 0755);
    mkdir(vol_old, 0755);
    static char sweep_names[TALLY_CALLS][2][64];
    int sweeps = 0;
    static long sweep_numbers[TALLY_CALLS];
    for (int i = 5; i < argc; i++) {
        if (strncmp(argv[i], "handle=", 7) == 0 && handle_count < 4) {
            handles[handle_count++] = parse_handle(argv[i] + 7);
        } else if (strncmp(argv[i], "sweep=", 6) == 0) {
            char *colon = strrchr(argv[i], ':');
            if (!colon) return 2;
            *colon = 0;
            sweep_numbers[sweeps] = atol(colon + 1);
            snprintf(sweep_names[sweeps][0], 64, "%s:zeroes", argv[i] + 6);
            snprintf(sweep_names[sweeps][1], 64, "%s:ones", argv[i] + 6);
            sweeps++;
        }
    }
    const char *mount_paths[] = {volume, ro, "/"};
    for (int m = 0; m < 3; m++) mount_fds[m] = open(mount_paths[m], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ns_fds[0] = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    ns_fds[1] = (int)syscall(SYS_pidfd_open, 1, 0);
    ns_fds[2] = open("/proc/self/ns/user", O_RDONLY | O_CLOEXEC);
    build();
    for (int s = 0; s < sweeps; s++) {
        add(sweep_names[s][0], a_zeroes, sweep_numbers[s]);
        add(sweep_names[s][1], a_ones, sweep_numbers[s]);
    }

    pthread_t flipper, workers[THREADS];
    pthread_create(&flipper, NULL, flip_clone3, NULL);
    for (int t = 0; t < THREADS; t++) pthread_create(&workers[t], NULL, worker, NULL);
    for (int t = 0; t < THREADS; t++) pthread_join(workers[t], NULL);
    atomic_store(&stop, 1);
    pthread_join(flipper, NULL);

    /* The world as it was: the :ro mount still refuses, the volume still takes writes. */
    int after_ro = tally_call("after:write_ro"), after_volume = tally_call("after:write_volume");
    int fd = open(ro_f, O_WRONLY | O_TRUNC | O_CLOEXEC);
    tally_result(after_ro, fd);
    if (fd >= 0) close(fd);
    char served[512];
    snprintf(served, sizeof served, "%s/served", volume);
    fd = open(served, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    tally_result(after_volume, fd >= 0 && write(fd, "served\n", 7) == 7 ? 0 : -1);
    if (fd >= 0) close(fd);

    printf("{\"tries\": %ld, \"escaped\": %ld, \"handles\": %d, ", atomic_load(&tries), atomic_load(&escaped),
           handle_count);
    tally_print();
    printf("}\n");
    return 0;
}
