"""Unix-domain sockets bound to paths on the mount under test."""

import os
import socket

from observe import Json, describe, listing, write
from runner import Case, case

# -- unix-domain sockets bound to paths -----------------------------------------------------------


def unix_socket(kind: int = socket.SOCK_STREAM) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, kind)
    sock.settimeout(5)  # a failure to answer is recorded, never a hang
    return sock


@case
def socket_bind_creates_file(c: Case) -> Json:
    with unix_socket() as server:
        c.stat_after("s")
        server.bind("s")
        return listing()


@case
def socket_bind_umask(c: Case) -> Json:
    os.umask(0o077)
    with unix_socket() as server:
        c.stat_after("s")
        server.bind("s")


@case
def socket_connect_exchange(c: Case) -> Json:
    with unix_socket() as server, unix_socket() as client:
        server.bind("s")
        server.listen(1)
        client.connect("s")
        connection, _ = server.accept()
        with connection:
            client.sendall(b"ping")
            received = connection.recv(16)
            connection.sendall(b"pong")
            return [received.decode(), client.recv(16).decode()]


@case
def socket_connect_through_symlink(c: Case) -> Json:
    with unix_socket() as server, unix_socket() as client:
        server.bind("s")
        server.listen(1)
        os.symlink("s", "link")
        client.connect("link")


@case
def socket_connect_from_subdir_relative(c: Case) -> Json:
    os.mkdir("d")
    with unix_socket() as server, unix_socket() as client:
        server.bind("d/s")
        server.listen(1)
        os.chdir("d")
        client.connect("s")


@case
def socket_bind_existing_socket(c: Case) -> Json:
    with unix_socket() as first, unix_socket() as second:
        first.bind("s")
        second.bind("s")


@case
def socket_bind_existing_file(c: Case) -> Json:
    write("s")
    with unix_socket() as server:
        server.bind("s")


@case
def socket_bind_dangling_symlink(c: Case) -> Json:
    # bind never follows a symlink: the name is taken
    os.symlink("target", "s")
    with unix_socket() as server:
        c.after(listing)
        server.bind("s")


@case
def socket_bind_missing_dir(c: Case) -> Json:
    with unix_socket() as server:
        server.bind("missing/s")


@case
def socket_bind_through_file(c: Case) -> Json:
    write("f")
    with unix_socket() as server:
        server.bind("f/s")


@case
def socket_bind_unwritable_dir(c: Case) -> Json:
    os.mkdir("d", 0o555)
    with unix_socket() as server:
        server.bind("d/s")


@case
def socket_connect_missing(c: Case) -> Json:
    with unix_socket() as client:
        client.connect("missing")


@case
def socket_connect_regular_file(c: Case) -> Json:
    write("f")
    with unix_socket() as client:
        client.connect("f")


@case
def socket_connect_not_listening(c: Case) -> Json:
    with unix_socket() as server, unix_socket() as client:
        server.bind("s")
        client.connect("s")


@case
def socket_connect_wrong_type(c: Case) -> Json:
    with unix_socket() as server, unix_socket(socket.SOCK_DGRAM) as client:
        server.bind("s")
        server.listen(1)
        client.connect("s")


@case
def socket_connect_unwritable_socket(c: Case) -> Json:
    # connecting needs write permission on the socket file (root has it regardless)
    with unix_socket() as server, unix_socket() as client:
        server.bind("s")
        server.listen(1)
        os.chmod("s", 0o555)
        client.connect("s")


@case
def socket_datagram_exchange(c: Case) -> Json:
    with unix_socket(socket.SOCK_DGRAM) as server, unix_socket(socket.SOCK_DGRAM) as client:
        server.bind("server")
        client.bind("client")
        client.sendto(b"ping", "server")
        data, sender = server.recvfrom(16)
        server.sendto(b"pong", sender)
        return [data.decode(), os.path.basename(sender), client.recv(16).decode()]


@case
def socket_rebind_after_unlink(c: Case) -> Json:
    with unix_socket() as first, unix_socket() as second:
        first.bind("s")
        os.unlink("s")
        second.bind("s")
        return describe("s")["type"]


@case
def socket_getsockname(c: Case) -> Json:
    with unix_socket() as server:
        server.bind("s")
        return server.getsockname()
