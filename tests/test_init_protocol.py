"""The channel between the manager and hvfs-init: both sides agree on every number, and
hvfs-init refuses what is not a well-formed message instead of acting on it."""

from __future__ import annotations

import os
import random
import re
import socket
import struct

import pytest

from hvfs.sandbox import launcher, protocol
from hvfs.sandbox.protocol import Message, Msg, Tag
from tests.conftest import REPO

HEADER = REPO / "native" / "init" / "init.h"


def _c_enum(prefix: str) -> dict[str, int]:
    return {name: int(value) for name, value in re.findall(rf"\b{prefix}([A-Z_]+) = (\d+)", HEADER.read_text())}


def test_the_c_header_and_python_agree() -> None:
    assert _c_enum("MSG_") == {m.name: m.value for m in Msg}
    assert _c_enum("T_") == {t.name: t.value for t in Tag}


def test_a_message_round_trips() -> None:
    message = Message(Msg.EXEC).add_all(Tag.ARG, ["sh", "-c", "é"]).add(Tag.ID, 2**40).add(Tag.TTY, True)
    decoded = protocol.decode(message.encode())
    assert decoded.type == Msg.EXEC and decoded.records == message.records
    assert decoded.int(Tag.ID) == 2**40 and decoded.string(Tag.ARG) == "sh"


def test_truncated_messages_are_refused() -> None:
    data = Message(Msg.PLAN).add(Tag.HOSTNAME, "x").encode()
    for end in range(1, len(data)):
        if end in (6,):  # the type record alone is a whole message
            continue
        with pytest.raises(ValueError):
            protocol.decode(data[:end])


def _run_init(data: bytes) -> int:
    """hvfs-init spawned as the manager spawns it, fed ``data`` as its first message."""
    ours, theirs = protocol.pair()
    chan, chan_theirs = protocol.pair()
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        pid = launcher._spawn(theirs, chan_theirs, (null, null, null))
    finally:
        theirs.close()
        chan_theirs.close()
        chan.close()
        os.close(null)
    try:
        ours.send(data)
        ours.shutdown(socket.SHUT_WR)
        _, status = os.waitpid(pid, 0)
    finally:
        ours.close()
    return os.waitstatus_to_exitcode(status)


def test_hvfs_init_refuses_malformed_plans() -> None:
    """Random and mangled messages never crash hvfs-init (a signal) nor make it go on."""
    rng = random.Random(1)
    good = launcher.plan_message(
        launcher.BootPlan("x", "/nonexistent", launcher.Program(("true",), {}), b"\0" * 8)
    ).encode()
    samples = [b"", b"\x01", good[:7], struct.pack("<BI", 1, 1 << 31) + b"\x01"]
    samples += [rng.randbytes(rng.randrange(1, 300)) for _ in range(60)]
    for _ in range(60):
        mangled = bytearray(good)
        for _ in range(rng.randrange(1, 6)):
            mangled[rng.randrange(len(mangled))] = rng.randrange(256)
        samples.append(bytes(mangled))
    for data in samples:
        code = _run_init(data)
        assert code == 125, (code, data[:40])  # never a crash by signal (negative), never a start
