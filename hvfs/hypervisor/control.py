"""The control protocol between the hvfs CLI and a project's manager (docs/control.md).

A unix SOCK_SEQPACKET socket in the project's state directory, mode 0600, whose peer
credentials are checked as well: only the user who started the manager (root inside its
user namespace) may use it. Each message is one JSON object; file descriptors travel with
it (SCM_RIGHTS). Every request names the protocol version it speaks.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from hvfs import deferred
from hvfs.errors import HvfsError

VERSION = 1
MAX_MESSAGE = 1 << 20
MAX_FDS = 64  # a container: its stdio, its root and its bind mounts
ANSWER_TIMEOUT = 10.0  # seconds a client waits for a manager's first answer (HVFS_CONTROL_TIMEOUT)
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
log = deferred.logger("hvfs.control")


class ControlError(HvfsError):
    """The manager refused a request, or is not there."""


class NotUp(ControlError):
    """No manager listens on the socket."""


class NoAnswer(ControlError):
    """The manager took no request, or gave no answer, in time (stopped, or stuck)."""


class Impostor(ControlError):
    """The socket is served by a process that is not this user's manager: nothing was sent."""


def answer_timeout() -> float:
    try:
        return max(0.1, float(os.environ.get("HVFS_CONTROL_TIMEOUT", ANSWER_TIMEOUT)))
    except ValueError:
        return ANSWER_TIMEOUT


def peer(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end, as the kernel recorded them."""
    pid, uid, _gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return pid, uid


class Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()

    def hung_up(self) -> bool:
        """Whether the other end has closed (a client that gave up waiting): what it asked
        must not be started any more."""
        # POLLHUP only once both directions are shut (the client closed); a client that
        # merely shut its writing side (POLLRDHUP) still reads the replies.
        events = select.poll()
        events.register(self.sock, select.POLLHUP)
        return any(mask & (select.POLLHUP | select.POLLERR) for _, mask in events.poll(0))

    def wait_answer(self, timeout: float) -> None:
        """Return once a message (or the end) can be read; raise NoAnswer after ``timeout``."""
        if not select.select([self.sock], [], [], timeout)[0]:
            raise NoAnswer(f"waited {timeout:g}s")

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        data = json.dumps(message).encode()
        with self._lock:
            if fds:
                socket.send_fds(self.sock, [data], fds)
            else:
                self.sock.send(data)

    def receive(self) -> tuple[dict[str, Any], list[int]]:
        data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, MAX_FDS)
        if not data:
            raise EOFError()
        try:
            message = json.loads(data)
            if not isinstance(message, dict):
                raise ValueError("a message is a JSON object")
        except ValueError:
            for fd in fds:
                os.close(fd)
            raise
        return message, list(fds)

    def close(self) -> None:
        self.sock.close()


Handler = Callable[[dict[str, Any], list[int], Connection], None]


class ControlServer:
    """Accepts connections and runs ``handler`` for each request, in a thread per connection."""

    def __init__(self, path: str, handler: Handler, on_close: Callable[[Connection], None] | None = None) -> None:
        self.path = path
        self._handler = handler
        self._on_close = on_close  # told of every connection that ends
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            self._sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._sock.listen(16)
        self._thread = threading.Thread(target=self._accept, name="hvfs-control", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        from hvfs.hypervisor.threads import spawn  # the manager's alone: a client imports this module

        while True:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return
            spawn(self._serve, (Connection(sock),), "hvfs-control-connection")  # a kept thread: no start to wait

    def _serve(self, connection: Connection) -> None:
        try:
            _pid, uid = peer(connection.sock)
            if uid != os.geteuid():  # in the manager's user namespace, its owner is root
                connection.send({"error": "permission denied: this manager belongs to another user"})
                return
            while True:
                try:
                    message, fds = connection.receive()
                except (EOFError, OSError, ValueError):
                    return
                gone = connection.hung_up()  # it gave up (we were stopped, or slow): do not start it now
                if gone or message.get("hvfs") != VERSION:
                    for fd in fds:
                        os.close(fd)
                    if gone:
                        log.warning("control request %s dropped: its client has gone", message.get("op"))
                        return
                    connection.send(
                        {"error": f"protocol {message.get('hvfs')!r} is not spoken here; this manager speaks {VERSION}"}
                    )
                    continue
                try:
                    self._handler(message, fds, connection)
                except Exception as e:
                    log.exception("control request %s failed", message.get("op"))
                    with contextlib.suppress(OSError):
                        connection.send({"error": f"internal error: {e!r}"})
        finally:
            if self._on_close is not None:
                try:
                    self._on_close(connection)
                except Exception:
                    log.exception("closing a control connection failed")
            connection.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def connect(path: str, *, manager_pid: int | None = None, timeout: float | None = None) -> Connection:
    """A connection to the manager listening at ``path``, once the kernel has vouched that
    it is this user's (and, given ``manager_pid``, that very process): nothing is sent
    before, so a socket someone else planted receives nothing. Raises NotUp, NoAnswer
    (its backlog stayed full for ``timeout`` seconds) and Impostor."""
    deadline = time.monotonic() + (answer_timeout() if timeout is None else timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    try:
        while True:
            try:
                sock.connect(path)
                break
            except BlockingIOError:  # a full backlog: the manager accepts no one (stopped?)
                if time.monotonic() > deadline:
                    raise NoAnswer("its control socket accepts no connection") from None
                time.sleep(0.05)
            except (FileNotFoundError, ConnectionRefusedError):
                raise NotUp("not up") from None
        pid, uid = peer(sock)
        if uid != os.geteuid():
            raise Impostor(f"{path} is served by a process of uid {uid} (pid {pid}), not by you")
        if manager_pid is not None and pid not in (manager_pid, 0):  # 0: outside our pid namespace
            raise Impostor(f"{path} is served by pid {pid}, not by the manager (pid {manager_pid})")
        sock.setblocking(True)
    except BaseException:
        sock.close()
        raise
    return Connection(sock)


def call(
    path: str, op: str, *, manager_pid: int | None = None, wait: float | None = None, **fields: Any
) -> dict[str, Any]:
    """One request, one reply within ``wait`` seconds (default: answer_timeout());
    raises ControlError (NoAnswer, Impostor, NotUp) or, for an error reply, ControlError."""
    wait = answer_timeout() if wait is None else wait
    connection = connect(path, manager_pid=manager_pid, timeout=wait)
    try:
        connection.send({"hvfs": VERSION, "op": op, **fields})
        connection.wait_answer(wait)
        reply, _ = connection.receive()
    except (EOFError, OSError, ValueError):
        raise ControlError("the manager closed the connection") from None
    finally:
        connection.close()
    if "error" in reply:
        raise ControlError(str(reply["error"]))
    return reply


def replies(connection: Connection) -> Iterator[tuple[dict[str, Any], list[int]]]:
    while True:
        try:
            yield connection.receive()
        except (EOFError, OSError, ValueError):
            return
