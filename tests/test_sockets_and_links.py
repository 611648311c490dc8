"""Unix sockets and links of open files: names made by the manager on the VM's behalf."""

from __future__ import annotations

import errno
import json
import socket
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import TRANSPORTS, Hvfs
from tests.helpers import PROBES

SERVER = """
import os, socket, sys
path = sys.argv[1]
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen()
if os.fork() == 0:
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    client.sendall(b"ping")
    assert client.recv(4) == b"pong"
    os._exit(0)
conn, _ = server.accept()
request = conn.recv(4)
conn.sendall(b"pong")
_, status = os.wait()
try:
    socket.socket(socket.AF_UNIX).bind(path)
except OSError as e:
    rebind = e.errno
print(request.decode(), status, rebind, oct(os.stat(path).st_mode))
"""


def test_unix_socket_server_and_client_in_tmp(hvfs: Hvfs, tmp_path: Path) -> None:
    stats_file = tmp_path / "stats.json"
    out = hvfs.ok("run", "--stats", str(stats_file), "--", "python3", "-c", SERVER, "/tmp/server.sock")
    assert out.split() == ["ping", "0", "98", "0o140755"]  # EADDRINUSE on a second bind
    requests = json.loads(stats_file.read_text())["requests"]
    assert requests["bind"]["served"] == 1 and requests["connect"]["served"] == 1


def test_a_socket_bound_in_a_volume_is_a_real_socket_file(hvfs: Hvfs, tmp_path: Path) -> None:
    hvfs.ok("run", "-v", f"{tmp_path}:/data", "--", "python3", "-c", SERVER, "/data/s")
    assert stat.S_ISSOCK((tmp_path / "s").lstat().st_mode)


def test_host_sockets_need_a_volume_marked_sockets(hvfs: Hvfs, tmp_path: Path) -> None:
    path = tmp_path / "host.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    accepted: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        accepted.append(conn.recv(5))
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        program = "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/run/h.sock'); s.sendall(b'hello')"
        refused = hvfs.run("run", "-v", f"{path}:/run/h.sock", "--", "python3", "-c", program)
        assert refused.returncode == 1 and "PermissionError" in refused.stderr and "sockets" in refused.stderr
        hvfs.ok("run", "-v", f"{path}:/run/h.sock:sockets", "--", "python3", "-c", program)
        thread.join(timeout=10)
    finally:
        listener.close()
    assert accepted == [b"hello"]


def test_network_and_abstract_sockets_are_untouched(hvfs: Hvfs) -> None:
    program = (
        "import socket\n"
        "a = socket.socket(socket.AF_UNIX); a.bind('\\0hvfs-abstract'); a.listen()\n"
        "b = socket.socket(socket.AF_UNIX); b.connect('\\0hvfs-abstract')\n"
        "t = socket.socket(); t.bind(('127.0.0.1', 0)); t.listen()\n"
        "u = socket.create_connection(t.getsockname()); print('ok')"
    )
    assert hvfs.ok("run", "--", "python3", "-c", program).strip() == "ok"


# What programs do with unix sockets besides streams on paths: every call below is one
# the manager now performs (bind, connect, sendto with an address, sendmsg, sendmmsg).
DATAGRAMS = r"""
import ctypes, json, os, socket, struct, sys
out = {}
# Abstract names, with the exact length given (a trailing NUL is part of the name).
a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); a.bind(b"\0hvfs-dgram\0")
b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); b.sendto(b"abstract", b"\0hvfs-dgram\0")
out["abstract"] = [a.recv(16).decode(), a.getsockname().hex()]
# Autobind: an unnamed address gets an abstract name of five hex digits.
u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); u.bind(b"")
out["autobind"] = len(u.getsockname())
# A datagram to a socket made in the VM, by a relative path, answered to the sender's name.
os.chdir("/tmp")
server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); server.bind("server")
client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); client.bind("client")
client.sendto(b"ping", "server"); data, sender = server.recvfrom(16); server.sendto(b"pong", sender)
out["exchange"] = [data.decode(), sender, client.recv(16).decode()]
# syslog: a connected datagram socket on /dev/log, and send() (which needs no address).
log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); log.bind("/dev/log")
import logging, logging.handlers
handler = logging.handlers.SysLogHandler(address="/dev/log"); logger = logging.getLogger("vm")
logger.addHandler(handler); logger.warning("hello from the VM")
out["syslog"] = log.recv(64).decode()
# SO_PASSCRED: the receiver sees the sender's own ids.
log.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
handler.socket.sendmsg([b"with credentials"])
_, ancillary, _, _ = log.recvmsg(64, 64)
pid, uid, gid = struct.unpack("iII", ancillary[0][2])
out["credentials"] = [uid == os.getuid(), gid == os.getgid()]
claim = struct.pack("iII", os.getpid(), os.getuid(), os.getgid())  # its own: allowed, and translated
handler.socket.sendmsg([b"claimed"], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, claim)])
_, ancillary, _, _ = log.recvmsg(64, 64)
out["claimed"] = list(struct.unpack("iII", ancillary[0][2])[1:]) == [os.getuid(), os.getgid()]
# SCM_RIGHTS from one VM process to another.
left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
r, w = os.pipe()
child = os.fork()
if child == 0:
    _, fds, _, _ = socket.recv_fds(right, 16, 1); os.write(fds[0], b"through a passed fd"); os._exit(0)
socket.send_fds(left, [b"fd"], [w]); os.waitpid(child, 0)
out["rights"] = os.read(r, 64).decode()
try:
    socket.send_fds(left, [b"fd"], [999])
except OSError as e:
    out["bad_fd"] = e.errno
# sendmmsg: the first message goes, its msg_len is written back, 1 is returned.
libc = ctypes.CDLL(None, use_errno=True)
class Iovec(ctypes.Structure): _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint), ("iov", ctypes.POINTER(Iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
class Mmsghdr(ctypes.Structure): _fields_ = [("header", Msghdr), ("len", ctypes.c_uint)]
buffers = [ctypes.create_string_buffer(b"first"), ctypes.create_string_buffer(b"second")]
iovecs = [Iovec(ctypes.addressof(buffers[i]), 5 + i) for i in range(2)]
vector = (Mmsghdr * 2)()
for i in range(2):
    vector[i].header.iov = ctypes.pointer(iovecs[i]); vector[i].header.iovlen = 1
sent = libc.sendmmsg(left.fileno(), vector, 2, 0)
out["sendmmsg"] = [sent, vector[0].len, right.recv(16).decode()]
# A datagram socket disconnected with AF_UNSPEC, and bad lengths, as the kernel answers them.
libc.connect.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
handler.socket.connect("/dev/log"); out["unspec"] = libc.connect(handler.socket.fileno(), b"\0\0", 2)
try:
    handler.socket.send(b"x")
except OSError as e:
    out["after_unspec"] = e.errno
out["short"] = [libc.connect(left.fileno(), b"\1\0", 1), ctypes.get_errno()]
out["long"] = [libc.connect(left.fileno(), b"\1\0" + b"a" * 200, 202), ctypes.get_errno()]
print(json.dumps(out))
"""


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("runner", ["hvfs", pytest.param("rootless", marks=pytest.mark.rootless)])
def test_datagrams_abstract_names_and_passed_fds(runner: str, transport: str, request: pytest.FixtureRequest) -> None:
    """Over both transports: passed fds travel as SCM_RIGHTS to the manager over the socket one."""
    hvfs: Hvfs = request.getfixturevalue(runner).over(transport)
    for mode in ([], ["--strict"]):
        out = json.loads(hvfs.ok("run", *mode, "--", "python3", "-c", DATAGRAMS))
        assert out["abstract"] == ["abstract", b"\0hvfs-dgram\0".hex()]
        assert out["autobind"] == 6
        assert out["exchange"] == ["ping", "client", "pong"]
        assert out["syslog"].endswith("hello from the VM\x00")
        assert out["credentials"] == [True, True] and out["claimed"]
        assert out["rights"] == "through a passed fd"
        assert out["bad_fd"] == errno.EBADF
        assert out["sendmmsg"] == [1, 5, "first"]
        assert out["unspec"] == 0 and out["after_unspec"] == errno.ENOTCONN
        assert out["short"] == [-1, errno.EINVAL] and out["long"] == [-1, errno.EINVAL]


def test_a_vm_user_is_itself_to_a_receiver_asking_for_credentials(hvfs: Hvfs) -> None:
    program = (
        "import os, socket, struct\n"
        "r = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); r.bind('/tmp/r')\n"
        "r.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'x', '/tmp/r')\n"
        "print(*struct.unpack('iII', r.recvmsg(8, 64)[1][0][2])[1:])\n"
        "claim = struct.pack('iII', os.getpid(), 0, 0)\n"
        "try:\n"
        "    s.sendmsg([b'y'], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, claim)], 0, '/tmp/r')\n"
        "except PermissionError:\n"
        "    print('EPERM')\n"
    )
    assert hvfs.ok("run", "-u", "1000", "--", "python3", "-c", program).split() == ["1000", "1000", "EPERM"]


def test_host_datagram_sockets_need_a_volume_marked_sockets(hvfs: Hvfs, tmp_path: Path) -> None:
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(tmp_path / "host.dgram"))
    receiver.settimeout(10)
    program = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "try:\n"
        "    s.sendto(b'hello', '/data/host.dgram')\n"
        "except PermissionError:\n"
        "    sys.exit(3)\n"
    )
    with receiver:
        refused = hvfs.run("run", "-v", f"{tmp_path}:/data", "--", "python3", "-c", program)
        assert refused.returncode == 3 and "sockets" in refused.stderr
        hvfs.ok("run", "-v", f"{tmp_path}:/data:sockets", "--", "python3", "-c", program)
        assert receiver.recv(16) == b"hello"


def test_only_sends_that_may_name_a_destination_are_trapped(hvfs: Hvfs, tmp_path: Path) -> None:
    stats_file = tmp_path / "stats.json"
    program = (
        "import socket\n"
        "a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "for _ in range(5):\n"
        "    a.send(b'x'); b.recv(1)\n"  # sendto with a NULL address: native
        "for _ in range(2):\n"
        "    a.sendmsg([b'y']); b.recv(1)\n"  # the address is in memory: served
        "print(a.connect_ex(b'\\0hvfs-nobody'))\n"  # served, and refused by the kernel
    )
    out = hvfs.ok("run", "--stats", str(stats_file), "--", "python3", "-c", program)
    assert out.strip() == str(errno.ECONNREFUSED)
    requests = json.loads(stats_file.read_text())["requests"]
    assert requests["send"] == {"served": 2} and requests["connect"] == {"failed": 1}


def test_bad_socket_arguments_get_the_native_errnos(hvfs: Hvfs, tmp_path: Path) -> None:
    native, in_vm = tmp_path / "native", tmp_path / "vm"
    native.mkdir()
    in_vm.mkdir()
    probe = [str(PROBES / "socket_errnos.py")]
    expected = json.loads(subprocess.run(["python3", *probe, str(native)], check=True, capture_output=True).stdout)
    volumes = ["-v", f"{in_vm}:/work", "-v", f"{PROBES}:/probes:ro"]
    for mode in ([], ["--strict"]):
        out = hvfs.ok("run", *mode, *volumes, "--", "python3", "/probes/socket_errnos.py", "/work")
        assert json.loads(out) == expected
        (in_vm / "server").unlink()


# Calls that block: the manager never blocks in them; the driver waits for the caller,
# as the kernel would, and a signal ends the wait as it would end the call.
BLOCKING = r"""
import json, os, signal, socket, threading, time
out = {}
full, reader = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
full.setblocking(False)
try:
    while True:
        full.send(b"x" * 512)
except BlockingIOError:
    pass
full.setblocking(True)
# Senders blocked on the full queue: more of them than the manager has workers at first.
threads = [threading.Thread(target=full.sendmsg, args=([b"blocked"],)) for _ in range(6)]
for t in threads:
    t.start()
time.sleep(0.5)
# Meanwhile the VM's other calls are served.
with open("/tmp/written", "w") as f:
    f.write("served")
out["served"] = open("/tmp/written").read()
out["waiting"] = sum(t.is_alive() for t in threads)
reader.setblocking(False)
while any(t.is_alive() for t in threads):
    try:
        reader.recv(512)
    except BlockingIOError:
        time.sleep(0.01)
reader.setblocking(True)
out["done"] = True
# A signal ends a blocked send, as natively.
def interrupted(*_):
    raise TimeoutError()
signal.signal(signal.SIGALRM, interrupted)
try:
    while True:
        full.setblocking(False); full.send(b"x" * 512)
except BlockingIOError:
    full.setblocking(True)
signal.setitimer(signal.ITIMER_REAL, 0.3)
began = time.monotonic()
try:
    full.sendmsg([b"never"])
except TimeoutError:
    out["interrupted"] = round(time.monotonic() - began, 1)
# A blocking TCP connect.
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen()
client = socket.socket(); client.connect(server.getsockname())
out["tcp"] = client.getpeername() == server.getsockname()
out["refused"] = socket.socket().connect_ex(("127.0.0.1", 1)) == 111
# EPIPE comes with SIGPIPE, unless MSG_NOSIGNAL.
one, other = socket.socketpair(); other.close()
signal.signal(signal.SIGPIPE, lambda *_: out.__setitem__("sigpipe", True))
try:
    one.sendmsg([b"x"])
except BrokenPipeError:
    out["epipe"] = True
print(json.dumps(out))
"""


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("runner", ["hvfs", pytest.param("rootless", marks=pytest.mark.rootless)])
def test_blocking_socket_calls(runner: str, transport: str, request: pytest.FixtureRequest) -> None:
    """Over both transports: a WouldBlock lends the caller's own socket back."""
    hvfs: Hvfs = request.getfixturevalue(runner).over(transport)
    out = json.loads(hvfs.ok("run", "--", "python3", "-c", BLOCKING, timeout=60))
    assert out["served"] == "served" and out["waiting"] == 6 and out["done"]
    assert 0.2 <= out["interrupted"] <= 1.0
    assert out["tcp"] and out["refused"]
    assert out["sigpipe"] and out["epipe"]


FLINK = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for name, flags in (("empty-path", 0x1000), ("proc-path", 0x400)):
    fd = os.open("/data", os.O_TMPFILE | os.O_WRONLY, 0o640)
    os.write(fd, name.encode())
    if flags == 0x1000:
        r = libc.linkat(fd, b"", -100, f"/data/{name}".encode(), flags)
    else:
        r = libc.linkat(-100, f"/proc/self/fd/{fd}".encode(), -100, f"/data/{name}".encode(), flags)
    print(name, r, ctypes.get_errno() if r else 0)
fd = os.open("/data/empty-path", os.O_RDONLY)  # a file the VM opened read-only, linked by its fd
r = libc.linkat(-100, f"/proc/self/fd/{fd}".encode(), -100, b"/data/again", 0x400)
print("again", r, ctypes.get_errno() if r else 0)
"""


def test_open_files_can_be_linked_in(hvfs: Hvfs, tmp_path: Path) -> None:
    out = hvfs.ok("run", "-v", f"{tmp_path}:/data", "--", "python3", "-c", FLINK)
    assert out.splitlines() == ["empty-path 0 0", "proc-path 0 0", "again 0 0"]
    assert (tmp_path / "empty-path").read_text() == "empty-path"
    assert (tmp_path / "proc-path").read_text() == "proc-path"
    assert (tmp_path / "again").stat().st_ino == (tmp_path / "empty-path").stat().st_ino
    assert oct((tmp_path / "proc-path").stat().st_mode & 0o777) == "0o640"


def test_the_same_in_strict_mode(hvfs: Hvfs, tmp_path: Path) -> None:
    out = hvfs.ok("run", "--strict", "-v", f"{tmp_path}:/data", "--", "python3", "-c", FLINK)
    assert out.splitlines() == ["empty-path 0 0", "proc-path 0 0", "again 0 0"]
    sock = hvfs.ok("run", "--strict", "--", "python3", "-c", SERVER, "/tmp/s")
    assert sock.split()[:2] == ["ping", "0"]
    subprocess.run(["true"], check=True)
