"""The runners: how each sandbox is asked to run a workload's command.

Every runner gets the same environment (a small fixed one: HVFS starts VMs from a clean
environment, so the others must not inherit more) and WORK writable at its own path:

- native: the command as is.
- bwrap: namespaces only, the host root read-only, WORK bound writable. Nothing is
  served, so it is the cost of isolation alone; bwrap cannot create mount points on the
  read-only root, hence WORK at its own path.
- proot: ptrace, every syscall stopped and rewritten.
- runsc: gVisor's ``runsc do`` (Debian's package), host root seen through its gofer.
  ``--force-overlay=false`` makes writes reach WORK on the host; by default they would
  go to a memory overlay, which is neither the same work nor durable.
- hvfs, hvfs --strict: ``hvfs run -v WORK:WORK -w CWD``, with ``--stats`` so that the
  trapped syscalls of every run are counted; hvfs is imported from the session's copy
  (fixtures.snapshot_hvfs), not from the work tree.
- hvfs-front, hvfs-strict-front, hvfs-strict-audit-front, hvfs-front-ptrace: the same
  (hvfs-strict-audit-front: as hvfs-strict-audit) through the native front
  (native/client/), as ``hvfs run`` from a shell runs it, built for the session's copy;
  without ``--stats``.
- hvfs-ptrace, hvfs-strict-ptrace: the same with ``--driver ptrace`` (hvfs.intercept.ptrace:
  a SECCOMP_RET_TRACE filter and a tracer, for kernels without seccomp user notification).
- hvfs-socket, hvfs-strict-socket: the same, with the driver's requests carried by the
  socket transport to a server in the same process (HVFS_TRANSPORT=socket).
- hvfs-native, hvfs-python (and --strict): hvfs with a manager of their own, serving
  through the C hot path (hvfs/_native) or the Python path (HVFS_NATIVE=0).
- hvfs-strict-user, hvfs-strict-user-front: ``hvfs --strict -u 1000:1000``, the VM's programs
  run as a non-root user (CI's and docker-compose's usual case): the manager acts as that
  user for each call. WORK is given to that user before each of their runs (run.py), as a
  CI job's checkout is its user's; the other runners, root, can write there still.
- hvfs-strict-audit: ``hvfs --strict --audit FILE``, every request an event in FILE (one
  per session, appended to: the cost of writing does not depend on the file's size).
- base-…: with ``run.py --baseline DIR``, the hvfs runners again on the hvfs package of
  DIR (another commit's), in the same session: before and after, interleaved. Each
  version then has a manager of its own (its own HVFS_STATE_DIR), or every switch of
  version would restart the one manager.
- floor …: benchmarks/floor/floor.c, a minimal C supervisor: W8 and W8c; its ORDERED
  answer also on the workloads whose opens ``--strict`` serves. floor-strict…: HVFS's
  ``--strict`` filter itself, its stats, access checks, readlinks, unlinks, opens,
  fchmods, fchowns and futimens served (the rest continued): the floor of what ``hvfs run --strict`` serves.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fixtures import STRICT_FILTER, Layout
from measure import Command

HVFS = [sys.executable, "-m", "hvfs"]
FRONT = "hvfs-front"  # the native front's name in WORK/bin (fixtures.build_front)
USER = "1000:1000"  # the user runners' (hvfs-strict-user, -front): CI's usual non-root user
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class Context:
    """What a runner needs to know about one run."""

    layout: Layout
    cwd: Path
    uses_work: bool
    stats: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        if not self.uses_work:
            return dict(BASE_ENV)
        # gcc, git and sqlite need a writable temporary directory and home; under bwrap
        # /tmp is the host's, read-only.
        return {**BASE_ENV, "HOME": str(self.layout.work / "home"), "TMPDIR": str(self.layout.work / "tmp")}


@dataclass(frozen=True)
class Runner:
    """A way to run a command. ``program`` must be on PATH for the runner to be tried;
    ``only`` restricts it to some workloads; ``counts_traps`` reads HVFS's --stats;
    ``own_env`` is added to the environment of the runner's process (not the command's);
    ``user`` ("UID:GID"): the VM's programs run as that user, to whom WORK is given before
    each run (run.py), or it could not write there."""

    key: str
    label: str
    program: str
    wrap: Callable[[Context, list[str]], list[str]]
    only: frozenset[str] | None = None
    counts_traps: bool = False
    own_env: Callable[[Layout], dict[str, str]] | None = None
    user: str = ""

    def command(self, context: Context, argv: list[str]) -> Command:
        env = context.env | (self.own_env(context.layout) if self.own_env else {})
        return Command(tuple(self.wrap(context, argv)), env, context.cwd)

    def accepts(self, workload_key: str, skip: frozenset[str]) -> bool:
        return self.key not in skip and (self.only is None or workload_key in self.only)


def _native(context: Context, argv: list[str]) -> list[str]:
    return argv


def _bwrap(context: Context, argv: list[str]) -> list[str]:
    work = str(context.layout.work)
    binds = ["--bind", work, work] if context.uses_work else []
    return [
        "bwrap",
        *("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"),
        *binds,
        *("--unshare-all", "--die-with-parent", "--chdir", str(context.cwd)),
        *argv,
    ]


def _proot(context: Context, argv: list[str]) -> list[str]:
    work = str(context.layout.work)
    binds = ["-b", f"{work}:{work}"] if context.uses_work else []
    return ["proot", *binds, "-w", str(context.cwd), *argv]


def _runsc(context: Context, argv: list[str]) -> list[str]:
    return ["runsc", "--network=none", "do", "--force-overlay=false", "--cwd", str(context.cwd), *argv]


def _hvfs_options(context: Context, strict: bool, audit: bool = False, driver: str = "", user: str = "") -> list[str]:
    options = ["--strict"] if strict else []
    if user:
        options += ["-u", user]
    if driver:
        options += ["--driver", driver]
    if audit:
        options += ["--audit", str(context.layout.scratch / "audit.jsonl")]
    if context.uses_work:
        work = str(context.layout.work)
        options += ["-v", f"{work}:{work}", "-w", str(context.cwd)]
    for key, value in context.env.items():
        options += ["-e", f"{key}={value}"]
    return options


def _hvfs(
    strict: bool, audit: bool = False, driver: str = "", user: str = ""
) -> Callable[[Context, list[str]], list[str]]:
    def wrap(context: Context, argv: list[str]) -> list[str]:
        options = _hvfs_options(context, strict, audit, driver, user)
        if context.stats is not None:
            options += ["--stats", str(context.stats)]
        return [*HVFS, "run", *options, "--", *argv]

    return wrap


def _hvfs_front(
    strict: bool, binary: str = FRONT, driver: str = "", audit: bool = False, user: str = ""
) -> Callable[[Context, list[str]], list[str]]:
    """``hvfs run`` as a user's shell runs it: the native front (WORK/bin/BINARY, built for
    the session's copy of hvfs by fixtures.build_front). No ``--stats``: the front hands a
    run that asks for them to the Python client, so these runs count no traps (the hvfs
    runners do, for the same work)."""

    def wrap(context: Context, argv: list[str]) -> list[str]:
        options = _hvfs_options(context, strict, audit, driver, user)
        return [str(context.layout.bin / binary), "run", *options, "--", *argv]

    return wrap


def _hvfs_env(layout: Layout) -> dict[str, str]:
    # Ahead of the editable install on sys.path: the session's copy is what runs.
    # A manager of the session's own: not one another user of this machine runs (or would
    # restart for other code) in the default state directory.
    return {"PYTHONPATH": str(layout.hvfs_source), "HVFS_STATE_DIR": str(layout.root / "state")}


def _hvfs_socket_env(layout: Layout) -> dict[str, str]:
    # The driver reaches the manager over the socket transport (hvfs.api.choice).
    return {**_hvfs_env(layout), "HVFS_TRANSPORT": "socket"}


def _hvfs_path_env(native: bool) -> Callable[[Layout], dict[str, str]]:
    """A manager of its own (a private state directory), serving through the C hot path
    or, with HVFS_NATIVE=0, the Python one (hvfs/_native): the manager's environment
    chooses, so the two rows never share one."""

    def env(layout: Layout) -> dict[str, str]:
        state = layout.root / ("state-native" if native else "state-python")
        state.mkdir(mode=0o700, exist_ok=True)
        return {**_hvfs_env(layout), "HVFS_STATE_DIR": str(state), "HVFS_NATIVE": "1" if native else "0"}

    return env


def _hvfs_front_env(layout: Layout) -> dict[str, str]:
    # The front says, in this file, which client did each run (native/client/front.c):
    # run.py reports how many it did itself, so a row never passes the Python client off
    # as the front.
    return {**_hvfs_env(layout), "HVFS_FRONT_TRACE": str(front_trace(layout))}


def front_trace(layout: Layout, baseline: bool = False) -> Path:
    return layout.scratch / ("front-base.trace" if baseline else "front.trace")


def _hvfs_baseline_env(layout: Layout) -> dict[str, str]:
    return {"PYTHONPATH": str(layout.baseline_source), "HVFS_STATE_DIR": str(layout.root / "state-base")}


def _hvfs_front_baseline_env(layout: Layout) -> dict[str, str]:
    return {**_hvfs_baseline_env(layout), "HVFS_FRONT_TRACE": str(front_trace(layout, baseline=True))}


STATE_DIRS = ("state", "state-base", "state-native", "state-python")  # under the session directory: one per manager


def baseline_runners(runners: list[Runner]) -> list[Runner]:
    """The hvfs runners among ``runners`` again, on the baseline package (``base-KEY``)."""
    copies = []
    for runner in runners:
        if not runner.key.startswith("hvfs") or runner.key.endswith(("socket", "native", "python")):
            continue
        copy = dataclasses.replace(runner, key=f"base-{runner.key}", label=f"{runner.label} (baseline)",
                                   own_env=_hvfs_baseline_env)  # fmt: skip
        if "front" in runner.key:
            driver = "ptrace" if "ptrace" in runner.key else ""
            wrap = _hvfs_front(
                "strict" in runner.key, FRONT + "-base", driver, audit="audit" in runner.key, user=runner.user
            )
            copy = dataclasses.replace(copy, program=runner.program + "-base", own_env=_hvfs_front_baseline_env,
                                       wrap=wrap)  # fmt: skip
        copies.append(copy)
    return copies


def _floor(answer: str, sync: bool, pin: bool) -> Callable[[Context, list[str]], list[str]]:
    def wrap(context: Context, argv: list[str]) -> list[str]:
        floor = str(context.layout.bin / "floor")
        mode = f"strict:{context.layout.bin / STRICT_FILTER}" if answer == "strict" else answer
        return [floor, mode, "sync" if sync else "nosync", "pin" if pin else "nopin", *argv]

    return wrap


def floor_key(answer: str, sync: bool, pin: bool) -> str:
    return f"floor-{answer}" + ("-sync" if sync else "") + ("-pin" if pin else "")


def all_runners(layout: Layout) -> list[Runner]:
    """Every runner, in report order."""
    front = str(layout.bin / FRONT)
    runners = [
        Runner("native", "native", "true", _native),
        Runner("bwrap", "bubblewrap", "bwrap", _bwrap),
        Runner("proot", "proot", "proot", _proot),
        Runner("runsc", "gVisor (runsc do)", "runsc", _runsc),
        Runner("hvfs", "hvfs", sys.executable, _hvfs(strict=False), counts_traps=True, own_env=_hvfs_env),
        Runner(
            "hvfs-strict", "hvfs --strict", sys.executable, _hvfs(strict=True), counts_traps=True, own_env=_hvfs_env
        ),
        Runner("hvfs-front", "hvfs, native front", front, _hvfs_front(strict=False), own_env=_hvfs_front_env),
        Runner(
            "hvfs-strict-front", "hvfs --strict, native front", front, _hvfs_front(strict=True), own_env=_hvfs_front_env
        ),
        Runner(
            "hvfs-strict-audit-front",
            "hvfs --strict --audit, native front",
            front,
            _hvfs_front(strict=True, audit=True),
            own_env=_hvfs_front_env,
        ),
        Runner(
            "hvfs-front-ptrace",
            "hvfs, native front, ptrace driver",
            front,
            _hvfs_front(strict=False, driver="ptrace"),
            own_env=_hvfs_front_env,
        ),
        Runner(
            "hvfs-ptrace",
            "hvfs, ptrace driver",
            sys.executable,
            _hvfs(strict=False, driver="ptrace"),
            counts_traps=True,
            own_env=_hvfs_env,
        ),
        Runner(
            "hvfs-strict-ptrace",
            "hvfs --strict, ptrace driver",
            sys.executable,
            _hvfs(strict=True, driver="ptrace"),
            counts_traps=True,
            own_env=_hvfs_env,
        ),
        Runner(
            "hvfs-strict-user",
            "hvfs --strict -u 1000:1000",
            sys.executable,
            _hvfs(strict=True, user=USER),
            counts_traps=True,
            own_env=_hvfs_env,
            user=USER,
        ),
        Runner(
            "hvfs-strict-user-front",
            "hvfs --strict -u 1000:1000, native front",
            front,
            _hvfs_front(strict=True, user=USER),
            own_env=_hvfs_front_env,
            user=USER,
        ),
        Runner(
            "hvfs-strict-audit",
            "hvfs --strict --audit",
            sys.executable,
            _hvfs(strict=True, audit=True),
            counts_traps=True,
            own_env=_hvfs_env,
        ),
        Runner(
            "hvfs-socket",
            "hvfs, socket transport",
            sys.executable,
            _hvfs(strict=False),
            counts_traps=True,
            own_env=_hvfs_socket_env,
        ),
        Runner(
            "hvfs-strict-socket",
            "hvfs --strict, socket transport",
            sys.executable,
            _hvfs(strict=True),
            counts_traps=True,
            own_env=_hvfs_socket_env,
        ),
        Runner(
            "hvfs-native",
            "hvfs, native hot path",
            sys.executable,
            _hvfs(strict=False),
            counts_traps=True,
            own_env=_hvfs_path_env(native=True),
        ),
        Runner(
            "hvfs-python",
            "hvfs, Python path",
            sys.executable,
            _hvfs(strict=False),
            counts_traps=True,
            own_env=_hvfs_path_env(native=False),
        ),
        Runner(
            "hvfs-strict-native",
            "hvfs --strict, native hot path",
            sys.executable,
            _hvfs(strict=True),
            counts_traps=True,
            own_env=_hvfs_path_env(native=True),
        ),
        Runner(
            "hvfs-strict-python",
            "hvfs --strict, Python path",
            sys.executable,
            _hvfs(strict=True),
            counts_traps=True,
            own_env=_hvfs_path_env(native=False),
        ),
    ]
    # The floor answers CONTINUE where HVFS continues (W8c) and ADDFD where it serves (W8,
    # and W8r in strict mode); ORDERED as HVFS serves an open: a writable file installed,
    # its own copy closed, then answered (two wake-ups of the caller, where SEND makes one),
    # also on the workloads whose opens --strict serves (this floor serves opens only);
    # STRICT with --strict's own filter, serving what it traps (floor/strict.h).
    served = {"W8", "W2", "W3", "W3t", "W5", "W6"}
    strict = {"W2", "W3", "W3t", "W5", "W6", "W8r"}
    for answer, workloads in (("continue", {"W8c"}), ("addfd", {"W8", "W8r"}), ("ordered", served), ("strict", strict)):
        for sync in (False, True):
            for pin in (False, True):
                label = f"floor {answer.upper()}" + (" +sync" if sync else "") + (" +pin" if pin else "")
                program = str(layout.bin / "floor")
                wrap = _floor(answer, sync, pin)
                runners.append(Runner(floor_key(answer, sync, pin), label, program, wrap, frozenset(workloads)))
    return runners


def probe(runner: Runner, layout: Layout) -> str | None:
    """Why ``runner`` cannot be used here, or None when ``true`` runs under it."""
    if shutil.which(runner.program) is None:
        return f"{runner.program} not found"
    command = runner.command(Context(layout, layout.work, uses_work=True), ["true"])
    try:
        done = subprocess.run(command.argv, env=command.env, cwd=command.cwd, capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"cannot run: {error}"
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-2:]
        return f"`true` failed (exit {done.returncode}): {' | '.join(tail)}"
    return None
