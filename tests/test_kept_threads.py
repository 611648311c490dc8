"""Kept threads (hvfs.hypervisor.threads): the work handed to an idle one runs there, under
its name; what the work held is let go as it ends; a failing work leaves the thread
serving the next."""

from __future__ import annotations

import gc
import os
import threading
import weakref

from hvfs.hypervisor import threads


class Held:
    """Something a VM's watcher holds (its channel): an fd, closed when it is collected."""

    def __init__(self) -> None:
        self.fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def __del__(self) -> None:
        os.close(self.fd)


def test_an_idle_kept_thread_takes_the_next_work_and_lets_go_of_the_last() -> None:
    seen: list[tuple[int, str]] = []
    done = threading.Event()

    def work(held: Held | None, fail: bool) -> None:
        seen.append((threading.get_ident(), threading.current_thread().name))
        done.set()
        if fail:
            raise RuntimeError("a failing watcher")

    held = Held()
    fd, gone = held.fd, weakref.ref(held)
    threads.spawn(work, (held, False), "hvfs-test-first")
    del held
    assert done.wait(5)
    _idle_again()
    gc.collect()
    assert gone() is None  # the work's arguments are not kept by the idle thread
    assert not os.path.exists(f"/proc/self/fd/{fd}") or os.readlink(f"/proc/self/fd/{fd}") != os.devnull
    for name, fail in (("hvfs-test-failing", True), ("hvfs-test-third", False)):
        done.clear()
        threads.spawn(work, (None, fail), name)
        assert done.wait(5)
        _idle_again()
    assert [name for _, name in seen] == ["hvfs-test-first", "hvfs-test-failing", "hvfs-test-third"]
    assert len({ident for ident, _ in seen}) == 1  # one thread, kept, served all three


def _idle_again() -> None:
    """Wait until a kept thread is idle (its work over)."""
    for _ in range(500):
        with threads._lock:
            if threads._idle:
                return
        threading.Event().wait(0.01)
    raise AssertionError("no kept thread went idle")
