"""Socket calls with bad arguments, in the directory given as argv[1]; prints each
case's result as JSON: the value returned, or the errno name. Run natively and in a VM,
the two must match: hvfs reads what the kernel would read, in the kernel's order."""

import ctypes
import errno
import json
import os
import socket
import struct
import sys

libc = ctypes.CDLL(None, use_errno=True)
for name in ("bind", "connect"):
    getattr(libc, name).argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.sendto.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.sendmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
MSG_DONTWAIT, MSG_NOSIGNAL = 0x40, 0x4000


def result(value: int) -> object:
    return errno.errorcode[ctypes.get_errno()] if value < 0 else value


def buffer(data: bytes) -> "ctypes.Array[ctypes.c_char]":
    return ctypes.create_string_buffer(data, len(data))


def unix(path: bytes) -> bytes:
    return struct.pack("<H", socket.AF_UNIX) + path + b"\0"


def msghdr(name: int, namelen: int, iov: int, count: int, control: int, length: int) -> "ctypes.Array[ctypes.c_char]":
    """A struct msghdr (msg_flags 0)."""
    return buffer(struct.pack("<QI4xQQQQi4x", name, namelen, iov, count, control, length, 0))


def main() -> None:
    os.chdir(sys.argv[1])
    out: dict[str, object] = {}
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dgram.bind("server")
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    fd, server = client.fileno(), buffer(unix(b"server"))
    data = buffer(b"data")
    iov = buffer(struct.pack("<QQ", ctypes.addressof(data), 4))
    bad = 8  # an address nothing is mapped at
    # Addresses: lengths, families, pointers.
    out["bind_len_129"] = result(libc.bind(stream.fileno(), ctypes.addressof(server), 129))
    out["bind_len_negative"] = result(libc.bind(stream.fileno(), ctypes.addressof(server), -1))
    out["bind_bad_pointer"] = result(libc.bind(stream.fileno(), bad, 20))
    out["bind_inet_family"] = result(libc.bind(stream.fileno(), ctypes.addressof(buffer(b"\2\0" + b"x" * 14)), 16))
    out["bind_not_a_socket"] = result(libc.bind(0, ctypes.addressof(server), 9))
    out["connect_len_1"] = result(libc.connect(fd, ctypes.addressof(server), 1))
    out["connect_bad_pointer"] = result(libc.connect(fd, bad, 20))
    out["connect_not_a_socket"] = result(libc.connect(0, bad, 20))  # the address is copied first: EFAULT
    out["connect_closed_fd"] = result(libc.connect(999, ctypes.addressof(server), 9))
    out["connect_missing"] = result(libc.connect(fd, ctypes.addressof(buffer(unix(b"missing"))), 10))
    out["connect_udp_unix_address"] = result(libc.connect(udp.fileno(), ctypes.addressof(server), 9))
    out["sendto_udp_empty_address"] = result(libc.sendto(udp.fileno(), data, 4, 0, ctypes.addressof(server), 0))
    out["sendto_len_129"] = result(libc.sendto(fd, data, 4, 0, ctypes.addressof(server), 129))
    out["sendto_bad_data"] = result(libc.sendto(fd, bad, 4, 0, ctypes.addressof(server), 9))
    out["sendto_stream"] = result(libc.sendto(stream.fileno(), data, 4, MSG_NOSIGNAL, ctypes.addressof(server), 9))
    out["sendto_ok"] = result(libc.sendto(fd, data, 4, 0, ctypes.addressof(server), 9))
    # msghdr: its fields as copy_msghdr_from_user and ____sys_sendmsg check them.
    name = ctypes.addressof(server)
    cases = {
        "sendmsg_ok": msghdr(name, 9, ctypes.addressof(iov), 1, 0, 0),
        "sendmsg_namelen_negative": msghdr(name, 0xFFFFFFFF, ctypes.addressof(iov), 1, 0, 0),
        "sendmsg_namelen_200": msghdr(name, 200, ctypes.addressof(iov), 1, 0, 0),  # cut to 128
        "sendmsg_iovlen_1025": msghdr(name, 9, ctypes.addressof(iov), 1025, 0, 0),
        "sendmsg_bad_iov": msghdr(name, 9, bad, 1, 0, 0),
        "sendmsg_controllen_huge": msghdr(name, 9, ctypes.addressof(iov), 1, ctypes.addressof(data), 1 << 31),
        "sendmsg_control_short": msghdr(name, 9, ctypes.addressof(iov), 1, ctypes.addressof(data), 4),
    }
    cmsg_too_long = buffer(struct.pack("<Qii", 64, socket.SOL_SOCKET, socket.SCM_RIGHTS) + b"\0" * 8)
    cases["sendmsg_cmsg_too_long"] = msghdr(name, 9, ctypes.addressof(iov), 1, ctypes.addressof(cmsg_too_long), 24)
    bad_fd = buffer(struct.pack("<Qiii4x", 20, socket.SOL_SOCKET, socket.SCM_RIGHTS, 999))
    cases["sendmsg_rights_bad_fd"] = msghdr(name, 9, ctypes.addressof(iov), 1, ctypes.addressof(bad_fd), 24)
    for case, header in cases.items():
        out[case] = result(libc.sendmsg(fd, header, MSG_DONTWAIT))
    out["sendmsg_bad_header"] = result(libc.sendmsg(fd, bad, 0))
    out["sendmsg_not_a_socket"] = result(libc.sendmsg(0, bad, 0))  # the fd is looked up first
    out["sendmmsg_none"] = result(libc.sendmmsg(fd, bad, 0, 0))
    while True:
        try:
            dgram.recv(16, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
    print(json.dumps(out, indent=1, sort_keys=True))


main()
