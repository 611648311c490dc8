"""The ptrace tracer's poll before it blocks (hvfs/_native/tracer_spin.h, HVFS_TRACER_SPIN_US):
an idle traced VM's manager does not spin, and the poll changes nothing a VM leaves.

Each test has managers of its own, one per setting: the manager reads the variable when it
loads the C loop. As root and rootless, default and strict."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import VARIANTS, Hvfs, Vm, require, state_dir

# The largest budget the variable takes: a tracer that polled while nothing stops would burn
# the whole CPU with it, one that polls only within a burst at most 10 ms per quiet spell.
LARGEST_US = "10000"


def with_spin(vm: Vm, spin: str | None) -> Vm:
    """``vm`` with a manager of its own whose tracer polls ``spin`` µs (None: the default),
    whatever the machine's load (HVFS_TRACER_SPIN_ALWAYS: the poll is what is tested)."""
    name = f"spin-{spin or 'default'}" + ("-strict" if vm.strict else "")
    variables = {"HVFS_STATE_DIR": state_dir(vm.runner.user, name), "HVFS_TRACER_SPIN_ALWAYS": "1"}
    if spin is not None:
        variables["HVFS_TRACER_SPIN_US"] = spin
    return Vm(vm.runner.with_env(**variables), vm.strict)


def manager_of(runner: Hvfs) -> int:
    command = runner.command
    assigned = dict(part.split("=", 1) for part in command if part.startswith("HVFS_STATE_DIR="))
    return int(json.loads(Path(assigned["HVFS_STATE_DIR"], "manager.json").read_text())["pid"])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def data(vm: Vm, shared_tmp: Path) -> Path:
    path = shared_tmp / "data"
    path.mkdir()
    vm.give(path, shared_tmp)
    return path


@pytest.mark.parametrize("spin", [None, LARGEST_US])
@pytest.mark.parametrize("vm", VARIANTS, indirect=True)
def test_an_idle_traced_vms_manager_does_not_spin(vm: Vm, data: Path, spin: str | None) -> None:
    """A VM that sleeps makes no stop: its tracer must block, not poll. The manager's CPU
    (all its threads) over a traced ``sleep 2``, start-up and exit included, stays under a
    fifth of the wall time; a tracer that kept polling would be near all of it."""
    require(importlib.util.find_spec("hvfs._native._tracer") is not None, "hvfs/_native/tracer.c is not built")
    spun = with_spin(vm, spin)
    args = ["--driver", "ptrace", "-v", f"{data}:/data"]
    spun.runner.ok("run", "--driver", "ptrace", "--", "true")  # the manager up, its spare made
    pid = manager_of(spun.runner)
    before, start = cpu_seconds(pid), time.monotonic()
    result = spun.runner.run("run", *(["--strict"] if vm.strict else []), *args, "--", "sh", "-c",
                             "echo burst > /data/a; cat /data/a > /data/b; sleep 2")  # fmt: skip
    wall, used = time.monotonic() - start, cpu_seconds(pid) - before
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert (data / "b").read_text() == "burst\n"
    print(f"idle traced VM, spin {spin or 'default'}: manager CPU {used * 1000:.0f} ms over {wall:.2f} s")
    assert used < 0.2 * wall, (used, wall)


@pytest.mark.parametrize("vm", VARIANTS, indirect=True)
def test_the_poll_leaves_what_a_blocking_wait_leaves(vm: Vm, data: Path) -> None:
    """A burst of stops of every kind the C loop meets (served opens with their injected
    recvmsg, unlinks, fd metadata changes, a fork, a signal, a group-stop), traced with the
    poll off (0) and at its largest: the same files on the host, the same counts served."""
    require(importlib.util.find_spec("hvfs._native._tracer") is not None, "hvfs/_native/tracer.c is not built")
    script = """
        cd /data/$0
        trap 'echo caught > signalled' USR1
        kill -USR1 $$
        sh -c 'kill -STOP $$; echo resumed > woke' & child=$!
        sleep 0.2; kill -CONT $child; wait $child
        for i in $(seq 40); do echo $i > f$i; chmod 640 f$i; done
        for i in $(seq 1 2 40); do rm f$i; done
        mkdir d; for i in $(seq 20); do cat f$((i * 2)) > d/c$i; done
        ls d | wc -l
        """
    records = {}
    for spin in ("0", LARGEST_US):
        (data / spin).mkdir()
        vm.give(data / spin)
        stats = data.parent / f"stats-{spin}.json"
        args = ["run", "--driver", "ptrace", "--stats", str(stats), "-v", f"{data}:/data"]
        args += ["--strict"] if vm.strict else []
        result = with_spin(vm, spin).runner.run(*args, "--", "sh", "-euc", script, spin, timeout=120)
        assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        assert result.stdout.split() == ["20"]
        records[spin] = json.loads(stats.read_text())
    left = {}
    for spin in records:
        root = data / spin
        left[spin] = sorted(
            (str(p.relative_to(root)), p.stat().st_mode, p.read_text() if p.is_file() else "") for p in root.rglob("*")
        )
    assert left["0"] == left[LARGEST_US] and len(left["0"]) == 20 + 1 + 20 + 2, left
    off, on = records["0"], records[LARGEST_US]
    assert off["driver"] == on["driver"] == "ptrace" and off["loop"] == on["loop"] == "native", records
    # What the VM asked and what was served; not the kept sockets planted, which follow the
    # scheduler (whether a fork came before a thread's first served open), nor so which of the
    # served write-opens the C loop served (``written_here``: 1 or 2 of the same run on main).
    for count in ("calls", "requests", "installed", "unlinked_here"):
        assert off[count] == on[count], (count, records)
    assert off["calls"] > 0 and off["installed"] >= 20, records
