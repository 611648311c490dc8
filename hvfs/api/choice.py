"""Which transport carries a VM's requests: the one place that reads ``HVFS_TRANSPORT``.

``inprocess`` (the default) calls the manager in the driver's thread; ``socket`` sends
every request over the socket transport to a server in the same process (``loopback``),
which runs the protocol's whole path, so that the conformance suite and program tests
can prove both transports give the same answers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a front end reads the variable without loading the messages
    from hvfs.api.messages import Request, Response
    from hvfs.api.transport import Transport

    Handler = Callable[[Request], Response]

VARIABLE = "HVFS_TRANSPORT"
KINDS = ("inprocess", "socket")


def chosen_kind(environ: Mapping[str, str] = os.environ) -> str:
    """The transport ``HVFS_TRANSPORT`` names; ``ValueError`` (one line naming the fix) for
    a value that names none. Read by the front end, in the user's environment: a manager
    serves VMs of many front ends, each with its own choice."""
    kind = environ.get(VARIABLE) or "inprocess"
    if kind not in KINDS:
        raise ValueError(f"{VARIABLE}={kind}: not a transport; use one of {', '.join(KINDS)}, or unset it")
    return kind


def transport_maker(kind: str) -> Callable[[Handler], Transport]:
    """What makes the transport ``kind`` (one of ``KINDS``) from a manager's handler."""
    if kind == "socket":
        from hvfs.api.socket_transport import loopback

        return loopback
    from hvfs.api.transport import InProcessTransport

    return InProcessTransport


def chosen_transport(environ: Mapping[str, str] = os.environ) -> Callable[[Handler], Transport]:
    """What makes the transport of a VM from its manager's handler, as ``HVFS_TRANSPORT``
    says; ``ValueError`` for a value that names none."""
    return transport_maker(chosen_kind(environ))
