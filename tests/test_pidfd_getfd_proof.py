"""The kernel property hvfs/_native/served_fdmeta.h rests on, where it takes a caller's fd
through the caller's published PIDFD_THREAD pidfd without polling that pidfd first: a
duplicate taken (pidfd_getfd) means the pidfd's thread had not exited, so it still held its
number. Checked on the kernel the tests run on, over threads exiting while their pidfd is
polled and a duplicate taken, in that order, as fast as the test can: never a duplicate
taken after the poll saw the thread exited."""

from __future__ import annotations

import errno
import os
import select
import threading

from hvfs._sys import process
from tests.conftest import require

THREADS = 300


def _threads_exit(pidfds: list[int], taken: list[int], refused: list[int]) -> int:
    """Starts THREADS threads one by one, each told to exit once its pidfd is open, and races
    its exit: the duplicates taken after the poll saw it gone (returned), before (taken[0]),
    and refused (refused[0])."""
    late = 0
    for _ in range(THREADS):
        read_end, write_end = os.pipe()
        ready = threading.Event()

        def body(fd: int = read_end, started: threading.Event = ready) -> None:
            started.set()
            os.read(fd, 1)  # until told to exit

        thread = threading.Thread(target=body)
        thread.start()
        ready.wait()
        assert thread.native_id is not None
        pidfd = process.pidfd_open(thread.native_id, process.PIDFD_THREAD)
        pidfds.append(pidfd)
        os.write(write_end, b"x")  # it exits from now on
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        while True:
            exited = bool(poller.poll(0))
            try:
                os.close(process.pidfd_getfd(pidfd, write_end))
            except OSError as e:
                assert e.errno in (errno.ESRCH, errno.EBADF), e
                refused[0] += 1
                if exited:
                    break
                continue
            if exited:
                late += 1
                break
            taken[0] += 1
        thread.join()
        os.close(read_end)
        os.close(write_end)
    return late


def test_a_duplicate_taken_through_a_thread_pidfd_means_the_thread_had_not_exited() -> None:
    try:
        probe = process.pidfd_open(os.getpid(), process.PIDFD_THREAD)
    except OSError as e:
        require(e.errno != errno.EINVAL, "pidfd_open(PIDFD_THREAD) needs Linux 6.9")
        raise
    os.close(probe)
    pidfds: list[int] = []
    taken, refused = [0], [0]
    try:
        late = _threads_exit(pidfds, taken, refused)
    finally:
        for pidfd in pidfds:
            os.close(pidfd)
    assert late == 0, (late, taken, refused)
    # the race ran: duplicates taken while the threads lived, and refused as they went
    assert taken[0] >= THREADS and refused[0] >= THREADS, (taken, refused)
