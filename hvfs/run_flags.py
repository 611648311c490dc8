"""The flags of ``hvfs run`` that docker and podman users type, with docker's meaning
where HVFS can give it (docs/cli.md lists what each does here): their parser block and
what they add to a RunSpec. Each mistake is one UsageError line that names the fix."""

from __future__ import annotations

import argparse
import errno
import os
import socket
from collections.abc import Mapping
from typing import Any, TypeVar

from hvfs import spec
from hvfs.patterns import pattern
from hvfs.spec import UsageError

MAX_PUBLISHED = 16  # listeners travel with the run request and are left with the VM's shim, both bounded
PUBLISH = pattern(r"^(?:(?P<ip>\[[0-9a-fA-F:.]+\]|[0-9.]+):)?(?P<host>\d{1,5}):(?P<port>\d{1,5})(?:/(?P<proto>\w+))?$")
NETWORKS = ("none",)


def add_flags(run: argparse.ArgumentParser) -> None:
    """docker run's flags, in a group of their own."""
    group = run.add_argument_group("docker/podman flags (docs/cli.md)")
    group.add_argument("-d", "--detach", action="store_true", help="run in the background; print the VM's name")
    group.add_argument(
        "--rm", action="store_true", help="accepted: a VM is removed as it exits (with -d: not kept for ps -a)"
    )
    group.add_argument("--init", action="store_true", help="accepted: pid 1 is always hvfs-init, which reaps")
    group.add_argument("--read-only", action="store_true", help="the root is read-only (mounts keep their mode)")
    group.add_argument("--env-file", action="append", default=[], metavar="FILE", help="read KEY=VALUE lines")
    group.add_argument("--hostname", help="the VM's hostname (default: its name)")
    group.add_argument("--memory", "-m", metavar="SIZE", help="memory limit, e.g. 512m")
    group.add_argument("--cpus", type=str, metavar="N", help="CPU limit, e.g. 0.5")
    group.add_argument("--pids-limit", type=str, metavar="N", help="at most N processes")
    group.add_argument(
        "--network", "--net", metavar="none|NAME",
        help="'none' (the default): loopback only; NAME: a network shared with other VMs of that network, by name",
    )  # fmt: skip
    group.add_argument(
        "-p", "--publish", action="append", default=[], metavar="[HOSTIP:]HOSTPORT:PORT[/tcp]",
        help="publish the VM's TCP PORT on the host (on 127.0.0.1 unless HOSTIP is given)",
    )  # fmt: skip


def fields(args: argparse.Namespace, env: dict[str, str], host_env: Mapping[str, str]) -> dict[str, Any]:
    """What the docker flags add to the RunSpec; ``env`` (from -e) gains --env-file's
    variables under it, as docker's -e wins over --env-file."""
    from_files: dict[str, str] = {}
    for path in args.env_file:
        from_files.update(read_env_file(path, host_env))
    for key, value in from_files.items():
        env.setdefault(key, value)
    network = None
    if args.network is not None and args.network not in NETWORKS:
        problem = network_problem(args.network)
        if problem:
            raise UsageError(problem)
        network = args.network
    return {
        "read_only": args.read_only,
        "hostname": check_hostname(args.hostname) if args.hostname is not None else None,
        "memory": memory(args.memory) if args.memory is not None else None,
        "cpus": cpus(args.cpus) if args.cpus is not None else None,
        "pids": pids(args.pids_limit) if args.pids_limit is not None else None,
        "publish": tuple(parse_publish(p) for p in args.publish),
        "detach": args.detach,
        "remove": args.rm,
        "network": network,
    }


def network_problem(name: str) -> str | None:
    """Why ``--network name`` cannot be had, or None for a network of that name."""
    if name == "host":
        return (
            "--network host: a VM always has a network of its own (what reaches the host goes through the "
            "manager); publish ports with -p HOSTPORT:PORT instead"
        )
    if name in ("bridge", "default"):
        return "--network bridge: not yet for hvfs run; use --network none, or a project (hvfs.toml) with a network"
    if not spec.NAME.match(name):
        return (
            f"--network {name!r}: a network's name is 1 to 63 letters, digits, '_', '.' or '-'; e.g. --network backend"
        )
    return None


def read_env_file(path: str, host: Mapping[str, str]) -> dict[str, str]:
    """docker's --env-file: KEY=VALUE lines (the value taken as written, quotes and all),
    KEY alone takes the host's value (or nothing), '#' starts a comment line."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"--env-file {path}: cannot read it: {e.strerror}; give a file of KEY=VALUE lines") from None
    env: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.lstrip()
        if not text or text.startswith("#"):
            continue
        if any(c.isspace() for c in text.partition("=")[0]) or not spec.set_env_item(env, text, host):
            raise UsageError(f"--env-file {path}:{number}: {line[:40]!r} is not KEY=VALUE or KEY; fix that line")
    return env


HOSTNAME = pattern(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")


def check_hostname(name: str) -> str:
    if len(name) > 64 or not HOSTNAME.match(name):  # the kernel's HOST_NAME_MAX, and RFC 1123's labels
        raise UsageError(f"--hostname {name!r}: use up to 64 letters, digits, '-' and '.', e.g. --hostname web-1")
    return name


def memory(text: str) -> int:
    size = spec.parse_size(text, f"--memory {text}")
    problem = spec.size_problem(size, minimum=spec.MIN_MEMORY_LIMIT)
    if problem:
        raise UsageError(f"--memory {text}: {problem}")
    return size


def cpus(text: str) -> float:
    value = _number(float, text, "--cpus", "a number", "0.5")
    problem = spec.cpus_problem(value)
    if problem:
        raise UsageError(f"--cpus {problem}")
    return value


def pids(text: str) -> int:
    value = _number(int, text, "--pids-limit", "a whole number", "100")
    problem = spec.pids_problem(value)
    if problem:
        raise UsageError(f"--pids-limit {problem}")
    return value


_N = TypeVar("_N", int, float)


def _number(kind: type[_N], text: str, flag: str, what: str, example: str) -> _N:
    try:
        return kind(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: not {what}; give e.g. {flag} {example}") from None


def parse_publish(text: str) -> tuple[str, int, int]:
    """``[HOSTIP:]HOSTPORT:PORT[/tcp]`` as (host address, host port, the VM's port); the
    host address is 127.0.0.1 unless given: nothing but this host reaches in by default."""
    what = f"-p {text!r}"
    match = PUBLISH.match(text)
    if match is None:
        raise UsageError(f"{what}: expected [HOSTIP:]HOSTPORT:PORT[/tcp], e.g. -p 8080:80")
    if match["proto"] not in (None, "tcp"):
        raise UsageError(f"{what}: only TCP ports can be published; drop /{match['proto']}")
    host, port = int(match["host"]), int(match["port"])
    for value in (host, port):
        if not 1 <= value <= 65535:
            raise UsageError(f"{what}: {value} is not a port; give one from 1 to 65535")
    address = (match["ip"] or "127.0.0.1").strip("[]")
    import ipaddress  # 5 ms that an hvfs run without -p does not pay

    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise UsageError(f"{what}: {address!r} is not an IP address; give e.g. 127.0.0.1") from None
    return address, host, port


def listeners(published: tuple[tuple[str, int, int], ...]) -> list[socket.socket]:
    """A listening socket on the host for each ``-p``, made here, as the user, in the
    host's network: a port that is taken, or one the user may not bind, is refused now."""
    if len(published) > MAX_PUBLISHED:
        raise UsageError(f"-p: {len(published)} ports; hvfs publishes at most {MAX_PUBLISHED} per VM")
    made: list[socket.socket] = []
    try:
        for address, host, port in published:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            made.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as docker: TIME_WAIT does not hold it
            try:
                sock.bind((address, host))
                sock.listen(128)
            except OSError as e:
                raise UsageError(f"-p {address}:{host}:{port}: {_bind_problem(e, address, host)}") from None
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


def _bind_problem(e: OSError, address: str, port: int) -> str:
    if e.errno == errno.EADDRINUSE:
        return f"port {port} of {address} is already in use; choose another host port"
    if e.errno == errno.EACCES:
        return f"you may not bind port {port} (ports below 1024 are root's); choose a host port from 1024"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"{address} is not an address of this host; give one of its addresses, or none for 127.0.0.1"
    return f"cannot listen on {address}:{port}: {os.strerror(e.errno or 0)}; choose another"
