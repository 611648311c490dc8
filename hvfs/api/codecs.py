"""How each field of a message becomes JSON and back: the machinery ``wire`` builds the
codec of every message type with, from its dataclass declaration."""

from __future__ import annotations

import dataclasses
import operator
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

from hvfs.api.fds import FdRole
from hvfs.api.transport import TransportError

# os.stat_result beyond its ten sequence fields, as Linux fills them.
_STAT_EXTRA = ("st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns",
               "st_blksize", "st_blocks", "st_rdev")  # fmt: skip
_STAT_LENGTH = 10 + len(_STAT_EXTRA)


class WireError(TransportError):
    """A message that cannot be encoded or decoded: a peer speaking another protocol, or a
    handler breaking the fd rules. The message says which field."""


class Out:
    """What encoding one message collects besides its JSON: bytes and fds to pass."""

    __slots__ = ("blobs", "fds", "indexes", "lent")

    def __init__(self, lent: Mapping[int, int] | None) -> None:
        self.blobs: list[bytes] = []
        self.fds: list[int] = []
        self.indexes: dict[int, int] = {}  # fd number -> its index among the passed fds
        self.lent = lent  # for a response: the request's fds, number -> index

    def blob(self, data: bytes) -> int:
        self.blobs.append(data)
        return len(data)

    def fd(self, number: int, role: FdRole) -> int:
        lent = self.lent
        if lent is not None:
            index = lent.get(number)
            if role is FdRole.LENT:
                if index is None:
                    raise WireError(f"a response lends fd {number}, which is not one of its request's")
                return -1 - index
            if index is not None:
                raise WireError(f"a response gives away fd {number}, which its request only lent")
        index = self.indexes.get(number)
        if index is None:
            index = self.indexes[number] = len(self.fds)
            self.fds.append(number)
        return index


class In:
    """What decoding one message draws on: its bytes, its passed fds, its request's fds."""

    __slots__ = ("at", "blobs", "fds", "lent", "used")

    def __init__(self, blobs: bytes, fds: Sequence[int], lent: Sequence[int] | None) -> None:
        self.blobs = blobs
        self.at = 0
        self.fds = fds
        self.used = [False] * len(fds)
        self.lent = lent

    def blob(self, length: object) -> bytes:
        if type(length) is not int or length < 0 or self.at + length > len(self.blobs):
            raise WireError(f"a bytes field of {length!r} bytes, past the message's end")
        start = self.at
        self.at = start + length
        return self.blobs[start : self.at]

    def fd(self, index: object, role: FdRole) -> int:
        if type(index) is not int:
            raise WireError(f"an fd field holds {index!r}")
        if index < 0:
            if role is not FdRole.LENT or self.lent is None or -1 - index >= len(self.lent):
                raise WireError(f"an fd field names request fd {-1 - index}, which it cannot")
            return self.lent[-1 - index]
        if role is FdRole.LENT and self.lent is not None:
            raise WireError("a response passes a new fd where it may only lend the request's back")
        if index >= len(self.fds):
            raise WireError(f"an fd field names passed fd {index} of {len(self.fds)}")
        self.used[index] = True
        return self.fds[index]


Encoder = Callable[[Any, Out], Any]
Decoder = Callable[[Any, In], Any]


class ClassCodec:
    """The codec of one dataclass: its fields as a list, with or without its tag first.

    Fields JSON carries as they are (ints, strings, bools, None) are checked by type in
    one loop; only the others call a codec of their own (this runs for every request)."""

    def __init__(self, cls: type, tag: int | None) -> None:
        self.cls = cls
        self.tag = tag
        self.name = cls.__name__
        self.names: tuple[str, ...] = ()

    def build(self) -> None:
        hints = typing.get_type_hints(self.cls, include_extras=True)
        fields = dataclasses.fields(self.cls)
        self.names = tuple(f.name for f in fields)
        self.kw_only = any(f.kw_only for f in fields)
        self.plain: list[tuple[int, tuple[type, ...]]] = []  # index, the types it may hold
        self.encoders: list[tuple[int, Encoder]] = []
        self.decoders: list[tuple[int, Decoder]] = []
        for i, f in enumerate(fields):
            kinds = _plain(hints[f.name])
            if kinds is not None:
                self.plain.append((i, kinds))
                continue
            enc, dec = _codec(hints[f.name], f"{self.name}.{f.name}")
            if enc is not None:
                self.encoders.append((i, enc))
            self.decoders.append((i, dec))
        self.values = _getter(operator.attrgetter, self.names)
        # Fields of one type each are checked in one go: the types of those items, at C speed.
        single = [(i, kinds[0]) for i, kinds in self.plain if len(kinds) == 1]
        self.single_items = _getter(operator.itemgetter, [i for i, _ in single])
        self.single_types = tuple(kind for _, kind in single)
        self.optional = [(i, kinds) for i, kinds in self.plain if len(kinds) > 1]

    def encode(self, obj: Any, out: Out, *, tagged: bool) -> list[Any]:
        if tagged:
            values = [self.tag, *self.values(obj)]
            for i, enc in self.encoders:
                value = values[i + 1]
                if value is not None:
                    values[i + 1] = enc(value, out)
            return values
        values = list(self.values(obj))
        for i, enc in self.encoders:
            value = values[i]
            if value is not None:
                values[i] = enc(value, out)
        return values

    def decode(self, values: list[Any], offset: int, into: In) -> Any:
        if len(values) != len(self.names) + offset:
            raise WireError(f"{self.name} with {len(values) - offset} fields, not {len(self.names)}")
        if offset:
            values = values[offset:]
        if tuple(map(type, self.single_items(values))) != self.single_types:
            self._refuse(values, self.plain)
        for i, kinds in self.optional:
            if type(values[i]) not in kinds:
                self._refuse(values, [(i, kinds)])
        for i, dec in self.decoders:
            values[i] = dec(values[i], into)
        if self.kw_only:
            return self.cls(**dict(zip(self.names, values, strict=True)))
        return self.cls(*values)

    def _refuse(self, values: list[Any], fields: list[tuple[int, tuple[type, ...]]]) -> None:
        for i, kinds in fields:
            if type(values[i]) not in kinds:
                raise WireError(f"{self.name}.{self.names[i]}: {type(values[i]).__name__}, not as declared")


def _getter(make: Callable[..., Any], keys: Sequence[Any]) -> Callable[[Any], tuple[Any, ...]]:
    """``make(*keys)`` (an attrgetter or itemgetter) that always gives a tuple."""
    if not keys:
        return lambda obj: ()
    get = make(*keys)
    if len(keys) == 1:
        return lambda obj: (get(obj),)
    return typing.cast(Callable[[Any], tuple[Any, ...]], get)


def _plain(hint: Any) -> tuple[type, ...] | None:
    """The types a field may hold when JSON carries it as it is: int, str, bool, or one of
    them or None; None for any other field."""
    if hint in (int, bool, str):
        return (hint,)
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (types.UnionType, Union) and len(args) == 2 and type(None) in args:
        other = args[0] if args[1] is type(None) else args[1]
        if other in (int, bool, str):
            return (other, type(None))
    return None


_BY_TAG: dict[int, ClassCodec] = {}
_BY_CLASS: dict[type, ClassCodec] = {}
_UNTAGGED: dict[type, ClassCodec] = {}  # dataclasses that travel only as a field of one type (Caller)


def _class(cls: type) -> ClassCodec:
    """The codec of ``cls``: its tagged one, or one made (and built) now for a dataclass
    that only ever travels as a field of a declared type (Caller, SocketAddress)."""
    found = _BY_CLASS.get(cls) or _UNTAGGED.get(cls)
    if found is None:
        found = _UNTAGGED[cls] = ClassCodec(cls, None)
        found.build()
    return found


def _check(kind: type, what: str) -> Decoder:
    def decode(value: Any, into: In) -> Any:
        if type(value) is not kind:
            raise WireError(f"{what}: {type(value).__name__} where {kind.__name__} was declared")
        return value

    return decode


def _codec(hint: Any, what: str) -> tuple[Encoder | None, Decoder]:
    """The encoder (None: the value is JSON as it is) and decoder of a field of type ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        role = args[1]
        if args[0] is not int or not isinstance(role, FdRole):
            raise TypeError(f"{what}: only fds (messages.LentFd, messages.GivenFd) are annotated")
        return (lambda value, out: out.fd(value, role)), (lambda value, into: into.fd(value, role))
    if hint in (int, bool, str):
        return None, _check(hint, what)
    if hint is bytes:
        return (lambda value, out: out.blob(value)), (lambda value, into: into.blob(value))
    if hint is os.stat_result:
        return _stat_encode, _stat_decoder(what)
    if origin in (types.UnionType, Union):
        return _union(args, what)
    if origin is tuple:
        return _tuple(args, what)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        fields = _class(hint)
        return (lambda value, out: fields.encode(value, out, tagged=False)), _fields_decoder(fields, what)
    raise TypeError(f"{what}: no wire codec for {hint!r}")


def _fields_decoder(fields: ClassCodec, what: str) -> Decoder:
    def decode(value: Any, into: In) -> Any:
        if type(value) is not list:
            raise WireError(f"{what}: {type(value).__name__} where {fields.name} was declared")
        return fields.decode(value, 0, into)

    return decode


def _union(args: tuple[Any, ...], what: str) -> tuple[Encoder | None, Decoder]:
    members = [a for a in args if a is not type(None)]
    if len(members) < len(args):  # X | None
        enc, dec = _codec(members[0] if len(members) == 1 else Union[tuple(members)], what)  # noqa: UP007

        def optional(value: Any, into: In) -> Any:
            return None if value is None else dec(value, into)

        return enc, optional  # encoders are not called for None
    for member in members:
        if member not in _BY_CLASS:
            raise TypeError(f"{what}: {member!r} in a union needs a wire tag in hvfs.api.wire.TAGS")
    allowed = frozenset(tag for tag, codec in _BY_TAG.items() if codec.cls in members)

    def encode(value: Any, out: Out) -> Any:
        return _BY_CLASS[type(value)].encode(value, out, tagged=True)

    def decode(value: Any, into: In) -> Any:
        return tagged(value, into, allowed, what)

    return encode, decode


def tagged(value: Any, into: In, allowed: frozenset[int], what: str) -> Any:
    """The message ``value`` holds, its tag one of ``allowed``."""
    if type(value) is not list or not value or type(value[0]) is not int or value[0] not in allowed:
        raise WireError(f"{what}: not one of the types it may hold")
    return _BY_TAG[value[0]].decode(value, 1, into)


def _tuple(args: tuple[Any, ...], what: str) -> tuple[Encoder | None, Decoder]:
    every = [_plain(arg) for arg in args if arg is not Ellipsis]
    if all(kinds is not None for kinds in every):  # ids, groups, times: checked in one loop
        variable = args[-1] is Ellipsis
        allowed = [kinds for kinds in every if kinds is not None]

        def decode_plain(value: Any, into: In) -> Any:
            if type(value) is not list or (not variable and len(value) != len(allowed)):
                raise WireError(f"{what}: not a tuple as declared")
            for i, item in enumerate(value):
                if type(item) not in allowed[0 if variable else i]:
                    raise WireError(f"{what}: a {type(item).__name__} in a tuple, not as declared")
            return tuple(value)

        return None, decode_plain
    if len(args) == 2 and args[1] is Ellipsis:
        enc, dec = _codec(args[0], what)

        def encode_all(value: Any, out: Out) -> Any:
            assert enc is not None
            return [enc(item, out) for item in value]

        def decode_all(value: Any, into: In) -> Any:
            if type(value) is not list:
                raise WireError(f"{what}: {type(value).__name__} where a tuple was declared")
            return tuple(dec(item, into) for item in value)

        return (encode_all if enc is not None else None), decode_all
    codecs = [_codec(arg, what) for arg in args]

    def encode_each(value: Any, out: Out) -> Any:
        return [item if enc is None else enc(item, out) for item, (enc, _) in zip(value, codecs, strict=True)]

    def decode_each(value: Any, into: In) -> Any:
        if type(value) is not list or len(value) != len(codecs):
            raise WireError(f"{what}: not a tuple of {len(codecs)}")
        return tuple(dec(item, into) for item, (_, dec) in zip(value, codecs, strict=True))

    return (encode_each if any(enc is not None for enc, _ in codecs) else None), decode_each


def _stat_encode(st: os.stat_result, out: Out) -> list[Any]:
    return [*st, *(getattr(st, name) for name in _STAT_EXTRA)]


def _stat_decoder(what: str) -> Decoder:
    def decode(value: Any, into: In) -> os.stat_result:
        if (
            type(value) is not list
            or len(value) != _STAT_LENGTH
            or any(type(v) is not int for i, v in enumerate(value) if not 10 <= i < 13)
            or any(type(v) is not float for v in value[10:13])
        ):
            raise WireError(f"{what}: not a struct stat")
        return os.stat_result(value[:10], dict(zip(_STAT_EXTRA, value[10:], strict=True)))

    return decode


def register(tags: Mapping[int, type]) -> None:
    """Make the codecs of the types ``tags`` numbers (every type a union may hold, and every
    message), and of the dataclasses their fields hold."""
    for tag, cls in tags.items():
        _BY_TAG[tag] = _BY_CLASS[cls] = ClassCodec(cls, tag)
    for codec in list(_BY_TAG.values()):
        codec.build()


def codec_of(cls: type) -> ClassCodec | None:
    """The codec of a type with a wire tag, or None."""
    return _BY_CLASS.get(cls)
