"""``hvfs run -p HOSTPORT:PORT``: a VM's TCP port published on the host.

The client (``hvfs run``, as the user, in the host's network) binds the host's side, on
127.0.0.1 unless told otherwise, and hands the listening socket to the manager, which
accepts on it and, for each connection, connects a socket made inside the VM's network
namespace to the VM's own 127.0.0.1:PORT, then relays bytes both ways. So nothing but
what reaches that one host address and port gets in, and the manager connects to
nothing but that one port of that one VM: the VM cannot aim it anywhere else.

Network namespaces are per thread: one thread of the forwarder joins the VM's and makes
the sockets there (a socket stays in the namespace it was made in), as the bridge's
thread does (hvfs.hypervisor.vmstart._Bridge).
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading

from hvfs import deferred
from hvfs._sys.abi import CLONE_NEWNET
from hvfs._sys.namespaces import setns

log = deferred.logger("hvfs.publish")
MAX_CONNECTIONS = 64  # at once per published port, each with two threads; more wait in the backlog
CONNECT_TIMEOUT = 5.0  # seconds to reach the VM's port
CHUNK = 65536


class Forwarder:
    """Relays connections from the host's ``listeners`` to the VM whose pid 1 is
    ``init_pid``: listener i to the VM's port ``ports[i]``."""

    def __init__(self, name: str, init_pid: int, listeners: list[int], ports: list[int]) -> None:
        self.name = name
        self._closed = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS * max(1, len(listeners)))
        self._made: queue.Queue[tuple[int, queue.Queue[socket.socket | OSError]] | None] = queue.Queue()
        netns = os.open(f"/proc/{init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        threading.Thread(target=self._maker, args=(netns,), name=f"hvfs-{name}-netns", daemon=True).start()
        self._listeners = [socket.socket(fileno=fd) for fd in listeners]
        for sock, port in zip(self._listeners, ports, strict=True):
            sock.settimeout(0.5)  # to see close() soon
            threading.Thread(target=self._accept, args=(sock, port), name=f"hvfs-{name}-p{port}", daemon=True).start()

    def _maker(self, netns: int) -> None:
        """Joins the VM's network namespace, then makes sockets there as asked."""
        try:
            setns(netns, CLONE_NEWNET)
            failure: OSError | None = None
        except OSError as e:
            failure = e
            log.warning("VM %s: published ports cannot reach it: %s", self.name, e.strerror)
        finally:
            os.close(netns)
        while (ask := self._made.get()) is not None:
            family, answer = ask
            if failure is not None:
                answer.put(failure)
                continue
            try:
                answer.put(socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC))
            except OSError as e:
                answer.put(e)

    def _inside(self) -> socket.socket:
        answer: queue.Queue[socket.socket | OSError] = queue.Queue()
        self._made.put((socket.AF_INET, answer))
        made = answer.get()
        if isinstance(made, OSError):
            raise made
        return made

    def _accept(self, listener: socket.socket, port: int) -> None:
        while not self._closed.is_set():
            if not self._slots.acquire(timeout=0.5):  # as many at once as that: the others wait in the backlog
                continue
            try:
                outside, _ = listener.accept()
            except TimeoutError:
                self._slots.release()
                continue
            except OSError:
                self._slots.release()
                return  # closed
            threading.Thread(target=self._connection, args=(outside, port), daemon=True).start()

    def _connection(self, outside: socket.socket, port: int) -> None:
        inside: socket.socket | None = None
        try:
            outside.settimeout(None)
            inside = self._inside()
            inside.settimeout(CONNECT_TIMEOUT)
            inside.connect(("127.0.0.1", port))
            inside.settimeout(None)
            back = threading.Thread(target=_pump, args=(inside, outside), daemon=True)
            back.start()
            _pump(outside, inside)
            back.join()
        except OSError:
            pass  # nothing listens on the VM's port (yet): the client sees the connection closed
        finally:
            outside.close()
            if inside is not None:
                inside.close()
            self._slots.release()

    def close(self) -> None:
        self._closed.set()
        self._made.put(None)
        for sock in self._listeners:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Bytes from ``source`` to ``sink`` until ``source`` ends; then ``sink`` hears the end."""
    try:
        while data := source.recv(CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
