"""A native front's run, parsed once and kept for the next of the same request (issue 14:
the manager's Python between ``run_argv`` and START).

A user runs the same few commands again and again, and a parse of ``hvfs run`` (argparse,
the RunSpec, the project and its prepared mounts: 0.2-0.3 ms of the manager's CPU before
START, at load) gives the same project each time the request is the same, but for the
name drawn for a VM run without ``--name``. So the manager keeps the outcome, keyed by
the request's own words: its argv, its working directory and the client's whole
environment (``key``), and takes it again, with a name drawn anew (``drawn_name``), for a
request whose key is the same.

Only the parse of a run whose flags look at nothing but their words and that environment
is kept (``PURE``: every other flag at its default). The others read files or the machine
(--env-file, -v and --mount sources, --persist, --user, sizes and limits checked against
the machine's memory and pids, services' stores, outputs written at exit), which may have
changed since; they are parsed every time, as before. Neither is a parse that failed (a
mistake, a fallback: said each time), nor anything the manager's own environment decides
(checked before: a request whose HVFS_* variables differ from the manager's falls back).
The working directory is entered for each run as before (frontrun.parse), so one the
user can no longer enter still sends the run to the Python client.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from hvfs.spec import drawn_name

if TYPE_CHECKING:
    import argparse

    from hvfs.project.config import Project

# The run flags (argparse dests) whose checks read only their words and the client's
# environment; with --image, only the host's is served here (other images fall back).
PURE = frozenset(
    {"name", "image", "entrypoint", "workdir", "env", "strict", "driver", "interactive", "tty", "stop_timeout",
     "detach", "rm", "init", "read_only", "hostname", "command"}
)  # fmt: skip
MOST = 16  # requests kept; the oldest goes first
Key = tuple[tuple[str, ...], str, frozenset[tuple[str, str]]]


@dataclasses.dataclass(frozen=True)
class Kept:
    """A request's parse: its project (named as the request had it, or drawn), its stop
    timeout, what the parse said on the way, and whether the name was the request's."""

    project: Project
    stop_timeout: float
    said: tuple[str, ...]
    named: bool


_lock = threading.Lock()
_kept: dict[Key, Kept] = {}


def key(argv: list[str], cwd: str, env: Mapping[str, str]) -> Key:
    """What a request's parse depends on, among what it sends."""
    return tuple(argv), cwd, frozenset(env.items())


def pure(args: argparse.Namespace, defaults: Mapping[str, object]) -> bool:
    """Whether ``args`` set no flag but ``PURE``'s (``defaults``: an empty run's parse)."""
    return all(name in PURE or value == defaults.get(name, value) for name, value in vars(args).items())


def keep(request: Key, found: Kept) -> None:
    with _lock:
        _kept.pop(request, None)
        _kept[request] = found
        while len(_kept) > MOST:
            del _kept[next(iter(_kept))]


def take(request: Key) -> Kept | None:
    """The parse kept for ``request``, its VM named anew unless the request named it."""
    with _lock:
        found = _kept.get(request)
    if found is None or found.named:
        return found
    return dataclasses.replace(found, project=renamed(found.project, drawn_name()))


def renamed(project: Project, name: str) -> Project:
    """A run's ``project`` as it is parsed with its VM named ``name``: the run's group,
    its one VM and that VM's key take the name, nothing else does (hvfs.hypervisor.spec.run_project)."""
    (vm,) = project.vms.values()
    return dataclasses.replace(project, name=name, vms={name: dataclasses.replace(vm, name=name)})


def forget() -> None:
    with _lock:
        _kept.clear()
