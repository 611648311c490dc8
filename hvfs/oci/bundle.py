"""An OCI bundle's config.json as an HVFS VM: what the runtime asks the manager for.

config.json is written by the host's admin (dockerd, podman), so its host paths are
trusted as runc trusts them; paths inside the root file system are the image's and are
never followed here: the manager resolves them inside the VM's root. What a VM cannot do
is refused with one line (``BundleError``), which docker shows as the runtime's error.

The mounts docker adds for what every container has (/proc, /dev, /dev/pts, /dev/shm,
/dev/mqueue, /sys, /sys/fs/cgroup) are the VM's own: it has its own /proc and /dev, and
no /sys.
"""

from __future__ import annotations

import json
import os
import posixpath
import resource
import struct
from dataclasses import dataclass, field
from typing import Any

from hvfs.manager.sources.base import OptionError
from hvfs.manager.sources.registry import parse
from hvfs.spec import DEFAULT_PATH

HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
IN_CONTAINER_HOOKS = ("createContainer", "startContainer")
VM_OWN = ("/proc", "/dev", "/sys")  # the VM provides these, and what is below them
BIND_FLAGS = ("bind", "rbind")
IGNORED_MOUNT_OPTIONS = frozenset(
    ("rw", "bind", "rbind", "private", "rprivate", "slave", "rslave", "shared", "rshared", "nosuid", "nodev",
     "noexec", "relatime", "norelatime", "strictatime", "noatime", "nodiratime", "Z", "z")
)  # fmt: skip
MAX_BINDS = 60  # a message to the manager carries at most 64 fds: stdio, the root, the binds
NAMESPACES = frozenset(("pid", "network", "ipc", "uts", "mount", "cgroup"))
RLIMITS = {
    name.removeprefix("RLIMIT_"): getattr(resource, name)
    for name in dir(resource)
    if name.startswith("RLIMIT_") and isinstance(getattr(resource, name), int)
}


class BundleError(Exception):
    """What of config.json a VM cannot do, in one line."""


@dataclass
class Process:
    """``process`` of config.json (or of an exec's process.json)."""

    args: list[str]
    env: dict[str, str]
    cwd: str
    user: str
    terminal: bool
    winsize: bytes | None = None
    rlimits: dict[int, tuple[int, int]] = field(default_factory=dict)


@dataclass
class Bundle:
    """A container as the manager is asked for it, with the host trees to send it."""

    id: str
    directory: str
    process: Process
    hostname: str
    root: str  # the host path of the root file system
    root_readonly: bool
    mounts: list[dict[str, Any]]  # {"target", "readonly", and "tree": index in trees, or "source"}
    trees: list[str]  # host paths, each sent as a detached mount
    hooks: dict[str, list[dict[str, Any]]]
    cgroups_path: str | None
    annotations: dict[str, str]
    sysctl: dict[str, str] = field(default_factory=dict)  # net.* only, set in the VM's network namespace


def read_process(document: object) -> Process:
    if not isinstance(document, dict):
        raise BundleError("process: must be an object")
    args = document.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise BundleError("process.args: give the command as a non-empty list of strings")
    env: dict[str, str] = {}
    for entry in document.get("env") or []:
        key, sep, value = str(entry).partition("=")
        if sep:
            env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    cwd = document.get("cwd") or "/"
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise BundleError(f"process.cwd: {cwd!r} is not an absolute path")
    user = document.get("user") or {}
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    terminal = bool(document.get("terminal"))
    size = document.get("consoleSize")
    winsize = struct.pack("HHHH", int(size["height"]), int(size["width"]), 0, 0) if size and terminal else None
    rlimits = {}
    for limit in document.get("rlimits") or []:
        name = str(limit.get("type", "")).removeprefix("RLIMIT_")
        if name not in RLIMITS:
            raise BundleError(f"process.rlimits: {limit.get('type')!r} is not a resource limit of this system")
        rlimits[RLIMITS[name]] = (int(limit.get("soft", 0)), int(limit.get("hard", 0)))
    return Process(list(args), env, posixpath.normpath(cwd), f"{uid}:{gid}", terminal, winsize, rlimits)


def load(container: str, directory: str) -> Bundle:
    """The bundle in ``directory``; BundleError for what a VM cannot do."""
    path = os.path.join(directory, "config.json")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: cannot read it ({e})") from None
    process = read_process(config.get("process"))
    root = config.get("root") or {}
    root_path = os.path.join(directory, str(root.get("path", "rootfs")))
    if not os.path.isdir(root_path):
        raise BundleError(f"root.path: {root_path} is not a directory")
    linux = config.get("linux") or {}
    _check_linux(linux)
    hooks = config.get("hooks") or {}
    for kind in hooks:
        if kind not in HOOKS:
            raise BundleError(f"hooks.{kind}: not a kind of OCI hook")
        if kind in IN_CONTAINER_HOOKS and hooks[kind]:
            raise BundleError(f"hooks.{kind}: hooks run inside the container are not supported by hvfs")
    mounts, trees = _mounts(config.get("mounts") or [])
    if len(trees) > MAX_BINDS:
        raise BundleError(f"mounts: {len(trees)} bind mounts; hvfs takes at most {MAX_BINDS}")
    return Bundle(
        id=container,
        directory=directory,
        process=process,
        hostname=str(config.get("hostname") or container[:12]),
        root=root_path,
        root_readonly=bool(root.get("readonly")),
        mounts=mounts,
        trees=trees,
        hooks={kind: list(entries or []) for kind, entries in hooks.items()},
        cgroups_path=linux.get("cgroupsPath"),
        annotations=dict(config.get("annotations") or {}),
        sysctl={str(k): str(v) for k, v in (linux.get("sysctl") or {}).items()},
    )


def _check_linux(linux: dict[str, Any]) -> None:
    for namespace in linux.get("namespaces") or []:
        kind = namespace.get("type")
        if kind == "user":
            continue  # a VM always has its own
        if kind not in NAMESPACES:
            raise BundleError(f"linux.namespaces: {kind!r} is not supported by hvfs")
        if namespace.get("path"):
            raise BundleError(
                f"linux.namespaces: joining the {kind} namespace of another process is not supported by hvfs "
                "(--network/--pid/--ipc container: or host)"
            )
    kinds = {n.get("type") for n in linux.get("namespaces") or []}
    if "network" not in kinds:
        raise BundleError("the host's network (--network host) is not supported by hvfs; a VM has its own")
    if "pid" not in kinds:
        raise BundleError("the host's pid namespace (--pid host) is not supported by hvfs; a VM has its own")
    if linux.get("uidMappings") or linux.get("gidMappings"):
        raise BundleError("linux.uidMappings: user namespace remapping is not supported by hvfs")
    for key in linux.get("sysctl") or {}:
        if not str(key).startswith("net.") or "/" in str(key) or ".." in str(key):
            raise BundleError(f"linux.sysctl: {key}: only the network's sysctls (net.*) are supported by hvfs")


def _under(target: str, parents: tuple[str, ...]) -> bool:
    return any(target == p or target.startswith(p + "/") for p in parents)


def _mounts(entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    mounts: list[dict[str, Any]] = []
    trees: list[str] = []
    for entry in entries:
        target = posixpath.normpath(str(entry.get("destination", "")))
        kind = entry.get("type") or ""
        options = [str(o) for o in entry.get("options") or []]
        if not target.startswith("/"):
            raise BundleError(f"mounts: destination {target!r} is not an absolute path")
        if _under(target, VM_OWN):
            continue  # the VM's own /proc, /dev (with /dev/shm, /dev/pts, /dev/mqueue); no /sys
        readonly = "ro" in options
        unknown = [o for o in options if o not in IGNORED_MOUNT_OPTIONS and o != "ro" and "=" not in o]
        if kind == "bind" or any(o in BIND_FLAGS for o in options):
            source = str(entry.get("source", ""))
            if not os.path.isabs(source) or not os.path.exists(source):
                raise BundleError(f"mounts: {target}: source {source!r} does not exist")
            if unknown:
                raise BundleError(f"mounts: {target}: option {unknown[0]!r} is not supported by hvfs")
            mounts.append({"target": target, "readonly": readonly, "tree": len(trees)})
            trees.append(source)
        elif kind == "tmpfs":
            given: dict[str, object] = {}
            for option in options:
                key, _, value = option.partition("=")
                if key in ("size", "mode"):
                    given[key] = value
            if "size" in given:
                given["size"] = str(given["size"]).rstrip("bB") or "0"
            try:
                spec = parse("memory", given, "/")
            except OptionError as e:
                raise BundleError(f"mounts: {target}: {e}") from None
            mounts.append({"target": target, "readonly": readonly, "source": spec.to_json()})
        else:
            raise BundleError(f"mounts: {target}: a mount of type {kind!r} is not supported by hvfs")
    return mounts, trees
