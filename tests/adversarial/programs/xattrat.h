/* Linux 6.13's setxattrat and removexattrat by number (the same on every architecture):
 * a libc may have no wrapper yet. Used by the attack programs that try every route to an
 * object's xattrs, these calls' AT_EMPTY_PATH forms on an fd among them. */
#ifndef HVFS_XATTRAT_H
#define HVFS_XATTRAT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NR_setxattrat 463
#define NR_removexattrat 466

struct xattrat_args { /* struct xattr_args, XATTR_ARGS_SIZE_VER0 */
    uint64_t value;
    uint32_t size;
    uint32_t flags;
};

static inline int set_xattr_at(int dirfd, const char *path, int at_flags, const char *name, const char *value) {
    struct xattrat_args args = {(uint64_t)(uintptr_t)value, 0, 0};
    while (value[args.size]) args.size++;
    return (int)syscall(NR_setxattrat, dirfd, path, at_flags, name, &args, sizeof args);
}

static inline int remove_xattr_at(int dirfd, const char *path, int at_flags, const char *name) {
    return (int)syscall(NR_removexattrat, dirfd, path, at_flags, name);
}

#endif
