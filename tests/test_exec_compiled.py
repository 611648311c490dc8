"""An exec continued by the seccomp driver's C loop (hvfs/intercept/compiled.py
``EXEC_IF_LEADER``, hvfs/_native/exec_leader.h): only where the manager checks no exec
(not strict), only for a caller that is its process's leader, and only after a bump of the
credential generation; an exec of another thread (which takes over its leader's pid: the
kept credentials must be distrusted) and every exec of a strict VM are Python's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hvfs import _native
from hvfs.intercept import compiled
from hvfs.intercept.arch import native as native_arch
from hvfs.intercept.credcache import TID_BUCKETS, CredWatch
from hvfs.intercept.filter import syscall_numbers
from tests.conftest import Hvfs, require

NATIVE = "the native hot path is not built or HVFS_NATIVE=0: the C loop does not run"


def test_execs_are_compiled_only_where_the_manager_checks_none() -> None:
    arch = native_arch()
    numbers = {name: nr for nr, name in syscall_numbers(arch).items()}
    unchecked = compiled.rules(arch, checks_exec=False)
    for name in ("execve", "execveat"):
        assert unchecked[numbers[name]] == compiled.Rule(compiled.EXEC_IF_LEADER), name
        assert numbers[name] not in compiled.rules(arch, checks_exec=True), name
        assert numbers[name] not in compiled.rules(arch, python={numbers[name]}, checks_exec=False), name
    # Nothing else changes with it: the other credential calls are decided alike either way
    # (tests/test_creds_compiled.py), and umask stays Python's.
    for name in ("setuid", "setgroups", "capset"):
        assert unchecked[numbers[name]] == compiled.Rule(compiled.BUMP_CONTINUE), name
    assert numbers["umask"] not in unchecked
    checked = compiled.rules(arch, checks_exec=True)
    assert {nr: rule for nr, rule in unchecked.items() if rule.kind != compiled.EXEC_IF_LEADER} == checked


def test_a_bump_made_in_c_turns_what_was_kept_unusable() -> None:
    watch = CredWatch()
    before = watch.generation
    assert watch.usable(before)
    compiled_bumps = memoryview(watch.bumps).cast("Q")
    compiled_bumps[0] += 1  # as exec_of_leader's atomic add
    assert watch.generation == before + 1
    assert not watch.usable(before)
    watch.changed()
    assert watch.generation == before + 2


def test_a_threads_bump_made_in_c_turns_only_its_bucket_unusable() -> None:
    watch = CredWatch()
    mine, other, alike = 4242, 4243, 4242 + TID_BUCKETS
    kept = {tid: watch.generation_of(tid) for tid in (mine, other, alike)}
    memoryview(watch.bumps).cast("Q")[1 + mine % TID_BUCKETS] += 1  # as exec_of_leader's atomic add
    assert not watch.usable(kept[mine], mine)
    assert not watch.usable(kept[alike], alike)  # a thread of the same bucket: stale too
    assert watch.usable(kept[other], other)
    assert watch.generation_of(mine) == kept[mine] + 1 and watch.generation_of(other) == kept[other]
    watch.changed()  # Python's bumps stay the whole VM's
    assert not watch.usable(kept[other], other)


# Run in a process of its own: the filter (execve trapped, everything else allowed) stays on
# the thread that loads it, and the children it forks inherit it. Each case forks a child
# that execs /bin/true, from its leader or from another thread, and serves it with the C
# loop until a thread sees the child exit and stops the loop.
_LISTENER_SCRIPT = r"""
import json, os, sys, threading
import pyseccomp as sc
from hvfs import _native
from hvfs._sys import notify, process
from hvfs._sys.abi import PR_SET_NO_NEW_PRIVS
from hvfs.intercept import compiled
from hvfs.intercept.arch import native
from hvfs.intercept.credcache import TID_BUCKETS
from hvfs.intercept.filter import syscall_numbers

execve = {name: nr for nr, name in syscall_numbers(native()).items()}["execve"]
program = sc.SyscallFilter(sc.ALLOW)
program.set_attr(sc.Attr.CTL_NNP, 0)
program.add_rule(sc.NOTIFY, "execve")
memfd = os.memfd_create("filter")
with os.fdopen(os.dup(memfd), "wb") as sink:
    program.export_bpf(sink)
process.prctl(PR_SET_NO_NEW_PRIVS, 1)
listener = process.load_seccomp_filter(os.pread(memfd, 1 << 16, 0), process.SECCOMP_FILTER_FLAG_NEW_LISTENER)
tables = compiled.table({execve: compiled.Rule(compiled.EXEC_IF_LEADER)})
report = {}

def child(from_thread):
    pid = os.fork()
    if pid == 0:
        run = lambda: os.execv("/bin/true", ["true"])
        if from_thread:
            threading.Thread(target=run).start()
            threading.Event().wait(30)
            os._exit(3)
        run()
    return pid

def stop_after(pid, stop, codes):
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    os.write(stop, b"x")

def serve(name, from_thread, with_bumps):
    pid = child(from_thread)
    counts, bumps, codes = bytearray(compiled.COUNTS.size), bytearray(8 * (1 + TID_BUCKETS)), []
    stop_read, stop_write = os.pipe()
    waiter = threading.Thread(target=stop_after, args=(pid, stop_write, codes))
    waiter.start()
    handed = []
    while True:
        got = _native.hotpath.serve(listener, stop_read, *tables, None, 0, 0, counts, False,
                                    bumps if with_bumps else None)
        if got is None:
            break
        handed.append(got[1] != pid)  # the thread's own number, not its leader's
        notify.respond(listener, got[0], flags=notify.SECCOMP_USER_NOTIF_FLAG_CONTINUE)
    waiter.join()
    report[name] = {"codes": codes, "counts": compiled.COUNTS.unpack_from(counts),
                    "bumps": sum(memoryview(bumps).cast("Q")),
                    "its_bucket": memoryview(bumps).cast("Q")[1 + pid % TID_BUCKETS], "handed_not_leader": handed}

serve("leader", False, True)
serve("thread", True, True)
serve("no_bumps", False, False)
print(json.dumps(report))
"""


def test_the_c_loop_continues_a_leaders_exec_and_hands_another_threads_to_python(tmp_path: Path) -> None:
    require(_native.hotpath is not None, NATIVE)
    script = tmp_path / "listener.py"
    script.write_text(_LISTENER_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # The leader's exec: continued in C (counted so), its thread's bucket of the generation
    # bumped once (no other part), true ran.
    assert report["leader"] == {"codes": [0], "counts": [1, 0, 0], "bumps": 1, "its_bucket": 1, "handed_not_leader": []}
    # Another thread's: handed to Python untouched (no bump), then continued there.
    thread = {"codes": [0], "counts": [0, 0, 1], "bumps": 0, "its_bucket": 0, "handed_not_leader": [True]}
    assert report["thread"] == thread
    # Without a generation to bump, nothing is continued in C.
    assert report["no_bumps"] == {**thread, "handed_not_leader": [False]}


_THREAD_EXEC = (
    "import os, sys, threading\n"
    "run = lambda: os.execv(sys.executable, [sys.executable, '-c', 'print(\"executed x\")'])\n"
    "{how}\n"
    "threading.Event().wait(30)\n"
)


def _stats(hvfs: Hvfs, tmp_path: Path, how: str, *flags: str) -> tuple[str, dict[str, object]]:
    stats = tmp_path / "stats.json"
    out = hvfs.ok("run", *flags, "--stats", str(stats), "--", "python3", "-c", _THREAD_EXEC.format(how=how))
    return out, json.loads(stats.read_text())


def test_in_a_vm_a_thread_exec_still_distrusts_and_a_leader_exec_does_not(hvfs: Hvfs, tmp_path: Path) -> None:
    require(_native.hotpath is not None, NATIVE)
    out, leader = _stats(hvfs, tmp_path, "run()")
    assert out == "executed x\n"
    assert leader["credentials"]["trusted"] == 1, leader  # type: ignore[index]
    assert leader["compiled"]["continued"] >= 1, leader  # type: ignore[index]
    out, thread = _stats(hvfs, tmp_path, "threading.Thread(target=run).start()")
    assert out == "executed x\n"
    assert thread["credentials"]["trusted"] == 0, thread  # type: ignore[index]


def test_a_strict_vm_hands_every_exec_to_python(hvfs: Hvfs, tmp_path: Path) -> None:
    out, strict = _stats(hvfs, tmp_path, "run()", "--strict")
    assert out == "executed x\n"
    compiled_counts = strict["compiled"]
    assert isinstance(compiled_counts, dict)
    # What C continues in a strict VM is only its served stats and opens declined to the VM
    # (a missing file, a FIFO): no exec among them.
    served_continued = sum(n for key, n in compiled_counts.items() if key.endswith("_continued"))
    assert compiled_counts["continued"] == served_continued, compiled_counts
    assert compiled_counts["handed_to_python"] >= 2, compiled_counts
