"""hvfs._sys.spawn: posix_spawn with the GIL released (a VM's hvfs-init is spawned with it,
and the manager's other threads must go on meanwhile), and the same child as
os.posix_spawn makes: its file actions, session, signal mask and dispositions."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

from hvfs._sys.spawn import posix_spawn


def test_other_threads_run_while_the_child_starts(tmp_path: Path) -> None:
    """The child blocks in its file actions (opening FIFOs) until a Python thread of this
    process opens them too: with the GIL held by the spawn, that thread could not, and
    only the shell started below (10 s later) would let the spawn end."""
    first, second = tmp_path / "first", tmp_path / "second"
    os.mkfifo(first)
    os.mkfifo(second)
    rescue = subprocess.Popen(["sh", "-c", f"sleep 10; exec 3>{second} 4>{first}"])
    seen: list[bool] = []
    returned = threading.Event()

    def helper() -> None:
        os.close(os.open(first, os.O_WRONLY))  # the child has opened the first: the spawn is under way
        seen.append(returned.is_set())  # Python runs while the child waits on the second
        os.close(os.open(second, os.O_WRONLY))

    thread = threading.Thread(target=helper)
    thread.start()
    try:
        pid = posix_spawn("/bin/true", ["true"], {}, file_actions=[
            (os.POSIX_SPAWN_OPEN, 5, str(first), os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 6, str(second), os.O_RDONLY, 0),
        ])  # fmt: skip
        returned.set()
        thread.join()
        assert os.waitpid(pid, 0)[1] == 0
    finally:
        rescue.kill()
        rescue.wait()
    assert seen == [False], "the spawn held the GIL until the child exec'd"


def _child_state(spawn: object) -> str:
    read, write = os.pipe()
    signals = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
    script = 'echo "$*"; grep -E "^(SigBlk|SigIgn|NSpgid|NSsid)" /proc/self/status; ls /proc/self/fd; env'
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # the child must not keep it
    try:
        pid = spawn(  # type: ignore[operator]
            "/bin/sh", ["sh", "-c", script, "sh", "a b"], {"ONLY": "this"},
            file_actions=[(os.POSIX_SPAWN_DUP2, write, 1), (os.POSIX_SPAWN_CLOSE, read)],
            setsid=True, setsigmask=(), setsigdef=signals,
        )  # fmt: skip
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
    os.close(write)
    with os.fdopen(read) as output:
        found = output.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0
    return found.replace(str(pid), "PID")


def test_the_child_is_the_one_os_posix_spawn_makes() -> None:
    mine, theirs = _child_state(posix_spawn), _child_state(os.posix_spawn)
    assert mine == theirs
    assert "a b\n" in mine and "ONLY=this" in mine and "NSsid:\tPID" in mine and "SigBlk:\t0000000000000000" in mine


def test_a_missing_program_is_an_oserror() -> None:
    try:
        posix_spawn("/nonexistent/hvfs-init", ["x"], {})
    except OSError as e:
        assert e.errno == 2 and e.filename == "/nonexistent/hvfs-init"
    else:
        raise AssertionError("spawned a program that does not exist")
