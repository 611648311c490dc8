"""The socket transport: every message over a real SEQPACKET socketpair, fds by SCM_RIGHTS,
the handshake, the peer check, and the fd rules both transports follow."""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hvfs import api
from hvfs.api import choice, framing, wire
from hvfs.api.fds import FdRole
from hvfs.api.server import SocketServer
from hvfs.api.socket_transport import SocketTransport, loopback
from hvfs.api.transport import ProtocolMismatch, TransportError
from tests.conftest import REPO, require
from tests.unit.examples import instances

REQUESTS = typing.get_args(api.Request)
RESPONSES = typing.get_args(api.Response)


class Files:
    """Temporary regular files opened read-write: each fd a distinct open file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.opened: list[int] = []
        self.lent: list[int] = []

    def __call__(self, role: FdRole = FdRole.LENT) -> int:
        fd = os.open(self.directory / f"f{len(self.opened)}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.write(fd, b"0123456789")
        self.opened.append(fd)
        if role is FdRole.LENT:
            self.lent.append(fd)
        return fd

    def close(self) -> None:
        for fd in self.opened:
            os.close(fd)


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Files]:
    made = Files(tmp_path)
    yield made
    made.close()


def same_open_file(a: int, b: int) -> bool:
    """``a`` and ``b`` are two fds of one open file: same inode, and a shared offset."""
    sa, sb = os.fstat(a), os.fstat(b)
    if (sa.st_dev, sa.st_ino) != (sb.st_dev, sb.st_ino):
        return False
    for where in (3, 7):
        os.lseek(a, where, os.SEEK_SET)
        if os.lseek(b, 0, os.SEEK_CUR) != where:
            return False
    return True


def open_fds() -> set[int]:
    """This process's open fds (not the one that lists them, closed by then)."""
    return {fd for fd in map(int, os.listdir("/proc/self/fd")) if _is_open(fd)}


def _is_open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError:
        return False
    return True


def remap(value: Any, mapping: dict[int, int]) -> Any:
    """``value`` with the numbers of its lent fds replaced as ``mapping`` says."""
    if type(value) is tuple:
        return tuple(remap(v, mapping) for v in value)
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return value
    hints = typing.get_type_hints(type(value), include_extras=True)
    changes = {}
    for f in dataclasses.fields(value):
        inner = getattr(value, f.name)
        if typing.get_args(hints[f.name])[1:] == (FdRole.LENT,):
            changes[f.name] = mapping[inner]
        else:
            changes[f.name] = remap(inner, mapping)
    return dataclasses.replace(value, **changes)


@pytest.mark.parametrize("cls", REQUESTS, ids=lambda c: c.__name__)
def test_every_request_arrives_whole_with_its_fds_as_new_fds_of_the_same_files(cls: type, files: Files) -> None:
    seen: list[tuple[bytes, bytes, list[int], list[bool]]] = []
    originals: list[Any] = []

    def handler(request: api.Request) -> api.Response:
        text, blobs, fds = wire.encode(request)
        sent = wire.encode(originals[-1])
        alike = [theirs != mine and same_open_file(theirs, mine) for theirs, mine in zip(fds, sent[2], strict=True)]
        seen.append((text, blobs, fds, alike))
        return api.Value(len(seen))

    transport = loopback(handler)
    try:
        for request in instances(cls, files):
            originals.append(request)
            assert transport.handle_request(request) == api.Value(len(originals))
            text, blobs, fds = wire.encode(request)
            got_text, got_blobs, got_fds, alike = seen[-1]
            assert (got_text, got_blobs) == (text, blobs)
            assert len(got_fds) == len(fds) and all(alike), alike
    finally:
        transport.close()


@pytest.mark.parametrize("cls", RESPONSES, ids=lambda c: c.__name__)
def test_every_response_comes_back_given_fds_new_and_lent_ones_the_callers_own(cls: type, files: Files) -> None:
    for response in instances(cls, files):
        lent = list(files.lent)
        # One request that lends all of them: the response may lend back any.
        passed = api.PassedFiles(tuple(api.OpenFile(fd, "f") for fd in lent))
        carrier = api.Send(caller=api.Caller("vm", 1), socket=api.OpenFile(files(), "s"), data=b"", length=0,
                           flags=0, address=None, control=(passed,))  # fmt: skip

        def handler(request: api.Request, response: Any = response, lent: list[int] = lent) -> api.Response:
            assert isinstance(request, api.Send) and isinstance(request.control[0], api.PassedFiles)
            theirs = [file.fd for file in request.control[0].files]
            reply = remap(response, dict(zip(lent, theirs, strict=True)))
            if isinstance(reply, api.Fd):
                reply = api.Fd(os.dup(reply.fd), reply.cloexec)  # the server's own, to give away
            return typing.cast(api.Response, reply)

        transport = loopback(handler)
        try:
            got = transport.handle_request(carrier)
        finally:
            transport.close()
        if isinstance(response, api.Fd):
            assert isinstance(got, api.Fd) and got.fd not in files.opened and got.cloexec == response.cloexec
            assert same_open_file(got.fd, response.fd)
            assert fcntl.fcntl(got.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC  # never inherited by a child
            os.close(got.fd)
        else:
            assert wire.encode(got, lent) == wire.encode(response, lent)  # the very numbers lent


def test_a_writable_given_fd_is_the_only_reference_when_the_call_returns(tmp_path: Path) -> None:
    target = tmp_path / "written"

    def handler(request: api.Request) -> api.Response:
        return api.Fd(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600), True)

    transport = loopback(handler)
    request = api.Mkdir(caller=api.Caller("vm", 1), path=api.VmPath("/", "/x"), mode=0)
    try:
        for _ in range(300):
            got = transport.handle_request(request)
            assert isinstance(got, api.Fd)
            inode = os.fstat(got.fd).st_ino
            holders = [n for n in open_fds() if _inode(n) == inode]
            os.close(got.fd)
            assert holders == [got.fd]
    finally:
        transport.close()


def _inode(fd: int) -> int | None:
    try:
        return os.stat(f"/proc/self/fd/{fd}").st_ino
    except OSError:
        return None


def test_no_fd_is_left_behind(files: Files) -> None:
    def handler(request: api.Request) -> api.Response:
        if isinstance(request, api.Unlink):
            return api.Value(0)
        return api.Fd(os.open("/", os.O_RDONLY | os.O_CLOEXEC), False)

    transport = loopback(handler)
    chmod = api.Chmod(caller=api.Caller("vm", 1), target=api.OpenFile(files(), "f"), mode=0o600)
    try:
        unlink = api.Unlink(caller=api.Caller("vm", 1), path=api.VmPath("/", "/x"))
        transport.handle_request(unlink)  # the connection and its server thread exist from now on
        before = open_fds()
        for _ in range(200):
            got = transport.handle_request(chmod)
            assert isinstance(got, api.Fd)
            os.close(got.fd)
        # A connection's requests are served in turn: once this one is answered, the
        # server has closed the copies of the last one's fds.
        transport.handle_request(unlink)
        assert open_fds() == before
    finally:
        transport.close()


def _send(files: Files, *, data: bytes = b"", passed: int = 0) -> api.Send:
    control = (api.PassedFiles(tuple(api.OpenFile(files(), f"p{i}") for i in range(passed))),) if passed else ()
    return api.Send(caller=api.Caller("vm", 1), socket=api.OpenFile(files(), "s"), data=data, length=len(data),
                    flags=0, address=None, control=control)  # fmt: skip


def test_a_message_past_a_datagram_travels_in_a_memfd_and_past_253_fds_in_more_datagrams(files: Files) -> None:
    got: list[tuple[int, int, bool]] = []

    def handler(request: api.Request) -> api.Response:
        assert isinstance(request, api.Send)
        mine = [f.fd for c in request.control if isinstance(c, api.PassedFiles) for f in c.files]
        alike = all(same_open_file(a.fd, b) for a, b in zip(sent.control[0].files, mine, strict=True)) if mine else True  # type: ignore[union-attr]
        got.append((len(request.data), len(mine), alike and request.data == sent.data))
        return api.Value(len(request.data))

    transport = loopback(handler)
    try:
        sent = _send(files, data=bytes(range(256)) * 4096)  # 1 MiB
        assert transport.handle_request(sent) == api.Value(1 << 20)
        sent = _send(files, data=b"x", passed=framing.SCM_MAX_FD + 7)
        assert transport.handle_request(sent) == api.Value(1)
    finally:
        transport.close()
    assert got == [(1 << 20, 0, True), (1, framing.SCM_MAX_FD + 7, True)]


def test_a_blocked_request_holds_up_only_its_own_thread(files: Files) -> None:
    release = threading.Event()

    def handler(request: api.Request) -> api.Response:
        if isinstance(request, api.Mkdir):
            release.wait(10)
        return api.Value(request.caller.pid)

    transport = loopback(handler)
    blocked: list[api.Response] = []
    mkdir = api.Mkdir(caller=api.Caller("vm", 1), path=api.VmPath("/", "/d"), mode=0)
    thread = threading.Thread(target=lambda: blocked.append(transport.handle_request(mkdir)))
    thread.start()
    try:
        for pid in range(2, 20):
            assert transport.handle_request(api.Unlink(caller=api.Caller("vm", pid), path=mkdir.path)) == api.Value(pid)
        assert not blocked
    finally:
        release.set()
        thread.join(10)
        transport.close()
    assert blocked == [api.Value(1)]


def test_a_manager_gone_is_a_transport_error_not_an_errno() -> None:
    server = SocketServer(lambda request: api.Value(0))
    transport = SocketTransport(server.pair)
    request = api.Unlink(caller=api.Caller("vm", 1), path=api.VmPath("/", "/x"))
    assert transport.handle_request(request) == api.Value(0)
    server.close()
    with pytest.raises(TransportError, match="HVFS manager"):
        transport.handle_request(request)
    with pytest.raises(TransportError, match="cannot reach the HVFS manager"):
        SocketTransport.to_path("/nonexistent/hvfs.sock").handle_request(request)
    transport.close()


def _raw_client(server: SocketServer) -> socket.socket:
    sock = server.pair()
    framing.client_handshake(sock)
    return sock


def test_a_client_that_breaks_the_protocol_is_dropped_and_its_fds_closed(files: Files) -> None:
    server = SocketServer(lambda request: api.Value(0))
    sock = _raw_client(server)
    before = open_fds()
    read, write = os.pipe2(os.O_CLOEXEC)
    framing.send(sock, framing.REQUEST, b"[999]", b"", [write])
    os.close(write)
    failed = framing.Receiver(sock).receive()
    assert failed is not None and failed.kind == framing.FAILED and b"not one of the types" in failed.text
    assert framing.Receiver(sock).receive() is None  # then the connection ends
    assert select.select([read], [], [], 5)[0] and os.read(read, 1) == b""  # the server closed its copy
    os.close(read)
    sock.close()
    server.close()
    assert open_fds() <= before


def test_a_version_mismatch_is_refused_with_one_clear_line(caplog: pytest.LogCaptureFixture) -> None:
    server = SocketServer(lambda request: api.Value(0))
    old = server.pair()
    old.sendall(framing._HELLO.pack(framing.MAGIC, wire.PROTOCOL + 1, b"0" * 16))
    answer = old.recv(4096)
    assert answer[framing._HELLO.size] == framing.REFUSED
    reason = answer[framing._HELLO.size + 1 :].decode()
    assert "\n" not in reason and f"protocol {wire.PROTOCOL + 1}" in reason and "one version of hvfs" in reason
    old.close()
    server.close()
    assert any("refused a client" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)

    # The client's side: a manager of another version.
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def newer_manager() -> None:
        theirs.recv(4096)
        theirs.sendall(framing._HELLO.pack(framing.MAGIC, wire.PROTOCOL + 1, b"f" * 16) + bytes([framing.REFUSED]))

    thread = threading.Thread(target=newer_manager)
    thread.start()
    with pytest.raises(ProtocolMismatch) as raised:
        framing.client_handshake(mine)
    thread.join()
    message = str(raised.value)
    assert "\n" not in message and f"protocol {wire.PROTOCOL + 1}" in message and "restart the manager" in message
    for sock in (mine, theirs):
        sock.close()
    with pytest.raises(TransportError, match="not an HVFS manager"):
        peer, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        other.sendall(b"HTTP/1.1 200 OK")
        try:
            framing.client_handshake(peer)
        finally:
            peer.close()
            other.close()


_OTHER_USER_CLIENT = """
import sys
from hvfs import api
from hvfs.api.socket_transport import SocketTransport
from hvfs.api.transport import TransportError
try:
    request = api.Unlink(caller=api.Caller("vm", 1), path=api.VmPath("/", "/x"))
    SocketTransport.to_path(sys.argv[1]).handle_request(request)
except TransportError as e:
    print(e)
"""


def test_peers_of_another_user_are_refused_both_ways(shared_tmp: Path) -> None:
    require(os.geteuid() == 0, "running a peer as another user needs root")
    path = str(shared_tmp / "manager.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    os.chmod(path, 0o777)
    listener.listen()
    served: list[api.Request] = []
    server = SocketServer(lambda request: served.append(request) or api.Value(0))  # type: ignore[func-returns-value]
    server.listen(listener)
    nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([*nobody, sys.executable, "-c", _OTHER_USER_CLIENT, path], capture_output=True, text=True,
                         env=env, timeout=60)  # fmt: skip
    server.close()
    assert out.returncode == 0, out.stderr
    assert "refused this client" in out.stdout and "uid 65534" in out.stdout, out.stdout
    assert not served

    # A server of another user: this client refuses it before sending anything.
    other = str(shared_tmp / "other.sock")
    serve = f"import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.bind({other!r}); s.listen(); "
    serve += "print(flush=True); c, _ = s.accept(); print(repr(c.recv(100)))"
    child = subprocess.Popen([*nobody, sys.executable, "-c", serve], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "\n"
    with pytest.raises(TransportError, match=r"not an HVFS manager to trust.*uid 65534"):
        SocketTransport.to_path(other).handle_request(api.Unlink(caller=api.Caller("vm", 1), path=api.VmPath("/", "x")))
    assert child.communicate(timeout=30)[0].strip() == "b''"  # it got nothing


# The fd rules hold alike whichever transport carries a request.

Make = Callable[[Callable[[api.Request], api.Response]], Any]
TRANSPORTS = [pytest.param(api.InProcessTransport, id="inprocess"), pytest.param(loopback, id="socket")]


@pytest.mark.parametrize("make", TRANSPORTS)
def test_the_fd_rules_hold_for_both_transports(make: Make, files: Files) -> None:
    def handler(request: api.Request) -> api.Response:
        if isinstance(request, api.Connect):
            return api.WouldBlock(request.socket.fd, select.POLLOUT, request, api.Errno(errno.EINTR))
        assert isinstance(request, api.Chmod) and isinstance(request.target, api.OpenFile)
        return api.Fd(os.dup(request.target.fd), False)

    transport = make(handler)
    try:
        lent = files()
        socket_file = api.OpenFile(lent, "s")
        connect = api.Connect(caller=api.Caller("vm", 1), socket=socket_file, address=api.SocketAddress(b""))
        blocked = transport.handle_request(connect)
        assert blocked == api.WouldBlock(lent, select.POLLOUT, connect, api.Errno(errno.EINTR))  # the caller's own fd
        again = transport.handle_request(api.Chmod(caller=api.Caller("vm", 1), target=api.OpenFile(lent, "f"), mode=0))
        assert isinstance(again, api.Fd) and again.fd != lent and same_open_file(again.fd, lent)
        os.close(again.fd)  # the caller's to close
        assert fcntl.fcntl(lent, fcntl.F_GETFD) >= 0  # the lent fd is still open, still the caller's
    finally:
        transport.close()


def test_hvfs_transport_chooses_in_one_place() -> None:
    handler: Callable[[api.Request], api.Response] = lambda request: api.Value(7)  # noqa: E731
    assert choice.chosen_transport({}) is api.InProcessTransport
    assert choice.chosen_transport({"HVFS_TRANSPORT": "inprocess"}) is api.InProcessTransport
    transport = choice.chosen_transport({"HVFS_TRANSPORT": "socket"})(handler)
    try:
        assert isinstance(transport, SocketTransport)
        unlink = api.Unlink(caller=api.Caller("vm", 1), path=api.VmPath("/", "x"))
        assert transport.handle_request(unlink) == api.Value(7)
    finally:
        transport.close()
    with pytest.raises(ValueError, match="HVFS_TRANSPORT=pigeon: not a transport; use one of inprocess, socket"):
        choice.chosen_transport({"HVFS_TRANSPORT": "pigeon"})
