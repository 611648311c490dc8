"""A container's waiter: the process docker's shim knows as the container (its pid is in
the pid file), forked by ``create`` (or ``exec``), which exits at once so that the
waiter is reparented to the shim, the subreaper that reaps it to learn the exit status.

The waiter asks the manager for the VM, handing over its stdio (pipes: a host file is
relayed, never given, see hvfs.sandbox.stdio) and, as detached mounts, the host trees
the VM is made of; sends the VM's terminal to the console socket; joins the VM's network
namespace, where docker's prestart hook then configures the network through
/proc/WAITER/ns/net; and exits with the VM's exit code once it has ended. It keeps no
fd but its stdio, its connection and the host's network namespace (a manager it starts
lives there: _reconnect): nothing of the host reaches the VM through it.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import time
import tomllib
from typing import Any

from hvfs._sys import mount as m
from hvfs._sys import namespaces
from hvfs._sys.abi import CLONE_NEWNET
from hvfs.hypervisor import client, control
from hvfs.hypervisor.spec import bound_paths, host_paths, prepared, to_json
from hvfs.oci.bundle import Bundle, BundleError, Process
from hvfs.project.config import NetworkConfig, Project
from hvfs.sandbox.stdio import Stdio
from hvfs.spec import NAME

RECONNECT = 30.0  # seconds to find the next manager after the one serving the VM went away
CONFIG = "/etc/hvfs/docker.toml"  # [services] of the group of every container of one runtime root


def group_project(root: str, config: str | None) -> Project:
    """The group of the containers of the runtime root ``root``, with the services of
    ``config`` (or of CONFIG, if it exists)."""
    services: dict[str, Any] = {}
    path = config or CONFIG
    try:
        with open(path, "rb") as f:
            services = dict(tomllib.load(f).get("services", {}))
    except FileNotFoundError:
        if config is not None:
            raise BundleError(f"--hvfs-config {config}: no such file") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise BundleError(f"{path}: {e}") from None
    project = Project(
        name="docker",
        file=path,
        directory=root,
        network=NetworkConfig(),
        sources={},
        vms={},
        services=services,
        kind="docker",
    )
    return prepared(project)


def close_others(keep: set[int]) -> None:
    """Close every fd but ``keep``: the VM must get nothing of what the shim left open."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def detach_stdio() -> None:
    """With a terminal, the runtime's stdio is the shim's, which waits until every copy of
    it is closed before it goes on: the waiter keeps none."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def send_console(path: str, master: int) -> None:
    """The VM's terminal to the console socket, as runc sends it (SCM_RIGHTS, with a name)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(path)
        sock.sendmsg([b"/dev/ptmx"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [master]))])


def vm_name(bundle: Bundle) -> str:
    """The container's VM: its short id, as ``docker ps`` shows it; with a hostname of its
    own (``--hostname``, compose's ``hostname:``) that hostname and 6 digits of the id, so
    that events, ``hvfs docker ps`` and the ``vm=`` globs of [services] (a fault for one
    container) can name it before it exists (``vm=reader-*``)."""
    short = bundle.id[:12]
    name = f"{bundle.hostname}-{bundle.id[:6]}"
    return short if bundle.hostname == short or not NAME.match(name) else name


def _vm(bundle: Bundle) -> dict[str, Any]:
    process = bundle.process
    return {
        "name": vm_name(bundle),
        "command": process.args,
        "image": "docker",
        "workdir": process.cwd,
        "user": process.user,
        "environment": process.env,
        "network": False,
        "tty": process.terminal,
        "home_set": "HOME" in process.env,
    }


def _trees(paths: list[str]) -> tuple[list[list[object]], list[int]]:
    keys, fds = [], []
    try:
        for path in paths:
            st = os.stat(path)
            fds.append(m.clone_tree(path))
            m.make_private(fds[-1])  # docker's mounts are shared: nothing done to the clone may reach them
            keys.append([f"{path}\0{st.st_dev}\0{st.st_ino}", os.path.isdir(path)])
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return keys, fds


def _wait_exit(connection: control.Connection, gid: str, name: str, host_network: int) -> int:
    """The VM's exit code; a manager that goes away (a restart) is followed by the next,
    which took the VM back from its shim (started from ``host_network``: _reconnect)."""
    while True:
        for reply, fds in control.replies(connection):
            for fd in fds:
                os.close(fd)
            if reply.get("exited") == name and "code" in reply:
                return int(reply["code"])
        connection.close()
        deadline = time.monotonic() + RECONNECT
        while True:
            try:
                connection = _reconnect(host_network)
                client.request(connection, "container_follow", gid=gid, vm=name)
                reply, _ = connection.receive()
                if "following" in reply:
                    break
                connection.close()
                return 137  # the VM was lost with its manager
            except (control.ControlError, EOFError, OSError):
                if time.monotonic() > deadline:
                    return 137
                time.sleep(0.2)


def _reconnect(host_network: int) -> control.Connection:
    """A connection to the user's manager, from the host's network namespace: the waiter
    lives in the VM's, and a manager it starts (none up, as between a restart's two) would
    live there too, for every VM after (no host loopback, the container's network)."""
    vm_network = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        namespaces.setns(host_network, CLONE_NEWNET)
        try:
            return client.connect()
        finally:
            namespaces.setns(vm_network, CLONE_NEWNET)
    finally:
        os.close(vm_network)


def container(bundle: Bundle, root: str, config: str | None, console: str | None, report: int) -> int:
    """The waiter's life; ``report`` hears "created PID" or "error LINE" once."""
    close_others({0, 1, 2, report})
    if bundle.process.terminal:
        detach_stdio()
    try:
        project = group_project(root, config)
        keys, trees = _trees([bundle.root, *bundle.trees])
        connection = client.connect(paths=host_paths(project), bound=bound_paths(project))
        stdio = Stdio()
        mounts = bundle.mounts
        message = {
            "project": to_json(project),
            "vm": _vm(bundle),
            "root": {"tree": 0, "readonly": bundle.root_readonly},
            "mounts": [{**d, "tree": d["tree"] + 1} if "tree" in d else d for d in mounts],
            "trees": keys,
            "winsize": bundle.process.winsize.hex() if bundle.process.winsize else None,
        }
        try:
            client.request(connection, "container", [*stdio.fds, *trees], **message)
        finally:
            stdio.handed_over()
            for fd in trees:
                os.close(fd)
        reply, fds = connection.receive()
        if "error" in reply:
            raise BundleError(str(reply["error"]))
        if fds and console:
            send_console(console, fds[0])
        for fd in fds:
            os.close(fd)
        host_network = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        with open(f"/proc/{int(reply['pid'])}/ns/net", "rb") as netns:
            namespaces.setns(netns.fileno(), CLONE_NEWNET)
        for key, value in bundle.sysctl.items():  # /proc/sys/net is the opener's network namespace's
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)
        os.write(report, f"created {int(reply['pid'])} {reply['gid']} {reply['created']}\n".encode())
    except (BundleError, control.ControlError, OSError, EOFError) as e:
        os.write(report, f"error {e}\n".encode())
        return 1
    finally:
        os.close(report)
    code = _wait_exit(connection, str(reply["gid"]), str(reply["created"]), host_network)
    stdio.finish()
    return code


def execute(gid: str, vm: str, process: Process, console: str | None, report: int) -> int:
    """An exec's waiter: the process of ``docker exec`` as the shim sees it."""
    close_others({0, 1, 2, report})
    if process.terminal:
        detach_stdio()
    try:
        connection = client.connect(start=False)
        stdio = None if process.terminal else Stdio()
        fields: dict[str, Any] = {
            "gid": gid,
            "vm": vm,
            "argv": process.args,
            "env": process.env,
            "workdir": process.cwd,
            "user": process.user,
            "tty": process.terminal,
            "winsize": process.winsize.hex() if process.winsize else None,
        }
        try:
            client.request(connection, "exec", list(stdio.fds) if stdio else None, **fields)
        finally:
            if stdio is not None:
                stdio.handed_over()
        reply, fds = connection.receive()
        if "error" in reply:
            raise BundleError(str(reply["error"]))
        if fds and console:
            send_console(console, fds[0])
        for fd in fds:
            os.close(fd)
        os.write(report, b"started\n")
    except (BundleError, control.ControlError, OSError, EOFError) as e:
        os.write(report, f"error {e}\n".encode())
        return 1
    finally:
        os.close(report)
    code = 137
    for reply, fds in control.replies(connection):
        for fd in fds:
            os.close(fd)
        if "exited" in reply:
            code = int(reply["exited"])
            break
    if stdio is not None:
        stdio.finish()
    return code
