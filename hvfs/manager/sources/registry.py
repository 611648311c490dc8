"""Every kind of source, in one table; and sources as plain data.

A source is described by a ``SourceSpec``: its kind, its options in normal form (see
``schema``) and, for a source shared by several VMs, a name. It is plain JSON, so a
manager can receive it over a socket and keep it in its state directory. The steps:

- ``parse``: what a user wrote (``hvfs run`` flags, a ``[sources.NAME]`` table of
  hvfs.toml) becomes a description, checked and normalised, with the same messages
  for both (``OptionError`` says which option; the front end says where it was written);
- ``prepare``: the work a kind must do as the user, before the manager's namespaces
  exist (an image tarball is unpacked into the user's cache);
- ``make``: a description becomes a ``Source`` (checked again: it may come from afar).

This module is the one place that knows every kind: adding one is a module in this
package that ends with its ``SourceKind``, and a line in ``_WHERE``. Then
``python -m hvfs.manager.sources.registry > docs/sources.md``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from hvfs.manager.sources.base import OptionError, Source, SourceError
from hvfs.manager.sources.schema import Role, SourceKind

# kind name: (module of this package, its SourceKind), in the order the docs list them
_WHERE: dict[str, tuple[str, str]] = {
    "host": ("host", "KIND"),
    "rootfs": ("host", "ROOTFS_KIND"),
    "memory": ("memory", "KIND"),
    "overlay": ("overlay", "KIND"),
    "image": ("image", "KIND"),
    "devices": ("devices", "DEVICES_KIND"),
    "placeholder": ("devices", "PLACEHOLDER_KIND"),
    "synth": ("synth", "KIND"),
    "juicefs": ("juicefs", "KIND"),
}


class _Kinds(Mapping[str, SourceKind]):
    """Every kind by name, each module imported when its kind is first asked for: a VM of
    the host image and no mounts (``hvfs run -- true``) does not pay for the image
    store, tarfile and the other kinds."""

    def __init__(self) -> None:
        self._loaded: dict[str, SourceKind] = {}

    def __getitem__(self, name: str) -> SourceKind:
        kind = self._loaded.get(name)
        if kind is None:
            module, attribute = _WHERE[name]
            kind = getattr(importlib.import_module(f"hvfs.manager.sources.{module}"), attribute)
            assert isinstance(kind, SourceKind) and kind.name == name, (name, kind)
            self._loaded[name] = kind
        return kind

    def __iter__(self) -> Iterator[str]:
        return iter(_WHERE)

    def __len__(self) -> int:
        return len(_WHERE)


KINDS: Mapping[str, SourceKind] = _Kinds()


@dataclass(frozen=True)
class SourceSpec:
    """A source as plain data. ``options`` are in normal form, paths absolute. A source
    with a ``name`` is one source for every mount that names it in one pool
    (``hvfs.hypervisor.pool``): a front end that serves several projects qualifies it
    (``project/name``). Without a name, a source is its mount's own."""

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "options": dict(self.options)}
        if self.name is not None:
            data["name"] = self.name
        return data

    @classmethod
    def from_json(cls, data: object) -> SourceSpec:
        """The description ``to_json`` made; its options are checked by ``make``."""
        if not isinstance(data, dict) or set(data) - {"kind", "options", "name"}:
            raise SourceError(f"{data!r} is not a source description; give kind, options and perhaps name")
        kind, options, name = data.get("kind"), data.get("options", {}), data.get("name")
        if not isinstance(kind, str) or not isinstance(options, dict) or not isinstance(name, str | None):
            raise SourceError(f"{data!r} is not a source description; kind and name are strings, options a table")
        return cls(kind, options, name)


def kinds(role: Role) -> list[SourceKind]:
    return [kind for kind in KINDS.values() if kind.role == role]


def _kind(name: str | None, role: Role) -> SourceKind:
    def public() -> str:  # only for a message: it imports every kind
        return ", ".join(k.name for k in kinds(role))

    kind = KINDS.get(name) if name is not None else None
    if kind is None or (kind.role == "system" and role != "system"):
        problem = f"no source type {name!r}" if name is not None else "a source needs a type"
        raise OptionError("type", f"{problem}; types: {public()}")
    if kind.role == "root" and role != "root":
        raise OptionError("type", f"{kind.a_source} is a VM's root, not a mount: give it as the VM's image")
    if kind.role != "root" and role == "root":
        raise OptionError("type", f"{kind.a_source} cannot be a VM's root; give an image: {public()}")
    return kind


def parse(
    kind: str | None, given: Mapping[str, object], base: str, *, role: Role = "mount", name: str | None = None
) -> SourceSpec:
    """A description of the source of type ``kind`` with the options a user wrote;
    relative paths are from ``base``. Raises OptionError."""
    found = _kind(kind, role)
    return SourceSpec(found.name, found.normalize(given, base), name)


def prepare(spec: SourceSpec, cache: Callable[[], str]) -> SourceSpec:
    """``spec`` with its kind's preparation done (see ``SourceKind``); as the user, before
    the manager's namespaces. ``cache`` gives the user's private cache directory. Raises
    SourceError."""
    kind = KINDS.get(spec.kind)
    if kind is None or kind.prepare is None:
        return spec
    options = kind.normalize(spec.options, None, internal=True)
    return SourceSpec(spec.kind, dict(kind.prepare(options, cache)), spec.name)


def make(spec: SourceSpec) -> Source:
    """The source ``spec`` describes; its options are checked again. Raises SourceError."""
    kind = KINDS.get(spec.kind)
    if kind is None:
        raise OptionError("type", f"no source type {spec.kind!r}; types: {', '.join(KINDS)}")
    return kind.make(kind.normalize(spec.options, None, internal=True))


def markdown() -> str:
    """docs/sources.md, from the table."""
    lines = [
        "# Sources",
        "",
        "Generated by `python -m hvfs.manager.sources.registry` from `hvfs/manager/sources/registry.py`.",
        "",
        "A mount of a VM shows a source. In `hvfs.toml`, a `[sources.NAME]` table gives its `type`",
        "and options (and `sockets = true` to let VMs connect to host sockets on it), and a VM's",
        '`mounts` name it: `{ source = "NAME", target = "/data", readonly = true }`. With `hvfs run`,',
        "`--mount type=TYPE,target=/data[,ro][,sockets][,OPTION=VALUE...]`; `-v SRC:DST` is",
        "`type=host,path=SRC` and `--tmpfs DST:size=64m` is `type=memory,size=64m`. The root is",
        "an image: `--image`, or `image =` in a VM's table. Relative paths are the project",
        "file's directory's, or the working directory's.",
        "",
    ]
    sections: tuple[tuple[Role, str], ...] = (("mount", "Mounts"), ("root", "The root"))
    for role, title in sections:
        lines += [f"## {title}", ""]
        for kind in kinds(role):
            lines += [f"### `{kind.name}`", "", kind.summary[0].upper() + kind.summary[1:] + ".", ""]
            lines += ["| option | type | default | description |", "| --- | --- | --- | --- |"]
            for option in kind.all_options:
                if option.internal:
                    continue
                default = "required" if option.required else "" if option.default is None else f"`{option.default}`"
                lines.append(f"| `{option.name}` | {option.type.name} | {default} | {option.description} |")
            lines.append("")
    lines += [
        "## Adding a kind",
        "",
        "One module in `hvfs/manager/sources/` with a `Source` subclass (the contract, with",
        "its pre- and postconditions and errnos, is in `base.py`) and a `SourceKind` (name,",
        "options, factory; `schema.py`), one line in `_WHERE` in `registry.py`, then this page:",
        "`python -m hvfs.manager.sources.registry > docs/sources.md`. The command line and",
        "hvfs.toml take it from there. Sources never import each other.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
