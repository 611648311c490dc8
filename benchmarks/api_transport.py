"""What the HVFS API costs per request, with no VM: the codec, and a served open through
each transport.

    .venv/bin/python benchmarks/api_transport.py [REQUESTS]

A real manager serves ``open(O_WRONLY)`` of one file on a temporary directory
(hvfs.testing.directory_manager), through: the in-process call; the socket transport to
a server in the same process (what ``HVFS_TRANSPORT=socket`` runs); and the socket
transport to a manager in another process. Prints the median of 5 batches in µs per
request, the fd given back closed each time, as the driver closes it.
"""

from __future__ import annotations

import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hvfs import api
from hvfs.api import wire
from hvfs.api.server import SocketServer
from hvfs.api.socket_transport import SocketTransport, loopback
from hvfs.testing import caller, directory_manager


def per_request(call: Callable[[], object], count: int) -> float:
    """Median µs per call over 5 batches of ``count``."""
    for _ in range(count // 10):
        call()
    batches = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(count):
            call()
        batches.append((time.perf_counter() - start) / count * 1e6)
    return statistics.median(batches)


def served(transport: api.Transport, request: api.Request) -> Callable[[], object]:
    def call() -> object:
        response = transport.handle_request(request)
        assert isinstance(response, api.Fd), response
        os.close(response.fd)
        return response

    return call


def manager_elsewhere(root: Path, path: str) -> int:
    """A manager in a child process, listening at ``path``; returns its pid."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen()
    pid = os.fork()
    if pid == 0:  # the child serves until it is killed
        server = SocketServer(directory_manager(root).handle_request)
        server.listen(listener)
        while True:
            time.sleep(3600)
    listener.close()
    return pid


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "file").write_text("x")
        request = api.Open(caller=caller(), path=api.VmPath("/", "/file"), flags=os.O_WRONLY)
        text, blobs, fds = wire.encode(request)
        encoding = per_request(lambda: wire.encode(request), count)
        decoding = per_request(lambda: wire.decode_request(text, blobs, fds), count)
        print(f"codec, Open request ({len(text)} bytes): encode {encoding:.1f} µs, decode {decoding:.1f} µs")
        fd = os.open(root / "file", os.O_RDONLY | os.O_CLOEXEC)
        answer = wire.encode(api.Fd(fd, True), [])
        encoding = per_request(lambda: wire.encode(api.Fd(fd, True), []), count)
        decoding = per_request(lambda: wire.decode_response(*answer[:2], [fd], []), count)
        print(f"codec, Fd response: encode {encoding:.1f} µs, decode {decoding:.1f} µs")
        os.close(fd)
        pid = manager_elsewhere(root, str(root / "manager.sock"))  # forked before this process has threads
        manager = directory_manager(root)
        try:
            transports = {
                "in-process": api.InProcessTransport(manager.handle_request),
                "socket, server in this process": loopback(manager.handle_request),
                "socket, manager in another process": SocketTransport.to_path(str(root / "manager.sock")),
            }
            for name, transport in transports.items():
                print(f"served open(O_WRONLY), {name}: {per_request(served(transport, request), count):.1f} µs")
                transport.close()
        finally:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
