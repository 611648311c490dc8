"""The exec tracer on real processes: every exec judged after the fact, a refused one
killed before it runs, and the traced programs none the wiser (forks, vforks, threads,
signals, job control, exit codes)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hvfs import api
from hvfs.intercept.exec_tracer import ExecTracer

# Runs traced. It waits for its go-ahead on the fd given as argv[1], then does what a
# program may do, and prints what each step saw.
PROGRAM = r"""
import json, os, signal, subprocess, sys, threading
os.read(int(sys.argv[1]), 1)
seen = {}
seen["fork_exec"] = subprocess.run(["/bin/true"]).returncode
seen["spawn"] = os.waitpid(os.posix_spawn("/bin/true", ["true"], {}), 0)[1]  # vfork
got = []
signal.signal(signal.SIGUSR1, lambda *_: got.append(1))
os.kill(os.getpid(), signal.SIGUSR1)
seen["signal_handled"] = got == [1]
results = []
thread = threading.Thread(target=lambda: results.append(sum(range(1000))))
thread.start(); thread.join()
seen["thread"] = results == [499500]
child = os.fork()
if child == 0:
    os.kill(os.getpid(), signal.SIGSTOP)
    os._exit(7)
_, status = os.waitpid(child, os.WUNTRACED)
seen["stopped"] = os.WIFSTOPPED(status)  # stays stopped, as job control wants
os.kill(child, signal.SIGCONT)
seen["continued_exit"] = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
code = "import os, threading; threading.Thread(target=os.execv, args=('/bin/true', ['true'])).start()"
seen["exec_from_thread"] = subprocess.run([sys.executable, "-c", code]).returncode
seen["refused"] = subprocess.run([sys.argv[2]]).returncode
print(json.dumps(seen), flush=True)
"""


class Judge:
    """Implements Transport as the manager would for a scanner: refuses the files whose
    SHA-256 it was given, reading each from the fd the tracer opened."""

    def __init__(self, refused: set[str]) -> None:
        self.refused = refused
        self.judged: list[tuple[int, str, bool]] = []
        self.lock = threading.Lock()

    def handle_request(self, request: api.Request) -> api.Response:
        assert isinstance(request, api.Executed)
        digest = hashlib.sha256(os.pread(request.file.fd, 1 << 26, 0)).hexdigest()
        with self.lock:
            self.judged.append((request.caller.pid, request.file.path, digest in self.refused))
        return api.Errno(errno.EACCES) if digest in self.refused else api.Value(0)

    def close(self) -> None:
        pass


def test_every_exec_is_judged_and_a_refused_one_is_killed_before_it_runs(tmp_path: Path) -> None:
    refused = tmp_path / "refused"
    shutil.copy("/bin/false", refused)  # if it ran it would exit 1; killed, it exits -9
    judge = Judge({hashlib.sha256(refused.read_bytes()).hexdigest()})
    go_read, go_write = os.pipe()
    # The traced program is a grandchild: the tracer must never trace a child of its own
    # process. The shell's own exit code shows the tracer never reaped it.
    script = f'"$0" -c "$1" {go_read} {refused} & echo $!; wait $!; echo "python=$?" >&2; exit 3'
    shell = subprocess.Popen(["sh", "-c", script, sys.executable, PROGRAM], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, pass_fds=(go_read,), text=True)  # fmt: skip
    os.close(go_read)
    assert shell.stdout is not None
    traced = int(shell.stdout.readline())
    tracer = ExecTracer(traced, "vm1", judge)
    tracer.start()
    os.write(go_write, b"g")
    os.close(go_write)
    out, err = shell.communicate(timeout=60)
    assert tracer.join(timeout=10), "the tracer outlived its last tracee"
    assert shell.returncode == 3, err
    assert "python=0" in err, err
    seen = json.loads(out)
    assert seen == {
        "fork_exec": 0,
        "spawn": 0,
        "signal_handled": True,
        "thread": True,
        "stopped": True,
        "continued_exit": 7,
        "exec_from_thread": 0,
        "refused": -9,
    }
    paths = [path for _, path, _ in judge.judged]
    assert paths.count("/usr/bin/true") == 3 and paths.count(os.path.realpath(sys.executable)) == 1, paths
    assert [(path, bad) for _, path, bad in judge.judged if bad] == [(str(refused), True)]
    statistics = tracer.statistics()
    assert (statistics.execs, statistics.killed, statistics.unjudged) == (len(judge.judged), 1, 0)
    assert statistics.tracees == 0  # every tracee has exited


def test_a_process_that_cannot_be_traced_is_reported() -> None:
    with pytest.raises(OSError) as raised:
        ExecTracer(2**22 + 1, "vm1", Judge(set())).start()  # above pid_max's ceiling: no process
    assert raised.value.errno == errno.ESRCH
