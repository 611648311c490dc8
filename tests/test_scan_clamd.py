"""The ClamAV engine against a real clamd, on the tests' own signature database (tests/clamd.py).

What clamd finds in a VM is refused and quarantined; while clamd is gone, files are let
through unjudged and judged again once it is back; a clamd that is missing, stuck, or
dies during a scan is an error that says so, never a wait without end.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hvfs.services.scan import EICAR, Detection, EngineUnavailable, ScanError
from hvfs.services.scan import clamd as clamd_module
from hvfs.services.scan.clamd import ClamdEngine
from tests.clamd import DROPPER, MARKER, detected
from tests.conftest import Hvfs, running_clamd

INSTREAM_CHUNK = 1 << 16  # the engine's chunk: a marker across it spans two INSTREAM chunks


def test_clamd_finds_what_its_database_names(clamd_socket: str) -> None:
    engine = ClamdEngine(clamd_socket)
    assert engine.scan(EICAR) == detected("Hvfs.Test.Eicar")
    across = os.urandom(INSTREAM_CHUNK - 10) + MARKER + os.urandom(200_000)
    assert engine.scan(across) == detected("Hvfs.Test.Marker")  # one stream, whatever the chunks
    assert engine.scan(DROPPER) == detected("Hvfs.Test.Dropper")
    assert engine.scan(DROPPER + b"\n") is None  # a hash names one content exactly
    assert engine.scan(os.urandom(300_000)) is None
    assert engine.scan(b"") is None


def test_scans_from_many_threads_at_once_each_get_their_own_verdict(clamd_socket: str) -> None:
    engine = ClamdEngine(clamd_socket)
    contents = [
        (MARKER, detected("Hvfs.Test.Marker")),
        (b"clean " * 5000, None),
        (DROPPER, detected("Hvfs.Test.Dropper")),
    ]
    wrong: list[tuple[int, Detection | None]] = []

    def scan(worker: int) -> None:
        for i in range(12):
            content, expected = contents[(worker + i) % len(contents)]
            verdict = engine.scan(content)
            if verdict != expected:
                wrong.append((worker, verdict))

    threads = [threading.Thread(target=scan, args=(worker,)) for worker in range(12)]  # clamd has 4 threads
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_a_stream_over_clamds_limit_is_a_scan_error_that_says_why() -> None:
    limit = 1 << 20
    with running_clamd(stream_max=limit) as daemon:
        engine = ClamdEngine(daemon.socket)
        assert engine.scan(b"\0" * (limit - 1000)) is None
        # clamd answers as soon as the limit is passed and closes while the engine still
        # sends: far over the limit, the engine must still read clamd's answer.
        for size in (limit + 1000, 8 * limit):
            with pytest.raises(ScanError, match="INSTREAM size limit exceeded"):
                engine.scan(b"\0" * size)


def test_the_default_socket_is_the_first_that_exists(
    clamd_socket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = str(tmp_path / "clamd.ctl")
    monkeypatch.setattr(clamd_module, "SOCKETS", (missing,))
    with pytest.raises(EngineUnavailable, match=f"no clamd socket at {missing}: install and start clamd"):
        ClamdEngine()
    monkeypatch.setattr(clamd_module, "SOCKETS", (missing, clamd_socket))
    assert ClamdEngine().socket_path == clamd_socket


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.02)


def waiting_for_a_reply(thread: threading.Thread) -> bool:
    """Whether ``thread`` is blocked in poll (the socket's timeout: its wait for clamd)."""
    try:
        return "poll" in Path(f"/proc/self/task/{thread.native_id}/wchan").read_text()
    except FileNotFoundError:
        return False


def test_a_clamd_gone_or_stuck_is_an_error_not_a_wait(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable, match=r"does not answer at .*: No such file or directory"):
        ClamdEngine(str(tmp_path / "nothing.ctl"))
    with running_clamd() as daemon:
        engine = ClamdEngine(daemon.socket, timeout=1)
        patient = ClamdEngine(daemon.socket)  # 30 s: what hvfs run uses
        assert engine.scan(MARKER) == detected("Hvfs.Test.Marker")
        daemon.pause()  # the kernel still queues connections; nobody answers them
        began = time.monotonic()
        with pytest.raises(ScanError, match="failed: timed out"):
            engine.scan(MARKER)
        with pytest.raises(EngineUnavailable, match=r"does not answer at .*: timed out"):
            ClamdEngine(daemon.socket, timeout=1)
        assert time.monotonic() - began < 5
        errors: list[str] = []

        def scan_marker() -> None:
            try:
                patient.scan(MARKER)
            except ScanError as e:
                errors.append(str(e))

        scan = threading.Thread(target=scan_marker)
        scan.start()
        wait_until(lambda: waiting_for_a_reply(scan), "the scan to wait for clamd")
        daemon.kill()  # dies with the scan's connection in its queue
        scan.join(10)
        assert not scan.is_alive() and errors == [f"clamd at {daemon.socket} failed: Connection reset by peer"]
        with pytest.raises(ScanError, match="failed: Connection refused"):  # its socket is left behind
            engine.scan(MARKER)
        daemon.start()  # back, on the same socket: the same engine works again
        assert engine.scan(MARKER) == detected("Hvfs.Test.Marker")
        daemon.stop()  # stopped properly, clamd removes its socket
        with pytest.raises(ScanError, match="failed: No such file or directory"):
            engine.scan(MARKER)


def quarantined(hvfs: Hvfs, store: Path) -> list[tuple[str, str]]:
    """(path, engine:signature) of each quarantine entry."""
    lines = hvfs.ok("quarantine", "list", "--store", str(store)).splitlines()
    return sorted((line.split()[3], line.split()[-1]) for line in lines)


CLAMD_FINDS = """
cat /data/notes.txt; echo notes=$?
cat /data/dropper.bin > /dev/null; echo dropper=$?
/data/tool; echo tool=$?
cat /data/clean.txt; echo clean=$?
"""


@pytest.mark.parametrize("runner", ["hvfs", pytest.param("rootless", marks=pytest.mark.rootless)])
def test_what_clamd_finds_is_refused_and_quarantined_in_a_vm(
    request: pytest.FixtureRequest, clamd_socket: str, shared_tmp: Path, runner: str
) -> None:
    hvfs: Hvfs = request.getfixturevalue(runner)
    data = shared_tmp / "data"
    data.mkdir()
    (data / "notes.txt").write_bytes(b"notes\n" + MARKER + b"\nmore notes\n")
    (data / "dropper.bin").write_bytes(DROPPER)
    (data / "tool").write_bytes(b"#!/bin/sh\n# " + MARKER + b"\necho the tool ran\n")
    (data / "tool").chmod(0o755)
    (data / "clean.txt").write_text("clean\n")
    store, stats = shared_tmp / "quarantine", shared_tmp / "stats.json"
    result = hvfs.run("run", "--clamd", clamd_socket, "--quarantine", str(store), "--stats", str(stats),
                      "-v", f"{data}:/data:ro", "--", "sh", "-c", CLAMD_FINDS)  # fmt: skip
    assert result.stdout.split() == ["notes=1", "dropper=1", "tool=126", "clean", "clean=0"], result.stderr
    assert result.stderr.count("Permission denied") == 3, result.stderr
    assert quarantined(hvfs, store) == [
        ("/data/dropper.bin", "clamav:Hvfs.Test.Dropper.UNOFFICIAL"),
        ("/data/notes.txt", "clamav:Hvfs.Test.Marker.UNOFFICIAL"),
        ("/data/tool", "clamav:Hvfs.Test.Marker.UNOFFICIAL"),
    ]
    scan = json.loads(stats.read_text())["services"]["scan"]
    assert (scan["infected"], scan["errors"]) == (3, 0)


CLAMD_GOES_AWAY = """
cat /data/first; echo first=$?
: > /sync/judged; while [ ! -e /sync/killed ]; do sleep 0.05; done
cat /data/second; echo second=$?
: > /sync/unjudged; while [ ! -e /sync/back ]; do sleep 0.05; done
cat /data/second; echo again=$?
"""


def test_while_clamd_is_gone_files_are_let_through_and_judged_when_it_is_back(hvfs: Hvfs, tmp_path: Path) -> None:
    debug = {**os.environ, "HVFS_DEBUG": "1"}  # the manager's warnings on stderr too
    data, sync, store = tmp_path / "data", tmp_path / "sync", tmp_path / "quarantine"
    data.mkdir()
    sync.mkdir()
    (data / "first").write_bytes(MARKER + b"\n")
    (data / "second").write_bytes(b"second " + MARKER + b"\n")
    stats = tmp_path / "stats.json"
    with running_clamd() as daemon:
        command = ["run", "--clamd", daemon.socket, "--quarantine", str(store), "--stats", str(stats),
                   "-v", f"{data}:/data:ro", "-v", f"{sync}:/sync", "--", "sh", "-c", CLAMD_GOES_AWAY]  # fmt: skip
        outcome: list[subprocess.CompletedProcess[str]] = []
        vm = threading.Thread(target=lambda: outcome.append(hvfs.run(*command, timeout=60, env=debug)))
        vm.start()
        wait_until(lambda: (sync / "judged").exists() or not vm.is_alive(), "the first file to be judged", 60)
        daemon.kill()
        (sync / "killed").touch()
        wait_until(lambda: (sync / "unjudged").exists() or not vm.is_alive(), "the second file to be let through", 60)
        daemon.start()
        (sync / "back").touch()
        vm.join(60)
    (result,) = outcome
    assert result.stdout.split() == ["first=1", "second", MARKER.decode(), "second=0", "again=1"], result.stderr
    assert "scan: engine clamav failed on /data/second" in result.stderr
    assert quarantined(hvfs, store) == [
        ("/data/first", "clamav:Hvfs.Test.Marker.UNOFFICIAL"),
        ("/data/second", "clamav:Hvfs.Test.Marker.UNOFFICIAL"),
    ]
    scan = json.loads(stats.read_text())["services"]["scan"]
    assert scan["infected"] == 2 and scan["errors"] >= 1


def test_a_clamd_that_does_not_answer_is_a_usage_error_that_leaves_nothing(hvfs: Hvfs, tmp_path: Path) -> None:
    socket_path, store = tmp_path / "clamd.ctl", tmp_path / "store" / "quarantine"
    result = hvfs.run("run", "--clamd", str(socket_path), "--quarantine", str(store), "--", "true")
    assert result.returncode == 125
    assert result.stderr == f"hvfs: --scan: clamd does not answer at {socket_path}: No such file or directory\n"
    assert sorted(os.listdir(tmp_path)) == []
