"""Where the milliseconds of `hvfs run -- true` go, client and manager side.

    python benchmarks/startup_phases.py [--front .venv/bin/hvfs] [ROUNDS]

Runs ``hvfs run -- true`` ROUNDS times (default 20) against a manager of its own (a
private state directory), warm, and reports the median of each phase:

- the interpreter's own start-up (``python -c pass``, ``python -S -c pass``);
- the client's imports and argument parsing, and its control round trip (connect,
  ``run`` until ``started``, then until ``exited``), stamped in this process with
  ``time.perf_counter_ns`` around hvfs's own functions (the client runs in-process here,
  exactly as the ``hvfs`` script runs it);
- the manager's side of ``op: run``: the group (project, services, limits), the mount
  table, the views (writable and boot), the filter program, the launcher (clone, the
  namespaces, hvfs-init's exec) up to pid 1's boot message (filter loaded, listener
  passed), the deposit with the shim, ``go``: stamped by wrappers a ``sitecustomize``
  of this script's installs in the manager it starts (``HVFS_PHASES`` names the file
  both sides append their records to). Nothing of hvfs is changed to measure it.

With ``--front``, the stamped warm runs are the native front's (native/client/): the
client's phases are then its wall time alone, and the manager's include ``run_argv``.

A cold start (manager stopped first) is reported too, as one figure per round.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HOOK = r"""
import functools, json, os, sys, threading, time

_PATH = os.environ.get("HVFS_PHASES")


def _record(name, ns):
    with open(_PATH, "a") as f:
        f.write(json.dumps({"side": "manager", "phase": name, "ms": ns / 1e6}) + "\n")


def _wrap(owner, attribute, name):
    original = getattr(owner, attribute)

    @functools.wraps(original)
    def timed(*args, **kwargs):
        began = time.perf_counter_ns()
        try:
            return original(*args, **kwargs)
        finally:
            _record(name, time.perf_counter_ns() - began)

    setattr(owner, attribute, timed)
    return timed


if _PATH and "serve" in sys.argv:
    from hvfs import runtime
    from hvfs.hypervisor import daemon, group, vmstart
    from hvfs.sandbox import launcher

    _wrap(daemon.Daemon, "_op_run", "op run, all of it")
    _wrap(daemon.Daemon, "_new_group", "group: project, services")
    _wrap(group, "mount_table", "mount table: sources taken")
    _wrap(vmstart, "start", "vmstart.start, all of it")
    _wrap(group.Group, "save", "group.json written")
    _wrap(group.Group, "program", "pid 1's program")
    _wrap(vmstart, "write_json", "vm.json written")
    _wrap(vmstart, "build", "views: writable and boot")
    _wrap(vmstart.Hypervisor, "filter_program", "filter program (cached)")
    _wrap(vmstart, "start_vm", "start_vm, all of it")
    runtime.start_vm.__kwdefaults__["start"] = _wrap(launcher, "start", "launcher: clone, namespaces, exec init")
    _wrap(launcher.VmProcess, "wait_booted", "pid 1 boots: filter, listener")
    _wrap(launcher.VmProcess, "go", "go: the command starts")
    _wrap(launcher.VmProcess, "deposit", "deposit with the shim")
    from hvfs.hypervisor import spares

    _wrap(spares.Spares, "take", "spare: taken (renamed to the run's)")
    _wrap(vmstart, "_take", "spare: served and started (driver, go)")
    _wrap(vmstart, "_start_fresh", "fresh: views, boot, served, started")
    _wrap(vmstart, "serve_vm", "serve_vm: context, driver, go")
    _wrap(spares.Spares, "_make", "spare made (background, off the run's path)")
    from hvfs.hypervisor import ordering
    from hvfs.intercept import driver
    from hvfs.manager import manager
    from hvfs.project import limits

    _wrap(group.Group, "start", "group.start, all of it")
    _wrap(limits.LimitMaker, "plan", "limits planned")
    _wrap(limits.LimitMaker, "enter", "limits entered (cgroup)")
    _wrap(manager.Manager, "add_vm", "manager: VM added")
    _wrap(driver.SeccompDriver, "start", "driver threads started")
    from hvfs.hypervisor import staging
    from hvfs.manager import vm

    _wrap(group.Group, "_watch", "exit: all of the watch, from start")
    _wrap(launcher.VmProcess, "wait", "exit: VM runs until the shim says exited")
    _wrap(driver.SeccompDriver, "join", "exit: driver joined")
    _wrap(staging, "settle", "exit: changes settled")
    _wrap(vm.VmContext, "close", "exit: views closed")
    try:  # since branch startup4: the VM's directory emptied and kept for the next VM
        from hvfs.hypervisor import vmdirs

        _wrap(vmdirs, "remove", "exit: VM state removed")
    except ImportError:
        _wrap(group, "remove_tree", "exit: VM state removed")
    try:  # since branch warmstart: a function of records
        from hvfs.hypervisor import records

        _wrap(records, "run_statistics", "exit: statistics")
    except AttributeError:
        _wrap(group.Group, "statistics", "exit: statistics")
    _wrap(group.Group, "tell", "exit: told the client")
    from hvfs.hypervisor import frontrun

    _wrap(frontrun, "handle", "front: op run_argv, all of it")  # run_argv and run_argv_checked alike
    _wrap(frontrun, "parse", "front: argv parsed (thread)")
    _wrap(frontrun, "_check_views", "front: views asked of the front")
    _wrap(frontrun, "to_json", "front: project to JSON")
    _wrap(vm.VmContext, "__init__", "serve: VM context made")
    _wrap(driver.SeccompDriver, "__init__", "serve: driver made")
    _wrap(vmstart, "ensure_path", "spare: working directory made")
    _wrap(runtime, "transport_maker", "serve: transport chosen")
    _wrap(ordering, "start_vms", "group: its VMs started in order")
    _wrap(group.Group, "_start", "group: one VM started, noted, followed")
    _wrap(group.Group, "_follow", "group: its watcher threads started")
    _wrap(group.Group, "table", "group: the VM's mount table")
    _wrap(spares, "recipe", "spare: the run's recipe")
    _wrap(spares.Spares, "want", "spare: the next one asked for")
    _ended = {}
    _waited = launcher.VmProcess.wait

    def _wait(self, *args, **kwargs):
        try:
            return _waited(self, *args, **kwargs)
        finally:
            _ended[threading.get_ident()] = time.perf_counter_ns()

    launcher.VmProcess.wait = _wait
    _told = group.Group.tell

    def _tell(self, message):
        ended = _ended.pop(threading.get_ident(), None)
        if ended is not None and "exited" in message:
            _record("exit: from the VM's end to `exited` sent", time.perf_counter_ns() - ended)
        return _told(self, message)

    group.Group.tell = _tell
"""

CLIENT = r"""
import json, os, sys, time
began = time.perf_counter_ns()
path = os.environ["HVFS_PHASES"]
records = []


def note(name, ns):
    records.append({"side": "client", "phase": name, "ms": ns / 1e6})


from hvfs import cli, run  # noqa: E402
from hvfs.client import session  # noqa: E402
from hvfs.hypervisor import client  # noqa: E402

imported = time.perf_counter_ns()


def timed(owner, attribute, name):
    original = getattr(owner, attribute)

    def wrapper(*args, **kwargs):
        t = time.perf_counter_ns()
        try:
            return original(*args, **kwargs)
        finally:
            note(name, time.perf_counter_ns() - t)

    setattr(owner, attribute, wrapper)


timed(cli, "build_parser", "argparse: the run parser")
timed(cli, "_spec", "the run's spec from the arguments")
timed(run, "run_project", "its project (mounts prepared)")
timed(client, "connect", "connect (hello, code check)")
timed(session, "launch", "launch: run until started")
timed(session, "wait_exit", "wait_exit: started until exited")
real_exit = os._exit


def done(code):
    note("imports: hvfs.cli, hvfs.run and what they need", imported - began)
    note("in the client, all of it", time.perf_counter_ns() - began)
    with open(path, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    real_exit(code)


os._exit = done
sys.argv = ["hvfs", "run", "--", "true"]
cli.main()
"""


def main() -> int:
    arguments = sys.argv[1:]
    front = None
    if arguments[:1] == ["--front"]:  # the warm runs through the native front (native/client/)
        front, arguments = os.path.abspath(arguments[1]), arguments[2:]
    rounds = int(arguments[0]) if arguments else 20
    python = sys.executable
    with tempfile.TemporaryDirectory() as state, tempfile.TemporaryDirectory() as hook:
        os.chmod(state, 0o700)
        with open(os.path.join(hook, "sitecustomize.py"), "w") as f:
            f.write(HOOK)
        phases = os.path.join(hook, "phases.jsonl")
        env = dict(os.environ, HVFS_STATE_DIR=state, HVFS_PHASES=phases, PYTHONPATH=hook)
        hvfs = [python, "-m", "hvfs"]

        def wall(command: list[str], **kw: object) -> float:
            t = time.perf_counter()
            subprocess.run(command, env=env, check=True, capture_output=True, cwd="/", **kw)  # type: ignore[call-overload]
            return (time.perf_counter() - t) * 1000

        figures: dict[str, list[float]] = {}
        subprocess.run([*hvfs, "run", "--", "true"], env=env, check=True, capture_output=True, cwd="/")
        for _ in range(rounds):
            figures.setdefault("python -c pass", []).append(wall([python, "-c", "pass"]))
            figures.setdefault("python -S -c pass", []).append(wall([python, "-S", "-c", "pass"]))
            figures.setdefault("hvfs run -- true, warm (wall)", []).append(wall([*hvfs, "run", "--", "true"]))
            figures.setdefault("client harness, warm (wall)", []).append(wall([python, "-c", CLIENT]))
        open(phases, "w").close()  # the warm rounds' phases only: the cold ones below are apart
        for _ in range(rounds):
            if front is not None:
                figures.setdefault("front: hvfs run -- true, warm (wall)", []).append(
                    wall([front, "run", "--", "true"])
                )
            else:
                figures.setdefault("client harness, warm (wall)", []).append(wall([python, "-c", CLIENT]))
        with open(phases) as f:
            records = [json.loads(line) for line in f]
        for _ in range(max(3, rounds // 4)):
            subprocess.run([*hvfs, "manager", "stop"], env=env, capture_output=True)
            figures.setdefault("hvfs run -- true, cold (wall)", []).append(wall([*hvfs, "run", "--", "true"]))
        subprocess.run([*hvfs, "manager", "stop"], env=env, capture_output=True)
    for name, xs in figures.items():
        print(f"{name:55} {statistics.median(xs):7.2f} ms  (n={len(xs)})")
    by: dict[tuple[str, str], list[float]] = {}
    for r in records:
        by.setdefault((r["side"], r["phase"]), []).append(r["ms"])
    for (side, phase), xs in by.items():
        print(f"{side:8} {phase:46} {statistics.median(xs):7.2f} ms  (n={len(xs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
