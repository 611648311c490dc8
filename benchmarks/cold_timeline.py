"""A cold ``hvfs run -- true`` on one clock: when each step of the manager's start and of
its first VM begins and ends, in ms from the front's spawn (issue 14: ≤ 50 ms cold).

    python benchmarks/cold_timeline.py ROOT [ROOT...] [--rounds N]

(``ROOT+NAME=VALUE``, e.g. ``A+HVFS_COLDSET=0 A``, runs that checkout with that variable set.)

ROOT is a checkout set up by ``scripts/setup``. Each round stops each ROOT's manager (a
private state directory each, the order alternating) and runs its front cold. A
``sitecustomize`` this script writes (put on the manager's ``PYTHONPATH``, which the front
passes on, with ``HVFS_TIMELINE`` naming the file) stamps ``time.monotonic_ns`` when the
interpreter has run ``site``, around the imports of ``hvfs``, ``hvfs.cli``,
``hvfs.hypervisor.commands`` and ``hvfs.hypervisor.daemon``, and around the manager's
steps (wrappers of hvfs's own functions: nothing of hvfs is changed to measure it; a
function a ROOT lacks is left out). Medians of each stamp over the rounds; stamps seen
in fewer rounds say so. The wrappers cost a few µs each; nothing is asserted.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

HOOK = r"""
import os, sys, time
_PATH = os.environ.get("HVFS_TIMELINE")
if _PATH and sys.argv[1:3] == ["manager", "serve"]:
    import importlib.machinery
    _records = [("interpreter and site", time.monotonic_ns())]

    def _stamp(name):
        _records.append((name, time.monotonic_ns()))

    def _flush():
        with open(_PATH, "a") as f:
            f.writelines(f"{t} {n}\n" for n, t in _records)
        _records.clear()

    def _wrap(owner, attribute, name):
        original = getattr(owner, attribute, None)
        if original is None:
            return

        def timed(*args, **kwargs):
            _stamp(name + " <")
            try:
                return original(*args, **kwargs)
            finally:
                _stamp(name + " >")
                _flush()

        setattr(owner, attribute, timed)

    def _steps(daemon):
        from hvfs.hypervisor import control, frontrun, group, telling, vmstart
        from hvfs.intercept import driver
        from hvfs.sandbox import launcher, userns
        from hvfs._sys import spawner
        from hvfs import runtime
        _wrap(userns, "enter_manager_namespaces", "manager: namespaces entered (id-map helper)")
        _wrap(spawner, "start", "manager: spawner thread")
        _wrap(telling, "start", "manager: telling")
        _wrap(control.ControlServer, "__init__", "manager: control socket and its thread")
        _wrap(daemon.Daemon, "_ready", "manager: ready written")
        _wrap(frontrun, "handle", "run: run_argv, all of it")
        _wrap(frontrun, "parse", "run: argv parsed")
        _wrap(group, "mount_table", "run: mount table")
        _wrap(vmstart, "start", "run: vmstart.start")
        _wrap(vmstart, "build", "run: views")
        _wrap(vmstart.Hypervisor, "filter_program", "run: filter program")
        _wrap(launcher, "start", "run: launcher (hvfs-init, namespaces)")
        if getattr(runtime.start_vm, "__kwdefaults__", None) and "start" in runtime.start_vm.__kwdefaults__:
            runtime.start_vm.__kwdefaults__["start"] = launcher.start
        _wrap(launcher.VmProcess, "wait_booted", "run: pid 1 boots")
        _wrap(driver.SeccompDriver, "__init__", "run: driver made")
        _wrap(driver.SeccompDriver, "start", "run: driver's threads")
        _wrap(launcher.VmProcess, "go", "run: go (command started)")
        _wrap(vmstart, "write_json", "run: vm.json")
        _wrap(launcher.VmProcess, "wait", "exit: the VM runs until its shim reports")
        told = group.Group.tell

        def tell(self, message):
            kind = next((k for k in ("started", "exited") if k in message), "other")
            _stamp(f"told {kind}")
            _flush()
            return told(self, message)

        group.Group.tell = tell

    class _Finder:
        WATCHED = ("hvfs", "hvfs.cli", "hvfs.hypervisor.commands", "hvfs.hypervisor.daemon")

        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name not in cls.WATCHED:
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path, target)
            if spec is None:
                return None
            execute = spec.loader.exec_module

            def exec_module(module):
                _stamp(f"import {name} <")
                execute(module)
                _stamp(f"import {name} >")
                if name == "hvfs.hypervisor.daemon":
                    _steps(module)
                _flush()

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Finder)
"""


def one(root: str, env: dict[str, str], path: str) -> dict[str, float]:
    front = f"{root}/.venv/bin/hvfs"
    subprocess.run([front, "manager", "stop"], env=env, capture_output=True)
    time.sleep(0.2)
    with open(path, "w"):
        pass
    began = time.monotonic_ns()
    subprocess.run([front, "run", "--", "true"], env=env, check=True, stdin=subprocess.DEVNULL, cwd="/")
    got = {"front exited (the run, as a user sees it)": (time.monotonic_ns() - began) / 1e6}
    with open(path) as f:
        for line in f:
            stamp, name = line.rstrip("\n").split(" ", 1)
            got.setdefault(name, (int(stamp) - began) / 1e6)  # the first: the first run's
    return got


def main() -> int:
    arguments = sys.argv[1:]
    rounds = 10
    if "--rounds" in arguments:
        at = arguments.index("--rounds")
        rounds = int(arguments[at + 1])
        del arguments[at : at + 2]
    if not arguments:
        print(__doc__, file=sys.stderr)
        return 2
    given = [a.split("+") for a in arguments]  # ROOT[+NAME=VALUE...]: the same tree, other settings
    roots = [os.path.abspath(g[0]) for g in given]
    settings = [dict(setting.split("=", 1) for setting in g[1:]) for g in given]
    labels = [
        os.path.basename(root) + "".join(f" {v}" for v in e.values()) for root, e in zip(roots, settings, strict=True)
    ]
    hook = tempfile.mkdtemp(prefix="hvfs-timeline-")
    with open(f"{hook}/sitecustomize.py", "w") as f:
        f.write(HOOK)
    states = [tempfile.mkdtemp(prefix="hvfs-timeline-state-") for _ in roots]
    paths = [f"{state}.stamps" for state in states]
    envs = [
        dict(os.environ, HVFS_STATE_DIR=state, HVFS_TIMELINE=path, PYTHONPATH=f"{root}:{hook}", **setting)
        for root, state, path, setting in zip(roots, states, paths, settings, strict=True)
    ]
    results: list[dict[str, list[float]]] = [{} for _ in roots]
    try:
        for number in range(rounds):
            order = list(range(len(roots)))
            if number % 2:
                order.reverse()
            for i in order:
                for name, ms in one(roots[i], envs[i], paths[i]).items():
                    results[i].setdefault(name, []).append(ms)
    finally:
        for root, env in zip(roots, envs, strict=True):
            subprocess.run([f"{root}/.venv/bin/hvfs", "manager", "stop"], env=env, capture_output=True)
    names = sorted({n for r in results for n in r}, key=lambda n: statistics.median(results[-1].get(n, [1e9])))
    print(f"{'ms from the spawn of the front (median of ' + str(rounds) + ')':62}"
          + "".join(f"{label:>16}" for label in labels))  # fmt: skip
    for name in names:
        cells = []
        for result in results:
            values = result.get(name, [])
            cell = f"{statistics.median(values):.1f}" if values else "-"
            cells.append(cell + ("" if len(values) in (0, rounds) else f" ({len(values)})"))
        print(f"{name:62}" + "".join(f"{c:>16}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
