"""``docker run --runtime=hvfs``: real containers of a real Docker engine, each an HVFS VM
of the manager, behaving as under runc (the same command is run under both and compared),
with their requests seen by the manager (hvfs docker ps, hvfs events)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.docker_runtime import Docker, Result, docker, registered, tools_image  # noqa: F401
from tests.dockerd import busybox_image, docker_engine  # noqa: F401


def same(runc: object, hvfs: object) -> None:
    assert runc == hvfs, f"runc: {runc!r}\nhvfs: {hvfs!r}"


def test_output_and_exit_codes_as_under_runc(docker: Docker) -> None:
    killed = 'sh -c "kill -9 \\$\\$"; echo $?'  # not pid 1 itself: the kernel shields pid 1 from it under runc
    for command in (["sh", "-c", "echo out; echo err >&2; exit 3"], ["false"], ["true"], ["sh", "-c", killed]):
        runc, hvfs = docker.both(docker.image, *command)
        same((runc.code, runc.out, runc.err), (hvfs.code, hvfs.out, hvfs.err))
    runc, hvfs = docker.both(docker.image, "no-such-program")
    same(runc.code, hvfs.code)  # 127; docker words the error of each runtime its own way
    assert "no-such-program" in hvfs.err and "not found" in hvfs.err


def test_environment_workdir_user_and_input_as_under_runc(docker: Docker) -> None:
    script = "echo $FOO; pwd; id; echo $HOME; echo $HOSTNAME | wc -c; cat"
    runc, hvfs = docker.both("-i", "-e", "FOO=bar", "-w", "/etc", "-u", "1000:1000", docker.image, "sh", "-c", script,
                             stdin="from stdin\n")  # fmt: skip
    same(runc, hvfs)
    assert hvfs.out.splitlines() == ["bar", "/etc", "uid=1000 gid=1000 groups=1000", "/", "13", "from stdin"]


def test_a_terminal_as_under_runc(docker: Docker) -> None:
    runc, hvfs = docker.both("-t", docker.image, "sh", "-c", "tty; echo $TERM; stty size")
    same(runc.code, hvfs.code)
    same(runc.out.splitlines()[:2], hvfs.out.splitlines()[:2])
    assert hvfs.out.splitlines()[:2] == ["/dev/pts/0", "xterm"]


def test_volumes_tmpfs_and_a_read_only_root_as_under_runc(docker: Docker, tmp_path: Path) -> None:
    for runtime in ("runc", "hvfs"):
        (tmp_path / runtime).mkdir()
        (tmp_path / runtime / "given").write_text("from the host\n")
    results = []
    for runtime in ("runc", "hvfs"):
        host = tmp_path / runtime
        script = (
            "cat /data/given; echo written > /data/new; cat /ro/given; touch /ro/x; echo $?;"
            " echo t > /scratch/t && cat /scratch/t; touch /rootfile; echo $?"
        )
        result = docker.run("--read-only", "-v", f"{host}:/data", "-v", f"{host}:/ro:ro", "--tmpfs", "/scratch",
                            docker.image, "sh", "-c", script, runtime=runtime)  # fmt: skip
        results.append((result, (host / "new").read_text()))
    same(results[0], results[1])
    assert results[1][0].out.splitlines() == ["from the host", "from the host", "1", "t", "1"]
    assert "Read-only file system" in results[1][0].err


def test_exec_logs_stop_and_kill_as_under_runc(docker: Docker) -> None:
    outcomes = {}
    for runtime in ("runc", "hvfs"):
        name = f"hvfs-test-{runtime}-{time.monotonic_ns()}"
        script = 'trap "echo bye; exit 7" TERM; echo hello; while true; do sleep 0.1; done'
        docker.ok("run", "-d", "--name", name, f"--runtime={runtime}", docker.image, "sh", "-c", script)
        try:
            exec_ = docker.call("exec", "-e", "X=1", "-w", "/etc", name, "sh", "-c", "echo $X; pwd; exit 4")
            piped = subprocess.run([*docker.command, "exec", "-i", name, "cat"], input="piped\n",
                                   capture_output=True, text=True, timeout=30)  # fmt: skip
            tty = docker.call("exec", "-t", name, "tty")
            began = time.monotonic()
            docker.ok("stop", name)
            stopped_in = time.monotonic() - began
            code = docker.ok("wait", name).strip()
            logs = docker.call("logs", name)
        finally:
            docker.call("rm", "-f", name)
        assert stopped_in < 5, f"{runtime}: docker stop took {stopped_in:.1f}s, the trap should end it at once"
        outcomes[runtime] = (exec_, piped.stdout, tty.out, code, logs.out)
    same(outcomes["runc"], outcomes["hvfs"])
    assert outcomes["hvfs"][0] == Result(4, "1\n/etc\n", "") and outcomes["hvfs"][3:] == ("7", "hello\nbye\n")
    kills = {}
    for runtime in ("runc", "hvfs"):
        name = f"hvfs-test-{runtime}-{time.monotonic_ns()}"
        codes = []
        for stop in (["stop", "-t", "1"], ["kill"], ["kill", "-s", "TERM"]):  # sleep as pid 1 ignores TERM
            docker.ok("run", "-d", "--name", name, f"--runtime={runtime}", docker.image, "sleep", "3")
            docker.ok(*stop, name)
            codes.append(docker.ok("wait", name).strip())
            docker.call("rm", "-f", name)
        kills[runtime] = codes
    same(kills["runc"], kills["hvfs"])
    assert kills["hvfs"] == ["137", "137", "0"]


def test_the_manager_serves_and_sees_the_containers(docker: Docker) -> None:
    name = f"hvfs-test-seen-{time.monotonic_ns()}"
    docker.ok("run", "-d", "--name", name, "--runtime=hvfs", docker.image, "sh", "-c",
              "echo seen > /made-by-the-container; sleep 30")  # fmt: skip
    try:
        container = docker.ok("inspect", "-f", "{{.Id}}", name).strip()[:12]
        deadline = time.monotonic() + 10
        while True:
            listed = subprocess.run([sys.executable, "-m", "hvfs", "docker", "ps", "--json"],
                                    capture_output=True, text=True, timeout=30)  # fmt: skip
            vms = {vm["name"]: vm for vm in json.loads(listed.stdout)}
            served = (vms.get(container, {}).get("requests") or {}).get("served", 0)
            if served or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert vms[container]["state"] == "running"
        assert served > 0, vms
        shown = [sys.executable, "-m", "hvfs", "events", str(docker.audit), "--vm", container]
        events = subprocess.run(
            [*shown, "--path", "/made-by-the-container"], capture_output=True, text=True, timeout=30
        )
        assert "/made-by-the-container" in events.stdout, events.stdout + events.stderr
        assert docker.ok("exec", name, "cat", "/made-by-the-container") == "seen\n"
    finally:
        docker.call("rm", "-f", name)
    deadline = time.monotonic() + 10
    while container in subprocess.run([sys.executable, "-m", "hvfs", "docker", "ps"], capture_output=True,
                                      text=True).stdout:  # fmt: skip
        assert time.monotonic() < deadline, "the container's VM outlived docker rm"
        time.sleep(0.2)


def test_what_a_vm_cannot_do_is_refused_in_one_line(docker: Docker) -> None:
    result = docker.run("--network", "host", docker.image, "true")
    assert result.code == 125
    assert "the network namespace of another process is not supported by hvfs" in result.err


def test_a_container_outlives_a_restart_of_its_manager(docker: Docker) -> None:
    name = f"hvfs-test-restart-{time.monotonic_ns()}"
    docker.ok("run", "-d", "--name", name, "--runtime=hvfs", docker.image, "sh", "-c",
              "while [ ! -e /go ]; do sleep 0.1; done; echo carried on; sleep 1; exit 5")  # fmt: skip
    # The second above keeps the exec's end apart from the container's: docs/docker.md,
    # "Known differences from runc" (containerd 1.6 loses an exec's exit that comes after).
    try:
        restart = subprocess.run([sys.executable, "-m", "hvfs", "manager", "restart"], capture_output=True, text=True)
        assert restart.returncode == 0 and "replaced by" in restart.stdout, restart.stderr
        docker.ok("exec", name, "touch", "/go")
        assert docker.ok("wait", name).strip() == "5"
        assert docker.call("logs", name).out == "carried on\n"
    finally:
        docker.call("rm", "-f", name)


def test_a_manager_started_by_a_waiter_lives_in_the_hosts_network(docker: Docker) -> None:
    """The manager killed while a container runs: its waiter (in the VM's network namespace)
    starts the next from the host's, where later VMs reach the host's loopback."""
    from hvfs.hypervisor.client import manager_pid
    from hvfs.hypervisor.layout import Layout

    name = f"hvfs-test-killed-{time.monotonic_ns()}"
    docker.ok("run", "-d", "--name", name, "--runtime=hvfs", docker.image, "sh", "-c",
              "while [ ! -e /go ]; do sleep 0.1; done; echo carried on; sleep 1; exit 5")  # fmt: skip
    try:
        killed = manager_pid(Layout())
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (pid := manager_pid(Layout())) in (None, killed) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pid not in (None, killed), "no manager came after the killed one"
        assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
        docker.ok("exec", name, "touch", "/go")
        assert docker.ok("wait", name).strip() == "5"
        assert docker.call("logs", name).out == "carried on\n"
    finally:
        docker.call("rm", "-f", name)
