"""What ``hvfs run`` is asked to do, parsed and checked before anything starts.

Every mistake becomes one ``UsageError`` line that names the problem and the fix.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hvfs import machine

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_ARG_STRLEN = 32 * 4096  # the kernel's limit on one argument or environment string, its NUL included
# A VM's command and environment reach its pid 1 in one message (through the zygote).
MAX_COMMAND = 128 << 10
MIN_MEMORY_LIMIT = 6 << 20  # less, and a VM's pid 1 cannot even start (docker's minimum too)
MIN_PIDS = 2  # the VM's pid 1 and its command
MIN_CPUS = 0.01  # a CFS quota of 1 ms per 100 ms period, the kernel's smallest
RESERVED_TARGETS = ("/proc", "/dev")
NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
SIZE = re.compile(r"^(\d+)\s*([kmgt]?)i?b?$", re.IGNORECASE)
UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class UsageError(Exception):
    """Bad input from the user: the message names the problem and the fix."""


@dataclass(frozen=True)
class Volume:
    source: str
    target: str
    readonly: bool = False
    sockets: bool = False  # the VM may connect to host sockets on it


@dataclass(frozen=True)
class Tmpfs:
    target: str
    size: int | None = None
    mode: int = 0o1777
    readonly: bool = False


@dataclass(frozen=True)
class RunSpec:
    argv: tuple[str, ...]
    name: str
    image: str = "host"
    volumes: tuple[Volume, ...] = ()
    tmpfs: tuple[Tmpfs, ...] = ()
    workdir: str = "/"
    env: Mapping[str, str] = field(default_factory=dict)
    strict: bool = False
    persist: str | None = None
    tty: bool = False
    interactive: bool = False
    stats: str | None = None
    user: str | None = None
    stop_timeout: float = 10.0  # seconds between a forwarded SIGTERM and killing the VM
    services: Any = None  # hvfs.hypervisor.services.ServiceOptions, when any service is asked for


def parse_target(target: str, what: str) -> str:
    if not target.startswith("/"):
        raise UsageError(f"{what}: target {target!r} is relative; use an absolute path such as /data")
    if ".." in target.split("/"):
        raise UsageError(f"{what}: target {target!r} contains '..'; give the plain absolute path")
    normal = posixpath.normpath(target)
    if normal == "/":
        raise UsageError(f"{what}: cannot mount over /; use --image to choose the root")
    for reserved in RESERVED_TARGETS:
        if normal == reserved or normal.startswith(reserved + "/"):
            raise UsageError(f"{what}: {normal} is managed by hvfs; pick another target")
    return normal


def parse_volume(text: str, cwd: str | None = None) -> Volume:
    """``SRC:DST[:OPTIONS]``, as docker's ``-v``; options: ro, rw, sockets."""
    what = f"-v {text!r}"
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise UsageError(f"{what}: expected SRC:DST[:ro|rw], e.g. -v ./data:/data:ro")
    source, target = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else []
    readonly = sockets = False
    for option in options:
        if option == "ro":
            readonly = True
        elif option == "sockets":
            sockets = True
        elif option != "rw":
            raise UsageError(f"{what}: unknown option {option!r}; use ro, rw or sockets")
    source = os.path.abspath(os.path.join(cwd or os.getcwd(), source))
    if not os.path.exists(source):
        raise UsageError(f"{what}: source {source} does not exist; create it or fix the path")
    return Volume(source=source, target=parse_target(target, what), readonly=readonly, sockets=sockets)


def parse_size(text: str, what: str) -> int:
    match = SIZE.match(text.strip())
    if not match:
        raise UsageError(f"{what}: size {text!r} is not a size; use e.g. 64m, 1g or 512k")
    return int(match.group(1)) * UNITS[match.group(2).lower()]


def size_problem(size: int, *, minimum: int = 4096) -> str | None:
    """What is wrong with ``size`` bytes of memory (a memory file system, a memory
    limit) on this machine, or None."""
    if size < minimum:
        return f"size {machine.format_size(size)} is too small; give at least {machine.format_size(minimum)}"
    total = machine.memory()
    if size > total:
        return (
            f"size {machine.format_size(size)} is more than this machine's memory and swap "
            f"({machine.format_size(total)}); give at most {machine.format_size(total)}"
        )
    return None


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


def check_output_file(path: str, what: str) -> str:
    path = os.path.abspath(path)
    problem = output_file_problem(path)
    if problem:
        raise UsageError(f"{what} {path} {problem}")
    return path


def image_problem(path: str) -> str | None:
    """What keeps ``path`` from being a VM's root (a directory, or a rootfs tarball), or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "does not exist; give 'host', a root directory or a rootfs tarball"
    except OSError as e:
        return f"cannot be read: {e.strerror}; give 'host', a root directory or a rootfs tarball"
    if stat.S_ISDIR(st.st_mode):
        return None
    if not stat.S_ISREG(st.st_mode):
        return "is neither a directory nor a file; give 'host', a root directory or a rootfs tarball"
    import tarfile  # only here: `hvfs run` on the host image need not import it

    try:
        if tarfile.is_tarfile(path):
            return None
    except OSError as e:
        return f"cannot be read: {e.strerror}; give 'host', a root directory or a rootfs tarball"
    return "is neither a directory nor a tar archive; give 'host', a root directory or a rootfs tarball (.tar, .tar.gz)"


def parse_tmpfs(text: str) -> Tmpfs:
    """``DST[:size=64m,mode=1777,ro]``, as docker's ``--tmpfs``."""
    what = f"--tmpfs {text!r}"
    target, _, rest = text.partition(":")
    size, mode, readonly = None, 0o1777, False
    for option in filter(None, rest.split(",")):
        key, _, value = option.partition("=")
        if key == "size" and value:
            size = parse_size(value, what)
            problem = size_problem(size)
            if problem:
                raise UsageError(f"{what}: {problem}")
        elif key == "mode" and value:
            try:
                mode = int(value, 8)
            except ValueError:
                raise UsageError(f"{what}: mode {value!r} is not octal; use e.g. mode=1777") from None
            if not 0 <= mode <= 0o7777:
                raise UsageError(f"{what}: mode {value!r} is not a file mode; use e.g. mode=1777")
        elif option in ("ro", "rw"):
            readonly = option == "ro"
        else:
            raise UsageError(f"{what}: unknown option {option!r}; use size=, mode=, ro or rw")
    return Tmpfs(target=parse_target(target, what), size=size, mode=mode, readonly=readonly)


def parse_env(items: Sequence[str], host: Mapping[str, str], *, name: str, tty: bool) -> dict[str, str]:
    """A clean environment, as docker gives, plus ``-e K=V`` and ``-e K`` (from the host)."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": name, "HOME": "/root"}
    if tty:
        env["TERM"] = host.get("TERM", "xterm")
    for item in items:
        key, sep, value = item.partition("=")
        if not key or "\0" in item:
            raise UsageError(f"-e {item!r}: expected KEY=VALUE or KEY")
        if sep:
            env[key] = value
        elif key in host:
            env[key] = host[key]
    return env


USER = re.compile(r"^[a-zA-Z0-9_.][a-zA-Z0-9_.-]*(:[a-zA-Z0-9_.][a-zA-Z0-9_.-]*)?$")


def check_user(user: str) -> str:
    if not USER.match(user):
        raise UsageError(f"--user {user!r}: use USER, UID, USER:GROUP or UID:GID")
    return user


def check_timeout(seconds: float, what: str) -> float:
    if not 0 <= seconds <= 86400 * 365:
        raise UsageError(f"{what} {seconds}: give a number of seconds from 0 to a year")
    return seconds


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


def check_image(image: str) -> str:
    if image == "host":
        return image
    path = os.path.abspath(image)
    problem = image_problem(path)
    if problem:
        raise UsageError(f"--image {image} {problem}")
    return path


def check_persist(path: str) -> str:
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--persist {path}: not a directory; give a directory to keep the VM's changes in")
    return path
