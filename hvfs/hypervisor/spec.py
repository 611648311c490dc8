"""What a front end asks the manager to run, as plain data that crosses its socket and
is kept in its state directory: a group (hvfs.project.config.Project: a project of
hvfs.toml, or the one VM of ``hvfs run``), with its services resolved by the client.

Paths are absolute and defaults decided in the client, which is the user's own process
outside any namespace (the manager, inside its user namespace, looks like root).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hvfs import driver_choice as choice
from hvfs.api.choice import VARIABLE, chosen_kind
from hvfs.hypervisor.mounts import MountSpec, prepare_mounts
from hvfs.images.defaults import applied
from hvfs.manager.sources.registry import SourceSpec
from hvfs.project.config import Limits, NetworkConfig, Project, SourceConfig, VmConfig
from hvfs.project.lifecycle import HealthCheck, RestartPolicy
from hvfs.spec import RunSpec, UsageError

if TYPE_CHECKING:
    from hvfs.hypervisor.services import ServiceOptions

BOUND_KINDS = frozenset({"host", "rootfs"})  # hvfs.manager.sources.host: a recursive bind of the path


def services_table(options: ServiceOptions | None) -> dict[str, Any]:
    """Checked service options as a ``[services]`` table the manager parses again: paths
    absolute, default stores decided here, as the user."""
    table: dict[str, Any] = {}
    for enabled in options.enabled if options is not None else ():
        for key, value in enabled.values.items():
            if value is not None and value is not False and value != ():
                table[key] = list(value) if isinstance(value, tuple) else value
    return table


def prepared(project: Project) -> Project:
    """``project`` as the manager takes it: its ``[services]`` checked and resolved, and
    its mounts prepared (tarball images unpacked into the user's cache), here in the
    client: the user's own process, with the user's own cache; with the transport the
    user's HVFS_TRANSPORT names."""
    try:
        project = dataclasses.replace(project, transport=chosen_kind(), driver=choice.chosen(project.driver))
    except ValueError as e:
        raise UsageError(str(e)) from None
    if project.services:
        from hvfs.hypervisor.services import ServiceOptions, check_stores

        options = ServiceOptions.from_table(project.services, project.directory)
        if project.kind == "project":
            project = dataclasses.replace(project, services=services_table(options))
        check_stores(options)
    vms = {}
    for name, vm in project.vms.items():
        root, *mounts = prepare_mounts((MountSpec("/", vm.root), *vm.mounts))
        vm = dataclasses.replace(vm, root=root.source, mounts=tuple(mounts))
        if vm.from_image:  # what the image's configuration decides, now that it is unpacked
            unpacked = root.source.options.get("unpacked")
            config = None
            if isinstance(unpacked, str):  # the store (and tarfile) only for an unpacked image, not the host's
                from hvfs.images.store import image_config

                config = image_config(unpacked)
            vm = applied(vm, config, project)
        vms[name] = vm
    return dataclasses.replace(project, vms=vms)


def host_paths(project: Project) -> list[str]:
    """Every host path a prepared ``project`` names for the manager to open: its sources'
    and its services' (stores, audit files), and its directory."""
    found: list[str] = [project.directory]

    def collect(value: object) -> None:
        if isinstance(value, str) and value.startswith("/"):
            found.append(value)
        elif isinstance(value, list | tuple):
            for item in value:
                collect(item)

    for vm in project.vms.values():
        for source in (vm.root, *(m.source for m in vm.mounts)):
            collect(list(source.options.values()))
        collect(vm.persist)
    collect(list(project.services.values()))
    return sorted(set(found))


def bound_paths(project: Project) -> list[str]:
    """The host paths of ``project`` that its VMs get with the mounts below them: its host
    directories' and OCI root file systems' (a recursive bind; hvfs.hypervisor.views)."""
    found = {
        source.options["path"]
        for vm in project.vms.values()
        for source in (vm.root, *(m.source for m in vm.mounts))
        if source.kind in BOUND_KINDS and isinstance(source.options.get("path"), str)
    }
    return sorted(found)


def run_project(spec: RunSpec) -> Project:
    """The one VM of an ``hvfs run`` as a group of its own."""
    vm = VmConfig(
        name=spec.name,
        command=spec.argv,
        root=spec.image,
        workdir=spec.workdir,
        user=spec.user,
        environment=dict(spec.env),
        strict=spec.strict,
        network=spec.network is not None,
        mounts=spec.mounts,
        persist=spec.persist,
        tty=spec.tty,
        home_set=spec.home_set,
        from_image=spec.from_image,
        commit=spec.changes.commit if spec.changes is not None else "",
        staged=spec.staged,
        limits=Limits(spec.memory, spec.pids, spec.cpus),
        hostname=spec.hostname,
        read_only=spec.read_only,
        publish=spec.publish,
    )
    return prepared(
        Project(
            name=spec.name,
            file="",
            directory="/",
            network=NetworkConfig("shared", name=spec.network) if spec.network else NetworkConfig(),
            sources={},
            vms={spec.name: vm},
            services=services_table(spec.services),
            kind="run",
            driver=spec.driver,
        )
    )


def group_id(project: Project) -> str:
    """A project's name and the directory of its file, so that two directories whose
    projects share a name are two projects; a run's VM name."""
    if project.kind == "run":
        return f"run-{project.name}"
    import hashlib  # not for a run: OpenSSL's loading costs `hvfs run` 2 ms

    digest = hashlib.sha256(project.directory.encode()).hexdigest()[:8]
    return f"{project.name}-{digest}"


def vm_json(vm: VmConfig) -> dict[str, Any]:
    document = dataclasses.asdict(vm)
    document["root"] = vm.root.to_json()
    document["mounts"] = [m.to_json() for m in vm.mounts]
    document["depends_on"] = dict(vm.depends_on)
    return document


def config_hash(project: Project, name: str) -> str:
    """What the VM ``name`` of a prepared ``project`` is made of, as a digest: a VM whose
    digest changed between two ``hvfs up`` is made again. The project's network,
    services and transport are part of every VM's (the group holds them for all)."""
    document = {
        "vm": vm_json(project.vms[name]),
        "network": dataclasses.asdict(project.network),
        "services": dict(project.services),
        "transport": project.transport,
        "driver": project.driver,
    }
    import hashlib

    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]


def to_json(project: Project) -> dict[str, Any]:
    vms = {name: vm_json(vm) for name, vm in project.vms.items()}
    return {
        "name": project.name,
        "file": project.file,
        "directory": project.directory,
        "network": dataclasses.asdict(project.network),
        "sources": {
            n: {"name": s.name, "spec": s.spec.to_json(), "sockets": s.sockets} for n, s in project.sources.items()
        },
        "vms": vms,
        "services": dict(project.services),
        "kind": project.kind,
        "transport": project.transport,
        "driver": project.driver,
    }


def from_json(document: Mapping[str, Any]) -> Project:
    """The inverse of ``to_json``; KeyError, TypeError or SourceError for a document of
    another shape."""
    vms = {}
    for name, vm in document["vms"].items():
        fields = dict(vm)
        fields["command"] = tuple(fields["command"])
        fields["from_image"] = tuple(fields.get("from_image", ()))
        fields["staged"] = tuple(fields.get("staged", ()))
        fields["publish"] = tuple(tuple(p) for p in fields.get("publish", ()))
        fields["root"] = SourceSpec.from_json(fields["root"])
        fields["mounts"] = tuple(MountSpec.from_json(m) for m in fields["mounts"])
        fields["limits"] = Limits(**fields["limits"])
        health = fields.get("healthcheck")
        fields["healthcheck"] = HealthCheck(**{**health, "argv": tuple(health["argv"])}) if health else None
        fields["restart"] = RestartPolicy(**fields.get("restart", {}))
        fields["depends_on"] = dict(fields.get("depends_on", {}))
        vms[name] = VmConfig(**fields)
    sources = {
        name: SourceConfig(s["name"], SourceSpec.from_json(s["spec"]), bool(s["sockets"]))
        for name, s in document["sources"].items()
    }
    return Project(
        name=document["name"],
        file=document["file"],
        directory=document["directory"],
        network=NetworkConfig(**document["network"]),
        sources=sources,
        vms=vms,
        services=dict(document["services"]),
        kind=document["kind"],
        transport=chosen_kind({VARIABLE: str(document["transport"])}),
        driver=choice.check(str(document.get("driver", "")), "driver"),
    )
