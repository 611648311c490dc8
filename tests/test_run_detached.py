"""``hvfs run -d`` and the commands by name without an hvfs.toml (``ps``, ``logs``,
``exec``, ``stop``, ``rm``), ``hvfs ps -a`` of everything, and ``-p`` (published ports)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Hvfs
from tests.detached import names, new_name  # noqa: F401
from tests.docker_runtime import Docker, docker, registered  # noqa: F401
from tests.dockerd import busybox_image, docker_engine  # noqa: F401

SERVER = (
    "import socket, sys\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[1])))\ns.listen()\nprint('listening', flush=True)\n"
    "while True:\n c, peer = s.accept()\n c.sendall(b'echo:' + c.recv(100) + b' from ' + peer[0].encode())\n c.close()"
)


def _ps(hvfs: Hvfs, *flags: str) -> dict[str, dict[str, object]]:
    return {vm["name"]: vm for vm in json.loads(hvfs.ok("ps", "--json", *flags))}


def _wait_state(hvfs: Hvfs, name: str, state: str, timeout: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        vm = _ps(hvfs, "-a").get(name)
        if vm is not None and vm["state"] == state:
            return vm
        assert time.monotonic() < deadline, f"{name} is {vm and vm['state']}, not {state}"
        time.sleep(0.1)


def test_detached_vm_lives_on_and_is_served_by_name(hvfs: Hvfs, names: list[str]) -> None:
    name = new_name(names, "web")
    began = time.monotonic()
    out = hvfs.ok("run", "-d", "--name", name, "--", "sh", "-c", "echo started; while :; do sleep 1; done")
    assert out == f"{name}\n" and time.monotonic() - began < 20  # it returned with the VM still running
    vm = _wait_state(hvfs, name, "running")
    assert vm["kind"] == "run" and vm["project"] is None and os.path.exists(f"/proc/{vm['pid']}")
    assert name in hvfs.ok("ps")  # no hvfs.toml in / : every VM; a running one without -a
    assert hvfs.ok("exec", name, "--", "sh", "-c", "echo in $(hostname) > /tmp/x; cat /tmp/x") == f"in {name}\n"
    assert hvfs.run("exec", name, "--", "sh", "-c", "exit 9").returncode == 9
    assert hvfs.ok("logs", name) == "started\n"
    refused = hvfs.run("rm", name)  # docker's rm refuses a running container
    assert refused.returncode == 125 and f"hvfs rm -f {name}" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    assert hvfs.ok("stop", "-t", "1", name) == f"{name}\n"
    vm = _wait_state(hvfs, name, "exited")
    assert vm["code"] in (143, 137)  # the shell ends on SIGTERM (or is killed a second later)
    assert name not in _ps(hvfs) and name in _ps(hvfs, "-a")  # exited: shown by ps -a only
    assert hvfs.ok("rm", name) == f"{name}\n"
    assert name not in _ps(hvfs, "-a")
    gone = hvfs.run("logs", name)
    assert gone.returncode == 125 and "see 'hvfs ps -a'" in gone.stderr and len(gone.stderr.splitlines()) == 1


def test_a_detached_vm_exit_code_is_kept_until_rm_even_across_a_manager_restart(hvfs: Hvfs, names: list[str]) -> None:
    name = new_name(names, "job")
    hvfs.ok("run", "-d", "--name", name, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert _wait_state(hvfs, name, "exited")["code"] == 3
    assert hvfs.ok("logs", name) in ("out\nerr\n", "err\nout\n")
    hvfs.ok("manager", "restart")
    assert _ps(hvfs, "-a")[name]["code"] == 3
    hvfs.ok("rm", name)
    assert name not in _ps(hvfs, "-a")


def test_logs_follow_ends_with_the_vm(hvfs: Hvfs, names: list[str]) -> None:
    name = new_name(names, "follow")
    hvfs.ok("run", "-d", "--name", name, "--", "sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.5; done")
    result = hvfs.run("logs", "-f", name, timeout=30)
    assert result.returncode == 0 and result.stdout == "line 1\nline 2\nline 3\n"


def test_detached_with_rm_goes_as_it_exits(hvfs: Hvfs, names: list[str]) -> None:
    name = new_name(names, "gone")
    hvfs.ok("run", "-d", "--rm", "--name", name, "--", "sleep", "0.3")
    deadline = time.monotonic() + 20
    while name in _ps(hvfs, "-a"):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_rm_force_stops_a_running_vm_and_two_of_a_name_are_refused(hvfs: Hvfs, names: list[str]) -> None:
    name = new_name(names, "forced")
    hvfs.ok("run", "-d", "--name", name, "--", "sleep", "600")
    again = hvfs.run("run", "-d", "--name", name, "--", "true")
    assert again.returncode == 125 and "already running" in again.stderr
    pid = _wait_state(hvfs, name, "running")["pid"]
    assert hvfs.ok("rm", "-f", name) == f"{name}\n"
    assert not os.path.exists(f"/proc/{pid}") and name not in _ps(hvfs, "-a")


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["logs", "no-such-vm"], "no VM named 'no-such-vm'"),
        (["exec", "no-such-vm", "--", "true"], "no VM named 'no-such-vm'"),
        (["stop", "no-such-vm"], "no VM named 'no-such-vm'"),
        (["rm", "no-such-vm"], "no VM named 'no-such-vm'"),
    ],
)
def test_commands_by_name_of_no_vm_get_one_line(hvfs: Hvfs, args: list[str], mentions: str) -> None:
    hvfs.ok("ps")  # a manager runs (or none: the same line)
    result = hvfs.run(*args)
    assert result.returncode == 125 and mentions in result.stderr and len(result.stderr.splitlines()) == 1


def test_ps_all_lists_projects_runs_and_keeps_a_project_ps_in_its_directory(
    hvfs: Hvfs, names: list[str], tmp_path: Path
) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "hvfs.toml").write_text('name = "psall"\n[vms.app]\ncommand = "sleep 600"\n')
    name = new_name(names, "solo")
    hvfs.ok("run", "-d", "--name", name, "--", "sleep", "600")
    hvfs.ok("up", "-d", cwd=str(project))
    try:
        everything = json.loads(hvfs.ok("ps", "-a", "--json"))
        kinds = {(vm["name"], vm["kind"], vm["project"]) for vm in everything}
        assert {("app", "project", "psall"), (name, "run", None)} <= kinds
        assert {(vm["name"], vm["kind"]) for vm in json.loads(hvfs.ok("ps", "--json"))} >= {("app", "project")}
        table = hvfs.ok("ps", "-a")
        assert table.splitlines()[0].split()[:4] == ["NAME", "KIND", "PROJECT", "STATE"] and "psall" in table
        here = json.loads(hvfs.ok("ps", "--json", cwd=str(project)))  # compose's: the project's own list
        assert [vm["name"] for vm in here["vms"]] == ["app"]
        # From the project's directory, a detached VM is still reached by its name.
        assert hvfs.ok("exec", name, "--", "echo", "hi", cwd=str(project)) == "hi\n"
    finally:
        hvfs.run("down", "-t", "1", cwd=str(project))


def _connect(port: int, payload: bytes = b"hi") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        chunks = []
        while data := c.recv(4096):
            chunks.append(data)
        return b"".join(chunks)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listeners(port: int) -> list[str]:
    """The local addresses of the host's TCP listeners on ``port`` (from /proc/net/tcp*)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hexport = local.partition(":")
            if state == "0A" and int(hexport, 16) == port:
                found.append(address)
    return found


def _serve_detached(hvfs: Hvfs, name: str, port: int) -> None:
    """A detached VM ``name`` whose echo server listens on its port 8000, published on ``port``."""
    hvfs.ok("run", "-d", "--name", name, "-p", f"{port}:8000", "--", "python3", "-c", SERVER, "8000")
    deadline = time.monotonic() + 20
    while "listening" not in hvfs.ok("logs", name):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_publish_reaches_the_vm_port_on_the_host_loopback_only(hvfs: Hvfs, names: list[str]) -> None:
    name = new_name(names, "pub")
    port = _free_port()
    _serve_detached(hvfs, name, port)
    # The VM's server saw the connection come from its own loopback: the manager's socket
    # was made inside the VM's network, and nothing else of the host's is there.
    assert _connect(port) == b"echo:hi from 127.0.0.1"
    answers = [_connect(port, str(i).encode()) for i in range(50)]
    assert answers == [f"echo:{i} from 127.0.0.1".encode() for i in range(50)]
    assert _listeners(port) == ["0100007F"]  # 127.0.0.1, not every address of the host
    # From inside, the host's listener is out of reach: 127.0.0.1 there is the VM's own.
    inside = (
        "import socket, sys\ntry:\n socket.create_connection(('127.0.0.1', int(sys.argv[1])), 3)\n print('reached')\n"
    )
    inside += "except OSError as e:\n print(type(e).__name__)"
    assert hvfs.ok("exec", name, "--", "python3", "-c", inside, str(port)).strip() == "ConnectionRefusedError"
    others = [a for a in _host_addresses() if not a.startswith("127.")]
    for address in others:  # the host's other addresses do not reach in
        with pytest.raises(OSError), socket.create_connection((address, port), timeout=3):
            pass
    taken = hvfs.run("run", "-p", f"{port}:80", "--", "true")
    assert taken.returncode == 125 and len(taken.stderr.splitlines()) == 1
    assert f"port {port} of 127.0.0.1 is already in use; choose another host port" in taken.stderr
    hvfs.ok("rm", "-f", name)
    assert _listeners(port) == []  # the VM gone, its port is closed on the host


def test_publish_to_a_port_nothing_listens_on_closes_the_connection(hvfs: Hvfs) -> None:
    port = _free_port()
    script = f"import socket\nc = socket.create_connection(('127.0.0.1', {port}))\nprint(repr(c.recv(10)))"
    client = subprocess.Popen(
        ["sh", "-c", f'sleep 1.5; {sys.executable} -c "{script}"'], stdout=subprocess.PIPE, text=True
    )
    hvfs.ok("run", "-p", f"{port}:9", "--", "sleep", "4")  # in the foreground: ends with the VM
    out, _ = client.communicate(timeout=30)
    assert out.strip() == "b''"  # closed at once: the VM's port 9 refused it
    assert _listeners(port) == []


def test_a_vm_gone_before_its_port_is_published_leaves_the_port_free(hvfs: Hvfs, tmp_path: Path) -> None:
    """A VM that exits before the manager forwards its port (``true``) must not leave the
    host's listener open in the manager; with --diff and --commit-on-success, whose fds
    travel in the same message, each goes where it belongs."""
    port = _free_port()
    (tmp_path / "f").write_text("x\n")
    for _ in range(8):
        hvfs.ok("run", "-p", f"{port}:8000", "--", "true")
        assert _listeners(port) == []
    result = hvfs.run(
        "run", "-p", f"{port}:8000", "--diff", "--commit-on-success", "-v", f"{tmp_path}:/data",
        "--", "sh", "-c", "echo b >> /data/f",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "C /data/f" in result.stderr.splitlines()
    assert (tmp_path / "f").read_text() == "x\nb\n"
    assert _listeners(port) == []


def _host_addresses() -> list[str]:
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout
    return [a for a in out.split() if ":" not in a]


def test_ps_lists_the_docker_containers_of_hvfs_runtime(hvfs: Hvfs, docker: Docker) -> None:
    name = f"hvfs-test-ps-{time.monotonic_ns()}"
    docker.ok("run", "-d", "--name", name, "--runtime=hvfs", docker.image, "sleep", "60")
    try:
        container = docker.ok("inspect", "-f", "{{.Id}}", name).strip()[:12]
        vm = _ps(hvfs)[container]
        assert vm["kind"] == "docker" and vm["state"] == "running" and vm["project"] is None
        assert container in hvfs.ok("ps")
    finally:
        docker.call("rm", "-f", name)


def test_publish_and_detach_rootless(rootless: Hvfs) -> None:
    name = f"rootless-pub-{os.getpid()}"
    port = _free_port()
    rootless.ok("run", "-d", "--name", name, "-p", f"{port}:8000", "--", "python3", "-c", SERVER, "8000")
    try:
        deadline = time.monotonic() + 20
        while "listening" not in rootless.ok("logs", name):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert _connect(port) == b"echo:hi from 127.0.0.1"
        assert _listeners(port) == ["0100007F"]
        low = rootless.run("run", "-p", "80:80", "--", "true")  # not the user's to bind
        assert low.returncode == 125 and "you may not bind port 80" in low.stderr
    finally:
        rootless.run("rm", "-f", name)
    assert _listeners(port) == []


def test_published_ports_are_taken_back_by_the_next_manager(hvfs: Hvfs, names: list[str]) -> None:
    name = new_name(names, "kept")
    port = _free_port()
    _serve_detached(hvfs, name, port)
    assert _connect(port) == b"echo:hi from 127.0.0.1"
    hvfs.ok("manager", "restart")
    assert _connect(port, b"again") == b"echo:again from 127.0.0.1"  # the shim kept the listener
    hvfs.ok("rm", "-f", name)
    assert _listeners(port) == []


def test_execs_are_heard_from_the_first_on_and_end_with_their_vm(hvfs: Hvfs, names: list[str]) -> None:
    """Pid 1's channel is listened to from a VM's first exec on (execs.listen_once): eight
    execs started at once each hear their own exit code, a manager that took the VM back
    hears its execs too, and an exec still running as the VM is stopped hears its end."""
    name = new_name(names, "execs")
    hvfs.ok("run", "-d", "--name", name, "--", "sleep", "600")
    _wait_state(hvfs, name, "running")
    exec_ = [*hvfs.command, "exec", name, "--", "sh", "-c"]
    pipe = subprocess.PIPE
    together = [subprocess.Popen([*exec_, f"echo {n}; exit {n}"], stdout=pipe, stderr=pipe, text=True, cwd="/")
                for n in range(1, 9)]  # fmt: skip
    heard = [(process.communicate(timeout=60), process.returncode) for process in together]
    assert [(out, code) for (out, _), code in heard] == [(f"{n}\n", n) for n in range(1, 9)], heard
    hvfs.ok("manager", "restart")
    assert hvfs.run("exec", name, "--", "sh", "-c", "exit 5").returncode == 5
    with subprocess.Popen([*hvfs.command, "exec", name, "--", "sh", "-c", "echo in; exec sleep 600"], cwd="/",
                          stdout=subprocess.PIPE, text=True) as waiting:  # fmt: skip
        assert waiting.stdout is not None and waiting.stdout.readline() == "in\n"
        hvfs.ok("stop", "-t", "0", name)
        assert waiting.wait(timeout=30) in (137, 143)  # killed with its VM, or ended by its SIGTERM
    assert _wait_state(hvfs, name, "exited")["code"] in (137, 143)
