"""Unix-socket addresses and fds changed by another thread while hvfs decides.

The escape these guard against: an address checked as AF_INET (or a socket checked as
INET) that the kernel, asked to continue, reads again as a unix path to a host socket.
Every attack targets host sockets on a volume not marked ``sockets`` (mode 0777, so that
nothing but hvfs stands in the way), counts on the host what reached them, and checks
from the program's own counts that the kernel or hvfs saw both values of what flipped.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.adversarial.conftest import Attacker


@dataclass
class HostSockets:
    """A listening and a datagram socket on the host, in ``directory``, counting what
    reaches them from the moment they exist."""

    directory: Path
    accepted: int = 0
    datagrams: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.directory / "host.sock"))
        self.listener.listen(128)
        self.receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.receiver.bind(str(self.directory / "host.dgram"))
        for name in ("host.sock", "host.dgram"):
            os.chmod(self.directory / name, 0o777)  # only hvfs may stand in the way
        for sock in (self.listener, self.receiver):
            sock.settimeout(0.1)
        self._threads = [threading.Thread(target=self._accept), threading.Thread(target=self._receive)]
        for thread in self._threads:
            thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            connection.close()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                self.receiver.recv(64)
            except TimeoutError:
                continue
            self.datagrams += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self.listener.close()
        self.receiver.close()


@pytest.fixture
def host(shared_tmp: Path) -> Iterator[HostSockets]:
    (shared_tmp / "ro").mkdir()
    sockets = HostSockets(shared_tmp)
    sockets.start()
    yield sockets
    sockets.stop()


def volumes(attacker: Attacker, host: HostSockets) -> list[str]:
    attacker.give(host.directory)
    os.chmod(host.directory / "ro", 0o777)
    return ["-v", f"{host.directory}:/data", "-v", f"{host.directory / 'ro'}:/ro:ro"]


def test_connect_with_a_flipping_family(attacker: Attacker, host: HostSockets) -> None:
    outcome = attacker.run("connect_flip", "/data/host.sock", options=volumes(attacker, host))
    print(attacker.variant, outcome.report)
    assert outcome.code == 0, outcome.stderr
    assert host.accepted == 0 and outcome.count("connected") == 0, outcome.report
    # Both families met the kernel or hvfs: AF_INET (EINVAL on a unix socket), AF_UNIX (refused).
    assert outcome.count("einval") > 0 and outcome.count("eacces") > 0, outcome.report
    assert outcome.count("other") == 0, outcome.report


def test_datagrams_to_a_flipping_destination(attacker: Attacker, host: HostSockets) -> None:
    outcome = attacker.run("send_flip", "/data/host.dgram", options=volumes(attacker, host))
    print(attacker.variant, outcome.report)
    assert outcome.code == 0, outcome.stderr
    assert host.datagrams == 0, (host.datagrams, outcome.report)
    for call in ("sendto", "sendmsg"):  # each call saw the VM's own destination and the host's
        assert outcome.count(f"{call}_delivered") > 0 and outcome.count(f"{call}_eacces") > 0, outcome.report
    assert outcome.count("other") == 0, outcome.report


def test_bind_with_a_flipping_family(attacker: Attacker, host: HostSockets) -> None:
    outcome = attacker.run("bind_flip", "/ro/made.sock", options=volumes(attacker, host))
    print(attacker.variant, outcome.report)
    assert outcome.code == 0, outcome.stderr
    assert not (host.directory / "ro" / "made.sock").exists(), outcome.report
    assert outcome.count("bound") == 0, outcome.report
    assert outcome.count("einval") > 0 and outcome.count("erofs") > 0, outcome.report


def test_a_socket_swapped_under_the_fd(attacker: Attacker, host: HostSockets) -> None:
    outcome = attacker.run(
        "fd_swap", "/data/host.sock", "/data/host.dgram", "/ro/swapped.sock", options=volumes(attacker, host)
    )
    print(attacker.variant, outcome.report)
    assert outcome.code == 0, outcome.stderr
    assert host.accepted == 0 and host.datagrams == 0, (host.accepted, host.datagrams, outcome.report)
    assert not (host.directory / "ro" / "swapped.sock").exists(), outcome.report
    for call in ("connect", "sendmsg", "bind"):  # the number named each socket when it was checked
        assert outcome.count(f"{call}_ok") == 0, outcome.report
        assert outcome.count(f"{call}_inet") > 0 and outcome.count(f"{call}_refused") > 0, outcome.report
