"""hvfs.toml: sources, VMs, network; checked whole before anything starts.

An error names the file, the key and what is wrong, e.g.
``hvfs.toml: vms.web.mounts[1].source: no source named "shard"; known: shared, scratch``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from hvfs import driver_choice as choice
from hvfs import spec
from hvfs.hypervisor.mounts import MountSpec, target_problem
from hvfs.manager.sources import registry
from hvfs.manager.sources.base import OptionError
from hvfs.manager.sources.registry import SourceSpec
from hvfs.patterns import pattern
from hvfs.project import lifecycle
from hvfs.project.lifecycle import HealthCheck, RestartPolicy

NAME = pattern(r"^[a-z0-9][a-z0-9_-]{0,30}$")
DEFAULT_SUBNET = "10.89.0.0/24"
SOURCE_KEYS = ("type", "sockets")  # and the options of the source's type
MOUNT_KEYS = ("target", "source", "tmpfs", "readonly")  # and, with tmpfs, a memory source's options
PRIVATE = "memory"  # the type of a mount's own source, tmpfs = true
VM_KEYS = ("command", "entrypoint", "image", "workdir", "user", "environment", "strict", "network", "mounts",
           "limits", "healthcheck", "depends_on", "restart")  # fmt: skip


class ConfigError(spec.UsageError):
    """A mistake in the project file: the message names the key and what is wrong."""


@dataclass(frozen=True)
class SourceConfig:
    """A named source of a project, shared by the VMs that mount it."""

    name: str
    spec: SourceSpec  # named "PROJECT/NAME": one source for every VM that mounts it
    sockets: bool = False


@dataclass(frozen=True)
class Limits:
    """A VM's resource limits: memory, pids and CPUs."""

    memory: int | None = None
    pids: int | None = None
    cpus: float | None = None


@dataclass(frozen=True)
class VmConfig:
    """One VM of a project, as its configuration describes it."""

    name: str
    command: tuple[str, ...]
    image: str = "host"  # as written
    root: SourceSpec = spec.HOST_IMAGE
    workdir: str = "/"
    user: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    strict: bool = False
    network: bool = True
    mounts: tuple[MountSpec, ...] = ()  # besides the root
    limits: Limits = Limits()
    persist: str | None = None  # keep the root's changes in this directory (hvfs run --persist)
    tty: bool = False  # a terminal of its own (hvfs run -t)
    home_set: bool = False  # HOME was given, so --user does not replace it
    healthcheck: HealthCheck | None = None
    depends_on: Mapping[str, str] = field(default_factory=dict)  # VM name -> condition (lifecycle.CONDITIONS)
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    # What the image's configuration decides, not given here (docker run's rules; see
    # hvfs.images.defaults): any of "entrypoint", "command", "workdir", "user", "environment".
    from_image: tuple[str, ...] = ()
    # hvfs run --commit-on-success / --review (hvfs.hypervisor.staging): "success" or
    # "review", and the targets of the mounts staged (overlays of their host directories).
    commit: str = ""
    staged: tuple[str, ...] = ()
    # hvfs run's docker flags (hvfs.run_flags): a hostname other than the name, a
    # read-only root, and TCP ports published on the host (address, host port, VM port).
    hostname: str | None = None
    read_only: bool = False
    publish: tuple[tuple[str, int, int], ...] = ()


@dataclass(frozen=True)
class NetworkConfig:
    """A project's network: its mode, subnet and name."""

    mode: str = "none"  # "none": loopback only; "bridge": a private network between the VMs
    subnet: str = DEFAULT_SUBNET
    name: str = ""  # mode "shared": hvfs run --network NAME, shared with other runs (hypervisor.networks)


@dataclass(frozen=True)
class Project:
    """A group of VMs for the manager to run: a project of hvfs.toml, or (``kind`` "run")
    the one VM of an ``hvfs run``, described the same way."""

    name: str
    file: str
    directory: str
    network: NetworkConfig
    sources: Mapping[str, SourceConfig]
    vms: Mapping[str, VmConfig]
    services: Mapping[str, Any]
    kind: str = "project"
    transport: str = "inprocess"  # what carries its VMs' requests (hvfs.api.choice), as the client chose
    driver: str = ""  # what traps its VMs' calls (hvfs.driver_choice): "" or "auto" until the client chose


class _Table:
    """A TOML table being read, which knows its own key path for error messages. Unknown
    keys are reported first: a misspelt key is likelier than a missing one."""

    def __init__(self, file: str, where: str, data: Any, known: tuple[str, ...] | None = None) -> None:
        self.file, self.where, self.data = file, where, data
        if not isinstance(data, dict):
            self.fail("must be a table")
        if known is not None:
            unknown = sorted(set(data) - set(known))
            if unknown:
                self.fail(f"unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")

    def fail(self, problem: str, key: str | None = None) -> NoReturn:
        where = ".".join(p for p in (self.where, key) if p) or "(top level)"
        raise ConfigError(f"{os.path.basename(self.file)}: {where}: {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        value = self.data.get(key, default)
        # bool is an int to Python, not to a config file: `pids = true` is a mistake.
        mistyped = not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind))
        if value is not None and mistyped:
            names = " or ".join(k.__name__ for k in _kinds(kind))
            self.fail(f"must be {names}, not {type(value).__name__}", key)
        return value

    def child(self, key: str, known: tuple[str, ...] | None = None) -> _Table:
        return _Table(self.file, ".".join(p for p in (self.where, key) if p), self.data.get(key, {}), known)


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _size(table: _Table, key: str, *, minimum: int = 4096) -> int | None:
    """A size of memory, which this machine must have."""
    value = table.get(key, (str, int))
    if value is None:
        return None
    try:
        size = value if isinstance(value, int) else spec.parse_size(value, key)
    except spec.UsageError:
        table.fail(f"{value!r} is not a size; use e.g. 64m or 1g", key)
    problem = spec.size_problem(size, minimum=minimum)
    if problem:
        table.fail(problem, key)
    return size


def _parse_source(
    table: _Table, kind: str | None, given: dict[str, Any], directory: str, at: str | None = None, **how: Any
) -> SourceSpec:
    """What ``registry.parse`` makes of ``given``; an error is put at its option's key
    of ``table``, or at the key ``at``."""
    try:
        return registry.parse(kind, given, directory, **how)
    except OptionError as e:
        table.fail(e.problem, at or e.option)


def _source(table: _Table, name: str, directory: str, project: str) -> SourceConfig:
    kind = table.get("type", str)
    given = {k: v for k, v in table.data.items() if k not in SOURCE_KEYS}
    source = _parse_source(table, kind, given, directory, name=f"{project}/{name}")
    return SourceConfig(name, source, bool(table.get("sockets", bool, False)))


def _mount(table: _Table, sources: Mapping[str, SourceConfig], directory: str) -> MountSpec:
    target = table.get("target", str)
    if target is None:
        table.fail("a mount needs a target", "target")
    problem = target_problem(target)
    if problem:
        table.fail(problem, "target")
    name = table.get("source", str)
    private = table.get("tmpfs", bool, False)
    readonly = bool(table.get("readonly", bool, False))
    given = {k: v for k, v in table.data.items() if k not in MOUNT_KEYS}
    if name is None:
        if not private:
            table.fail("give a source, or tmpfs = true for a private memory file system")
        return MountSpec(os.path.normpath(target), _parse_source(table, PRIVATE, given, directory), readonly)
    if name not in sources:
        known = ", ".join(sources) or "none defined"
        table.fail(f'no source named "{name}"; known: {known}', "source")
    if given:
        key = next(iter(given))
        table.fail(f"the {key} of a mount of a source is the source's: set it in [sources.{name}]", key)
    source = sources[name]
    return MountSpec(os.path.normpath(target), source.spec, readonly, source.sockets)


def _lifecycle(table: _Table, names: Mapping[str, object]) -> dict[str, Any]:
    """The VM's ``healthcheck``, ``depends_on`` and ``restart`` (hvfs.project.lifecycle)."""
    data = table.data
    try:
        health = lifecycle.healthcheck(table.child("healthcheck").data) if "healthcheck" in data else None
        needs = (
            lifecycle.depends_on(data["depends_on"], table.where.split(".")[-1], names) if "depends_on" in data else {}
        )
        policy = lifecycle.restart(data["restart"]) if "restart" in data else RestartPolicy()
    except lifecycle.Problem as e:
        where = e.key if e.key.startswith(("depends_on", "restart")) else f"healthcheck.{e.key}"
        table.fail(e.text, where)
    return {"healthcheck": health, "depends_on": needs, "restart": policy}


def _vm(
    table: _Table, name: str, sources: Mapping[str, SourceConfig], directory: str, names: Mapping[str, object]
) -> VmConfig:
    if not NAME.match(name):
        table.fail("a VM name is 1 to 31 lowercase letters, digits, '-' or '_'")
    command = table.get("command", (list, str))
    image = table.get("image", str, "host")
    root = _parse_source(table, "image", {"path": image}, directory, at="image", role="root")
    from hvfs.images.formats import without_config  # the image formats only for a project file

    configured = not without_config(str(root.options.get("path", "host")))  # an image that may name a command
    if not command and not configured:
        table.fail("a VM needs a command (a list, or a string run with sh -c)", "command")
    argv = ("sh", "-c", command) if isinstance(command, str) else tuple(str(a) for a in command or ())
    entrypoint = table.get("entrypoint", (list, str))
    if entrypoint is not None:  # replaces the image's, as docker's --entrypoint; [] or "" clears it
        import shlex  # a project file's alone, not every cold run's (its import compiles a pattern)

        argv = (*(shlex.split(entrypoint) if isinstance(entrypoint, str) else map(str, entrypoint)), *argv)
    workdir = table.get("workdir", str, "/")
    if not workdir.startswith("/"):
        table.fail("must be an absolute path", "workdir")
    environment = table.child("environment")
    env = {k: str(environment.get(k, (str, int, float))) for k in environment.data}
    problem = spec.command_problem(argv, env)
    if problem:
        table.fail(problem, "command")
    mounts_data = table.get("mounts", list, [])
    keys = MOUNT_KEYS + tuple(o.name for o in registry.KINDS[PRIVATE].options)
    mounts = tuple(
        _mount(_Table(table.file, f"{table.where}.mounts[{i}]", m, keys), sources, directory)
        for i, m in enumerate(mounts_data)
    )
    targets = [m.target for m in mounts]
    duplicate = next((t for t in targets if targets.count(t) > 1), None)
    if duplicate:
        table.fail(f"two mounts at {duplicate}", "mounts")
    limits_table = table.child("limits", ("memory", "pids", "cpus"))
    pids = limits_table.get("pids", int)
    problem = spec.pids_problem(pids) if pids is not None else None
    if problem:
        limits_table.fail(problem, "pids")
    cpus = limits_table.get("cpus", (int, float))
    problem = spec.cpus_problem(float(cpus)) if cpus is not None else None
    if problem:
        limits_table.fail(problem, "cpus")
    memory = _size(limits_table, "memory", minimum=spec.MIN_MEMORY_LIMIT)
    limits = Limits(memory, pids, float(cpus) if cpus is not None else None)
    user = table.get("user", (str, int))
    vm = VmConfig(
        name=name,
        command=argv,
        image=image,
        root=root,
        workdir=workdir,
        user=str(user) if user is not None else None,
        environment=env,
        strict=bool(table.get("strict", bool, False)),
        network=bool(table.get("network", bool, True)),
        mounts=mounts,
        limits=limits,
        home_set="HOME" in env,
        **_lifecycle(table, names),
        from_image=tuple(
            what
            for what, given in (
                ("entrypoint", entrypoint is not None),
                ("command", bool(command) or entrypoint is not None),
                ("workdir", "workdir" in table.data),
                ("user", user is not None),
                ("environment", False),
            )
            if configured and not given
        ),
    )
    return vm


def load(file: str) -> Project:
    """Read and check ``file``; raise ConfigError naming the first mistake."""
    import ipaddress  # only here: a project file's, not `hvfs run`'s
    import tomllib

    file = os.path.abspath(file)
    try:
        with open(file, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file; write an hvfs.toml or give -f FILE") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{os.path.basename(file)}: not valid TOML: {e}") from None
    directory = os.path.dirname(file)
    top = _Table(file, "", data, ("name", "network", "sources", "vms", "services", "driver"))
    name = top.get("name", str) or os.path.basename(directory).lower()
    if not NAME.match(name):
        top.fail(f"project name {name!r}: use lowercase letters, digits, '-' or '_'", "name")
    network_table = top.child("network", ("mode", "subnet"))
    mode = network_table.get("mode", str, "none")
    if mode not in ("none", "bridge"):
        network_table.fail(f"must be 'none' or 'bridge', not {mode!r}", "mode")
    subnet = network_table.get("subnet", str, DEFAULT_SUBNET)
    try:
        net = ipaddress.IPv4Network(subnet)
    except ValueError:
        network_table.fail(f"{subnet!r} is not an IPv4 subnet such as {DEFAULT_SUBNET}", "subnet")
    sources_table = top.child("sources")
    sources = {n: _source(sources_table.child(n), n, directory, name) for n in list(sources_table.data)}
    vms_table = top.child("vms")
    if not vms_table.data:
        top.fail("no VMs: add a [vms.NAME] table with a command", "vms")
    vms = {n: _vm(vms_table.child(n, VM_KEYS), n, sources, directory, vms_table.data) for n in list(vms_table.data)}
    try:
        lifecycle.check_graph({n: vm.depends_on for n, vm in vms.items()}, {n: vm.healthcheck for n, vm in vms.items()})
    except lifecycle.Problem as e:
        vms_table.fail(e.text, e.key)
    if mode == "bridge" and net.num_addresses - 3 < len(vms):
        network_table.fail(f"{subnet} is too small for {len(vms)} VMs", "subnet")
    services = top.get("services", dict, {})
    try:
        driver = choice.check(top.get("driver", str, ""), "driver =")
    except ValueError as e:
        top.fail(str(e), "driver")
    return Project(name, file, directory, NetworkConfig(mode, subnet), sources, vms, services, driver=driver)
