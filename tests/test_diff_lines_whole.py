"""``hvfs run --diff`` and the lines the manager tells its client share the client's stderr:
the manager writes the diff there at the VM's exit, while the client may still be printing
refusals the VM's last requests caused. Every line arrives whole (hvfs/_sys/lines.py).

CI once lost ``C /data``, the first line of test_served_pathmeta's diff, so: the client printed
a told line's text and its newline in two writes, the manager's diff landed between them,
and its first line ran on after a refusal of /dev/null's chmod."""

from __future__ import annotations

import fcntl
import os
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from hvfs._sys.lines import write_lines
from tests.conftest import REPO, Hvfs

F_SETPIPE_SZ = 1031  # fcntl(2); Python's fcntl has it from 3.10, typeshed not on every version
FILES = 300  # a diff of some 11 KB: more than the stderr pipe below holds at once
REFUSALS = 200  # a line told for each, as the VM's last requests (vm.warn_once: each a text of its own)
ROUNDS = 5  # before the fix, every round lost a line (10 of 10 on a loaded machine, 2026-12-07)
PROBE = r"""
import os, sys
for i in range(int(sys.argv[1])):
    open(f"/data/file-with-a-long-name-{i}", "w").close()
for i in range(int(sys.argv[2])):
    try:
        os.chmod("/dev" + "/" * (i + 1) + "null", 0o600)  # EPERM, and a line told to the client
    except PermissionError:
        pass
"""
REFUSED = re.compile(r"hvfs: VM \S+: chmod of the device node /dev/+null refused: its metadata is the host's")


def _packets(sock: socket.socket) -> list[bytes]:
    """What was sent on a SOCK_SEQPACKET socket, one packet per write(2) of the other end."""
    found = []
    while select.select([sock], [], [], 0)[0]:
        found.append(sock.recv(1 << 20))
    return found


def test_each_write_ends_at_a_line_end_and_holds_at_most_pipe_buf() -> None:
    short = b"".join(b"C /data/file-%d\n" % i for i in range(1000))
    long_line = b"A /" + b"x" * (select.PIPE_BUF + 10) + b"\n"
    data = short + long_line + b"D /tail"  # a long line, and a last one without its newline
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with mine, theirs:
        mine.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        write_lines(mine.fileno(), data)
        writes = _packets(theirs)
    assert b"".join(writes) == data
    assert len(writes) > 3 and all(len(w) <= select.PIPE_BUF for w in writes if w != long_line)
    assert long_line in writes and writes[-1].endswith(b"D /tail")
    assert all(w.endswith(b"\n") for w in writes[:-1])


def test_a_told_line_is_one_write_with_its_newline() -> None:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with mine, theirs:
        told = "from hvfs.client.session import told; told({'stderr': 'hvfs: VM v: é refused'})"
        subprocess.run([sys.executable, "-c", told], stderr=mine, check=True, cwd=REPO, timeout=60)
        assert _packets(theirs) == ["hvfs: VM v: é refused\n".encode()]


def _slowly(fd: int) -> bytes:
    """All of the pipe ``fd``, read a little at a time: its writers wait for room, side by side."""
    got = b""
    while chunk := os.read(fd, 512):
        got += chunk
        time.sleep(0.002)
    return got


def test_the_diff_and_the_told_refusals_arrive_line_by_line(hvfs: Hvfs, tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    (tmp_path / "probe").mkdir(mode=0o755)
    (tmp_path / "probe" / "probe.py").write_text(PROBE)
    diff = ["C /data", *sorted(f"A /data/file-with-a-long-name-{i}" for i in range(FILES))]
    for round in range(ROUNDS):
        data = tmp_path / f"data{round}"
        data.mkdir()
        read, write = os.pipe()
        fcntl.fcntl(write, F_SETPIPE_SZ, 4096)  # one page: the client's lines and the diff wait for room together
        args = ["run", "--diff", "-v", f"{data}:/data", "-v", f"{tmp_path / 'probe'}:/probe:ro", "--"]
        with subprocess.Popen([*hvfs.command, *args, "python3", "/probe/probe.py", str(FILES), str(REFUSALS)],
                              stdout=subprocess.DEVNULL, stderr=write, cwd="/") as run:  # fmt: skip
            os.close(write)
            try:
                lines = _slowly(read).decode().splitlines()
            finally:
                os.close(read)
            assert run.wait(timeout=120) == 0, lines[-5:]
        told = [line for line in lines if REFUSED.fullmatch(line)]
        assert [line for line in lines if line not in told] == diff, round
        assert len(told) == REFUSALS, round
