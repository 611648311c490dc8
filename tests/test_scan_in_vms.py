"""The scanner in real VMs: it judges the very file a VM gets or runs.

An open is judged on the fd the manager is about to hand out; an exec before the fact by
its path and after it on the file the kernel loaded (a process that got past the first
check is killed, 137); nothing a VM reads is left to the kernel by a path it may still
change. (The races themselves: tests/adversarial/test_scan_races.py.)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from hvfs.services.scan import EICAR
from tests.conftest import Hvfs, require

LOADER = "/lib64/ld-linux-x86-64.so.2"


class Guarded:
    """``hvfs run --scan`` with a blocklist, a quarantine, an audit and statistics."""

    def __init__(self, hvfs: Hvfs, root: Path) -> None:
        self.hvfs, self.root = hvfs, root
        self.data = root / "data"
        self.data.mkdir()
        self.blocklist = root / "blocklist"
        self.blocklist.write_text("")

    def block(self, *files: Path) -> None:
        with self.blocklist.open("a") as f:
            for file in files:
                f.write(f"{hashlib.sha256(file.read_bytes()).hexdigest()} {file.name}\n")

    def run(self, script: str, *, volume: str = "/data:ro") -> tuple[str, str]:
        target, _, mode = volume.partition(":")
        mount = f"{self.data}:{target}" + (f":{mode}" if mode else "")
        result = self.hvfs.run("run", "--scan", "--blocklist", str(self.blocklist), "--quarantine",
                               str(self.root / "q"), "--audit", str(self.root / "audit.jsonl"), "--stats",
                               str(self.root / "stats.json"), "-v", mount, "--", "sh", "-c", script)  # fmt: skip
        assert "Traceback" not in result.stderr, result.stderr
        return result.stdout, result.stderr

    def quarantined(self) -> list[str]:
        out = self.hvfs.ok("quarantine", "list", "--store", str(self.root / "q"))
        return [line.split()[3] for line in out.splitlines()]

    def events(self, operation: str) -> list[dict[str, object]]:
        lines = (self.root / "audit.jsonl").read_text().splitlines()
        return [e for e in map(json.loads, lines) if e["operation"] == operation]


@pytest.fixture
def guarded(hvfs: Hvfs, tmp_path: Path) -> Guarded:
    return Guarded(hvfs, tmp_path)


def test_an_infected_file_that_stays_is_refused_on_every_open_and_quarantined_once(guarded: Guarded) -> None:
    (guarded.data / "eicar.com").write_bytes(EICAR)
    out, err = guarded.run("for i in 1 2 3 4 5; do cat /data/eicar.com; echo status=$?; done")
    assert out.split() == ["status=1"] * 5 and err.count("Permission denied") == 5
    assert (guarded.data / "eicar.com").exists()  # a read-only volume: it stays where it is
    assert guarded.quarantined() == ["/data/eicar.com"]  # one verdict, one entry
    assert [e["paths"] for e in guarded.events("quarantine")] == [["/data/eicar.com"]]
    denied = [e for e in guarded.events("open") if e["paths"] == ["/data/eicar.com"]]
    assert [(e["result"], e["answered_by"]) for e in denied] == [("EACCES", "scan")] * 5


def test_a_program_loaded_without_its_own_request_is_killed_after_the_fact(guarded: Guarded) -> None:
    # A script's interpreter is loaded by the kernel from the script's first line: only the
    # script was checked before the exec; the interpreter is judged at the exec stop.
    shutil.copy("/bin/false", guarded.data / "interpreter")
    guarded.block(guarded.data / "interpreter")
    out, err = guarded.run(
        "printf '#!/data/interpreter\\n' > /tmp/script; chmod +x /tmp/script; /tmp/script; echo status=$?"
    )
    assert out.strip() == "status=137", err  # killed before it ran: false would have said 1
    assert guarded.quarantined() == ["/data/interpreter"]
    assert [e["paths"] for e in guarded.events("quarantine")] == [["/data/interpreter"]]
    executed = [e for e in guarded.events("executed") if e["paths"] == ["/data/interpreter"]]
    assert [(e["result"], e["answered_by"]) for e in executed] == [("EACCES", "scan")]
    stats = json.loads((guarded.root / "stats.json").read_text())
    assert stats["exec_tracer"]["killed"] == 1 and stats["exec_tracer"]["execs"] >= 3


def test_a_program_whose_loader_is_blocklisted_is_killed_after_the_fact(guarded: Guarded, tmp_path: Path) -> None:
    # The kernel loads a program's ELF interpreter by the path the program names: no
    # request shows it to the manager, whose exec tracer finds it mapped at the exec stop.
    require(shutil.which("gcc") is not None, "gcc is needed to build a program with its own loader")
    require(Path(LOADER).exists(), f"{LOADER} is the x86-64 glibc loader this test copies")
    loader = guarded.data / "loader"
    loader.write_bytes(Path(LOADER).read_bytes() + b"a loader of its own")
    loader.chmod(0o755)
    guarded.block(loader)
    source = tmp_path / "clean.c"
    source.write_text("int main(void) { return 5; }\n")
    program = guarded.data / "clean"
    subprocess.run(["gcc", "-o", str(program), "-Wl,--dynamic-linker=/data/loader", str(source)], check=True)
    out, err = guarded.run("/data/clean; echo status=$?")
    assert out.strip() == "status=137", err  # it would have said 5
    assert guarded.quarantined() == ["/data/loader"]
    executed = [(e["paths"], e["result"]) for e in guarded.events("executed") if "/data/" in str(e["paths"])]
    assert executed == [(["/data/clean"], "ok"), (["/data/loader"], "EACCES")]


FEXECVE_O_PATH = (
    "import os\n"
    "fd = os.open('/data/tool', os.O_PATH)\n"  # left to the kernel: no content through it
    "try:\n"
    "    os.execve(fd, ['tool'], {})\n"
    "except OSError as e:\n"
    "    print(os.strerror(e.errno))\n"
)


def test_an_o_path_fd_is_judged_before_it_is_executed(guarded: Guarded) -> None:
    shutil.copy("/bin/false", guarded.data / "tool")
    guarded.block(guarded.data / "tool")
    out, err = guarded.run(f'python3 -c "{FEXECVE_O_PATH}"')
    assert out == "Permission denied\n", err
    assert guarded.quarantined() == ["/data/tool"]


def test_files_reached_through_another_process_links_are_judged(guarded: Guarded) -> None:
    (guarded.data / "eicar.com").write_bytes(EICAR)
    (guarded.data / "clean").write_text("clean\n")
    script = (
        "cat /proc/1/root/data/eicar.com; echo root=$?; cat /proc/1/root/data/clean; "
        "cd /data; cat /proc/$$/cwd/eicar.com; echo cwd=$?; cat /proc/$$/cwd/clean; "
        "exec 3</data; cat /proc/$$/fd/3/clean; cat /proc/$$/fd/3/eicar.com; echo fd=$?"
    )
    out, err = guarded.run(script)
    assert out.split() == ["root=1", "clean", "cwd=1", "clean", "clean", "fd=1"], err
    assert err.count("Permission denied") == 3
    assert guarded.quarantined() == ["/data/eicar.com"]  # by the path that names it in the VM
    opened = [e for e in guarded.events("open") if str(e["paths"][0]).endswith(("/clean", "/eicar.com"))]  # type: ignore[index]
    assert len(opened) == 6 and all(e["result"] != "continued" for e in opened), opened
    # The audit names what was served: the clean file itself, however the VM reached it.
    assert [e["paths"] for e in opened if e["result"] == "ok"] == [["/data/clean"]] * 3, opened


OPENAT2_O_PATH = (
    "import ctypes, os, struct\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "how = struct.pack('QQQ', os.O_PATH, 0, 0)\n"
    "fd = libc.syscall(437, -100, b'/data/clean', how, len(how))\n"
    "print(os.strerror(ctypes.get_errno()) if fd < 0 else 'opened')\n"
)


def test_what_the_kernel_must_still_open_works_while_scanning(guarded: Guarded) -> None:
    (guarded.data / "clean").write_text("clean\n")
    script = (
        "echo piped | cat /dev/stdin; head -c 4 /dev/urandom | wc -c; grep -c ' / ' /etc/mtab; "
        "cat /data/missing; echo missing=$?; "
        f'python3 -c "{OPENAT2_O_PATH}"'
    )
    out, err = guarded.run(script)
    lines = out.splitlines()
    assert lines[:2] == ["piped", "4"] and int(lines[2]) >= 1, (out, err)
    assert lines[3] == "missing=1" and "No such file" in err
    # openat2 carries its flags in memory, where O_PATH could become O_RDONLY once the
    # manager has looked: refused, which makes callers fall back to openat.
    assert lines[4] == "Function not implemented"
