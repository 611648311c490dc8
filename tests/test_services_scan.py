"""Scanning: engines, the verdict cache, the hook that denies infected files, the quarantine."""

from __future__ import annotations

import argparse
import errno
import hashlib
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvfs import api
from hvfs.api.hooks import EventBus, HookAnswer
from hvfs.services.commands import EXIT_HVFS
from hvfs.services.scan import (
    EICAR,
    BuiltinEngine,
    Detected,
    Detection,
    EngineUnavailable,
    Located,
    Quarantine,
    QuarantineError,
    QuarantineRecord,
    ScanError,
    ScanHook,
    Scanner,
    Verdict,
    load_blocklist,
)
from hvfs.services.scan.cli import add_quarantine_command
from hvfs.services.scan.yara_engine import YaraEngine

MARKER_RULE = 'rule HvfsMarker { strings: $m = "HVFS-TEST-MARKER-7f3a" condition: $m }'


def check(scanner: Scanner, path: Path, vm: str = "vm1") -> Verdict:
    fd = os.open(path, os.O_RDONLY)
    try:
        return scanner.check(vm, str(path), fd)
    finally:
        os.close(fd)


def written(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_the_eicar_test_file_is_detected_as_the_standard_defines_it(tmp_path: Path) -> None:
    scanner = Scanner([BuiltinEngine()])
    for name, content in [("plain", EICAR), ("newline", EICAR + b"\r\n"), ("padded", EICAR + b" " * 60)]:
        verdict = check(scanner, written(tmp_path / name, content))
        assert verdict.infected and verdict.detection == Detection("builtin", "EICAR-Test-File")
    for name, content in [
        ("quoted", b"the test string is " + EICAR),
        ("long", EICAR + b" " * 61),
        ("tail", EICAR + b"x"),
    ]:
        verdict = check(scanner, written(tmp_path / name, content))
        assert verdict.scanned and not verdict.infected


def test_a_blocklisted_digest_is_detected_by_name(tmp_path: Path) -> None:
    bad = written(tmp_path / "dropper.bin", os.urandom(5000))
    listing = tmp_path / "blocklist"
    listing.write_text(f"# from sha256sum\n{hashlib.sha256(bad.read_bytes()).hexdigest()} *Trojan.Dropper\n\n")
    scanner = Scanner([BuiltinEngine(load_blocklist(str(listing)))])
    assert check(scanner, bad).detection == Detection("builtin", "Trojan.Dropper")
    assert not check(scanner, written(tmp_path / "ok", b"fine")).infected
    listing.write_text("abc123 short\n")
    with pytest.raises(ValueError, match="blocklist:1: not a SHA-256 digest"):
        load_blocklist(str(listing))


def yara_engine(**kwargs: object) -> YaraEngine:
    try:
        return YaraEngine(**kwargs)  # type: ignore[arg-type]
    except EngineUnavailable as e:
        if "pip install yara-python" in str(e):
            pytest.skip(f"yara-python is not installed ({e})")
        raise


def test_a_yara_rule_matches_a_custom_marker(tmp_path: Path) -> None:
    rules = tmp_path / "marker.yar"
    rules.write_text(MARKER_RULE)
    scanner = Scanner([yara_engine(paths=(str(rules),))])
    marked = written(tmp_path / "doc.txt", b"lorem ipsum HVFS-TEST-MARKER-7f3a dolor")
    assert check(scanner, marked).detection == Detection("yara", "HvfsMarker")
    assert not check(scanner, written(tmp_path / "c", b"lorem")).infected
    inline = yara_engine(source='rule Inline { strings: $a = "abc" condition: $a }')
    assert inline.scan(b"xxabcxx") == Detection("yara", "Inline")
    with pytest.raises(EngineUnavailable, match="do not compile"):
        yara_engine(source="rule broken {")


def test_without_yara_python_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yara", None)  # what Python does for a module that is not there
    with pytest.raises(EngineUnavailable, match="pip install yara-python"):
        YaraEngine(source=MARKER_RULE)


class Counting:
    """An engine that counts what it is given, around a real one."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0
        self._inner = BuiltinEngine()

    def scan(self, data: bytes) -> Detection | None:
        self.calls += 1
        return self._inner.scan(data)


def test_an_unchanged_file_is_judged_from_the_cache_for_every_vm(tmp_path: Path) -> None:
    engine = Counting()
    scanner = Scanner([engine])
    shared = written(tmp_path / "shared" / "f", b"clean for now")
    first = check(scanner, shared, "vm-a")
    second = check(scanner, shared, "vm-b")  # a volume both VMs mount: one file
    assert (first.cached, first.infected, engine.calls) == (False, False, 1)
    assert (second.cached, second.infected, engine.calls) == (True, False, 1)
    shared.write_bytes(EICAR)  # same file, new content: judged again
    third = check(scanner, shared, "vm-b")
    assert (third.cached, third.infected, engine.calls) == (False, True, 2)
    fourth = check(scanner, shared, "vm-a")
    assert (fourth.cached, fourth.infected, engine.calls) == (True, True, 2)
    stats = scanner.statistics()
    assert (stats.scanned, stats.cached, stats.infected) == (2, 2, 2)
    assert scanner.cache.statistics().hits == 2


def test_what_cannot_be_judged_is_let_through_and_never_cached(tmp_path: Path) -> None:
    class Broken:
        name = "broken"

        def scan(self, data: bytes) -> Detection | None:
            raise ScanError("daemon gone")

    scanner = Scanner([Broken(), BuiltinEngine()], max_bytes=100)
    big = check(scanner, written(tmp_path / "big", b"x" * 101))
    assert not big.scanned and "larger than 100" in big.note
    directory = check(scanner, tmp_path)
    assert not directory.scanned and directory.note == "not a regular file"
    failing = check(scanner, written(tmp_path / "small", b"x"))
    assert not failing.scanned and failing.note == "engine failed: broken"
    assert check(scanner, written(tmp_path / "eicar", EICAR)).infected  # a later engine still detects
    assert scanner.cache.statistics().entries == 1
    assert scanner.statistics().errors == 2


@pytest.fixture
def fds() -> Iterator[None]:
    """Fails the test if it leaks file descriptors."""
    before = len(os.listdir("/proc/self/fd"))
    yield
    assert len(os.listdir("/proc/self/fd")) == before


def test_quarantine_and_restore_round_trip(tmp_path: Path, fds: None) -> None:
    quarantine = Quarantine(str(tmp_path / "quarantine"))
    infected = written(tmp_path / "vm" / "bin" / "tool", EICAR)
    os.chmod(infected, 0o751)
    os.utime(infected, ns=(1_600_000_000_123_456_789, 1_700_000_000_987_654_321))
    before = infected.stat()
    dir_fd = os.open(infected.parent, os.O_RDONLY | os.O_DIRECTORY)
    record = quarantine.move_in("vm1", "/bin/tool", dir_fd, "tool", Detection("builtin", "EICAR-Test-File"))
    os.close(dir_fd)
    assert not infected.exists()
    assert quarantine.records() == [record]
    assert (record.vm, record.path, record.mode, record.size) == ("vm1", "/bin/tool", 0o751, len(EICAR))
    assert (record.uid, record.gid, record.mtime_ns) == (before.st_uid, before.st_gid, before.st_mtime_ns)
    assert record.sha256 == hashlib.sha256(EICAR).hexdigest()
    content = Path(quarantine.root) / record.id / "content"
    assert stat.S_IMODE(content.stat().st_mode) == 0o600  # never executable in the quarantine
    restored = Path(quarantine.restore(record.id, to=str(infected)))
    after = restored.stat()  # before reading it, which would set its atime
    assert (stat.S_IMODE(after.st_mode), after.st_uid, after.st_mtime_ns) == (0o751, before.st_uid, before.st_mtime_ns)
    assert after.st_atime_ns == before.st_atime_ns
    assert restored.read_bytes() == EICAR
    assert quarantine.records() == []
    assert sorted(os.listdir(infected.parent)) == ["tool"]  # no temporary left behind


def test_restore_never_replaces_a_file_and_unknown_ids_are_explained(tmp_path: Path) -> None:
    quarantine = Quarantine(str(tmp_path / "q"))
    original = written(tmp_path / "f", EICAR)
    fd = os.open(original, os.O_RDONLY)
    record = quarantine.add("vm1", str(original), fd, Detection("builtin", "x"))
    os.close(fd)
    assert original.exists()  # add() copies; move_in() removes
    with pytest.raises(QuarantineError, match="exists: restore elsewhere"):
        quarantine.restore(record.id)
    assert quarantine.record(record.id) == record  # still there
    original.unlink()
    assert quarantine.restore(record.id) == str(original)  # back at its own path
    for bad in ("nope", "../q", ".tmp-x"):
        with pytest.raises(QuarantineError, match="no quarantine entry"):
            quarantine.record(bad)


def test_a_file_that_took_the_name_meanwhile_is_not_removed(tmp_path: Path) -> None:
    infected = written(tmp_path / "d" / "f", EICAR)

    class Racing(Quarantine):
        """A VM replaces the file while it is being quarantined."""

        def add(self, vm: str, path: str, fd: int, detection: Detection) -> QuarantineRecord:
            record = super().add(vm, path, fd, detection)
            os.rename(infected, tmp_path / "d" / "moved")
            written(infected, b"innocent newcomer")
            return record

    quarantine = Racing(str(tmp_path / "q"))
    dir_fd = os.open(infected.parent, os.O_RDONLY | os.O_DIRECTORY)
    record = quarantine.move_in("vm1", "/f", dir_fd, "f", Detection("builtin", "x"))
    os.close(dir_fd)
    assert record.sha256 == hashlib.sha256(EICAR).hexdigest()
    assert infected.read_bytes() == b"innocent newcomer"


class Views:
    """VMs' writable views as host directories; ``shared`` is a volume both VMs mount."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def host(self, vm: str, path: str) -> Path:
        if path.startswith("/shared/"):
            return self.root / "shared" / path.removeprefix("/shared/")
        return self.root / vm / path.lstrip("/")

    def locate(self, vm: str, path: api.VmPath) -> Located | None:
        host = self.host(vm, str(path))
        try:
            fd = os.open(host, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        return Located(fd, os.open(host.parent, os.O_RDONLY | os.O_DIRECTORY), host.name)


def opening(vm: str, path: str, flags: int = os.O_RDONLY) -> api.Open:
    return api.Open(caller=api.Caller(vm=vm, pid=321), path=api.VmPath(base="/", name=path), flags=flags)


def handed_out(host: Path, flags: int = os.O_RDONLY) -> api.Fd:
    """What the open handler answers: the fd it is about to install in the VM."""
    return api.Fd(os.open(host, flags | os.O_CLOEXEC), cloexec=True)


def test_a_file_infected_in_one_vm_is_denied_and_quarantined_in_another(tmp_path: Path, fds: None) -> None:
    views = Views(tmp_path / "views")
    scanner = Scanner([BuiltinEngine()])
    quarantine = Quarantine(str(tmp_path / "quarantine"))
    detected: list[Detected] = []
    bus = EventBus()
    bus.add_hook(ScanHook(scanner, quarantine, views.locate, report=detected.append))
    eicar = written(views.host("vm-a", "/shared/eicar.com"), EICAR)
    fd = os.open(eicar, os.O_RDONLY)  # VM A closed it after writing: the manager scans it
    assert scanner.check("vm-a", "/shared/eicar.com", fd).infected
    os.close(fd)
    request = opening("vm-b", "/shared/eicar.com")
    assert bus.run_hooks("vm-b", request) is None  # an open is judged on its fd, not its path
    # The fd the handler opened is replaced, and closed by the bus (the fds fixture checks).
    answer = bus.run_after_hooks("vm-b", request, handed_out(eicar))
    assert answer == HookAnswer(api.Errno(errno.EACCES), "scan")
    assert not eicar.exists()
    (found,) = detected
    assert (found.vm, found.path, found.verdict.cached) == ("vm-b", "/shared/eicar.com", True)
    assert found.record is not None and quarantine.records() == [found.record]
    ok = written(views.host("vm-b", "/bin/ok"), b"#!/bin/sh\n")
    run = api.Exec(caller=api.Caller(vm="vm-b", pid=1), path=api.VmPath(base="/", name="/bin/ok"))
    assert bus.run_hooks("vm-b", run) is None
    clean = handed_out(ok)
    assert bus.run_after_hooks("vm-b", opening("vm-b", "/bin/ok"), clean) is None
    os.close(clean.fd)  # still the caller's: it was let through


def test_the_hook_judges_fds_that_read_a_file_and_execs(tmp_path: Path, fds: None) -> None:
    located: list[str] = []

    def locate(vm: str, path: api.VmPath) -> Located | None:
        located.append(str(path))
        return None

    hook = ScanHook(Scanner([BuiltinEngine()]), None, locate)
    eicar, empty = written(tmp_path / "eicar", EICAR), written(tmp_path / "empty", b"")
    for flags in (os.O_RDONLY, os.O_WRONLY, os.O_RDWR, os.O_PATH):
        assert hook.before("vm1", opening("vm1", "/w", flags)) is None  # opens: nothing before
    mkdir = api.Mkdir(caller=api.Caller(vm="vm1", pid=1), path=api.VmPath(base="/", name="/d"), mode=0o755)
    assert hook.before("vm1", mkdir) is None
    assert located == []
    let_through = [
        (opening("vm1", "/w", os.O_WRONLY), handed_out(eicar, os.O_WRONLY)),  # nothing reaches the VM
        (opening("vm1", "/d"), handed_out(tmp_path, os.O_DIRECTORY)),
        (opening("vm1", "/e"), handed_out(empty)),
        (mkdir, handed_out(eicar)),  # only an open's fd is judged
    ]
    for request, response in let_through:
        assert hook.after("vm1", request, response) is None
        os.close(response.fd)
    for response in (api.Continue(), api.Value(3), api.Errno(errno.ENOENT)):
        assert hook.after("vm1", opening("vm1", "/x"), response) is None
    for flags in (os.O_RDONLY, os.O_RDWR):
        infected = handed_out(eicar, flags)
        assert hook.after("vm1", opening("vm1", "/eicar", flags), infected) == api.Errno(errno.EACCES)
        os.close(infected.fd)  # the bus closes it; the hook never does
    hook.before("vm1", api.Exec(caller=api.Caller(vm="vm1", pid=1), path=api.VmPath(base="/", name="/x")))
    assert located[-1] == "/x"


def test_a_file_that_cannot_be_taken_away_is_quarantined_once_whatever_the_vm_retries(
    tmp_path: Path, fds: None
) -> None:
    class ReadOnly(Quarantine):
        """A read-only mount: the name cannot be removed."""

        @staticmethod
        def remove(dir_fd: int, name: str, quarantined: os.stat_result) -> bool:
            raise OSError(errno.EROFS, "Read-only file system")

    views = Views(tmp_path / "views")
    quarantine = ReadOnly(str(tmp_path / "quarantine"))
    detected: list[Detected] = []
    bus = EventBus()
    bus.add_hook(ScanHook(Scanner([BuiltinEngine()]), quarantine, views.locate, report=detected.append))
    eicar = written(views.host("vm1", "/ro/eicar.com"), EICAR)
    for _ in range(5):
        answer = bus.run_after_hooks("vm1", opening("vm1", "/ro/eicar.com"), handed_out(eicar))
        assert answer == HookAnswer(api.Errno(errno.EACCES), "scan")
    run = api.Exec(caller=api.Caller(vm="vm1", pid=1), path=api.VmPath(base="/", name="/ro/eicar.com"))
    assert bus.run_hooks("vm1", run) == HookAnswer(api.Errno(errno.EACCES), "scan")
    assert eicar.exists() and len(quarantine.records()) == 1 and len(detected) == 1


def add(quarantine: Quarantine, vm: str, path: str, host: Path, detection: Detection) -> QuarantineRecord:
    fd = os.open(host, os.O_RDONLY)
    try:
        return quarantine.add(vm, path, fd, detection)
    finally:
        os.close(fd)


def hvfs_quarantine(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="hvfs")
    add_quarantine_command(parser.add_subparsers())
    args = parser.parse_args(["quarantine", *argv])
    status: int = args.handler(args)
    return status


def test_the_quarantine_command_lists_restores_and_deletes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "q")
    quarantine = Quarantine(store)
    kept = add(quarantine, "vm1", "/x", written(tmp_path / "a", EICAR), Detection("yara", "R"))
    dropped = add(quarantine, "vm2", "/y", written(tmp_path / "b", b"b"), Detection("x", "S"))
    assert hvfs_quarantine("list", "--store", store) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == sorted([kept.id, dropped.id])
    assert any("vm1  /x  68 bytes  yara:R" in line for line in lines)
    assert hvfs_quarantine("restore", kept.id, "--to", str(tmp_path / "back"), "--store", store) == 0
    assert (tmp_path / "back").read_bytes() == EICAR
    assert hvfs_quarantine("delete", dropped.id, "--store", store) == 0
    assert quarantine.records() == []
    assert hvfs_quarantine("restore", kept.id, "--store", store) == EXIT_HVFS
    assert "no quarantine entry" in capsys.readouterr().err
    assert hvfs_quarantine("list", "--store", str(tmp_path / "none")) == EXIT_HVFS
