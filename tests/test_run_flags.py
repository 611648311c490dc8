"""The docker/podman flags of ``hvfs run`` (hvfs/run_flags.py), each in a real VM, with
docker's meaning where docs/cli.md says "same"."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Hvfs


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["--memory", "1k"], "--memory 1k: size 1k is too small"),
        (["--memory", "lots"], "is not a size"),
        (["--memory", "1000t"], "more than this machine's memory"),
        (["--cpus", "abc"], "--cpus 'abc': not a number"),
        (["--cpus", "100000"], "is more than this machine gives hvfs"),
        (["--cpus", "nan"], "not a number of CPUs"),
        (["--pids-limit", "1"], "1 is too few processes"),
        (["--pids-limit", "x"], "not a whole number"),
        (["--hostname", "bad host"], "--hostname 'bad host'"),
        (["--hostname", "a" * 65], "up to 64"),
        (["--env-file", "/nonexistent-hvfs.env"], "--env-file /nonexistent-hvfs.env: cannot read it"),
        (["--network", "host"], "publish ports with -p"),
        (["--network", "my net!"], "--network 'my net!': a network's name is"),
        (["--network", "bridge"], "--network bridge: not yet"),
        (["-p", "80"], "expected [HOSTIP:]HOSTPORT:PORT"),
        (["-p", "70000:80"], "70000 is not a port"),
        (["-p", "8080:80/udp"], "only TCP ports"),
        (["-p", "300.1.1.1:8080:80"], "'300.1.1.1' is not an IP address"),
        (["-p", "192.0.2.1:8080:80"], "192.0.2.1 is not an address of this host"),
        (["-d", "-t"], "-d with -i or -t"),
    ],
)
def test_bad_docker_flags_get_one_line_and_125(hvfs: Hvfs, args: list[str], mentions: str) -> None:
    result = hvfs.run("run", *args, "--", "true")
    assert result.returncode == 125, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hvfs: ") and mentions in lines[0], result.stderr


def test_rm_and_init_are_accepted_and_pid_1_is_hvfs_init_which_reaps(hvfs: Hvfs) -> None:
    # An orphan (the background sleep, whose shell exits at once) is reparented to pid 1,
    # which must reap it: no zombie is left among the VM's processes.
    script = (
        "sh -c 'sleep 0.2 &' ; sleep 0.6; cat /proc/1/comm; "
        "for s in /proc/[0-9]*/stat; do cut -d' ' -f3 $s; done | grep -c Z || true"
    )
    out = hvfs.ok("run", "--rm", "--init", "--", "sh", "-c", script)
    comm, zombies = out.split()
    assert comm == "hvfs-init" and zombies == "0"
    assert hvfs.run("run", "--rm", "--", "sh", "-c", "exit 7").returncode == 7  # the code is the command's


def test_read_only_root_gives_erofs_while_mounts_keep_their_mode(hvfs: Hvfs, tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir()
    script = (
        "import sys\nfor p in sys.argv[1:]:\n try:\n  open(p, 'w').write('x')\n  print(p, 'written')\n"
        " except OSError as e:\n  print(p, e.errno)"
    )
    out = hvfs.ok(
        "run", "--read-only", "-v", f"{tmp_path}:/data", "-v", f"{tmp_path / 'ro'}:/ro:ro", "--tmpfs", "/scratch",
        "--", "python3", "-c", script, "/etc/hvfs-x", "/tmp/hvfs-x", "/data/y", "/ro/z", "/scratch/w",
    )  # fmt: skip
    results = dict(line.split() for line in out.splitlines())
    assert results == {"/etc/hvfs-x": "30", "/tmp/hvfs-x": "30", "/data/y": "written", "/ro/z": "30",
                       "/scratch/w": "written"}  # fmt: skip
    assert (tmp_path / "y").read_text() == "x" and not (tmp_path / "ro" / "z").exists()
    assert not Path("/etc/hvfs-x").exists() and not Path("/tmp/hvfs-x").exists()
    # Without the flag, the same root is writable (the VM's own copy on write): the flag did it.
    assert hvfs.ok("run", "--", "python3", "-c", script, "/etc/hvfs-x").split() == ["/etc/hvfs-x", "written"]
    assert not Path("/etc/hvfs-x").exists()


def test_env_file_is_read_as_docker_reads_it(hvfs: Hvfs, tmp_path: Path) -> None:
    env_file = tmp_path / "vars.env"
    env_file.write_text(
        '# a comment\n\nPLAIN=1\nQUOTED="kept as written"\nSPACES=a b  c\nFROM_HOST\nABSENT_ON_HOST\nEMPTY=\n'
        "OVERRIDDEN=from-file\n  INDENTED=yes\n"
    )
    runner = hvfs.with_env(FROM_HOST="host-value")
    out = runner.ok(
        "run", "--env-file", str(env_file), "-e", "OVERRIDDEN=from-e", "--", "python3", "-c",
        "import json, os; print(json.dumps(dict(os.environ)))",
    )  # fmt: skip
    env = json.loads(out)
    assert env["PLAIN"] == "1" and env["QUOTED"] == '"kept as written"' and env["SPACES"] == "a b  c"
    assert env["FROM_HOST"] == "host-value" and "ABSENT_ON_HOST" not in env and env["EMPTY"] == ""
    assert env["OVERRIDDEN"] == "from-e" and env["INDENTED"] == "yes"
    (tmp_path / "bad.env").write_text("GOOD=1\nnot a variable\n")
    bad = hvfs.run("run", "--env-file", str(tmp_path / "bad.env"), "--", "true")
    assert bad.returncode == 125 and "bad.env:2:" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_hostname_else_the_name(hvfs: Hvfs) -> None:
    script = "hostname; echo $HOSTNAME; cat /proc/sys/kernel/hostname"
    assert hvfs.ok("run", "--hostname", "web-1.local", "--", "sh", "-c", script).split() == ["web-1.local"] * 3
    name = f"named-{os.getpid()}"
    assert hvfs.ok("run", "--name", name, "--", "sh", "-c", script).split() == [name] * 3


def test_network_none_is_loopback_only(hvfs: Hvfs) -> None:
    for args in ([], ["--network", "none"], ["--net", "none"]):
        out = hvfs.ok("run", *args, "--", "python3", "-c", "import socket; print(*socket.if_nameindex())")
        assert out.strip() == "(1, 'lo')"  # and the host's interfaces are not there


def test_pids_limit_stops_a_fork_bomb(hvfs: Hvfs) -> None:
    bomb = (
        "import os, time\nn = 0\n"
        "try:\n while True:\n  if os.fork() == 0:\n   time.sleep(30); os._exit(0)\n  n += 1\n"
        "except OSError as e:\n print(n, e.strerror)"
    )
    count, _, reason = hvfs.ok("run", "--pids-limit", "20", "--", "python3", "-c", bomb).strip().partition(" ")
    assert 0 < int(count) < 20 and reason == "Resource temporarily unavailable"


def test_memory_limit_ends_a_vm_that_takes_more(hvfs: Hvfs) -> None:
    grab = "import sys\nb = bytearray(int(sys.argv[1]) << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('ok')"
    assert hvfs.ok("run", "--memory", "64m", "--", "python3", "-c", grab, "16").strip() == "ok"
    over = hvfs.run("run", "--memory", "64m", "--", "python3", "-c", grab, "256")
    assert over.returncode != 0 and "ok" not in over.stdout
    assert over.returncode == 137 or "MemoryError" in over.stderr  # the OOM killer, or RLIMIT_AS


@pytest.fixture
def detached(hvfs: Hvfs) -> Iterator[str]:
    name = f"limits-{os.getpid()}-{time.monotonic_ns() % 100000}"
    yield name
    hvfs.run("rm", "-f", name)


def test_limits_are_the_vm_cgroups_as_the_host_sees_them(hvfs: Hvfs, detached: str) -> None:
    hvfs.ok("run", "-d", "--name", detached, "--memory", "96m", "--cpus", "0.5", "--pids-limit", "33", "--",
            "sleep", "60")  # fmt: skip
    (vm,) = [v for v in json.loads(hvfs.ok("ps", "--json")) if v["name"] == detached]
    cgroups = dict(line.split(":", 2)[1:] for line in Path(f"/proc/{vm['pid']}/cgroup").read_text().splitlines())
    if "" in cgroups and len(cgroups) == 1:  # cgroup v2: one hierarchy
        base = Path("/sys/fs/cgroup", cgroups[""].lstrip("/"))
        found = {
            n: (base / f).read_text().split() for n, f in (("m", "memory.max"), ("c", "cpu.max"), ("p", "pids.max"))
        }
        assert found == {"m": [str(96 << 20)], "c": ["50000", "100000"], "p": ["33"]}
    else:  # cgroup v1: each controller's own hierarchy, where the manager may write it

        def read(controller: str, name: str) -> str:
            key = next(k for k in cgroups if controller in k.split(","))
            return Path("/sys/fs/cgroup", controller, cgroups[key].lstrip("/"), name).read_text().strip()

        assert read("memory", "memory.limit_in_bytes") == str(96 << 20)
        assert read("cpu", "cpu.cfs_quota_us") == "50000" and read("cpu", "cpu.cfs_period_us") == "100000"
        assert read("pids", "pids.max") == "33"


def test_docker_mount_types_bind_and_tmpfs(hvfs: Hvfs, tmp_path: Path) -> None:
    script = (
        "echo x > /data/f; echo y > /ro/g 2>/dev/null || echo ro; echo z > /ro2/g 2>/dev/null || echo ro2; "
        "stat -c %a /t; python3 -c \"import os; s = os.statvfs('/t'); print(s.f_blocks * s.f_frsize)\""
    )
    out = hvfs.ok(
        "run",
        "--mount", f"type=bind,src={tmp_path},dst=/data",
        "--mount", f"type=bind,source={tmp_path},target=/ro,readonly",
        "--mount", f"type=bind,source={tmp_path},destination=/ro2,readonly=true",
        "--mount", "type=tmpfs,dst=/t,tmpfs-size=1048576,tmpfs-mode=700",
        "--", "sh", "-c", script,
    )  # fmt: skip
    assert out.split("\n")[:4] == ["ro", "ro2", "700", str(1 << 20)]
    assert (tmp_path / "f").read_text() == "x\n" and not (tmp_path / "g").exists()
    volume = hvfs.run("run", "--mount", "type=volume,source=v,target=/v", "--", "true")
    assert volume.returncode == 125 and "type=volume: hvfs run has no named volumes yet" in volume.stderr
