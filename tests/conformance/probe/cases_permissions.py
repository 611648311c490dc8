"""Permissions: the umask, setgid directories, and a second user (root runs only)."""

import os
from collections.abc import Callable

from cases_times import A_NS, M_NS
from observe import Json, describe, listing, read, times, write
from processes import in_child
from runner import Case, Skipped, case
from system import (
    CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH,
    CREAT,
    OTHER_GID,
    OTHER_UID,
    SUPPLEMENTARY_GID,
    WRONLY,
    access,
    become_keeping_capabilities,
)

# -- permissions: umask, setgid directories, and a second user (root runs only) -------------------


@case
def perm_umask_file(c: Case) -> Json:
    os.umask(0o027)
    c.stat_after("f")
    write("f", mode=0o666)


@case
def perm_umask_dir(c: Case) -> Json:
    os.umask(0o027)
    c.stat_after("d")
    os.mkdir("d", 0o777)


@case
def perm_umask_zero(c: Case) -> Json:
    os.umask(0)
    c.stat_after("f")
    write("f", mode=0o666)


@case
def perm_setgid_dir_inheritance(c: Case) -> Json:
    os.mkdir("g")
    if os.geteuid() == 0:
        os.chown("g", -1, OTHER_GID)  # a group root is not in, so that inheritance shows
    os.chmod("g", 0o2775)
    write("g/f")
    os.mkdir("g/sub")
    os.mkfifo("g/p")
    return {name: describe(f"g/{name}") for name in ("f", "sub", "p")} | {".": describe("g")}


@case
def perm_setgid_dir_creat_setgid_file(c: Case) -> Json:
    # a new file asking for setgid in a group its creator is not in loses the bit (unless root)
    os.mkdir("g")
    if os.geteuid() == 0:
        os.chown("g", -1, OTHER_GID)
    os.chmod("g", 0o2777)
    c.stat_after("g/f")
    c.open("g/f", WRONLY | CREAT, 0o2755)


def as_other_user(c: Case, action: Callable[[], Json], groups: tuple[int, ...] = ()) -> Json:
    """Run action as uid and gid 1000 in a child; only root can become another user.

    Root in a user namespace that maps no other id (a rootless VM) cannot either: the
    case is then skipped, rather than recording the errno of the switch as its result.
    """
    c.need_root()

    def switch_then_act() -> Json:
        try:
            os.setgroups(list(groups))
            os.setresgid(OTHER_GID, OTHER_GID, OTHER_GID)
            os.setresuid(OTHER_UID, OTHER_UID, OTHER_UID)
        except OSError as error:
            raise Skipped from error
        return action()

    return in_child(switch_then_act)


def as_other_user_keeping(c: Case, action: Callable[[], Json], capabilities: int) -> Json:
    """Run action as uid and gid 1000 that kept some of root's capabilities (PR_SET_KEEPCAPS,
    then capset): a non-zero fsuid whose effective set still has fs capabilities, which
    Linux honours (the fsuid's change drops them, the capset after it raises them again)."""
    c.need_root()

    def switch_then_act() -> Json:
        try:
            become_keeping_capabilities(OTHER_UID, OTHER_GID, capabilities)
        except OSError as error:
            raise Skipped from error
        return action()

    return in_child(switch_then_act)


def owned_by_root(c: Case, path: str, mode: int, group: int = 0) -> str:
    """A file owned by root with a given mode, the object of the second-user cases."""
    c.need_root()
    write(path, "root's", mode)
    os.chown(path, 0, group)
    os.chmod(path, mode)
    return path


@case
def perm_sticky_other_cannot_unlink(c: Case) -> Json:
    c.need_root()
    os.mkdir("t", 0o1777)
    os.chmod("t", 0o1777)
    owned_by_root(c, "t/f", 0o666)
    c.after(lambda: listing("t"))
    as_other_user(c, lambda: os.unlink("t/f"))


@case
def perm_sticky_other_cannot_rename(c: Case) -> Json:
    c.need_root()
    os.mkdir("t")
    os.chmod("t", 0o1777)
    owned_by_root(c, "t/f", 0o666)
    c.after(lambda: listing("t"))
    as_other_user(c, lambda: os.rename("t/f", "t/g"))


@case
def perm_sticky_owner_can_unlink(c: Case) -> Json:
    c.need_root()
    os.mkdir("t")
    os.chmod("t", 0o1777)
    write("t/f")
    os.chown("t/f", OTHER_UID, OTHER_GID)
    c.after(lambda: listing("t"))
    as_other_user(c, lambda: os.unlink("t/f"))


@case
def perm_no_sticky_other_can_unlink(c: Case) -> Json:
    c.need_root()
    os.mkdir("t")
    os.chmod("t", 0o777)
    owned_by_root(c, "t/f", 0o644)
    c.after(lambda: listing("t"))
    as_other_user(c, lambda: os.unlink("t/f"))


@case
def perm_other_cannot_write(c: Case) -> Json:
    owned_by_root(c, "f", 0o644)
    as_other_user(c, lambda: os.close(os.open("f", WRONLY)))


@case
def perm_other_can_read(c: Case) -> Json:
    owned_by_root(c, "f", 0o644)
    return as_other_user(c, lambda: read("f"))


@case
def perm_other_cannot_truncate(c: Case) -> Json:
    owned_by_root(c, "f", 0o644)
    c.stat_after("f")
    as_other_user(c, lambda: os.truncate("f", 0))


@case
def perm_group_write_primary(c: Case) -> Json:
    owned_by_root(c, "f", 0o664, group=OTHER_GID)
    as_other_user(c, lambda: write("f", "group"))
    return read("f")


@case
def perm_group_write_supplementary(c: Case) -> Json:
    owned_by_root(c, "f", 0o664, group=SUPPLEMENTARY_GID)
    as_other_user(c, lambda: write("f", "group"), groups=(SUPPLEMENTARY_GID,))
    return read("f")


@case
def perm_group_write_not_member(c: Case) -> Json:
    owned_by_root(c, "f", 0o664, group=SUPPLEMENTARY_GID)
    as_other_user(c, lambda: write("f", "group"))


@case
def perm_group_denies_owner_class_wins(c: Case) -> Json:
    # only one class applies: the owner's bits, even if the group's would allow more
    owned_by_root(c, "f", 0o064)
    os.chown("f", OTHER_UID, OTHER_GID)
    as_other_user(c, lambda: read("f"))


@case
def perm_other_cannot_chmod(c: Case) -> Json:
    owned_by_root(c, "f", 0o666)
    c.stat_after("f")
    as_other_user(c, lambda: os.chmod("f", 0o777))


@case
def perm_other_cannot_chown(c: Case) -> Json:
    owned_by_root(c, "f", 0o666)
    c.stat_after("f")
    as_other_user(c, lambda: os.chown("f", OTHER_UID, OTHER_GID))


@case
def perm_owner_cannot_give_away(c: Case) -> Json:
    c.need_root()
    write("f")
    os.chown("f", OTHER_UID, OTHER_GID)
    c.stat_after("f")
    as_other_user(c, lambda: os.chown("f", 0, -1))


@case
def perm_owner_chgrp_to_member_group(c: Case) -> Json:
    c.need_root()
    write("f")
    os.chown("f", OTHER_UID, OTHER_GID)
    c.stat_after("f")
    as_other_user(c, lambda: os.chown("f", -1, SUPPLEMENTARY_GID), groups=(SUPPLEMENTARY_GID,))


@case
def perm_other_cannot_set_explicit_times(c: Case) -> Json:
    owned_by_root(c, "f", 0o666)
    as_other_user(c, lambda: os.utime("f", ns=(A_NS, M_NS)))


@case
def perm_other_can_touch_writable(c: Case) -> Json:
    owned_by_root(c, "f", 0o666)
    os.utime("f", ns=(A_NS, M_NS))
    as_other_user(c, lambda: os.utime("f"))
    return [value != old for value, old in zip(times("f"), (A_NS, M_NS), strict=True)]


@case
def perm_other_cannot_create_in_root_dir(c: Case) -> Json:
    c.need_root()
    os.mkdir("d", 0o755)
    as_other_user(c, lambda: write("d/f"))


@case
def perm_other_cannot_search(c: Case) -> Json:
    c.need_root()
    os.mkdir("d", 0o700)
    write("d/f", mode=0o666)
    as_other_user(c, lambda: read("d/f"))


@case
def perm_other_creates_own_file(c: Case) -> Json:
    c.need_root()
    os.mkdir("d")
    os.chmod("d", 0o777)
    c.stat_after("d/f")
    as_other_user(c, lambda: write("d/f", "mine"))


@case
def perm_other_mkdir_in_setgid_dir(c: Case) -> Json:
    c.need_root()
    os.mkdir("g")
    os.chown("g", -1, SUPPLEMENTARY_GID)
    os.chmod("g", 0o2777)
    c.stat_after("g/d")
    as_other_user(c, lambda: os.mkdir("g/d"))


@case
def perm_other_cannot_set_user_xattr(c: Case) -> Json:
    owned_by_root(c, "f", 0o644)
    as_other_user(c, lambda: os.setxattr("f", "user.key", b"v"))


@case
def perm_other_write_clears_setuid(c: Case) -> Json:
    owned_by_root(c, "f", 0o6777)
    c.stat_after("f")
    as_other_user(c, lambda: write("f", "changed"))


@case
def perm_other_cannot_hardlink(c: Case) -> Json:
    # with fs.protected_hardlinks=1 one may not link a file one could not write
    os.mkdir("d")
    os.chmod("d", 0o777)
    owned_by_root(c, "d/f", 0o600)
    as_other_user(c, lambda: os.link("d/f", "d/g"))


@case
def perm_other_access_w_ok(c: Case) -> Json:
    owned_by_root(c, "f", 0o644)
    as_other_user(c, lambda: access("f", os.W_OK))


@case
def perm_other_cannot_unlink_in_root_dir(c: Case) -> Json:
    c.need_root()
    os.mkdir("d", 0o755)
    write("d/f", mode=0o666)
    c.after(lambda: listing("d"))
    as_other_user(c, lambda: os.unlink("d/f"))


# -- a second user that kept capabilities: CAP_DAC_READ_SEARCH and CAP_DAC_OVERRIDE with fsuid 1000


def root_only_dir(c: Case) -> None:
    """d (root's, 0700) with d/f (root's, 0600): nothing uid 1000 may reach without capabilities."""
    c.need_root()
    os.mkdir("d", 0o700)
    os.chmod("d", 0o700)
    owned_by_root(c, "d/f", 0o600)


@case
def perm_kept_read_search_stats_in_root_dir(c: Case) -> Json:
    root_only_dir(c)
    return as_other_user_keeping(c, lambda: describe("d/f"), 1 << CAP_DAC_READ_SEARCH)


@case
def perm_kept_read_search_reads_in_root_dir(c: Case) -> Json:
    root_only_dir(c)
    return as_other_user_keeping(c, lambda: read("d/f"), 1 << CAP_DAC_READ_SEARCH)


@case
def perm_kept_read_search_lists_root_dir(c: Case) -> Json:
    root_only_dir(c)
    return as_other_user_keeping(c, lambda: listing("d"), 1 << CAP_DAC_READ_SEARCH)


@case
def perm_kept_read_search_cannot_write(c: Case) -> Json:
    root_only_dir(c)
    as_other_user_keeping(c, lambda: write("d/f", "changed"), 1 << CAP_DAC_READ_SEARCH)


@case
def perm_kept_dac_override_writes_in_root_dir(c: Case) -> Json:
    root_only_dir(c)
    c.after(lambda: read("d/f"))
    as_other_user_keeping(c, lambda: write("d/f", "changed"), 1 << CAP_DAC_OVERRIDE)


ALL_HELD = (1 << 64) - 1  # every capability the process holds: its effective set as root's was


@case
def perm_kept_all_stats_in_root_dir(c: Case) -> Json:
    root_only_dir(c)
    return as_other_user_keeping(c, lambda: describe("d/f"), ALL_HELD)


@case
def perm_kept_all_reads_in_root_dir(c: Case) -> Json:
    root_only_dir(c)
    return as_other_user_keeping(c, lambda: read("d/f"), ALL_HELD)


@case
def perm_kept_all_lists_root_dir(c: Case) -> Json:
    root_only_dir(c)
    return as_other_user_keeping(c, lambda: listing("d"), ALL_HELD)


@case
def perm_kept_all_writes_in_root_dir(c: Case) -> Json:
    root_only_dir(c)
    c.after(lambda: read("d/f"))
    as_other_user_keeping(c, lambda: write("d/f", "changed"), ALL_HELD)


@case
def perm_kept_all_chowns_root_file(c: Case) -> Json:
    root_only_dir(c)
    c.stat_after("d/f")
    as_other_user_keeping(c, lambda: os.chown("d/f", 2000, 2000), ALL_HELD)
