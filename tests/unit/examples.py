"""Instances of every HVFS API message type, made from the types' own declarations: a
type added to hvfs.api.messages gets examples here without a line of this file changing."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, Union

from hvfs.api.fds import FdRole

Fds = Callable[[FdRole], int]  # an open fd for a field of this role


def values(hint: Any, fds: Fds) -> list[Any]:
    """A few values of type ``hint``: the first is the one other examples use."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return [fds(args[1])]
    if hint is int:
        return [12345, -100, (1 << 64) - 1]
    if hint is bool:
        return [True, False]
    if hint is str:
        return ["/data/caf\u00e9/x\udcff", ""]
    if hint is bytes:
        return [b"\x00\xffraw\n", b""]
    if hint is os.stat_result:
        return [os.stat("/")]
    if origin in (types.UnionType, Union):
        found = [v for a in args if a is not type(None) for v in values(a, fds)[:1]]
        return found + ([None] if type(None) in args else [])
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = values(args[0], fds)
            return [tuple(item[:2]) * 2 if len(item) > 1 else (item[0], item[0]), ()]
        return [tuple(values(a, fds)[0] for a in args)]
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return list(instances(hint, fds))[:1]
    raise TypeError(f"no example values for {hint!r}")


def instances(cls: type, fds: Fds) -> Iterator[Any]:
    """``cls`` with every field at its first value, then each field at each of its others."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = dataclasses.fields(cls)
    choices = {f.name: values(hints[f.name], fds) for f in fields}
    base = {name: found[0] for name, found in choices.items()}
    yield cls(**base)
    for name, found in choices.items():
        for other in found[1:]:
            yield cls(**{**base, name: other})
