"""Unix sockets and links of open files: names made by the manager on the VM's behalf."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import threading
from pathlib import Path

from tests.conftest import Hvfs

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
