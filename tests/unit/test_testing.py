"""hvfs.testing's own promises: the mock transport holds handlers to the fd rules, and the
fake memory reads as a thread's memory does."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from hvfs import api
from hvfs.api.transport import TransportError
from hvfs.testing import PAGE, FakeMemory, MockTransport, caller, directory_manager
from tests.unit.native import NativeMemory


def _chmod(fd: int) -> api.Chmod:
    return api.Chmod(caller=api.Caller("vm", 1), target=api.OpenFile(fd, "/f"), mode=0o600)


def test_the_mock_transport_records_and_holds_handlers_to_the_fd_rules(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        transport = MockTransport(lambda request: api.Value(0))
        assert transport.handle_request(_chmod(fd)) == api.Value(0)
        assert transport.requests == [_chmod(fd)]
        rules = {
            "closes a lent fd": lambda request: os.close(request.target.fd) or api.Value(0),
            "gives a lent fd away": lambda request: api.Fd(request.target.fd, True),
            "lends an fd of its own": lambda request: api.WouldBlock(0, 0, request, api.Errno(errno.EINTR)),
        }
        for why, handler in rules.items():
            victim = os.dup(fd)
            with pytest.raises(TransportError):
                MockTransport(handler).handle_request(_chmod(victim))
            if why != "closes a lent fd":
                os.close(victim)
        transport.close()
        with pytest.raises(TransportError):
            transport.handle_request(_chmod(fd))
    finally:
        os.close(fd)


def test_the_mock_transport_carries_a_real_manager(tmp_path: Path) -> None:
    manager = directory_manager(tmp_path)
    try:
        transport = MockTransport(manager.handle_request)
        assert transport.handle_request(
            api.Mkdir(caller=caller(), path=api.VmPath("/", "/d"), mode=0o755)
        ) == api.Value(0)
        assert (tmp_path / "d").is_dir()
    finally:
        manager.vm("vm").close()


@pytest.mark.parametrize("memory", [FakeMemory, NativeMemory], ids=["fake", "native"])
def test_fake_memory_reads_as_process_memory_does(memory: type) -> None:
    """The same layouts in fake memory and in this process's own, read the same way
    (hvfs._sys.process.read_memory on this process is the reference)."""
    from hvfs._sys import process

    made = memory()
    at = made.put_at_end(b"tail")
    spanning = made.map(2 * PAGE)
    made.write(spanning + PAGE - 2, b"abcd")
    if isinstance(made, FakeMemory):
        read = made.read
    else:

        def read(address: int, size: int) -> bytes:
            return process.read_memory(os.getpid(), address, size)

    assert read(at, 100) == b"tail"  # stops at the unmapped page
    assert read(spanning + PAGE - 2, 4) == b"abcd"  # crosses a page boundary
    with pytest.raises(OSError) as raised:
        read(made.unmapped(), 1)
    assert raised.value.errno == errno.EFAULT
