/* A served stat of one name in its base directory made with one call (served_stat.h's
 * serve_stat), where it finds what the O_PATH open beneath the base, its fstat and its close
 * would: find's fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW) of every entry, git's lstat of a
 * file at the top of its tree.
 *
 * Only a name that is one component, not "." nor "..", qualifies: its lookup from the base
 * directory takes one step and cannot leave it, so RESOLVE_BENEATH, which the open adds,
 * refuses nothing there (it refuses only a ".." or an absolute symlink, or a magic link, on
 * the way; there is no way). The last component is never followed here (AT_SYMLINK_NOFOLLOW):
 * a symlink found for a stat that follows is left to the open, which follows it beneath the
 * base as before; a symlink for an lstat is the answer, as the O_PATH | O_NOFOLLOW open's
 * fstat would give. Whatever the name is when the call looks (a rename racing it), the answer
 * is the stat of what that one lookup found, as the open's would be.
 *
 * AT_NO_AUTOMOUNT always, as an O_PATH open does not trigger an automount on its last
 * component. The lookup is made acting as the caller, as the open, and needs the same search
 * permission on the base. A failure other than ENOENT (one step: nothing else can differ) is
 * left to the open, whose errno is answered as before.
 */
#ifndef HVFS_SERVED_QUICK_H
#define HVFS_SERVED_QUICK_H

#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>

/* What serve_stat asks for (the call's layout and flags), and what was found. */
struct quick_stat {
    int statx_call;       /* statx's struct statx, else struct stat */
    uint64_t flags, mask; /* the caller's AT_* flags and statx mask */
    int done;             /* out is the answer, size bytes of it */
    int check_late;       /* the ID_VALID after the caller's reads left for the answer (late_check) */
    size_t size;
    char out[256];
};

/* Whether name is one component whose lookup from a directory stays in it. */
static int
single_name(const char *name)
{
    return name[0] != 0 && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

/* name's stat in dir into q (q->done), or ENOENT's -ENOENT; 0 where the open must look. */
static long
quick_stat_at(int dir, const char *name, struct quick_stat *q)
{
#ifndef __x86_64__
    return 0; /* pack_stat is x86_64's: serve_stat declines elsewhere */
#else
    int follow = !(q->flags & AT_SYMLINK_NOFOLLOW), failed;
    unsigned int at = AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT;
    if (q->statx_call) {
        struct statx *sx = (struct statx *)q->out;
        memset(q->out, 0, sizeof q->out);
        at |= (unsigned int)(q->flags & STAT_STATX_SYNC_TYPE);
        failed = syscall(SYS_statx, dir, name, at, (unsigned int)q->mask, sx) < 0 ? errno : 0;
        if (!failed && (!(sx->stx_mask & STATX_TYPE) || (follow && S_ISLNK(sx->stx_mode))))
            return 0;
        q->size = sizeof q->out;
    } else {
        struct stat st;
        failed = fstatat(dir, name, &st, (int)at) < 0 ? errno : 0;
        if (!failed && follow && S_ISLNK(st.st_mode))
            return 0;
        q->size = failed ? 0 : pack_stat(&st, q->out);
    }
    if (failed)
        return failed == ENOENT ? -ENOENT : 0;
    q->done = 1;
    return 0;
#endif
}

#endif
