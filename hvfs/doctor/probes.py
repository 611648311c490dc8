"""What the kernel really lets hvfs do, tried in throw-away child processes: a user and
mount namespace with a mount in it, overlayfs there, and seccomp user notification with
ADDFD and the sync wake-up flag. Reading sysctls says what should work; only trying
says what does (an AppArmor policy, a seccomp filter of a container, a LSM may refuse
what every sysctl allows).

Each probe forks (the doctor is single-threaded), does its work in the child, and gets
one line back through a pipe: "ok" and details, or the step that failed with its errno.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
from collections.abc import Callable
from typing import Any

from hvfs._sys import mount as m
from hvfs._sys import notify, process
from hvfs._sys.abi import CLONE_NEWNS, CLONE_NEWUSER, PR_SET_NO_NEW_PRIVS

PROBE_TIMEOUT = 10.0


class Failed(Exception):
    """A probe's step failed: ``step`` names it, ``code`` is its errno."""

    def __init__(self, step: str, code: int) -> None:
        super().__init__(f"{step}: {os.strerror(code)} ({errno.errorcode.get(code, code)})")
        self.step, self.code = step, code


def _step(step: str, action: Callable[[], Any]) -> Any:
    try:
        return action()
    except OSError as e:
        raise Failed(step, e.errno or errno.EIO) from None


def in_child(probe: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``probe()``'s result, computed in a child process: {"ok": True, ...}, or {"ok":
    False, "step": …, "errno": …, "error": …}."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(read_end)
            try:
                result = {"ok": True, **probe()}
            except Failed as e:
                result = {"ok": False, "step": e.step, "errno": e.code, "error": str(e)}
            except Exception as e:
                result = {"ok": False, "step": "probe", "errno": 0, "error": repr(e)}
            os.write(write_end, json.dumps(result).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        if not select.select([read_end], [], [], PROBE_TIMEOUT)[0]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            return {"ok": False, "step": "probe", "errno": errno.ETIMEDOUT, "error": "no answer in time"}
        data = os.read(read_end, 65536)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    try:
        answer: dict[str, Any] = json.loads(data)
        return answer
    except ValueError:
        return {"ok": False, "step": "probe", "errno": 0, "error": "the probe died"}


def _map_self(uid: int, gid: int) -> None:
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1\n")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1\n")


def user_namespace() -> dict[str, Any]:
    """A user and mount namespace of this user's, mapped, with a memory file system
    mounted in it (AppArmor's restriction lets the first step pass and refuses this one)."""
    uid, gid = os.geteuid(), os.getegid()
    _step("unshare(CLONE_NEWUSER|CLONE_NEWNS)", lambda: process.unshare(CLONE_NEWUSER | CLONE_NEWNS))
    _step("write uid_map", lambda: _map_self(uid, gid))
    fd = _step("mount tmpfs in it", lambda: m.new_mount("tmpfs", {"size": "1m"}))
    os.close(fd)
    return {}


def overlay_in_user_namespace() -> dict[str, Any]:
    """overlayfs mounted in a user namespace (every VM's root is one), on a tmpfs."""
    user_namespace()
    import tempfile

    base = tempfile.mkdtemp(prefix="hvfs-doctor-")
    try:
        tree = _step("mount tmpfs", lambda: m.new_mount("tmpfs", {"size": "1m"}))
        _step("attach tmpfs", lambda: m.attach(tree, os.open(base, os.O_PATH | os.O_DIRECTORY)))
        for name in ("lower", "upper", "work"):
            os.mkdir(os.path.join(base, name))
        options: dict[str, str | None] = {
            "lowerdir": f"{base}/lower", "upperdir": f"{base}/upper", "workdir": f"{base}/work",
        }  # fmt: skip
        os.close(_step("mount overlay", lambda: m.new_mount("overlay", options)))
    finally:
        with contextlib.suppress(OSError):
            m.umount(base)
        with contextlib.suppress(OSError):
            os.rmdir(base)
    return {}


def _getppid_filter() -> bytes:
    """A filter that asks its listener about getppid(2) and allows everything else."""
    import pyseccomp as sc

    program = sc.SyscallFilter(sc.ALLOW)
    program.set_attr(sc.Attr.CTL_NNP, 0)
    program.add_rule(sc.NOTIFY, "getppid")
    memfd = os.memfd_create("hvfs-doctor", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(memfd), "wb") as sink:
            program.export_bpf(sink)
        return os.pread(memfd, os.fstat(memfd).st_size, 0)
    finally:
        os.close(memfd)


def seccomp_notify() -> dict[str, Any]:
    """A filter with a listener; a child's getppid() trapped, answered with ADDFD+SEND
    (a pipe installed in the child, its number returned); the sync wake-up flag set."""
    bpf = _getppid_filter()
    _step("prctl(PR_SET_NO_NEW_PRIVS)", lambda: process.prctl(PR_SET_NO_NEW_PRIVS, 1))
    listener = _step(
        "seccomp(NEW_LISTENER)", lambda: process.load_seccomp_filter(bpf, process.SECCOMP_FILTER_FLAG_NEW_LISTENER)
    )
    result: dict[str, Any] = {}
    try:
        notify.set_flags(listener, notify.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
        result["sync_wake_up"] = True
    except OSError as e:
        result["sync_wake_up"], result["sync_errno"] = False, e.errno
    given_read, _given_write = os.pipe2(os.O_CLOEXEC)
    expected = os.fstat(given_read).st_ino
    target = os.fork()
    if target == 0:  # pragma: no cover - trapped here, answered by the parent
        number = os.getppid()
        try:
            got = os.fstat(number).st_ino == expected and number != given_read
        except OSError:
            got = False
        os._exit(0 if got else 3)
    try:
        if not select.select([listener], [], [], PROBE_TIMEOUT)[0]:
            raise Failed("NOTIF_RECV (no notification came)", errno.ETIMEDOUT)
        notif = _step("NOTIF_RECV", lambda: notify.receive(listener))
        result["id_valid"] = notify.id_valid(listener, notif.id)
        try:
            notify.add_fd(listener, notif.id, given_read, os.O_CLOEXEC, respond=True)
            result["addfd"] = True
        except OSError as e:
            result["addfd"], result["addfd_errno"] = False, e.errno
            notify.respond(listener, notif.id, error=errno.ENOSYS)
        _, status = os.waitpid(target, 0)
        result["addfd"] = result["addfd"] and os.waitstatus_to_exitcode(status) == 0
    finally:
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.kill(target, signal.SIGKILL)
            os.waitpid(target, 0)
        os.close(listener)
    return result


def fuse() -> dict[str, Any]:
    """/dev/fuse opened for reading and writing, as a FUSE server does."""
    fd = _step("open /dev/fuse", lambda: os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC))
    os.close(fd)
    return {}
