"""A run's staged mounts at its end (``--commit-on-success``, ``--review``): applied to
their host directories, or dropped with the VM's scratch (docs/changes.md).

The root is never applied: it is the VM's private copy-on-write layer over an image (the
host's own /usr and /etc with ``--image host``), which hvfs never writes; its changes are
reported as dropped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from hvfs import deferred
from hvfs.hypervisor import control
from hvfs.hypervisor.layout import Layout
from hvfs.manager.sources.base import Scratch
from hvfs.manager.sources.overlay import LAYER
from hvfs.manager.vm import VmContext
from hvfs.project.config import VmConfig

log = deferred.logger("hvfs.hypervisor")
SHOWN = 96 << 10  # bytes of changes in a control message (exit, --review): its size is bounded
REVIEW_TIMEOUT = 3600.0  # seconds a --review waits for its answer before dropping


def _under(path: str, target: str) -> bool:
    return target == "/" or path == target or path.startswith(target.rstrip("/") + "/")


def _root_changes(config: VmConfig, changes: dict[str, Any]) -> int:
    targets = [m.target for m in config.mounts] + ["/dev", "/proc"]
    return sum(1 for c in changes.get("changes", []) if not any(_under(c["path"], t) for t in targets))


def upper_of(layout: Layout, vmid: str, target: str) -> str:
    scratch = Scratch(os.path.join(layout.staging(vmid), "scratch")).below(target)
    return os.path.join(scratch.directory, LAYER, "upper")


def settle(
    context: VmContext, config: VmConfig, code: int, ask: Callable[[dict[str, Any]], bool]
) -> dict[str, Any] | None:
    """Apply or drop the staged mounts of a run's VM that exited with ``code``; what to
    tell its client (``lines``), or None when nothing was staged."""
    if not config.commit:
        return None
    try:
        return _settle(context.staged, config, code, context.changes.document(SHOWN), ask)
    except Exception as e:  # a staged tree that cannot even be read: nothing more applied
        log.exception("VM %s: its staged changes could not be applied", config.name)
        return {"lines": [f"staged changes not applied: {e}"], "applied": False}


def _settle(
    uppers: dict[str, int],
    config: VmConfig,
    code: int,
    changes: dict[str, Any],
    ask: Callable[[dict[str, Any]], bool],
) -> dict[str, Any]:
    lines: list[str] = []
    staged = [m for m in config.mounts if m.target in config.staged]
    if config.commit == "success":
        apply, why = code == 0, f"the command exited {code}"
    else:
        apply, why = ask(changes), "not approved"
    if not staged:
        pass
    elif not apply:
        lines.append(f"changes to {', '.join(config.staged)} dropped ({why}); the host is untouched")
    else:
        from hvfs.manager.commit import MAX_REPORTED, apply_staged  # with shutil: not on a cold start's path

        for mount in staged:
            host = str(mount.source.options["path"])
            upper = uppers.get(mount.target)
            if upper is None:  # its manager was replaced by one of older code
                lines.append(f"{mount.target}: its staged changes were lost; nothing applied")
                continue
            report = apply_staged(upper, host, mount.target)
            replaced = f" ({report.replaced} names in the way replaced)" if report.replaced else ""
            lines.append(f"{mount.target}: {_count(report.applied)} applied to {host}{replaced}")
            for refused in report.refused[:MAX_REPORTED]:
                lines.append(f"{mount.target}: not applied: {refused}")
            if len(report.refused) > MAX_REPORTED:
                lines.append(f"{mount.target}: {len(report.refused) - MAX_REPORTED} more not applied")
    dropped = _root_changes(config, changes)
    if dropped:
        lines.append(
            f"{_count(dropped)} to the VM's root dropped: hvfs never writes the host's root; "
            "mount a directory with -v to keep files"
        )
    return {"lines": lines, "applied": bool(apply and staged)}


def _count(n: int) -> str:
    return f"{n} change" if n == 1 else f"{n} changes"


class Review:
    """A --review's question to its client (the run's owner), and the answer the daemon
    hands over (its ``review`` operation)."""

    def __init__(self, owner: control.Connection | None, gid: str, code: int) -> None:
        self.owner, self.gid, self.code = owner, gid, code
        self.answer: bool | None = None

    def ask(self, changes: dict[str, Any]) -> bool:
        owner = self.owner
        if owner is None:
            return False
        try:
            owner.send({"review": changes, "code": self.code, "gid": self.gid})  # bounded by its caller
        except OSError:
            return False
        deadline = time.monotonic() + REVIEW_TIMEOUT
        while self.answer is None and time.monotonic() < deadline and not owner.hung_up():
            time.sleep(0.1)
        return bool(self.answer)


def write_outputs(context: VmContext, outputs: dict[str, int]) -> None:
    """hvfs run --diff and --export: the VM's changes to the fds its client gave (each closed)."""
    for role, fd in outputs.items():
        try:
            if role == "diff":
                from hvfs.manager.changes import write

                write(context.changes, fd, as_json=False)
            elif role == "export":
                from hvfs.manager.export import write_tarball  # tarfile, shutil, bz2, lzma: not every run's exit

                with os.fdopen(os.dup(fd), "wb") as out:
                    write_tarball(context, out)
        except OSError as e:
            log.warning("VM %s: --%s failed: %s", context.name, role, e)
        finally:
            os.close(fd)
    outputs.clear()
