"""The front ends' side of the manager: find it, start it when there is none, and make a
manager of other code (an upgrade) give way to one of the client's own.

A manager is started on demand as ``python -m hvfs manager serve``, detached, with the
environment that decides where its state lives (HVFS_STATE_DIR, XDG_RUNTIME_DIR, …). Its
VMs survive a restart: a manager that gives way leaves them to its successor.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import sys
import time
from collections.abc import Sequence
from typing import Any

from hvfs.hypervisor import control, views
from hvfs.hypervisor.layout import Layout, read_json
from hvfs.hypervisor.version import code_id

START_TIMEOUT = 20.0  # seconds a new manager may take to resume its VMs and listen
PASSED = ("PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "TMPDIR")


class ManagerError(control.ControlError):
    """No manager could be reached or started."""


def connect(
    layout: Layout | None = None, *, start: bool = True, paths: Sequence[str] = (), bound: Sequence[str] = ()
) -> control.Connection:
    """A connection to this user's manager, vouched for (peer credentials) and of the
    same code as this client; one is started if there is none and ``start``, or (``start``
    False) if one before it left VMs to resume. ``paths``: host paths the requests to
    come name, which the manager must see as this client does (see views); ``bound``:
    those of them bound with the mounts below them, which it must see below them too."""
    layout = layout or Layout()
    seen = views.seen(paths, frozenset(bound))
    try:
        connection = _hello(layout, seen)
    except control.NotUp:
        if not start and not left_vms(layout):
            raise
        _start(layout)
        connection = _wait_up(layout, seen)
    return connection


def left_vms(layout: Layout) -> bool:
    """Whether a manager that is gone left VMs (or their records) for the next one."""
    try:
        return any(not name.startswith(".free-") for name in os.listdir(layout.groups))  # vmdirs.FREE: empty
    except OSError:
        return False


def manager_pid(layout: Layout) -> int | None:
    """The running manager's pid, as it noted it once it held its lock."""
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        return int(read_json(layout.info)["pid"])
    return None


def _hello(layout: Layout, seen: list[list[object]], *, replace_unseen: bool = True) -> control.Connection:
    pid = manager_pid(layout)
    try:
        connection = control.connect(layout.socket, manager_pid=pid)
    except control.Impostor:
        if manager_pid(layout) == pid:
            raise
        connection = control.connect(layout.socket, manager_pid=manager_pid(layout))  # a new manager meanwhile
    try:
        connection.send({"hvfs": control.VERSION, "op": "hello", "views": seen})
        connection.wait_answer(control.answer_timeout())
        reply, _ = connection.receive()
    except BaseException:
        connection.close()
        raise
    if reply.get("version") != code_id():
        _replace(layout, connection)
        raise control.NotUp("it ran other code, and gave way")
    if reply.get("unseen"):
        if not replace_unseen:
            connection.close()
            raise ManagerError(f"a new manager sees {reply['unseen'][0]} otherwise than this command does")
        _replace(layout, connection)
        raise control.NotUp(f"it saw {reply['unseen'][0]} otherwise (mounted since it started), and gave way")
    return connection


def _replace(layout: Layout, connection: control.Connection) -> None:
    """Ask a manager of other code to leave its VMs to a new one and exit; wait until it has."""
    try:
        connection.send({"hvfs": control.VERSION, "op": "shutdown", "stop": False})
        connection.wait_answer(control.answer_timeout())
        connection.receive()
    finally:
        connection.close()
    wait_unlocked(layout)


def wait_unlocked(layout: Layout) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ManagerError("the manager did not exit when asked") from None
                time.sleep(0.02)
    finally:
        os.close(fd)


def _start(layout: Layout) -> None:
    """Spawn a manager, unless another client is doing it right now (then wait for that)."""
    os.makedirs(layout.root, mode=0o700, exist_ok=True)
    spawning = os.open(layout.spawn_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(spawning, fcntl.LOCK_EX)
        with contextlib.suppress(control.NotUp):
            _hello(layout, []).close()
            return  # another client started one meanwhile
        env = {key: os.environ[key] for key in PASSED if key in os.environ}
        env.update({key: value for key, value in os.environ.items() if key.startswith("HVFS_")})
        env["HVFS_STATE_DIR"] = layout.root  # the one this client uses, whatever the manager's ids look like
        env.update(_same_code(env.get("PYTHONPATH")))
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
        try:
            os.posix_spawn(
                sys.executable,
                [sys.executable, "-P", "-m", "hvfs", "manager", "serve", "--ready-fd", "3"],  # -P: not from its cwd
                env,
                file_actions=[
                    *((os.POSIX_SPAWN_DUP2, null, target) for target in (0, 1, 2)),
                    (os.POSIX_SPAWN_DUP2, ready_write, 3),
                ],
                setsid=True,
            )
        finally:
            os.close(null)
            os.close(ready_write)
        try:
            _wait_ready(layout, ready_read)
        finally:
            os.close(ready_read)
    finally:
        os.close(spawning)


def _same_code(pythonpath: str | None) -> dict[str, str]:
    """PYTHONPATH for a manager that imports this very hvfs: a client imported from a
    source tree (``python -m pytest`` in a checkout puts its directory first) would
    otherwise start the installed one, of other code, and wait for it in vain."""
    import site

    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    installed = {*site.getsitepackages(), site.getusersitepackages()}
    if here in installed or (pythonpath or "").split(os.pathsep)[:1] == [here]:
        return {}
    return {"PYTHONPATH": os.pathsep.join(p for p in (here, pythonpath) if p)}


def _wait_ready(layout: Layout, ready: int) -> None:
    """The new manager's one line on its readiness pipe: listening, or why it could not
    start (user namespaces disabled, say), which becomes this command's error."""
    if not select.select([ready], [], [], START_TIMEOUT)[0]:
        raise ManagerError(f"no manager started within {START_TIMEOUT:g}s; see {layout.root}/manager.log")
    line = os.read(ready, 65536).decode(errors="replace").strip()
    if line != "ready":
        raise ManagerError(line.removeprefix("error: ") or f"the manager exited at once; see {layout.root}/manager.log")


def _wait_up(layout: Layout, seen: list[list[object]]) -> control.Connection:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            return _hello(layout, seen, replace_unseen=False)
        except control.NotUp:
            if time.monotonic() > deadline:
                raise ManagerError(f"the manager did not answer; see {layout.root}/manager.log") from None
            time.sleep(0.01)


def request(connection: control.Connection, op: str, fds: list[int] | None = None, **fields: object) -> None:
    connection.send({"hvfs": control.VERSION, "op": op, **fields}, fds)


def ask(
    connection: control.Connection,
    op: str,
    fds: list[int] | None = None,
    *,
    wait: float | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """One request and its one reply, on a connection used for nothing else: the connection
    is closed, and any fds that came with the reply, whatever happens. ``wait``: seconds
    for the answer (None: as long as it takes, for a manager writing a long answer to an
    fd of ours)."""
    try:
        request(connection, op, fds, **fields)
        if wait is not None:
            connection.wait_answer(wait)
        reply, got = connection.receive()
    finally:
        connection.close()
    for fd in got:
        os.close(fd)
    return reply
