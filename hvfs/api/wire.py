"""The HVFS API as bytes: each request and response encoded for one datagram.

Why this format. A message is JSON (its type's wire tag, then its fields in declaration
order, a nested message as a list of its fields) followed by the raw contents of its
``bytes`` fields; fds travel beside it by SCM_RIGHTS and the JSON names them by index.

- JSON, because its parser (C code in the standard library) makes only lists, numbers
  and strings: decoding never runs code (pickle would) and a malformed message is an
  error, never a crash (marshal may crash on one). It is also the fastest encoder the
  standard library has for this shape of data: an ``Open`` request encodes in about
  3.5 µs and decodes in about 7 (``benchmarks/api_transport.py``), next to a bare socket
  round trip of about 20 µs between two processes on the development machine. Paths keep
  any byte: ``os.fsdecode`` makes undecodable bytes lone surrogates, which JSON escapes
  and gives back.
- Bytes stay binary, after the JSON: a 1 MiB send is copied, not base64'd.
- Each field is checked against its declared type as it is decoded, and turned into what
  an in-process call would have carried (tuples, not lists; ints, not floats or bools),
  so handlers see the same values whichever transport brought them.

Every type's codec is derived from its dataclass in ``messages``, so the two cannot
drift apart (``codecs`` builds them). Which types may travel on their own or in a union,
and under which number, is the explicit table ``TAGS``: a message type missing from it
cannot be sent, and tests/unit/test_wire.py fails until it is added. ``SCHEMA`` digests that table with each
field's name and type; the handshake compares it, so two builds whose messages differ
refuse each other even at the same ``PROTOCOL``.

Fds (``messages.LentFd``, ``messages.GivenFd``): a request passes every fd it names. A
response passes the fds it gives (``Fd.fd``) and names the request's own fds, which it
may only lend back (``WouldBlock``), as ``-1 - i`` for the request's i-th passed fd: the
driver gets back its own numbers, as in-process, and no fd needs a new owner.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Sequence
from typing import Any, Union

from hvfs.api import messages as m
from hvfs.api.codecs import In, Out, WireError, codec_of, register, tagged

__all__ = ["PROTOCOL", "SCHEMA", "TAGS", "WireError", "decode_request", "decode_response", "encode"]

PROTOCOL = 1  # bump when the framing or the meaning of a message changes

# Wire numbers of the types that travel. Never reuse a number; a new type takes the next.
TAGS: dict[int, type] = {
    1: m.Open,
    2: m.Stat,
    3: m.Statx,
    4: m.Access,
    5: m.Readlink,
    6: m.Lookup,
    7: m.Statfs,
    8: m.Chdir,
    9: m.Exec,
    10: m.Executed,
    11: m.Mkdir,
    12: m.Mknod,
    13: m.Unlink,
    14: m.Rmdir,
    15: m.Rename,
    16: m.Link,
    17: m.Symlink,
    18: m.Chmod,
    19: m.Chown,
    20: m.Truncate,
    21: m.Utimens,
    22: m.SetXattr,
    23: m.RemoveXattr,
    24: m.Bind,
    25: m.Connect,
    26: m.Send,
    40: m.VmPath,
    41: m.OpenFile,
    42: m.PassedFiles,
    43: m.SenderCredentials,
    44: m.Ancillary,
    60: m.Errno,
    61: m.Value,
    62: m.Continue,
    63: m.Fd,
    64: m.StatResult,
    65: m.StatxResult,
    66: m.StatfsResult,
    67: m.Data,
    68: m.WouldBlock,
}
REQUEST_TYPES: tuple[type, ...] = typing.get_args(m.Request)
RESPONSE_TYPES: tuple[type, ...] = typing.get_args(m.Response)


def _describe(hint: Any) -> str:
    """A field's type as the schema digest sees it: the same on every Python version."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return f"fd:{args[1].value}"
    if origin in (types.UnionType, Union):
        return "|".join(_describe(a) for a in args)
    if origin is tuple:
        return "(" + ",".join("..." if a is Ellipsis else _describe(a) for a in args) + ")"
    if hint is type(None):
        return "None"
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        hints = typing.get_type_hints(hint, include_extras=True)
        inner = ",".join(f"{f.name}:{_describe(hints[f.name])}" for f in dataclasses.fields(hint))
        return f"{hint.__name__}{{{inner}}}" if hint not in TAGS.values() else hint.__name__
    return str(getattr(hint, "__name__", hint))


def _schema() -> str:
    parts = []
    for tag, cls in sorted(TAGS.items()):
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = ",".join(f"{f.name}:{_describe(hints[f.name])}" for f in dataclasses.fields(cls))
        parts.append(f"{tag}={cls.__name__}({fields})")
    return hashlib.sha256(";".join(parts).encode()).hexdigest()[:16]


register(TAGS)
SCHEMA = _schema()  # digest of every message type's wire form
_dumps = json.JSONEncoder(separators=(",", ":"), check_circular=False, allow_nan=False).encode


def _no_constant(name: str) -> None:
    raise WireError(f"{name} in a message")


_loads = json.JSONDecoder(parse_constant=_no_constant).decode
_REQUEST_TAGS = frozenset(tag for tag, cls in TAGS.items() if cls in REQUEST_TYPES)
_RESPONSE_TAGS = frozenset(tag for tag, cls in TAGS.items() if cls in RESPONSE_TYPES)


def encode(message: m.Request | m.Response, lent: Sequence[int] | None = None) -> tuple[bytes, bytes, list[int]]:
    """``message`` as its JSON, the bytes that follow it, and the fds to pass with it.
    ``lent``: for a response, the fds its request passed (as the receiver numbers them)."""
    codec = codec_of(type(message))
    if codec is None:
        raise WireError(f"{type(message).__name__} has no wire tag: add it to hvfs.api.wire.TAGS")
    out = Out(None if lent is None else {fd: i for i, fd in enumerate(lent)})
    try:
        text = _dumps(codec.encode(message, out, tagged=True)).encode("ascii")
    except (TypeError, ValueError, AttributeError, KeyError) as e:  # a field of another type than declared
        raise WireError(f"{type(message).__name__} cannot be encoded: {e}") from e
    return text, b"".join(out.blobs), out.fds


def decode_request(text: bytes, blobs: bytes, fds: Sequence[int]) -> m.Request:
    """The request in a datagram whose passed fds are ``fds``; each must be named once."""
    request: m.Request = _decode(text, blobs, fds, None, _REQUEST_TAGS)
    return request


def decode_response(text: bytes, blobs: bytes, fds: Sequence[int], lent: Sequence[int]) -> m.Response:
    """The response in a datagram, for a request that passed ``lent`` (the sender's numbers)."""
    response: m.Response = _decode(text, blobs, fds, lent, _RESPONSE_TAGS)
    return response


def _decode(text: bytes, blobs: bytes, fds: Sequence[int], lent: Sequence[int] | None, tags: frozenset[int]) -> Any:
    try:
        value = _loads(text.decode("ascii"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise WireError(f"not a message: {e}") from None
    into = In(blobs, fds, lent)
    message = tagged(value, into, tags, "message")
    if into.at != len(blobs):
        raise WireError(f"{len(blobs) - into.at} bytes after the message")
    if not all(into.used):
        raise WireError("an fd passed with the message that no field names")
    return message
