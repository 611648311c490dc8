"""What a source kind is: a name, options with their types, defaults and checks, and a
factory (gVisor's ``FilesystemType``). Kinds are listed in ``registry``.

An option has one **normal form**, plain JSON (a string, an integer): what a user wrote
(a relative path, ``64m``) is checked and normalised once, where it was written, and the
normal form is what a source description carries (``registry.SourceSpec``), what a
manager keeps in its state directory and what the kind's factory receives. Normalising a
normal form gives it back unchanged, so a manager that rebuilds a source from its
description checks it again at no cost and with the same messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hvfs import machine
from hvfs.manager.sources.base import OptionError, Source

Role = Literal["mount", "root", "system"]


@dataclass(frozen=True)
class OptionType:
    """What a value of an option may be as written (TOML gives str, int, bool; flags
    only str) and how it becomes its normal form."""

    name: str  # as docs/sources.md shows it
    accepts: tuple[type, ...]
    # (value as written, directory relative paths are from, None in a description,
    # whose paths are absolute) -> normal form; a problem with the value is a
    # ValueError whose message says what is wrong and the fix.
    normalize: Callable[[Any, str | None], Any]

    def parse(self, value: object, base: str | None) -> Any:
        # bool is an int to Python, not to a config file: `size = true` is a mistake.
        if not isinstance(value, self.accepts) or (isinstance(value, bool) and bool not in self.accepts):
            names = " or ".join(t.__name__ for t in self.accepts)
            raise ValueError(f"must be {names}, not {type(value).__name__}")
        return self.normalize(value, base)


def _path(value: str, base: str | None) -> str:
    if not value:
        raise ValueError("is empty; give a path")
    if "\0" in value:
        raise ValueError(f"{value!r} contains a NUL byte; give a path")
    if base is None and not os.path.isabs(value):
        raise ValueError(f"{value!r} is relative; a source description has absolute paths")
    return os.path.normpath(os.path.join(base or "/", value))


def _size(value: str | int, base: str | None) -> int:
    size = machine.parse_size(value) if isinstance(value, str) else value
    if size is None:
        raise ValueError(f"size {value!r} is not a size; use e.g. 64m, 1g or 512k")
    problem = machine.size_problem(size)
    if problem:
        raise ValueError(problem)
    return size


def _mode(value: str, base: str | None) -> str:
    try:
        mode = int(value, 8)
    except ValueError:
        raise ValueError(f"mode {value!r} is not octal; use e.g. 1777") from None
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"mode {value!r} is not a file mode; use e.g. 1777")
    return f"{mode:o}"


def _text(value: str, base: str | None) -> str:
    return value


PATH = OptionType("path", (str,), _path)  # relative to the project file's directory, or the working directory
SIZE = OptionType("size", (str, int), _size)  # bytes this machine has: 64m, 1g, 512k or a number
MODE = OptionType("mode", (str,), _mode)  # octal, as a string: "1777"
TEXT = OptionType("text", (str,), _text)


@dataclass(frozen=True)
class Option:
    """One option of a source kind: its name, type, help and default."""

    name: str
    type: OptionType
    description: str  # one line, for errors and docs/sources.md
    default: Any = None  # in normal form; None: no default (the option is absent)
    required: bool = False
    check: Callable[[Any], str | None] | None = None  # a further problem of the normal form, or None
    internal: bool = False  # set by the kind's ``prepare``, never by a user


def _volume(value: str) -> str | None:
    if not value or len(value) > 64 or not all(c.isalnum() or c in "._-" for c in value):
        return f"shared volume {value!r} is not a name; use letters, digits, '.', '_' and '-' (64 at most)"
    return None


# Every mount kind has it: the source is one volume that managers on several hosts serve
# (an NFS or JuiceFS mount, the same directory on one machine), named cluster-wide by
# ID. A manager in a cluster (hvfs.cluster) publishes the events it serves on it, and
# hears the other hosts'.
SHARED = Option(
    "shared",
    TEXT,
    "ID: the volume managers on several hosts serve; in a cluster, their events reach each other (docs/cluster.md)",
    check=_volume,
)


# (normal options, a private cache directory of the user's, made when first asked) ->
# the options with what was prepared; runs as the user, before any namespace is entered.
Prepare = Callable[[Mapping[str, Any], Callable[[], str]], Mapping[str, Any]]


@dataclass(frozen=True)
class SourceKind:
    """One kind of source. ``make`` builds a ``Source`` from normal options (see
    ``Source``: it mounts nothing, holds nothing). ``prepare``, when a kind has one, does
    the work that must be done as the user before the manager's namespaces exist (an
    image tarball is unpacked into the user's cache) and records its result in internal
    options, so that ``make`` can run anywhere, in a manager that rebuilds the source."""

    name: str
    summary: str  # one line: what the kind serves
    options: tuple[Option, ...]
    make: Callable[[Mapping[str, Any]], Source]
    role: Role = "mount"  # "root": only a VM's root; "system": hvfs's own mounts, not a user's
    prepare: Prepare | None = None

    @property
    def all_options(self) -> tuple[Option, ...]:
        """Its own options, and the options every mount kind has (``shared``)."""
        return (*self.options, SHARED) if self.role == "mount" else self.options

    @property
    def a_source(self) -> str:
        """How messages name a source of this kind: "a host source", "an image source"."""
        return f"{'an' if self.name[0] in 'aeiou' else 'a'} {self.name} source"

    def option_names(self) -> str:
        return ", ".join(o.name for o in self.all_options if not o.internal) or "none"

    def normalize(self, given: Mapping[str, object], base: str | None, *, internal: bool = False) -> dict[str, Any]:
        """The normal form of ``given`` (as written by a user, relative paths from
        ``base``; or a description's, ``base`` None); ``internal`` options are accepted
        only from a description (``internal=True``).
        Raises OptionError naming the first option that is wrong."""
        known = {o.name: o for o in self.all_options if internal or not o.internal}
        for name in given:
            if name not in known:
                raise OptionError(name, f"{self.a_source} has no {name}; its options: {self.option_names()}")
        normal: dict[str, Any] = {}
        for option in self.all_options:
            value = given.get(option.name)
            if value is None:
                if option.required:
                    raise OptionError(option.name, f"{self.a_source} needs {option.name}: {option.description}")
                if option.default is not None:
                    normal[option.name] = option.default
                continue
            try:
                value = option.type.parse(value, base)
            except ValueError as e:
                raise OptionError(option.name, str(e)) from None
            problem = option.check(value) if option.check else None
            if problem:
                raise OptionError(option.name, problem)
            normal[option.name] = value
        return normal
