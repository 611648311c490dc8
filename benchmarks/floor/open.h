/* The floor's answers to an open (floor.c's modes continue, addfd and ordered; strict's opens
 * are ordered). */
#ifndef FLOOR_OPEN_H
#define FLOOR_OPEN_H

#include <limits.h>

#include "common.h"

enum answer { CONTINUE, ADDFD, ORDERED };

/* Serves open(PATH_ADDR, FLAGS, MODE) relative to DIRFD of the caller, as HOW says; with
 * SPARE_PROC, continues a path that names_proc. */
static void answer_open(int listener, const struct seccomp_notif *req, int dirfd, unsigned long path_addr, int flags,
                        mode_t mode, enum answer how, int spare_proc) {
    char path[PATH_MAX];
    int err = read_path(req->pid, path_addr, path, sizeof path);
    if (err == 0 && spare_proc && names_proc(path)) how = CONTINUE;
    int base = err == 0 && how != CONTINUE ? open_base(req->pid, dirfd, path) : AT_FDCWD;
    if (base == -1) err = errno;
    if (spare_proc && base_in_proc(base)) {
        close_base(base);
        base = AT_FDCWD;
        how = CONTINUE;
    }
    if (!id_valid(listener, req->id)) {
        close_base(base);
        return;
    }
    if (err != 0) {
        reply_error(listener, req->id, err);
        return;
    }
    if (how == CONTINUE) {
        reply_continue(listener, req->id);
        return;
    }
    int fd = openat(base, path, flags | O_CLOEXEC, mode);
    err = errno;
    close_base(base);
    if (fd < 0) {
        reply_error(listener, req->id, err);
        return;
    }
    int ordered = how == ORDERED && (flags & O_ACCMODE) != O_RDONLY;
    struct seccomp_notif_addfd addfd = {
        .id = req->id,
        .flags = ordered ? 0 : SECCOMP_ADDFD_FLAG_SEND,
        .srcfd = (__u32)fd,
        .newfd_flags = (__u32)(flags & O_CLOEXEC),
    };
    /* With SEND the ioctl installs the fd and answers the call with its number at once. */
    int number = ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd);
    if (number < 0 && errno != ENOENT) die("NOTIF_ADDFD");
    close(fd);
    if (ordered && number >= 0) reply_value(listener, req->id, number);
}

#endif
