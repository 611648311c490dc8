"""The outputs a client opened as the user (``hvfs run --audit FILE``), kept across a
manager's restart.

A manager that takes a group back must not open FILE again: root (or root in its user
namespace, which may open the user's own 0400 file) would open, with rights the user
lacks, whatever the path names by then, a symlink to a protected file included. So a
copy of the fd the client gave is deposited with each VM's shim, as the listener and
the in-flight table are (hvfs.hypervisor.vmstart), and the next manager writes to that
same file, whatever became of its path. Roles are at most 31 bytes in the shim
(native/init/shim.c), so a role names its path by a hash.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from hvfs import deferred
from hvfs.hypervisor import vmstart
from hvfs.hypervisor.layout import Layout, read_json
from hvfs.project.config import Project
from hvfs.services import registry
from hvfs.services.base import Kind

log = deferred.logger("hvfs.group")

PREFIX = "given:"


def role(path: str) -> str:
    import hashlib  # OpenSSL, 2-7 ms: for audited runs only, not at every manager's start

    return PREFIX + hashlib.sha256(os.fsencode(path)).hexdigest()[:24]


def roles(kept: Mapping[str, int]) -> dict[str, int]:
    """The shim's roles of the outputs ``kept`` (path -> fd)."""
    return {role(path): fd for path, fd in kept.items()}


def output_paths(table: Mapping[str, Any]) -> list[str]:
    """The output files a project's ``[services]`` table names, as ServiceOptions makes them."""
    paths = []
    for _, option in registry.options():
        raw = table.get(option.key)
        if option.kind is Kind.OUTPUT and isinstance(raw, str) and raw:
            paths.append(os.path.normpath(os.path.join("/", raw)))
    return paths


def take_back(layout: Layout, gid: str, document: Mapping[str, Any], table: Mapping[str, Any]) -> dict[str, int]:
    """The outputs of the group ``gid`` (its group.json ``document``, its services'
    ``table``) that the shim of one of its running VMs kept: path -> fd (the caller's).
    The shim gives its deposits to every manager that asks (it keeps its own copies);
    the VMs are withdrawn again as they are taken back."""
    wanted = {role(path): path for path in output_paths(table)}
    codes = document.get("codes", {})
    for name, vmid in document.get("vms", {}).items():
        if not wanted or codes.get(name) is not None:
            continue
        try:
            link, fds = vmstart.withdraw(layout, vmid, int(read_json(layout.vm_file(vmid))["launcher"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # ended meanwhile, or never started: another VM may hold them
        link.close()
        kept = {wanted[r]: fd for r, fd in fds.items() if r in wanted}
        for r, fd in fds.items():
            if r not in wanted:
                os.close(fd)
        if kept:
            note_replaced(gid, kept)
        return kept
    return {}


def note_replaced(gid: str, kept: Mapping[str, int]) -> None:
    """One line in the manager's log for each output whose path no longer names the file
    the user opened (moved, removed, replaced by a symlink): the audit goes on in that file."""
    for path, fd in kept.items():
        now = None
        with contextlib.suppress(OSError):
            now = os.stat(path, follow_symlinks=False)
        was = os.fstat(fd)
        if now is None or (now.st_dev, now.st_ino) != (was.st_dev, was.st_ino):
            log.warning("group %s: %s is no longer the file its user opened (replaced, moved or removed); "
                        "its audit goes on in that file, not at the path", gid, path)  # fmt: skip


@contextlib.contextmanager
def taken_back(
    layout: Layout, gid: str, document: Mapping[str, Any], project: Project
) -> Iterator[dict[str, int] | None]:
    """The ``given`` of the Group that takes back ``gid`` (closed after: the group keeps
    copies): a run's outputs as its shims kept them (none kept: none opened); None for a
    project, whose manager opened its outputs itself (and opens them again)."""
    kept = take_back(layout, gid, document, project.services)
    try:
        yield kept if kept or project.kind == "run" else None
    finally:
        for fd in kept.values():
            os.close(fd)
