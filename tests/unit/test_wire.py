"""The wire codec: every message type round-trips; malformed messages are errors, never crashes."""

from __future__ import annotations

import dataclasses
import errno
import inspect
import json
import os
import random
import typing
from collections.abc import Iterator
from typing import Any

import pytest

from hvfs import api
from hvfs.api import messages, wire
from hvfs.api.fds import FdRole
from tests.unit.examples import instances

MESSAGE_TYPES = [*typing.get_args(api.Request), *typing.get_args(api.Response)]
# Dataclasses that only ever travel as a field of one declared type, never in a union.
NESTED_ONLY = {api.Caller, api.Credentials, api.SocketAddress}


@pytest.fixture
def fds() -> Iterator[list[int]]:
    opened: list[int] = []
    yield opened
    for fd in opened:
        os.close(fd)


def _fd_maker(opened: list[int], lent: list[int] | None = None) -> Any:
    """Opens a new fd for each field that holds one; those of lent fields go in ``lent`` too."""

    def make(role: FdRole) -> int:
        fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        opened.append(fd)
        if role is FdRole.LENT and lent is not None:
            lent.append(fd)
        return fd

    return make


def same(a: Any, b: Any) -> bool:
    """Equal, fields that do not take part in == (VmPath.base_id) and stat's fields beyond
    the sequence included."""
    if isinstance(a, os.stat_result):
        extra = ("st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blksize", "st_blocks", "st_rdev", "st_atime")
        return a == b and all(getattr(a, f) == getattr(b, f) for f in extra)
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, tuple):
        return type(b) is tuple and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def test_every_message_type_has_a_wire_tag() -> None:
    tagged = set(wire.TAGS.values())
    missing = [cls.__name__ for cls in MESSAGE_TYPES if cls not in tagged]
    assert not missing, f"add these to hvfs.api.wire.TAGS: {missing}"
    declared = {cls for _, cls in inspect.getmembers(messages, inspect.isclass) if dataclasses.is_dataclass(cls)}
    unaccounted = declared - tagged - NESTED_ONLY
    assert not unaccounted, f"message dataclasses with no wire tag: {unaccounted}"
    assert len(set(wire.TAGS)) == len(wire.TAGS)


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda c: c.__name__)
def test_every_message_type_round_trips(cls: type, fds: list[int]) -> None:
    lent: list[int] = []
    made = list(instances(cls, _fd_maker(fds, lent)))
    assert made
    for message in made:
        if cls in typing.get_args(api.Request):
            text, blobs, passed = wire.encode(message)
            assert len(passed) == len(set(passed))
            back: Any = wire.decode_request(text, blobs, passed)
        else:
            # A response may only lend back fds of its request: here, every lent one made.
            text, blobs, passed = wire.encode(message, lent=lent)
            back = wire.decode_response(text, blobs, passed, lent=lent)
        assert same(message, back), (message, back)
        json.loads(text)  # plain JSON, whatever the message


def test_an_fd_named_twice_is_passed_once(fds: list[int]) -> None:
    fd = _fd_maker(fds)(FdRole.LENT)
    file = api.OpenFile(fd, "/x")
    send = api.Send(caller=api.Caller("vm", 1), socket=file, data=b"", length=0, flags=0, address=None,
                    control=(api.PassedFiles((file, file)),))  # fmt: skip
    text, blobs, passed = wire.encode(send)
    assert passed == [fd]
    assert wire.decode_request(text, blobs, passed) == send


def test_a_response_lends_back_only_its_requests_fds(fds: list[int]) -> None:
    make = _fd_maker(fds)
    mine, other = make(FdRole.LENT), make(FdRole.LENT)
    again = api.Connect(caller=api.Caller("vm", 1), socket=api.OpenFile(mine, "s"), address=api.SocketAddress(b"\1\0"))
    lending = api.WouldBlock(mine, 4, again, api.Errno(errno.EINTR))
    text, blobs, passed = wire.encode(lending, lent=[mine])
    assert passed == []  # names the request's fd, passes nothing
    assert wire.decode_response(text, blobs, [], lent=[mine]) == lending
    with pytest.raises(wire.WireError, match="not one of its request's"):
        wire.encode(api.WouldBlock(other, 4, again, api.Errno(errno.EINTR)), lent=[mine])
    with pytest.raises(wire.WireError, match="only lent"):
        wire.encode(api.Fd(mine, True), lent=[mine])
    given = wire.encode(api.Fd(other, True), lent=[mine])
    assert given[2] == [other]


def test_a_type_without_a_tag_cannot_be_sent() -> None:
    @dataclasses.dataclass(frozen=True)
    class Unknown:
        x: int

    with pytest.raises(wire.WireError, match="no wire tag"):
        wire.encode(Unknown(1))  # type: ignore[arg-type]


def _open_request(fd: int) -> api.Open:
    creds = api.Credentials(1, 2, (3,), 0o22, 0, 1, 2)
    return api.Open(caller=api.Caller("vm", 7, creds), path=api.VmPath("/d", "x", (1, 2)), flags=0,
                    via=api.OpenFile(fd, "/x"))  # fmt: skip


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (b"", "not a message"),
        (b"{}", "not one of the types"),
        (b"[999]", "not one of the types"),
        (b"[60,5]", "not one of the types"),  # a response where a request was expected
        (b'[13,["vm",1,null,0]]', "fields"),  # Unlink with a missing field
        (b'[13,["vm",1,null,0],["/","x",null],5]', "fields"),  # and with one too many
        (b'[13,["vm","1",null,0],["/","x",null]]', "Caller.pid"),
        (b'[13,["vm",true,null,0],["/","x",null]]', "Caller.pid"),
        (b'[13,["vm",1.5,null,0],["/","x",null]]', "Caller.pid"),
        (b'[13,["vm",1,null,0],["/","x",[1]]]', "tuple"),
        (b'[13,["vm",1,null,0],["/","x",NaN]]', "NaN"),
        (b'[13,["vm",1,null,0],["/","x",{"a":1}]]', "tuple"),
        (b"[" * 100000, "not a message"),
        (b"[13," + b"9" * 5000 + b"]", "not a message"),
        (b'[22,["vm",1,null,0],[40,"/","x",null],"user.a",5,0,true]', "past the message"),
        (b'[1,["vm",1,null,0],["/","x",null],0,0,0,true,[0,"/x"]]', "passed fd 0 of 0"),
        (b'[1,["vm",1,null,0],["/","x",null],0,0,0,true,[-1,"/x"]]', "request fd"),
        (b'[1,["vm",1,null,0],["/","x",null],0,0,0,true,["0","/x"]]', "fd field"),
    ],
)
def test_malformed_requests_are_wire_errors(text: bytes, why: str) -> None:
    with pytest.raises(wire.WireError, match=why):
        wire.decode_request(text, b"", [])


def test_extra_bytes_and_unnamed_fds_are_refused(fds: list[int]) -> None:
    fd = _fd_maker(fds)(FdRole.LENT)
    text, blobs, passed = wire.encode(_open_request(fd))
    with pytest.raises(wire.WireError, match="bytes after"):
        wire.decode_request(text, blobs + b"x", passed)
    with pytest.raises(wire.WireError, match="no field names"):
        wire.decode_request(text, blobs, [*passed, fd])


def test_random_corruption_never_gets_past_the_decoder_as_anything_but_wire_errors(fds: list[int]) -> None:
    """Mutated encodings of real messages decode to a valid message or raise WireError:
    never another exception (a handler would get garbage), never a crash."""
    make = _fd_maker(fds)
    samples = [wire.encode(m) for cls in typing.get_args(api.Request) for m in list(instances(cls, make))[:1]]
    rng = random.Random(1234)
    alphabet = b'[]{},:"-0123456789.eE truefalsn\\u'
    decoded = refused = 0
    for _ in range(20000):
        text, blobs, passed = rng.choice(samples)
        mutated = bytearray(text)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(mutated))
            if rng.random() < 0.5:
                mutated[at] = rng.choice(alphabet)
            else:
                del mutated[at]
        try:
            wire.decode_request(bytes(mutated), blobs, passed)
            decoded += 1
        except wire.WireError:
            refused += 1
    assert refused > 10000 and decoded > 100, (decoded, refused)  # both outcomes really happened


def test_the_schema_digest_is_part_of_the_protocol() -> None:
    assert len(wire.SCHEMA) == 16 and int(wire.SCHEMA, 16) >= 0
    assert isinstance(wire.PROTOCOL, int)


def test_every_fd_field_says_who_owns_it() -> None:
    """An fd declared as a plain int would travel as a number, meaningless to the peer."""
    for _, cls in inspect.getmembers(messages, inspect.isclass):
        if not dataclasses.is_dataclass(cls):
            continue
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            if f.name == "fd" or f.name.endswith("_fd"):
                roles = typing.get_args(hints[f.name])[1:]
                assert len(roles) == 1 and isinstance(roles[0], FdRole), f"{cls.__name__}.{f.name}: LentFd or GivenFd"
