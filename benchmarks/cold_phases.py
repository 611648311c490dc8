"""Where the milliseconds of a cold ``hvfs run -- true`` go, for installations of hvfs
compared round by round (issue 14: ≤ 50 ms with no manager running).

    python benchmarks/cold_phases.py [--importtime] ROOT [ROOT...] [--rounds N]

ROOT is a checkout set up by ``scripts/setup`` (its ``.venv/bin/hvfs`` is the native
front, ``.venv/bin/python`` its Python). Each round measures, for each ROOT in turn
(each with a private state directory of its own, the order alternating):

- ``interpreter``: ``python -P -c pass``;
- ``imports``: ``python -P -c`` importing what ``hvfs manager serve`` imports before it
  can serve (``hvfs.cli``, ``hvfs.hypervisor.commands``, ``hvfs.hypervisor.daemon``, with
  ``hvfs.dataclass_cache`` installed first where there is one, and ``hvfs.deferred``'s
  stand-ins, as ``hvfs/__main__.py`` does, and no garbage collection), leaving with ``os._exit``, minus the interpreter;
- ``manager's own start``: ``ready`` minus those two;
- ``ready``: ``python -P -m hvfs manager serve --ready-fd N`` spawned as the front
  spawns it, until it writes ``ready`` (the interpreter, the imports, then the
  manager's own start: namespaces, state, control socket);
- ``first run``: ``hvfs run -- true`` by the front against that manager, just ready:
  its first VM (the run's arguments parsed, the filter, views, pid 1, the driver), the
  VM's exit and the reply; then ``second run``, the same again (a spare may serve it);
- ``cold run``: ``hvfs run -- true`` with the manager stopped: the front, the manager's
  start, its first VM, as a user sees it.

``--importtime`` also prints, once per ROOT, the imports by top-level module
(``-X importtime``, cumulative µs inflated by the measuring). Medians; nothing asserted.

The CPU time (user + system, from the child's rusage) of ``interpreter`` and
``imports`` is printed too: on a loaded machine (the wall times of two identical
interpreters differed by 10 % at a load of 4 on 2 CPUs) it is what still compares.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

IMPORTS = """
import gc
gc.disable()  # as hvfs/__main__.py
try:
    from hvfs import dataclass_cache
except ImportError:
    pass
else:
    try:
        from hvfs import deferred
    except ImportError:
        pass
    else:
        deferred.defer(*deferred.MANAGER)
    dataclass_cache.install()
import hvfs.cli, hvfs.hypervisor.commands, hvfs.hypervisor.daemon
import os
os._exit(0)  # not the interpreter's teardown of ~280 modules: the manager lives on
"""
PHASES = ("interpreter", "imports", "manager's own start", "ready", "first run", "second run", "cold run",
          "interpreter, CPU", "imports, CPU")  # fmt: skip


CPU: dict[str, float] = {}  # the last wall()'s child CPU ms


def wall(command: list[str], env: dict[str, str]) -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdin=subprocess.DEVNULL, capture_output=True, cwd="/")
    elapsed = (time.perf_counter() - began) * 1000
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU["last"] = (now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime) * 1000
    return elapsed


def ready(python: str, env: dict[str, str]) -> float:
    """ms from spawning ``manager serve`` to its ``ready`` line."""
    read, write = os.pipe()
    began = time.perf_counter()
    subprocess.Popen(
        [python, "-P", "-m", "hvfs", "manager", "serve", "--ready-fd", str(write)],
        env=env, pass_fds=[write], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, cwd="/",
    )  # fmt: skip
    os.close(write)
    line = os.read(read, 100)
    elapsed = (time.perf_counter() - began) * 1000
    os.close(read)
    if line != b"ready\n":
        raise SystemExit(f"the manager of {python} did not start: {line!r}")
    return elapsed


def one_round(root: str, env: dict[str, str]) -> dict[str, float]:
    python, front = f"{root}/.venv/bin/python", f"{root}/.venv/bin/hvfs"
    stop = [front, "manager", "stop"]
    subprocess.run(stop, env=env, capture_output=True)
    got = {"interpreter": wall([python, "-P", "-c", "pass"], env)}
    got["interpreter, CPU"] = CPU["last"]
    got["imports"] = wall([python, "-P", "-c", IMPORTS], env) - got["interpreter"]
    got["imports, CPU"] = CPU["last"] - got["interpreter, CPU"]
    got["ready"] = ready(python, env)
    got["manager's own start"] = got["ready"] - got["interpreter"] - got["imports"]
    got["first run"] = wall([front, "run", "--", "true"], env)
    got["second run"] = wall([front, "run", "--", "true"], env)
    time.sleep(1.2)  # a tick of the manager: what it saves for the next start, saved
    subprocess.run(stop, env=env, capture_output=True)
    got["cold run"] = wall([front, "run", "--", "true"], env)
    subprocess.run(stop, env=env, capture_output=True)
    return got


def importtime(root: str, env: dict[str, str]) -> None:
    result = subprocess.run(
        [f"{root}/.venv/bin/python", "-P", "-X", "importtime", "-c", IMPORTS],
        env=env, capture_output=True, text=True, check=True, cwd="/",
    )  # fmt: skip
    print(f"\n{root}: imports by top-level module (-X importtime, cumulative µs)")
    for line in result.stderr.splitlines()[1:]:
        _, cumulative, name = line.split("|")
        if name.startswith(" ") and not name.startswith("  "):
            print(f"  {int(cumulative):7d}  {name.strip()}")


def main() -> int:
    arguments = sys.argv[1:]
    rounds, show_imports = 10, "--importtime" in arguments
    arguments = [a for a in arguments if a != "--importtime"]
    if "--rounds" in arguments:
        at = arguments.index("--rounds")
        rounds = int(arguments[at + 1])
        del arguments[at : at + 2]
    if not arguments:
        print(__doc__, file=sys.stderr)
        return 2
    roots = [os.path.abspath(a) for a in arguments]
    states = [tempfile.mkdtemp(prefix="hvfs-cold-") for _ in roots]
    envs = [dict(os.environ, HVFS_STATE_DIR=state, PYTHONPATH=root) for root, state in zip(roots, states, strict=True)]
    for env in envs:
        env.pop("HVFS_FRONT", None)
    results: list[dict[str, list[float]]] = [{phase: [] for phase in PHASES} for _ in roots]
    for number in range(rounds):
        order = list(range(len(roots)))
        if number % 2:
            order.reverse()
        for i in order:
            for phase, ms in one_round(roots[i], envs[i]).items():
                results[i][phase].append(ms)
    title = f"phase (median ms of {rounds} rounds)"
    print(f"{title:40}" + "".join(f"{os.path.basename(r):>16}" for r in roots))
    for phase in PHASES:
        medians = [statistics.median(result[phase]) for result in results]
        ratio = f"   {medians[-1] / medians[0]:.2f}×" if len(roots) > 1 and medians[0] else ""
        print(f"{phase:40}" + "".join(f"{m:16.1f}" for m in medians) + ratio)
    if show_imports:
        for root, env in zip(roots, envs, strict=True):
            importtime(root, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
