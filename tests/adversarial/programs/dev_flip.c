/* A write-open of /dev/null, which the manager lets the kernel open (CONTINUE: the C loop,
 * hvfs/_native/served_dev.h, or the Python path), its path flipped by a second thread to a
 * file of the VM, so that the kernel, reading the path again, may open that file instead.
 *
 * dev_flip TRIES SECONDS VOLUME TARGET...
 *
 * VOLUME (the cwd) holds "a", "b", "c" and "link" (a symlink to VOLUME/c). TARGET "file" flips
 * the path between /dev/null and VOLUME/a (a file on the writable volume); "magic" between
 * /dev/null and /proc/self/fd/N, N a read-only fd of VOLUME/b opened at the start; "link"
 * between /dev/null and VOLUME/link. The main thread write-opens the path (O_WRONLY|O_APPEND,
 * O_RDWR|O_APPEND in turn) and looks at what it got: a character device ("inside"), an error
 * ("refused"; "erofs": the kernel's EROFS, a flip that won the race), or a regular file. A regular file whose mount is one of the VM's own (its
 * mount id in /proc/self/mountinfo) was opened for writing by the kernel on the boot view:
 * an escape ("E" written to it). Any other came from the manager (its writable view: a write
 * it served, and noted), "X" written to it ("served_file", "served_link"; "served_magic").
 * The host checks the files' bytes against those counts and the change set.
 */
#include "flip.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

#define MOUNTS 512

static int vm_mounts[MOUNTS], vm_mount_count;
static long served[3], odd, erofs;
static int target_kind; /* 0: file, 1: magic, 2: link */
static const char *volume_path;

static void read_vm_mounts(void) {
    FILE *mountinfo = fopen("/proc/self/mountinfo", "r");
    char line[4096];
    while (mountinfo && vm_mount_count < MOUNTS && fgets(line, sizeof line, mountinfo))
        vm_mounts[vm_mount_count++] = atoi(line);
    if (mountinfo)
        fclose(mountinfo);
}

/* The mount id of fd (fdinfo's mnt_id), or -1. */
static int mount_of(int fd) {
    char name[64], line[256];
    snprintf(name, sizeof name, "/proc/self/fdinfo/%d", fd);
    FILE *info = fopen(name, "r");
    int id = -1;
    while (info && fgets(line, sizeof line, info))
        if (strncmp(line, "mnt_id:", 7) == 0)
            id = atoi(line + 7);
    if (info)
        fclose(info);
    return id;
}

static int of_the_vm(int mount) {
    for (int i = 0; i < vm_mount_count; i++)
        if (vm_mounts[i] == mount)
            return 1;
    return 0;
}

static flip_racer aim(const char *target) {
    snprintf(allowed, sizeof allowed, "/dev/null");
    if (strcmp(target, "magic") == 0) {
        int fd = open("b", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return NULL;
        snprintf(forbidden, sizeof forbidden, "/proc/self/fd/%d", fd);
        target_kind = 1;
    } else {
        target_kind = strcmp(target, "link") == 0 ? 2 : 0;
        snprintf(forbidden, sizeof forbidden, "%s/%s", volume_path, target_kind ? "link" : "a");
    }
    memcpy(buffer, allowed, strlen(allowed) + 1);
    return flip;
}

static void attempt(long i) {
    int fd = open(buffer, (i & 1 ? O_RDWR : O_WRONLY) | O_APPEND | O_CLOEXEC);
    if (fd < 0) {
        refused++;
        erofs += errno == EROFS; /* the kernel's, on the boot view: the flip won the race */
        return;
    }
    struct stat st;
    if (fstat(fd, &st) < 0)
        odd++;
    else if (S_ISCHR(st.st_mode))
        inside++;
    else if (!S_ISREG(st.st_mode))
        odd++;
    else if (of_the_vm(mount_of(fd))) {
        escapes++;
        if (write(fd, "E", 1) != 1)
            odd++;
    } else {
        served[target_kind]++;
        if (write(fd, "X", 1) != 1)
            odd++;
    }
    close(fd);
}

int main(int argc, char **argv) {
    volume_path = flip_begin(argc, argv, 5, "dev_flip TRIES SECONDS VOLUME TARGET...");
    read_vm_mounts();
    if (vm_mount_count == 0)
        return 4;
    long count = flip_run(argc, argv, 4, aim, attempt);
    flip_report(count, ", \"odd\": %ld, \"erofs\": %ld, \"served_file\": %ld, \"served_magic\": %ld, \"served_link\": %ld",
                odd, erofs, served[0], served[1], served[2]);
    return 0;
}
