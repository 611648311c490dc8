"""Warm spares (hvfs.hypervisor.spares): a run that takes a spare behaves exactly as one
started fresh, takes only a spare of its own configuration, sees nothing of another run,
and the manager's stop leaves nothing of a spare behind. Real VMs, two private managers:
one with spares, one with HVFS_SPARE=0 (the reference)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOTLESS_USER, Hvfs, chown_to

# Everything of a run a VM can see of itself: stdio, exit code, env, cwd, hostname, ids,
# its fds, the mounts it was given, and what an earlier run left in its writable view.
PROBE = (
    "read line; echo in=$line; echo env=$GREETING; pwd; hostname; id -u; ls /proc/self/fd | wc -l;"
    " ls /data 2>&1; ls /tmp/left-behind 2>&1; echo x > /tmp/left-behind;"
    " ls /dev/shm/left-behind 2>&1; echo x > /dev/shm/left-behind; echo err >&2; exit 7"
)


def _manager(hvfs: Hvfs, **env: str) -> Iterator[tuple[Hvfs, str]]:
    state = tempfile.mkdtemp(prefix="hvfs-spares-")
    runner = hvfs.with_env(HVFS_STATE_DIR=state, **env)
    yield runner, state
    runner.run("manager", "stop")
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def warm(hvfs: Hvfs) -> Iterator[tuple[Hvfs, str]]:
    yield from _manager(hvfs, HVFS_SPARE="1")


@pytest.fixture(scope="module")
def cold(hvfs: Hvfs) -> Iterator[tuple[Hvfs, str]]:
    yield from _manager(hvfs, HVFS_SPARE="0")


def _spares(runner: Hvfs) -> dict[str, int]:
    status = json.loads(runner.ok("manager", "status", "--json"))
    spares: dict[str, int] = status["manager"]["spares"]
    return spares


def _ready(runner: Hvfs, timeout: float = 10.0) -> dict[str, int]:
    """The manager's spares once one is ready (they are made in the background)."""
    deadline = time.monotonic() + timeout
    while (spares := _spares(runner))["ready"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    return spares


def _probe(runner: Hvfs, *flags: str) -> tuple[int, str, str]:
    args = ("run", "--hostname", "box", "-e", "GREETING=hello", "-w", "/tmp", *flags, "--", "sh", "-c", PROBE)
    result = runner.run(*args, input="typed\n")
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize("flags", [(), ("--strict",), ("-v", "DIR:/data:ro")], ids=["default", "strict", "volume"])
def test_a_run_in_a_spare_behaves_as_a_fresh_one(
    warm: tuple[Hvfs, str], cold: tuple[Hvfs, str], flags: tuple[str, ...]
) -> None:
    directory = tempfile.mkdtemp(prefix="hvfs-spares-data-")
    Path(directory, "given").write_text("x")
    flags = tuple(f.replace("DIR", directory) for f in flags)
    try:
        runner = warm[0]
        _probe(runner, *flags)  # this configuration is seen: its spare is made
        before = _ready(runner)
        assert before["ready"] >= 1, before
        in_spare = _probe(runner, *flags)
        assert _spares(runner)["taken"] == before["taken"] + 1  # it did take the spare
        fresh = _probe(cold[0], *flags)
        assert _spares(cold[0]) == {"ready": 0, "made": 0, "taken": 0, "missed": 0}  # HVFS_SPARE=0: none
    finally:
        shutil.rmtree(directory)
    assert in_spare == fresh
    code, out, err = in_spare
    lines = out.splitlines()
    assert code == 7 and err.strip() == "err"
    assert lines[:5] == ["in=typed", "env=hello", "/tmp", "box", "0"]
    assert lines[5] == "4"  # 0, 1, 2 and ls's own: nothing of pid 1's or the spare's
    assert (lines[6] == "given") if "-v" in flags else ("No such file" in lines[6])
    assert "No such file" in lines[7] and "No such file" in lines[8]  # the writes of the run before are not here


# Changes to every kind of entry of the host image's root skeleton (one tree of the
# manager's, the lower layer of every VM's root: image.shared_skeleton), then a look at them.
CHANGE_SKELETON = (
    "touch /srv/left /var/tmp/left && chmod 700 /opt && rmdir /home && mkdir /made && rm /bin"
    " && ln -s /nowhere /bin && echo x > /mnt/left"
)
LOOK_AT_SKELETON = "ls -A /srv /var/tmp /mnt; stat -c '%n %a %F' /opt /home /bin /tmp /root; ls -d /made 2>&1; true"


def test_no_vm_sees_anothers_changes_to_the_shared_root_skeleton(
    warm: tuple[Hvfs, str], cold: tuple[Hvfs, str]
) -> None:
    """What one VM changes of its root's skeleton, no other sees: not the next run, taking
    a spare made before or after the change, nor a VM running meanwhile, nor one started
    fresh; they all see what a VM of a manager without spares sees."""
    runner = warm[0]
    reference = cold[0].ok("run", "--", "sh", "-c", LOOK_AT_SKELETON)
    assert "left" not in reference and "No such file" in reference  # /made
    runner.ok("run", "--", "true")
    _ready(runner)
    taken = _spares(runner)["taken"]
    runner.ok("run", "--", "sh", "-c", CHANGE_SKELETON)  # in a spare made before it
    assert runner.ok("run", "--", "sh", "-c", LOOK_AT_SKELETON) == reference
    runner.ok("run", "-d", "--name", "skeleton-changer", "--", "sh", "-c", f"{CHANGE_SKELETON}; sleep 60")
    try:
        deadline = time.monotonic() + 10
        while (
            runner.run("exec", "skeleton-changer", "--", "test", "-d", "/made").returncode
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert runner.ok("exec", "skeleton-changer", "--", "ls", "-d", "/made").strip() == "/made"
        _ready(runner)
        assert runner.ok("run", "--", "sh", "-c", LOOK_AT_SKELETON) == reference  # while the changer runs
        assert runner.ok("run", "--strict", "--", "sh", "-c", LOOK_AT_SKELETON) == reference  # another configuration
    finally:
        runner.ok("stop", "skeleton-changer")
    assert _spares(runner)["taken"] >= taken + 3


def test_configurations_never_share_a_spare(warm: tuple[Hvfs, str]) -> None:
    runner = warm[0]
    one, two = tempfile.mkdtemp(prefix="hvfs-spares-1-"), tempfile.mkdtemp(prefix="hvfs-spares-2-")
    Path(one, "one").write_text("1")
    Path(two, "two").write_text("2")
    try:
        seen = []
        for _ in range(3):  # each configuration has its spare after the first round
            for directory in (one, two, None):
                flags = ("-v", f"{directory}:/data") if directory else ()
                _ready(runner)
                seen.append(runner.ok("run", *flags, "--", "sh", "-c", "ls /data 2>/dev/null; true").split())
        assert seen == [["one"], ["two"], []] * 3
        assert _spares(runner)["taken"] >= 4
        # A host directory replaced after its spare was made: the run sees the new one.
        _ready(runner)
        shutil.rmtree(one)
        os.mkdir(one)
        Path(one, "new").write_text("3")
        assert runner.ok("run", "-v", f"{one}:/data", "--", "ls", "/data").split() == ["new"]
    finally:
        shutil.rmtree(one)
        shutil.rmtree(two)


def children(parent: int) -> dict[int, tuple[str, str]]:
    """The child processes of ``parent``: their names and states (R, S, Z, ...)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if int(rest[1]) == parent:
            found[int(entry)] = (name, rest[0])
    return found


def _spare_pids(state: str) -> set[int]:
    """The hvfs-init processes the manager of ``state`` spawned (its launchers) and their pid 1s."""
    manager = int(json.loads(Path(state, "manager.json").read_text())["pid"])
    found = set()
    for pid, (name, _) in children(manager).items():
        if name == "hvfs-init":
            found.add(pid)
            found |= {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    return found


def _assert_all_gone(pids: set[int], state: str) -> None:
    """The spares' processes (within 5 s), their state and their mounts are gone."""
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert os.listdir(Path(state, "vms")) == []
    assert state not in Path("/proc/self/mountinfo").read_text()


def test_stop_leaves_nothing_and_ps_shows_no_spare(hvfs: Hvfs) -> None:
    state = tempfile.mkdtemp(prefix="hvfs-spares-stop-")
    runner = hvfs.with_env(HVFS_STATE_DIR=state, HVFS_SPARE="1")
    try:
        runner.ok("run", "--", "true")
        assert _ready(runner)["ready"] == 1
        pids = _spare_pids(state)
        assert len(pids) == 2  # the spare's launcher and its pid 1, waiting
        assert runner.ok("ps", "-a").strip().count("\n") == 0  # its header only: a spare is no VM
        assert os.listdir(Path(state, "vms"))  # its state, while it waits
        runner.ok("manager", "stop")
        _assert_all_gone(pids, state)
    finally:
        runner.run("manager", "stop")
        shutil.rmtree(state, ignore_errors=True)


def test_a_vm_that_took_a_spare_survives_a_manager_restart(warm: tuple[Hvfs, str]) -> None:
    runner = warm[0]
    runner.ok("run", "-d", "--name", "spare-first", "--", "sleep", "60")
    _ready(runner)
    taken = _spares(runner)["taken"]
    runner.ok("run", "-d", "--name", "spare-taken", "--", "sleep", "60")
    assert _spares(runner)["taken"] == taken + 1
    runner.ok("manager", "restart")
    assert runner.ok("exec", "spare-taken", "--", "hostname").strip() == "spare-taken"
    for name in ("spare-first", "spare-taken"):
        runner.ok("stop", name)


@pytest.mark.parametrize("driver", ["seccomp", "ptrace"])
def test_a_rootless_run_takes_a_spare_as_well(rootless: Hvfs, driver: str) -> None:
    states = [Path(tempfile.mkdtemp(prefix="hvfs-spares-rootless-")) for _ in range(2)]
    for state in states:
        chown_to(state, ROOTLESS_USER)
    warm = rootless.with_env(HVFS_STATE_DIR=str(states[0]), HVFS_SPARE="1")
    cold = rootless.with_env(HVFS_STATE_DIR=str(states[1]), HVFS_SPARE="0")
    try:
        _probe(warm, "--driver", driver)
        assert _ready(warm)["ready"] == 1
        pids = _spare_pids(str(states[0]))
        in_spare = _probe(warm, "--driver", driver)
        assert _spares(warm)["taken"] == 1
        assert in_spare == _probe(cold, "--driver", driver) and in_spare[0] == 7
        assert _ready(warm)["ready"] == 1  # the next one
        pids |= _spare_pids(str(states[0]))
        warm.ok("manager", "stop")
        deadline = time.monotonic() + 5
        while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        assert os.listdir(states[0] / "vms") == []
    finally:
        for runner, state in ((warm, states[0]), (cold, states[1])):
            runner.run("manager", "stop")
            shutil.rmtree(state, ignore_errors=True)


def test_an_idle_spare_is_dropped(hvfs: Hvfs) -> None:
    state = tempfile.mkdtemp(prefix="hvfs-spares-idle-")
    runner = hvfs.with_env(HVFS_STATE_DIR=state, HVFS_SPARE="1", HVFS_SPARE_IDLE="0.5")
    try:
        runner.ok("run", "--", "true")
        assert _ready(runner)["ready"] == 1
        pids = _spare_pids(state)
        assert len(pids) == 2
        deadline = time.monotonic() + 5
        while _spares(runner)["ready"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _spares(runner) == {"ready": 0, "made": 1, "taken": 0, "missed": 1}  # the first run found none
        assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        assert _vms(state) == []  # the run's directory may be kept, empty, for the next VM
    finally:
        runner.run("manager", "stop")
        shutil.rmtree(state, ignore_errors=True)


def test_a_configuration_run_before_its_spare_was_ready_keeps_two(hvfs: Hvfs) -> None:
    """Runs back to back: one that finds its configuration's spare still being made makes
    the manager keep two of it, each taken once, each a VM of its own."""
    state = tempfile.mkdtemp(prefix="hvfs-spares-depth-")
    runner = hvfs.with_env(HVFS_STATE_DIR=state, HVFS_SPARE="1", HVFS_SPARE_SETTLE="1.5")
    try:
        runner.ok("run", "--", "true")  # asks for one, made 1.5 s later
        runner.ok("run", "--", "true")  # too early: a miss (and runs back to back: made now, not 1.5 s later)
        assert _spares(runner)["taken"] == 0 and _spares(runner)["missed"] == 2  # both started fresh
        deadline = time.monotonic() + 15
        while (spares := _spares(runner))["ready"] < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert spares == {"ready": 2, "made": 2, "taken": 0, "missed": 2}
        assert "spares: 2 ready; 0 taken, 2 missed, 2 made" in runner.ok("manager", "status")
        pids = _spare_pids(state)
        assert len(pids) == 4  # two hvfs-init processes each
        first = runner.ok("run", "--", "sh", "-c", "echo $$ > /tmp/mine; cat /proc/1/stat | cut -d' ' -f1; ls /tmp")
        second = runner.ok("run", "--", "sh", "-c", "ls /tmp; echo done")
        assert first.split() == ["1", "mine"] and second.split() == ["done"]  # nothing of the first
        assert _spares(runner)["taken"] == 2 and _spares(runner)["missed"] == 2
    finally:
        runner.run("manager", "stop")
        shutil.rmtree(state, ignore_errors=True)


def _vms(state: str) -> list[str]:
    """The VMs' directories in ``state``; those kept emptied for the next VMs (vmdirs) hold
    nothing but an empty ``staging/``."""
    names = os.listdir(Path(state, "vms"))
    for name in names:
        if name.startswith(".free-"):
            assert os.listdir(Path(state, "vms", name)) == ["staging"]
            assert os.listdir(Path(state, "vms", name, "staging")) == []
    return [name for name in names if not name.startswith(".free-")]


def test_a_run_is_told_its_exit_and_its_state_goes(hvfs: Hvfs) -> None:
    """A run's client hears its exit before the VM's state is removed (the removal is off
    the exit's path): the code and output are whole, and nothing of the VM or its group
    is left a moment later; a detached one keeps its code for ps -a."""
    state = tempfile.mkdtemp(prefix="hvfs-spares-exit-")
    runner = hvfs.with_env(HVFS_STATE_DIR=state, HVFS_SPARE="0")  # no spare's state in vms/
    try:
        for _ in range(3):
            result = runner.run("run", "--", "sh", "-c", "seq 1 2000; exit 5")
            assert result.returncode == 5 and result.stdout.split() == [str(n) for n in range(1, 2001)]
        deadline = time.monotonic() + 5
        while (_vms(state) or os.listdir(Path(state, "groups"))) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert os.listdir(Path(state, "groups")) == [] and _vms(state) == []
        runner.ok("run", "-d", "--name", "kept", "--", "sh", "-c", "exit 3")
        deadline = time.monotonic() + 10
        while "exited" not in (listed := runner.ok("ps", "-a")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listed.splitlines()[1].split()[:5] == ["kept", "run", "-", "exited", "3"]
        runner.ok("rm", "kept")
    finally:
        runner.run("manager", "stop")
        shutil.rmtree(state, ignore_errors=True)


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_a_spares_driver_waits_for_its_run_and_ends_with_it(hvfs: Hvfs) -> None:
    """A spare's driver threads start with the spare (the run binds them to its VM and its
    group: SeccompDriver.bind; a run served by them: the tests above); a spare dropped
    unbound ends them, as its processes."""
    state = tempfile.mkdtemp(prefix="hvfs-spares-driver-")
    runner = hvfs.with_env(HVFS_STATE_DIR=state, HVFS_SPARE="1", HVFS_SPARE_IDLE="0.5")
    try:
        runner.ok("run", "--", "true")
        manager = int(json.loads(Path(state, "manager.json").read_text())["pid"])
        assert _ready(runner)["ready"] == 1
        with_spare = _threads(manager)
        deadline = time.monotonic() + 5
        while _spares(runner)["ready"] and time.monotonic() < deadline:
            time.sleep(0.1)
        while _threads(manager) > with_spare - 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _threads(manager) <= with_spare - 1  # its one worker (the watchdog is the process's)
    finally:
        runner.run("manager", "stop")
        shutil.rmtree(state, ignore_errors=True)


def _tracer_of(pid: int) -> int | None:
    """The thread tracing ``pid`` (0: none), None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("TracerPid:")))


@pytest.mark.parametrize("flags", [(), ("--strict",)], ids=["default", "strict"])
def test_a_ptrace_run_in_a_spare_behaves_as_a_fresh_one(
    warm: tuple[Hvfs, str], cold: tuple[Hvfs, str], flags: tuple[str, ...]
) -> None:
    """Under the ptrace driver too: the spare's pid 1 is traced, while it waits, by a
    thread of its manager (the one that serves the run: ptrace is per thread), and a run
    in it is exactly one started fresh (HVFS_SPARE=0)."""
    runner, state = warm
    flags = ("--driver", "ptrace", *flags)
    _probe(runner, *flags)
    before = _ready(runner)
    assert before["ready"] >= 1, before
    manager = int(json.loads(Path(state, "manager.json").read_text())["pid"])
    init = [pid for pid in _spare_pids(state) if _tracer_of(pid)]  # pid 1 of each ptrace spare (of either test)
    tracers = {_tracer_of(pid) for pid in init}
    assert init and tracers <= {int(tid) for tid in os.listdir(f"/proc/{manager}/task")}, tracers  # its threads
    runner.ok("run", "--", "sh", "-c", "exit 0")  # the seccomp driver's configuration: not this spare
    assert all(_tracer_of(pid) in tracers for pid in init)  # still waiting, untaken
    taken = _spares(runner)["taken"]
    in_spare = _probe(runner, *flags)
    assert _spares(runner)["taken"] == taken + 1
    assert len([pid for pid in init if _tracer_of(pid) is None]) == 1  # this run took one: it ran and ended
    fresh = _probe(cold[0], *flags)
    assert in_spare == fresh
    code, out, err = in_spare
    assert code == 7 and err.strip() == "err"
    assert out.splitlines()[:5] == ["in=typed", "env=hello", "/tmp", "box", "0"]  # its fds: as fresh (a kept socket)


@pytest.mark.parametrize("end", ["idle", "stop"])
def test_a_ptrace_spare_dropped_unbound_leaves_nothing(hvfs: Hvfs, end: str) -> None:
    """A ptrace spare no run took, dropped when idle or with its manager: its processes,
    its tracer thread and its state are gone."""
    state = tempfile.mkdtemp(prefix="hvfs-spares-ptrace-")
    runner = hvfs.with_env(HVFS_STATE_DIR=state, HVFS_SPARE="1", HVFS_SPARE_IDLE="0.5" if end == "idle" else "60")
    try:
        runner.ok("run", "--driver", "ptrace", "--", "true")
        manager = int(json.loads(Path(state, "manager.json").read_text())["pid"])
        assert _ready(runner)["ready"] == 1
        pids = _spare_pids(state)
        assert len(pids) == 2
        tracer = max(_tracer_of(pid) or 0 for pid in pids)
        assert Path(f"/proc/{manager}/task/{tracer}").exists()  # the spare's tracer thread
        if end == "idle":
            deadline = time.monotonic() + 5
            while _spares(runner)["ready"] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _spares(runner) == {"ready": 0, "made": 1, "taken": 0, "missed": 1}  # the first run found none
            while Path(f"/proc/{manager}/task/{tracer}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not Path(f"/proc/{manager}/task/{tracer}").exists()  # the thread ended with it
        else:
            runner.ok("manager", "stop")
        _assert_all_gone(pids, state)
    finally:
        runner.run("manager", "stop")
        shutil.rmtree(state, ignore_errors=True)


def test_a_spares_making_waits_while_a_run_starts(tmp_path: Path) -> None:
    """The making of a spare (a thread of the manager) waits, at each of its steps, while
    an operation that starts VMs is served (Spares.starting), so that it does not compete
    with that start for the GIL; other operations hold nothing, and a start that never
    ends holds a making for YIELD at most."""
    from hvfs.hypervisor import spares
    from hvfs.hypervisor.layout import Layout
    from hvfs.intercept.arch import native
    from hvfs.sandbox.userns import IdMap

    made = spares.Spares(Layout(str(tmp_path)), IdMap(1), lambda strict, driver: b"", native())
    passed = threading.Event()

    def step() -> None:
        made._yield()
        passed.set()

    with made.starting("run_argv"):
        with made.starting("ps"):  # no start: it holds nothing
            pass
        waiting = threading.Thread(target=step)
        waiting.start()
        assert not passed.wait(0.3)  # held while the run starts
    assert passed.wait(5)  # and let go as it has started
    waiting.join()
    with made.starting("up"):
        began = time.monotonic()
        made._yield()  # a start that goes on: the making goes on after YIELD
        assert time.monotonic() - began >= spares.YIELD * 0.9
        made._depth["back to back"] = spares.DEPTH  # its runs come back to back, none is ready:
        began = time.monotonic()
        made._yield("back to back")  # its making goes on between its steps
        assert time.monotonic() - began < spares.YIELD
    began = time.monotonic()
    made._yield()  # nothing starting: no wait
    assert time.monotonic() - began < spares.YIELD
    made.close()
