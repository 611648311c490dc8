"""What ``hvfs run`` is asked to do, parsed and checked before anything starts.

Every mistake becomes one ``UsageError`` line that names the problem and the fix.
"""

from __future__ import annotations

import fcntl
import math
import os
import posixpath
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hvfs import machine
from hvfs.errors import HvfsError
from hvfs.hypervisor.mounts import MountSpec, target_problem
from hvfs.manager.sources import registry
from hvfs.manager.sources.base import OptionError
from hvfs.manager.sources.registry import SourceSpec
from hvfs.patterns import pattern

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_ARG_STRLEN = 32 * 4096  # the kernel's limit on one argument or environment string, its NUL included
# A VM's command and environment reach its pid 1 in one message (through the zygote).
MAX_COMMAND = 128 << 10
MIN_MEMORY_LIMIT = 6 << 20  # less, and a VM's pid 1 cannot even start (docker's minimum too)
MIN_PIDS = 2  # the VM's pid 1 and its command
MIN_CPUS = 0.01  # a CFS quota of 1 ms per 100 ms period, the kernel's smallest
NAME = pattern(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


class UsageError(HvfsError):
    """Bad input from the user: the message names the problem and the fix."""


HOST_IMAGE = SourceSpec("image", {"path": "host"})


@dataclass(frozen=True)
class RunSpec:
    """One ``hvfs run``, as its command line asks for it."""

    argv: tuple[str, ...]
    name: str
    image: SourceSpec = HOST_IMAGE
    mounts: tuple[MountSpec, ...] = ()  # -v, --tmpfs, --mount
    workdir: str = "/"
    env: Mapping[str, str] = field(default_factory=dict)
    strict: bool = False
    persist: str | None = None
    tty: bool = False
    interactive: bool = False
    stats: str | None = None
    user: str | None = None
    stop_timeout: float = 10.0  # seconds between a forwarded SIGTERM and killing the VM
    home_set: bool = False  # HOME was given (-e HOME=...), so --user does not replace it
    services: Any = None  # hvfs.hypervisor.services.ServiceOptions, when any service is asked for
    from_image: tuple[str, ...] = ()  # what the image's configuration decides (hvfs.images.defaults)
    changes: Any = None  # hvfs.changes_cli.ChangeOptions: --diff, --commit-on-success, --review, --export
    staged: tuple[str, ...] = ()  # the targets of mounts staged for a commit
    # docker's flags (hvfs.run_flags)
    read_only: bool = False  # the root is read-only; mounts keep their own mode
    hostname: str | None = None  # else the name
    memory: int | None = None
    cpus: float | None = None
    pids: int | None = None
    publish: tuple[tuple[str, int, int], ...] = ()  # (host address, host port, the VM's port)
    detach: bool = False  # the VM runs on in the manager, kept with its exit code until removed
    remove: bool = False  # with detach: removed as it exits (--rm)
    network: str | None = None  # a network shared with other runs' VMs (--network NAME); None: loopback only
    driver: str = ""  # --driver: seccomp, ptrace, or "" (auto: hvfs.driver_choice)


def parse_target(target: str, what: str) -> str:
    problem = target_problem(target)
    if problem:
        raise UsageError(f"{what}: {problem}")
    return posixpath.normpath(target)


def _source(kind: str | None, options: dict[str, str], what: str, cwd: str | None) -> SourceSpec:
    try:
        return registry.parse(kind, options, cwd or os.getcwd())
    except OptionError as e:
        raise UsageError(f"{what}: {e.problem}") from None


def _mount_flags(words: Sequence[str], what: str) -> tuple[bool, bool]:
    """``readonly`` and ``sockets`` from the words ro (readonly), rw and sockets."""
    readonly = sockets = False
    for word in words:
        if word in ("ro", "readonly"):
            readonly = True
        elif word == "rw":
            readonly = False
        elif word == "sockets":
            sockets = True
        else:
            raise UsageError(f"{what}: unknown option {word!r}; use ro, rw or sockets")
    return readonly, sockets


def parse_volume(text: str, cwd: str | None = None) -> MountSpec:
    """``SRC:DST[:OPTIONS]``, as docker's ``-v``: a host source; options: ro, rw, sockets."""
    what = f"-v {text!r}"
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise UsageError(f"{what}: expected SRC:DST[:ro|rw], e.g. -v ./data:/data:ro")
    readonly, sockets = _mount_flags(parts[2].split(",") if len(parts) == 3 else [], what)
    source = _source("host", {"path": parts[0]}, what, cwd)
    return MountSpec(parse_target(parts[1], what), source, readonly, sockets)


def parse_tmpfs(text: str) -> MountSpec:
    """``DST[:size=64m,mode=1777,ro]``, as docker's ``--tmpfs``: a memory source."""
    what = f"--tmpfs {text!r}"
    target, _, rest = text.partition(":")
    options, readonly = {}, False
    for option in filter(None, rest.split(",")):
        key, sep, value = option.partition("=")
        if sep:
            options[key] = value
        elif option in ("ro", "rw"):
            readonly = option == "ro"
        else:
            known = "".join(f"{o.name}=, " for o in registry.KINDS["memory"].options)
            raise UsageError(f"{what}: unknown option {option!r}; use {known}ro or rw")
    return MountSpec(parse_target(target, what), _source("memory", options, what, None), readonly)


# docker's --mount keys, as hvfs's source options: type=bind is a host source, tmpfs a memory one.
DOCKER_KEYS = {"dst": "target", "destination": "target", "src": "source"}
DOCKER_TYPES = {"bind": ("host", {"source": "path"}), "tmpfs": ("memory", {"tmpfs-size": "size", "tmpfs-mode": "mode"})}


def _docker_mount(kind: str | None, options: dict[str, str], what: str) -> tuple[str | None, bool]:
    """docker's spelling (type=bind|tmpfs, src, dst, readonly=true) as hvfs's, in place;
    the kind, and whether readonly=true|1 was given."""
    for key, canonical in DOCKER_KEYS.items():
        if key in options:
            options[canonical] = options.pop(key)
    readonly = options.pop("readonly", options.pop("ro", "false")).lower() in ("true", "1")
    if kind == "volume":
        raise UsageError(
            f"{what}: type=volume: hvfs run has no named volumes yet; use type=bind,source=DIR for a host "
            "directory, type=tmpfs for a memory one, or a project's [sources] for one VMs share"
        )
    if kind in DOCKER_TYPES:
        kind, names = DOCKER_TYPES[kind]
        for key, name in names.items():
            if key in options:
                options[name] = options.pop(key)
    return kind, readonly


def parse_mount(text: str, cwd: str | None = None) -> MountSpec:
    """``type=TYPE,target=DST[,ro][,sockets][,OPTION=VALUE...]``, as docker's ``--mount``:
    a source of any type, with the options docs/sources.md lists; or docker's own
    ``type=bind,source=DIR`` and ``type=tmpfs[,tmpfs-size=N]``, with src, dst, readonly=true."""
    what = f"--mount {text!r}"
    items = text.split(",")
    readonly, sockets = _mount_flags([item for item in items if "=" not in item], what)
    options: dict[str, str] = {}
    for key, _, value in (item.partition("=") for item in items if "=" in item):
        if key in options:
            raise UsageError(f"{what}: {key} is given twice; give it once")
        options[key] = value
    kind, given_readonly = _docker_mount(options.pop("type", None), options, what)
    readonly = readonly or given_readonly
    target = options.pop("target", None)
    if target is None:
        raise UsageError(f"{what}: no target; add target=/PATH, e.g. --mount type=memory,target=/scratch")
    source = _source(kind, options, what, cwd)
    return MountSpec(parse_target(target, what), source, readonly, sockets)


def parse_size(text: str, what: str) -> int:
    size = machine.parse_size(text)
    if size is None:
        raise UsageError(f"{what}: size {text!r} is not a size; use e.g. 64m, 1g or 512k")
    return size


size_problem = machine.size_problem


def cpus_problem(cpus: float) -> str | None:
    if not math.isfinite(cpus) or cpus < MIN_CPUS:
        return f"{cpus!r} is not a number of CPUs; give one from {MIN_CPUS} to {machine.cpus()}"
    if cpus > machine.cpus():
        return f"{cpus:g} CPUs is more than this machine gives hvfs ({machine.cpus()}); give at most {machine.cpus()}"
    return None


def pids_problem(pids: int) -> str | None:
    if pids < MIN_PIDS:
        return f"{pids} is too few processes: a VM needs its pid 1 and the command; give at least {MIN_PIDS}"
    if pids > machine.pid_max():
        return f"{pids} is more than this machine's pid_max; give at most {machine.pid_max()}"
    return None


def command_problem(argv: Sequence[str], env: Mapping[str, str]) -> str | None:
    """What keeps ``argv`` with ``env`` from reaching a VM's pid 1 and execve, or None."""
    strings = [*argv, *(f"{k}={v}" for k, v in env.items())]
    total = 0
    for string in strings:
        if "\0" in string:
            return f"{string[:40]!r}... contains a NUL byte, which no command can receive; remove it"
        size = len(string.encode(errors="surrogateescape")) + 1
        if size > MAX_ARG_STRLEN:
            return (
                f"a string of {size - 1} bytes is longer than Linux passes to a command ({MAX_ARG_STRLEN - 1}); "
                "put long scripts in a file and run that"
            )
        total += size
    if total > MAX_COMMAND:
        return (
            f"the command and its environment are {total} bytes, more than hvfs passes to a VM ({MAX_COMMAND}); "
            "put long scripts in a file and run that"
        )
    return None


def output_file_problem(path: str) -> str | None:
    """What keeps hvfs from writing a report (statistics, an audit log) to ``path``, or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            return f"cannot be created: {parent} is not a directory; create it or give another path"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"cannot be created: you may not write in {parent}; give another path"
        return None
    except OSError as e:
        return f"cannot be checked: {e.strerror}; give another path"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory; give the path of a file in it"
    if stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return None  # /dev/stdout, a pipe: written as a stream
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file; give another path"
    kind = machine.file_system_type(st)
    if kind in machine.PSEUDO_FILE_SYSTEMS:
        return f"is a kernel interface ({kind}), not a file to write a report into; give another path"
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC))
    except OSError as e:
        return f"cannot be written: {e.strerror}; give another path"
    return None


def output_fd_problem(fd: int) -> str | None:
    """What keeps hvfs from writing a report to ``fd``, which a client opened as the user
    (output_file_problem's checks, made on the file itself: its path may have changed
    since, and the manager may not open what the user named), or None."""
    try:
        st = os.fstat(fd)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError as e:
        return f"cannot be checked: {e.strerror}; give another path"
    if flags & os.O_ACCMODE == os.O_RDONLY or flags & os.O_PATH:
        return "was not opened for writing; give another path"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory; give the path of a file in it"
    if stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return None
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file; give another path"
    kind = machine.file_system_type(st)
    if kind in machine.PSEUDO_FILE_SYSTEMS:
        return f"is a kernel interface ({kind}), not a file to write a report into; give another path"
    return None


def check_output_file(path: str, what: str) -> str:
    path = os.path.abspath(path)
    problem = output_file_problem(path)
    if problem:
        raise UsageError(f"{what} {path} {problem}")
    return path


def parse_env(items: Sequence[str], host: Mapping[str, str], *, name: str, tty: bool) -> dict[str, str]:
    """``-e K=V`` and ``-e K`` (from the host): what the user gives a clean environment,
    as docker's (the manager puts PATH, HOSTNAME and HOME under it, and an image's Env)."""
    env = {}
    if tty:
        env["TERM"] = host.get("TERM", "xterm")
    for item in items:
        if not set_env_item(env, item, host):
            raise UsageError(f"-e {item!r}: expected KEY=VALUE or KEY")
    return env


def set_env_item(env: dict[str, str], item: str, host: Mapping[str, str]) -> bool:
    """Docker's ``KEY=VALUE`` (set) or ``KEY`` (the host's value, if it has one) into
    ``env``; False for an item that is neither."""
    key, sep, value = item.partition("=")
    if not key or "\0" in item:
        return False
    if sep:
        env[key] = value
    elif key in host:
        env[key] = host[key]
    return True


USER = pattern(r"^[a-zA-Z0-9_.][a-zA-Z0-9_.-]*(:[a-zA-Z0-9_.][a-zA-Z0-9_.-]*)?$")


def check_user(user: str) -> str:
    if not USER.match(user):
        raise UsageError(f"--user {user!r}: use USER, UID, USER:GROUP or UID:GID")
    return user


def check_driver(driver: str) -> str:
    from hvfs import driver_choice as choice

    try:
        return choice.check(driver, "--driver")
    except ValueError as e:
        raise UsageError(str(e)) from None


def check_timeout(seconds: float, what: str) -> float:
    if not 0 <= seconds <= 86400 * 365:
        raise UsageError(f"{what} {seconds}: give a number of seconds from 0 to a year")
    return seconds


def drawn_name() -> str:
    """The name of a VM run without one (``hvfs run``, ``hvfs.VM``)."""
    return f"hvfs-{os.urandom(4).hex()}"


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise UsageError(
            f"--name {name!r}: use 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


def check_workdir(workdir: str) -> str:
    if not workdir.startswith("/"):
        raise UsageError(f"-w {workdir!r}: the working directory must be an absolute path")
    return posixpath.normpath(workdir)


def check_entrypoint(entrypoint: str) -> tuple[str, ...]:
    if "\0" in entrypoint:
        raise UsageError("--entrypoint: contains a NUL byte; give a program")
    return (entrypoint,) if entrypoint else ()


def check_image(image: str) -> SourceSpec:
    try:
        return registry.parse("image", {"path": image}, os.getcwd(), role="root")
    except OptionError as e:
        raise UsageError(f"--image {e.problem}") from None


def check_persist(path: str) -> str:
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--persist {path}: not a directory; give a directory to keep the VM's changes in")
    return path
