"""Services per VM: one manager serves VMs with different services, or none, and each VM
meets only its own. A real Manager over directories of this machine, without VMs: the
requests are what a driver would send."""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hvfs import api
from hvfs.api.hooks import EventBus
from hvfs.hypervisor.services import ServiceOptions, ServiceSet
from hvfs.manager.closes import CloseWatcher
from hvfs.manager.manager import Manager
from hvfs.manager.vm import VmContext
from hvfs.services.backup.index import BackupIndex


@pytest.fixture
def manager() -> Iterator[Manager]:
    manager = Manager()
    yield manager
    for name in list(manager._vms):
        manager.remove_vm(name).close()
    manager.close()


def add_vm(manager: Manager, name: str, root: Path, bus: EventBus | None) -> None:
    """A VM whose writable view (and own root) is the host directory ``root``."""
    root.mkdir()
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    manager.add_vm(VmContext(name, fd, os.dup(fd), bus=bus))


def services(table: dict[str, Any], directory: Path) -> ServiceSet:
    return ServiceSet(ServiceOptions.from_table(table, str(directory)))


def caller(vm: str) -> api.Caller:
    return api.Caller(vm=vm, pid=os.getpid())


def mkdir(manager: Manager, vm: str, path: str) -> api.Response:
    return manager.handle_request(api.Mkdir(caller=caller(vm), path=api.VmPath("/", path), mode=0o755))


def write(manager: Manager, vm: str, path: str, content: bytes) -> None:
    """Create ``path`` in ``vm`` through the manager and write it, as a program would."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    response = manager.handle_request(api.Open(caller=caller(vm), path=api.VmPath("/", path), flags=flags, mode=0o644))
    assert isinstance(response, api.Fd), response
    os.write(response.fd, content)
    os.close(response.fd)  # the last close: the manager handed its own reference over


def test_a_fault_rule_of_one_vm_leaves_another_vm_of_the_same_manager_alone(manager: Manager, tmp_path: Path) -> None:
    faulty = services({"faults": ["op=mkdir,errno=ENOSPC"], "audit": "audit.jsonl"}, tmp_path)
    faulty.attach(manager)
    add_vm(manager, "vm-a", tmp_path / "a", faulty.bus)
    add_vm(manager, "vm-b", tmp_path / "b", None)
    assert mkdir(manager, "vm-a", "/d") == api.Errno(errno.ENOSPC)
    answered = mkdir(manager, "vm-b", "/d")
    assert not isinstance(answered, api.Errno), answered
    assert not (tmp_path / "a" / "d").exists() and (tmp_path / "b" / "d").is_dir()
    faulty.close()
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(e["vm"], e["operation"], e["result"], e["answered_by"]) for e in events] == [
        ("vm-a", "mkdir", "ENOSPC", "faults")
    ]  # vm-b's request was nobody's event
    stats = faulty.statistics()
    assert stats["faults"]["injected"] == 1 and stats["audit"]["written"] == 1 and stats["events_dropped"] == 0


def test_two_groups_of_vms_each_get_their_own_services(manager: Manager, tmp_path: Path) -> None:
    """Two front ends on one manager: each group's fault rule, audit and backup see its
    own VMs only, closes included (the manager watches them for both)."""
    groups = {}
    for group, code in (("one", "ENOSPC"), ("two", "EDQUOT")):
        table = {"faults": [f"op=mkdir,errno={code}"], "audit": f"{group}.jsonl", "backup": ["/*"],
                 "backup_store": f"{group}-store"}  # fmt: skip
        groups[group] = services(table, tmp_path)
        groups[group].attach(manager)
    add_vm(manager, "one-a", tmp_path / "one-a", groups["one"].bus)
    add_vm(manager, "one-b", tmp_path / "one-b", groups["one"].bus)
    add_vm(manager, "two-a", tmp_path / "two-a", groups["two"].bus)
    add_vm(manager, "bare", tmp_path / "bare", None)
    answers = {vm: mkdir(manager, vm, "/d") for vm in ("one-a", "one-b", "two-a", "bare")}
    assert answers["one-a"] == answers["one-b"] == api.Errno(errno.ENOSPC)
    assert answers["two-a"] == api.Errno(errno.EDQUOT)
    assert not isinstance(answers["bare"], api.Errno)
    for vm in ("one-a", "two-a", "bare"):
        write(manager, vm, "/f", f"written by {vm}\n".encode())
    for group in groups.values():
        group.close()  # waits for the closes already reported
    for group, vms in (("one", ["one-a", "one-b"]), ("two", ["two-a"])):
        events = [json.loads(line) for line in (tmp_path / f"{group}.jsonl").read_text().splitlines()]
        assert sorted({e["vm"] for e in events}) == vms
        index = BackupIndex(str(tmp_path / f"{group}-store" / "index.sqlite"))
        try:
            saved = {(v.vm, v.path) for v in index.versions()}
        finally:
            index.close()
        assert saved == {(vms[0], "/f")}, saved  # the close of each VM's file, by its group's backup only
        assert groups[group].statistics()["backup"]["saved"] == 1


def test_waiting_for_closes_returns_once_those_reported_are_handled(tmp_path: Path) -> None:
    """A group's services close only after the closes of its VMs' files reached them."""
    handled: list[tuple[str, str, str]] = []

    def slow(vm: str, path: str, listener: str) -> None:
        time.sleep(0.3)  # a backup copying the file
        handled.append((vm, path, listener))

    watcher: CloseWatcher[str] = CloseWatcher(slow)
    try:
        for name in ("f", "g"):
            fd = os.open(tmp_path / name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            watcher.watch("vm1", f"/{name}", fd, "its bus")
            os.write(fd, b"written")
            os.close(fd)
        began = time.monotonic()
        assert watcher.wait(timeout=10)
        assert sorted(handled) == [("vm1", "/f", "its bus"), ("vm1", "/g", "its bus")]
        assert time.monotonic() - began >= 0.3  # it did wait for the slow handler
        assert watcher.wait(timeout=10)  # nothing more to handle: returns at once
    finally:
        watcher.close()
    assert watcher.wait()  # a stopped watcher handled everything before it stopped


class _Veto:
    """A hook that answers EPERM for mkdir, and its after that answers EIO for an open."""

    name = "veto"

    def before(self, vm: str, request: api.Request) -> api.Response | None:
        return api.Errno(errno.EPERM) if isinstance(request, api.Mkdir) else None

    def after(self, vm: str, request: api.Request, response: api.Response) -> api.Response | None:
        return api.Errno(errno.EIO) if isinstance(response, api.Fd) else None


def test_hooks_added_to_an_audited_bus_are_called_from_the_next_request_on(manager: Manager, tmp_path: Path) -> None:
    """The dispatch reads once per request whether the bus has hooks (an audit alone has
    none, and pays no call for them): a hook added or removed while the VM is served and
    audited takes effect at once, before and after, and the events say who answered."""
    bus = EventBus()
    lines: list[Any] = []
    bus.subscribe(lines.extend, name="audit", batch=True)
    add_vm(manager, "vm", tmp_path / "vm", bus)
    assert (bus.hooked, bus.audited) == (False, True)
    assert mkdir(manager, "vm", "/a") == api.Value(0)
    veto = _Veto()
    bus.add_hook(veto)
    assert bus.hooked
    assert mkdir(manager, "vm", "/b") == api.Errno(errno.EPERM)
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
    opened = manager.handle_request(api.Open(caller=caller("vm"), path=api.VmPath("/", "/f"), flags=flags, mode=0o644))
    assert opened == api.Errno(errno.EIO)  # the after hook replaced the fd (and the bus closed it)
    bus.remove_hook(veto)
    assert not bus.hooked
    assert mkdir(manager, "vm", "/c") == api.Value(0)
    assert bus.flush(10)
    assert [(e.operation, e.result, e.answered_by, e.paths) for e in lines] == [
        ("mkdir", "ok", None, ("/a",)),
        ("mkdir", "EPERM", "veto", ("/b",)),
        ("open", "EIO", "veto", ("/f",)),
        ("mkdir", "ok", None, ("/c",)),
    ]
    assert sorted(os.listdir(tmp_path / "vm")) == ["a", "c", "f"]
    bus.on_close(lambda vm, path, fd: None, name="watch")
    assert bus.hooked  # a close watcher needs the dispatch's check of each open too
    assert bus.close(timeout=10)
    assert (bus.hooked, bus.audited) == (False, False)
