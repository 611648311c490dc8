"""What a front end asks the manager to run, as plain data that crosses its socket and
is kept in its state directory: a group (hvfs.project.config.Project: a project of
hvfs.toml, or the one VM of ``hvfs run``), with its services resolved by the client.

Paths are absolute and defaults decided in the client, which is the user's own process
outside any namespace (the manager, inside its user namespace, looks like root).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hvfs.project.config import Limits, MountConfig, NetworkConfig, Project, SourceConfig, VmConfig
from hvfs.spec import RunSpec

if TYPE_CHECKING:
    from hvfs.servicing import ServiceOptions

_RESOLVED_KEYS = (
    "audit", "audit_reads", "faults", "fault_file", "fault_seed", "backup", "backup_store",
    "backup_max_file", "backup_max_store", "scan", "blocklist", "yara", "clamd", "quarantine",
)  # fmt: skip


def services_table(options: ServiceOptions | None) -> dict[str, Any]:
    """Resolved service options as a ``[services]`` table (absolute paths, defaults set)."""
    if options is None or not options.active:
        return {}
    table = {}
    for key in _RESOLVED_KEYS:
        value = getattr(options, key)
        if value not in (None, False, ()):
            table[key] = list(value) if isinstance(value, tuple) else value
    return table


def prepared(project: Project) -> Project:
    """``project`` as the manager takes it: its ``[services]`` checked and resolved, and
    its tarball images unpacked into the user's cache, here in the client (the user's own
    process, with the user's own cache)."""
    if project.services and project.kind == "project":
        from hvfs.servicing import ServiceOptions

        options = ServiceOptions.from_table(project.services, project.directory)
        project = dataclasses.replace(project, services=services_table(options))
    vms = {name: dataclasses.replace(vm, image=_unpacked(vm.image)) for name, vm in project.vms.items()}
    return dataclasses.replace(project, vms=vms)


def _unpacked(image: str) -> str:
    if image == "host" or os.path.isdir(image):
        return image
    from hvfs.manager.sources.image import unpack_tarball
    from hvfs.state import private_cache_directory

    return unpack_tarball(image, os.path.join(private_cache_directory(), "images"))


def run_project(spec: RunSpec) -> Project:
    """The one VM of an ``hvfs run`` as a group: its volumes are host sources, its --tmpfs
    private memory mounts."""
    sources = {
        f"volume{i}": SourceConfig(f"volume{i}", "host", path=v.source, sockets=v.sockets)
        for i, v in enumerate(spec.volumes)
    }
    mounts = [MountConfig(v.target, f"volume{i}", readonly=v.readonly) for i, v in enumerate(spec.volumes)]
    mounts += [MountConfig(t.target, None, size=t.size, readonly=t.readonly, mode=t.mode) for t in spec.tmpfs]
    vm = VmConfig(
        name=spec.name,
        command=spec.argv,
        image=spec.image,
        workdir=spec.workdir,
        user=spec.user,
        environment=dict(spec.env),
        strict=spec.strict,
        network=False,
        mounts=tuple(mounts),
        persist=spec.persist,
        tty=spec.tty,
        home_set=spec.home_set,
    )
    return prepared(
        Project(
            name=spec.name,
            file="",
            directory="/",
            network=NetworkConfig(),
            sources=sources,
            vms={spec.name: vm},
            services=services_table(spec.services),
            kind="run",
        )
    )


def group_id(project: Project) -> str:
    """A project's name and the directory of its file, so that two directories whose
    projects share a name are two projects; a run's VM name."""
    if project.kind == "run":
        return f"run-{project.name}"
    digest = hashlib.sha256(project.directory.encode()).hexdigest()[:8]
    return f"{project.name}-{digest}"


def to_json(project: Project) -> dict[str, Any]:
    return dataclasses.asdict(project)


def from_json(document: Mapping[str, Any]) -> Project:
    """The inverse of ``to_json``; KeyError or TypeError for a document of another shape."""
    vms = {}
    for name, vm in document["vms"].items():
        fields = dict(vm)
        fields["command"] = tuple(fields["command"])
        fields["mounts"] = tuple(MountConfig(**m) for m in fields["mounts"])
        fields["limits"] = Limits(**fields["limits"])
        vms[name] = VmConfig(**fields)
    return Project(
        name=document["name"],
        file=document["file"],
        directory=document["directory"],
        network=NetworkConfig(**document["network"]),
        sources={name: SourceConfig(**s) for name, s in document["sources"].items()},
        vms=vms,
        services=dict(document["services"]),
        kind=document["kind"],
    )
