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
from tests.conftest import require

# Runs traced: it does what a program may do, and prints what each step saw.
PROGRAM = r"""
import json, os, signal, subprocess, sys, threading
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
seen["refused"] = subprocess.run([sys.argv[1]]).returncode
print(json.dumps(seen), flush=True)
"""


LOADER = "/lib64/ld-linux-x86-64.so.2"


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
    code, out, tracer = run_traced([sys.executable, "-c", PROGRAM, str(refused)], judge)
    assert code == 0
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
    # Each program, then the ELF interpreter the kernel loaded for it (PT_INTERP); the
    # refused program is killed before its interpreter is even asked about.
    paths = [path for _, path, _ in judge.judged]
    assert paths.count("/usr/bin/true") == 3 and paths.count(os.path.realpath(sys.executable)) == 2, paths
    assert paths.count(os.path.realpath(LOADER)) == 5, paths
    assert [(path, bad) for _, path, bad in judge.judged if bad] == [(str(refused), True)]
    statistics = tracer.statistics()
    assert (statistics.execs, statistics.killed, statistics.unjudged) == (6, 1, 0)
    assert statistics.tracees == 0  # every tracee has exited


def run_traced(argv: list[str], judge: Judge) -> tuple[int, str, ExecTracer]:
    """Runs ``argv`` traced from its exec on, and returns its exit code (as its shell says
    it: 128+N for signal N), its output and the tracer. It is a grandchild of this process,
    which must never trace its own children; its shell's exit code shows the tracer never
    reaped that one."""
    go_read, go_write = os.pipe()
    # The inner shell says its pid once it runs (so its own exec is not traced), and
    # waits for the go-ahead on fd 3: a background job's stdin is /dev/null.
    wrapper = """exec 3<&0; sh -c 'echo $$; read go; exec "$@"' sh "$@" <&3 & wait $!; exit $(($? + 100))"""
    shell = subprocess.Popen(["sh", "-c", wrapper, "sh", *argv], stdin=go_read, stdout=subprocess.PIPE, text=True)
    os.close(go_read)
    assert shell.stdout is not None
    tracer = ExecTracer(int(shell.stdout.readline()), "vm1", judge)
    tracer.start()
    os.write(go_write, b"go\n")
    os.close(go_write)
    out, _ = shell.communicate(timeout=60)
    assert tracer.join(timeout=10), "the tracer outlived its last tracee"
    assert shell.returncode >= 100, shell.returncode
    return shell.returncode - 100, out, tracer


def test_a_program_whose_interpreter_is_refused_is_killed(tmp_path: Path) -> None:
    require(shutil.which("gcc") is not None, "gcc is needed to build a program with its own interpreter")
    require(os.path.exists(LOADER), f"{LOADER} is the x86-64 glibc loader this test copies")
    loader = tmp_path / "loader"
    loader.write_bytes(Path(LOADER).read_bytes() + b"another loader")  # not the system's
    loader.chmod(0o755)
    source = tmp_path / "clean.c"
    source.write_text("int main(void) { return 5; }\n")
    program = tmp_path / "clean"
    subprocess.run(["gcc", "-o", str(program), f"-Wl,--dynamic-linker={loader}", str(source)], check=True)
    assert subprocess.run([str(program)]).returncode == 5  # it runs, with its own loader
    judge = Judge({hashlib.sha256(loader.read_bytes()).hexdigest()})
    code, _, tracer = run_traced([str(program)], judge)
    assert code == 128 + 9, code  # SIGKILL
    assert [(path, bad) for _, path, bad in judge.judged][-2:] == [(str(program), False), (str(loader), True)]
    assert tracer.statistics().killed == 1


def test_a_process_that_cannot_be_traced_is_reported() -> None:
    with pytest.raises(OSError) as raised:
        ExecTracer(2**22 + 1, "vm1", Judge(set())).start()  # above pid_max's ceiling: no process
    assert raised.value.errno == errno.ESRCH
