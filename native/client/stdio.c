/* The VM's stdio as hvfs/sandbox/stdio.py gives it: an anonymous pipe or a socket as it
 * is (it names no file), anything else through a pipe this process relays. A terminal
 * is the Python client's (its own relay, -t, -i), and so is a directory (its error). */
#define _GNU_SOURCE
#include "front.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define PIPEFS_MAGIC 0x50495045
#define SOCKFS_MAGIC 0x534F434B

static int shareable(int fd) {
    struct statfs fs;
    return fstatfs(fd, &fs) == 0 && (fs.f_type == PIPEFS_MAGIC || fs.f_type == SOCKFS_MAGIC);
}

int plan_stdio(struct stdio_plan *plan) {
    struct stat st[3];
    plan->shared_err = 0;
    for (int fd = 0; fd < 3; fd++) {
        plan->relay[fd] = -1;
        plan->vm[fd] = -1;
        if (fstat(fd, &st[fd]) < 0 || S_ISDIR(st[fd].st_mode) || isatty(fd))
            return -1;
    }
    for (int fd = 0; fd < 3; fd++) {
        if (shareable(fd)) {
            plan->vm[fd] = fd;
            continue;
        }
        if (fd == 2 && st[1].st_dev == st[2].st_dev && st[1].st_ino == st[2].st_ino) {
            plan->vm[2] = plan->vm[1];
            plan->shared_err = 1;
            continue;
        }
        int ends[2];
        if (pipe2(ends, O_CLOEXEC) < 0)
            return -1;
        /* stdin: we write, the VM reads; stdout, stderr: the VM writes, we read */
        plan->vm[fd] = fd == 0 ? ends[0] : ends[1];
        plan->relay[fd] = fd == 0 ? ends[1] : ends[0];
        if (fd == 0)
            fcntl(ends[1], F_SETFL, O_NONBLOCK); /* a VM that does not read must not stop the relay */
    }
    return 0;
}

/* Our copies of the VM's ends, closed once the VM holds its own: its output then ends
 * when its last process does. */
void handed_over(struct stdio_plan *plan) {
    for (int fd = 0; fd < 3; fd++) {
        if (plan->relay[fd] >= 0 && plan->vm[fd] != fd && !(fd == 2 && plan->shared_err))
            close(plan->vm[fd]);
        plan->vm[fd] = -1;
    }
}
