"""hvfs.api.workers: the threads of a bus's ring and subscribers, kept for the next bus.
A work runs on a thread of its own, named as asked, never beside another on it; a thread
whose work returned (or raised) serves the next; ``join`` and ``is_alive`` say the work's
end, as a Thread's say the thread's."""

from __future__ import annotations

import threading
import time

import pytest

from hvfs.api import workers


def _run(name: str, body: threading.Event | None = None) -> tuple[workers.Work, dict[str, object]]:
    seen: dict[str, object] = {}

    def target() -> None:
        seen["ident"] = threading.get_ident()
        seen["name"] = threading.current_thread().name
        if body is not None:
            body.wait(10)

    return workers.start(target, name), seen


def test_a_thread_whose_work_returned_serves_the_next_under_its_name() -> None:
    first, seen_first = _run("hvfs-test-first")
    first.join(5)
    assert not first.is_alive()
    # The work's end is told before its thread parks: wait for a parked thread (the first's,
    # or one this process parked before), then the next work must take one, not a new thread.
    deadline = time.monotonic() + 5
    while not workers._parked and time.monotonic() < deadline:
        time.sleep(0.001)
    threads = {thread.ident for thread in threading.enumerate()}
    second, seen_second = _run("hvfs-test-second")
    second.join(5)
    assert seen_first["name"] == "hvfs-test-first" and seen_second["name"] == "hvfs-test-second"
    assert seen_second["ident"] in threads  # a kept thread, parked in between


def test_works_at_once_never_share_a_thread() -> None:
    release = threading.Event()
    running = [_run(f"hvfs-test-{i}", release) for i in range(workers.KEEP + 3)]
    try:
        for work, _ in running:
            assert work.is_alive()
    finally:
        release.set()
    for work, _ in running:
        work.join(5)
        assert not work.is_alive()
    idents = [seen["ident"] for _, seen in running]
    assert len(set(idents)) == len(idents)
    assert workers._parked <= workers.KEEP  # the rest ended


def test_a_work_that_raises_ends_and_its_thread_serves_on(caplog: pytest.LogCaptureFixture) -> None:
    def fails() -> None:
        raise RuntimeError("broken work")

    failed = workers.start(fails, "hvfs-test-fails")
    failed.join(5)
    assert not failed.is_alive()
    after, seen = _run("hvfs-test-after")
    after.join(5)
    assert seen["name"] == "hvfs-test-after"
    assert any("hvfs-test-fails failed" in record.getMessage() for record in caplog.records)
