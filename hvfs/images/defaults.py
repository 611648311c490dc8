"""An image's runtime configuration applied to a VM as ``docker run`` applies it: what the
user gave wins, the image fills in the rest.

- command: the image's Entrypoint, then the user's command or else the image's Cmd; a
  given entrypoint (``--entrypoint``, ``entrypoint =``) replaces the image's and its Cmd;
- environment: the image's Env, under the user's ``-e`` / ``[environment]`` (hvfs's own
  PATH, HOSTNAME and HOME go under both, as docker's do); HOME from the image counts as
  given, so ``--user`` does not replace it;
- working directory and user: the image's WorkingDir and User unless given.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from typing import Any

from hvfs import spec
from hvfs.project.config import ConfigError, Project, VmConfig


def _words(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def applied(vm: VmConfig, config: dict[str, Any] | None, project: Project) -> VmConfig:
    """``vm`` with what its image decides (``vm.from_image``) taken from ``config``; raises
    UsageError when no command is left, or the image's values cannot be used."""
    config = config or {}
    image = vm.root.options.get("path", vm.image)
    use = set(vm.from_image)
    argv = vm.command
    if "entrypoint" in use or "command" in use:
        command = _words(config.get("Cmd")) if "command" in use else vm.command
        argv = (*(_words(config.get("Entrypoint")) if "entrypoint" in use else ()), *command)
    if not argv:
        if project.kind == "run":
            raise spec.UsageError(
                "no command given"
                + (f" and the image {image} names none" if config else "")
                + "; usage: hvfs run [OPTIONS] [--] COMMAND [ARG...]"
            )
        raise ConfigError(
            f"{os.path.basename(project.file)}: vms.{vm.name}.command: a VM needs a command "
            f"(a list, or a string run with sh -c); the image {image} names none"
        )
    env = dict(vm.environment)
    home_set = vm.home_set
    if "environment" in use:
        image_env = dict(item.partition("=")[::2] for item in _words(config.get("Env")) if "=" in item)
        env = {**image_env, **env}
        home_set = home_set or "HOME" in image_env
    workdir = vm.workdir
    if "workdir" in use and isinstance(config.get("WorkingDir"), str) and config["WorkingDir"]:
        workdir = posixpath.normpath(posixpath.join("/", config["WorkingDir"]))
    user = vm.user
    if "user" in use and isinstance(config.get("User"), str) and config["User"]:
        user = config["User"]
        if not spec.USER.match(user):
            raise spec.UsageError(f"image {image}: its User {user!r} is not USER[:GROUP]; give --user")
    problem = spec.command_problem(argv, env)
    if problem:
        raise spec.UsageError(f"image {image}: {problem}")
    return dataclasses.replace(
        vm, command=argv, environment=env, home_set=home_set, workdir=workdir, user=user, from_image=()
    )
