"""The VM's network namespace starts with only a loopback device, and that one down."""

from __future__ import annotations

import fcntl
import socket
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
IFF_UP = 0x1


def _bring_up(s: socket.socket, name: bytes) -> None:
    flags = struct.unpack("16sh14x", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sh14x", name, 0)))[1]
    fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh14x", name, flags | IFF_UP))


def bring_up_loopback() -> None:
    # A few ioctls: importing pyroute2 for this would cost ~95 ms on every VM start.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        _bring_up(s, b"lo")


def _sockaddr_in(address: str) -> bytes:
    return struct.pack("=H2x4s8x", socket.AF_INET, socket.inet_aton(address))


def configure_interface(name: str, address: str, prefix: int) -> None:
    """Give the VM's end of its link an IPv4 address and bring it up (run inside the VM;
    the manager made the link). The kernel adds the route to the subnet itself."""
    netmask = socket.inet_ntoa(((0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF).to_bytes(4, "big"))
    interface = name.encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        fcntl.ioctl(s, SIOCSIFADDR, struct.pack("16s16s", interface, _sockaddr_in(address)))
        fcntl.ioctl(s, SIOCSIFNETMASK, struct.pack("16s16s", interface, _sockaddr_in(netmask)))
        _bring_up(s, interface)
