"""An output a client opened as the user (``hvfs run --audit FILE``: ``given``) is
checked by its fd and written through it; the manager never opens its path, and a
group that has no fd for it (taken back by a manager whose VMs' shims kept none)
records nothing rather than open the path with the manager's rights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hvfs.api.events import Event
from hvfs.hypervisor.kept_outputs import note_replaced, output_paths, role, roles
from hvfs.hypervisor.services import ServiceOptions, ServiceSet
from hvfs.services.base import service_event
from hvfs.services.describe import RESUME
from hvfs.spec import UsageError, output_fd_problem
from hvfs.testing.manager import directory_manager


def _opened(path: Path, flags: int = os.O_WRONLY | os.O_APPEND | os.O_CREAT) -> int:
    return os.open(path, flags | os.O_CLOEXEC, 0o600)


def test_a_given_output_is_checked_by_its_fd_not_its_path(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    fd = _opened(audit)
    try:
        os.rename(audit, tmp_path / "moved")
        audit.mkdir()  # the path, now a directory: the manager's check of it would refuse the run
        options = ServiceOptions.from_table({"audit": str(audit)}, "/", {str(audit): fd})
        assert options.config("audit").path == str(audit)
        with pytest.raises(UsageError, match="is a directory"):
            ServiceOptions.from_table({"audit": str(audit)}, "/")
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("flags", "problem"),
    [(os.O_RDONLY, "was not opened for writing"), (os.O_PATH, "was not opened for writing")],
)
def test_a_given_fd_that_cannot_take_a_report_is_one_line(tmp_path: Path, flags: int, problem: str) -> None:
    audit = tmp_path / "audit.jsonl"
    audit.write_text("")
    fd = os.open(audit, flags | os.O_CLOEXEC)
    try:
        assert output_fd_problem(fd) == f"{problem}; give another path"
        with pytest.raises(UsageError, match=f"^--audit {audit} {problem}; give another path$"):
            ServiceOptions.from_table({"audit": str(audit)}, "/", {str(audit): fd})
    finally:
        os.close(fd)


def test_a_given_fd_is_written_whatever_its_path_names_now(tmp_path: Path) -> None:
    audit, protected = tmp_path / "audit.jsonl", tmp_path / "protected"
    protected.write_text("as it was\n")
    fd = _opened(audit)
    (tmp_path / "vm").mkdir()
    manager = directory_manager(tmp_path / "vm")
    services = ServiceSet(ServiceOptions.from_table({"audit": str(audit)}, "/", {str(audit): fd}), {str(audit): fd})
    try:
        os.rename(audit, tmp_path / "moved")
        os.symlink(protected, audit)
        services.attach(manager)
        assert list(services.kept) == [str(audit)] and services.kept[str(audit)] != fd  # a copy, for the shims
        assert os.fstat(services.kept[str(audit)]).st_ino == os.fstat(fd).st_ino
        services.bus.publish(_event())
    finally:
        services.close()
        manager.close()
        os.close(fd)
    assert protected.read_text() == "as it was\n"
    assert '"operation":"resume"' in (tmp_path / "moved").read_text()
    assert services.kept == {}


def test_a_group_without_the_fd_records_nothing_and_opens_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    audit = tmp_path / "audit.jsonl"
    (tmp_path / "vm").mkdir()
    manager = directory_manager(tmp_path / "vm")
    services = ServiceSet(ServiceOptions.from_table({"audit": str(audit)}, "/", {}), {})
    try:
        services.attach(manager)
        services.bus.publish(_event())
    finally:
        services.close()
        manager.close()
    assert not audit.exists()
    assert any(f"audit: {audit} was not opened by the user" in r.getMessage() for r in caplog.records)


def test_the_shims_roles_name_each_output_within_their_31_bytes() -> None:
    paths = output_paths({"audit": "/home/u/" + "a" * 300, "audit_reads": True})
    assert paths == ["/home/u/" + "a" * 300]
    assert len(role(paths[0])) <= 31 and role(paths[0]) != role(paths[0] + "b")
    assert list(roles({paths[0]: 7}).values()) == [7]


def test_a_replaced_path_is_one_line_in_the_managers_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    audit = tmp_path / "audit.jsonl"
    fd = _opened(audit)
    try:
        note_replaced("g1", {str(audit): fd})
        assert not caplog.records  # the same file: nothing to say
        os.rename(audit, tmp_path / "moved")
        os.symlink(tmp_path / "moved", audit)  # even a link to that very file: the path changed
        note_replaced("g1", {str(audit): fd})
    finally:
        os.close(fd)
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"group g1: {audit} is no longer the file its user opened (replaced, moved or removed); "
                    "its audit goes on in that file, not at the path"]  # fmt: skip


def _event() -> Event:
    return service_event("vm", 0, RESUME, (), "ok")
