"""The services with real VMs: backup, scanning, fault injection and audit, driven the way
a user drives them (``hvfs run`` flags, a project's ``[services]`` table, the commands
that read what they left)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOTLESS_USER, Hvfs, chown_to

EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
MARKER = "hvfs-test-marker-5d1f0c"
YARA_RULE = f'rule hvfs_test_marker {{ strings: $m = "{MARKER}" condition: $m }}\n'


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _versions(hvfs: Hvfs, store: Path, glob: str = "*") -> list[list[str]]:
    """``hvfs backup list`` rows: time, VM, trigger, size, hash prefix, path."""
    return [line.split() for line in hvfs.ok("backup", "list", "--store", str(store), glob).splitlines()]


def test_three_changes_make_three_versions_each_restored_exactly(hvfs: Hvfs, tmp_path: Path) -> None:
    data, source, store = tmp_path / "data", tmp_path / "src", tmp_path / "store"
    data.mkdir()
    source.mkdir()
    contents = [os.urandom(5000), b"two\n", os.urandom(70000) + b"\0three"]
    for n, content in enumerate(contents):
        (source / f"v{n}").write_bytes(content)
    hvfs.ok(
        "run", "--name", "notes", "-v", f"{data}:/data", "-v", f"{source}:/src:ro",
        "--backup", "/data/*", "--backup-store", str(store), "--",
        "sh", "-c", "cp /src/v0 /data/notes && cp /src/v1 /data/notes && cp /src/v2 /data/notes",
    )  # fmt: skip
    versions = _versions(hvfs, store)
    assert [(v[1], v[5]) for v in versions] == [("notes", "/data/notes")] * 3
    for n, version in enumerate(versions):
        out = tmp_path / f"restored{n}"
        hvfs.ok("backup", "restore", "/data/notes", "--store", str(store), "--at", version[0], "--to", str(out))
        assert (out / "notes").read_bytes() == contents[n]


def test_a_tree_restored_as_of_a_time_is_the_tree_then(hvfs: Hvfs, tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    data.mkdir()
    steps = [
        "mkdir -p /data/app/sub && echo a > /data/app/a && echo b > /data/app/sub/b && echo c > /data/app/c",
        "echo a2 >> /data/app/a && rm /data/app/c && mv /data/app/sub/b /data/app/b && echo d > /data/app/sub/d",
        "rm -r /data/app/sub && echo new > /data/app/b && tar -cf /data/app/t.tar -C /data/app a b",
    ]
    moments, trees = [], []
    for step in steps:
        hvfs.ok("run", "--name", "tree", "-v", f"{data}:/data", "--backup", "/data/*", "--backup-store", str(store),
                "--", "sh", "-c", step)  # fmt: skip
        moments.append(str(time.time()))
        trees.append(_files(data / "app"))
        time.sleep(0.05)  # the next step's changes are strictly later
    for n, (moment, tree) in enumerate(zip(moments, trees, strict=True)):
        out = tmp_path / f"as-of-{n}"
        hvfs.ok("backup", "restore", "/data/app", "--store", str(store), "--at", moment, "--to", str(out))
        assert _files(out) == tree, f"as of step {n}"


def test_identical_files_in_two_vms_are_stored_once(hvfs: Hvfs, tmp_path: Path) -> None:
    store = tmp_path / "store"
    content = os.urandom(1 << 20)
    (tmp_path / "blob").write_bytes(content)
    saved = []
    for vm in ("first", "second"):
        (tmp_path / vm).mkdir()
        stats = tmp_path / f"{vm}.json"
        hvfs.ok("run", "--name", vm, "-v", f"{tmp_path / vm}:/data", "-v", f"{tmp_path / 'blob'}:/blob:ro",
                "--backup", "/data/*", "--backup-store", str(store), "--stats", str(stats),
                "--", "cp", "/blob", "/data/copy")  # fmt: skip
        saved.append(json.loads(stats.read_text())["services"]["backup"])
    assert [(s["saved"], s["new_blobs"]) for s in saved] == [(1, 1), (1, 0)]
    versions = _versions(hvfs, store)
    assert sorted(v[1] for v in versions) == ["first", "second"] and versions[0][4] == versions[1][4]
    blobs = [p for p in (store / "blobs").rglob("*") if p.is_file()]
    assert [p.read_bytes() == content for p in blobs] == [True]


class Project:
    def __init__(self, hvfs: Hvfs, directory: Path) -> None:
        self.hvfs, self.directory, self.file = hvfs, directory, str(directory / "hvfs.toml")

    def run(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.hvfs.run("-f", self.file, *args, **kwargs)  # type: ignore[arg-type]

    def ok(self, *args: str, **kwargs: object) -> str:
        return self.hvfs.ok("-f", self.file, *args, **kwargs)

    def events(self, *filters: str) -> list[dict[str, object]]:
        out = self.hvfs.ok("events", "--json", str(self.directory / "audit.jsonl"), *filters)
        return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def guarded(hvfs: Hvfs, tmp_path: Path) -> Iterator[Project]:
    """Two VMs sharing a memory file system, under one manager that scans, backs up and audits."""
    (tmp_path / "rules.yar").write_text(YARA_RULE)
    (tmp_path / "hvfs.toml").write_text(
        """
name = "guarded"
[sources.shared]
type = "memory"
size = "64m"
[vms.a]
command = "sleep infinity"
mounts = [{ source = "shared", target = "/shared" }]
[vms.b]
command = "sleep infinity"
mounts = [{ source = "shared", target = "/shared" }]
[services]
scan = true
yara = ["rules.yar"]
quarantine = "quarantine"
audit = "audit.jsonl"
backup = ["/shared/*"]
backup_store = "backup"
"""
    )
    project = Project(hvfs, tmp_path)
    project.ok("up", "-d")
    yield project
    project.run("down")


def _write(project: Project, vm: str, path: str, content: str) -> None:
    program = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"
    project.ok("exec", vm, "--", "python3", "-c", program, path, content)


@pytest.mark.parametrize("content", [f"{EICAR}\n", f"notes\n{MARKER}\nmore\n"], ids=["eicar", "yara"])
def test_a_file_infected_in_one_vm_is_refused_in_another_and_quarantined(guarded: Project, content: str) -> None:
    _write(guarded, "a", "/shared/payload", content)
    refused = guarded.run("exec", "b", "--", "cat", "/shared/payload")
    assert refused.returncode == 1 and "Permission denied" in refused.stderr and content not in refused.stdout
    gone = guarded.run("exec", "a", "--", "ls", "/shared/payload")
    assert gone.returncode != 0 and "No such file" in gone.stderr  # moved out, for every VM
    listing = guarded.hvfs.ok("quarantine", "list", "--store", str(guarded.directory / "quarantine"))
    assert "/shared/payload" in listing
    events = guarded.events("--op", "quarantine")
    assert [(e["vm"], e["paths"], e["result"]) for e in events] == [("b", ["/shared/payload"], "EACCES")]
    denied = [e for e in guarded.events("--vm", "b", "--op", "open") if e["answered_by"] == "scan"]
    assert [(e["paths"], e["result"]) for e in denied] == [(["/shared/payload"], "EACCES")]
    entry = listing.split()[0]
    restored = guarded.directory / "restored"
    guarded.hvfs.ok("quarantine", "restore", entry, "--store", str(guarded.directory / "quarantine"),
                    "--to", str(restored))  # fmt: skip
    assert restored.read_text() == content


def test_a_clean_file_is_scanned_once(hvfs: Hvfs, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "clean").write_bytes(os.urandom(4 << 20))
    scans = []
    for reads in (1, 5):
        stats = tmp_path / f"stats{reads}.json"
        loop = f"for i in $(seq {reads}); do cat /data/clean >/dev/null; done"
        hvfs.ok("run", "--scan", "--quarantine", str(tmp_path / "q"), "-v", f"{tmp_path / 'data'}:/data",
                "--stats", str(stats), "--", "sh", "-c", loop)  # fmt: skip
        scans.append(json.loads(stats.read_text())["services"]["scan"])
    # Four more reads of the file (and runs of cat): no more scans, four more cache answers.
    assert scans[1]["scanned"] == scans[0]["scanned"] and scans[1]["cached"] >= scans[0]["cached"] + 4, scans
    assert scans[0]["infected"] == scans[1]["infected"] == 0


def test_restore_into_a_running_vm_goes_through_its_manager(guarded: Project) -> None:
    for text in ("first\n", "second\n", "third\n"):
        _write(guarded, "a", "/shared/doc", text)
        time.sleep(0.05)
    guarded.ok("exec", "a", "--", "rm", "/shared/doc")
    store = str(guarded.directory / "backup")
    rows = _versions(guarded.hvfs, Path(store), "/shared/doc")
    assert [row[2] for row in rows][-1] == "removed"
    second = rows[1][0]
    stream = subprocess.run(
        [*guarded.hvfs.command, "backup", "restore", "/shared/doc", "--store", store, "--at", second, "--to", "-"],
        capture_output=True,
        check=True,
    ).stdout
    guarded.ok("exec", "-i", "b", "--", "tar", "-x", "-C", "/shared", input=stream)
    assert guarded.ok("exec", "a", "--", "cat", "/shared/doc") == "second\n"
    written = [e for e in guarded.events("--vm", "b", "--path", "/shared/doc") if e["operation"] == "open"]
    assert written and written[0]["result"] == "ok"  # the restore was a request like any other


def test_the_nth_matching_open_fails_and_only_it(hvfs: Hvfs, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    for name in ("app.db", "notes.txt"):
        (tmp_path / "data" / name).write_text(name)
    program = (
        "import os\n"
        "for path in ['/data/app.db', '/data/notes.txt', '/data/app.db', '/data/app.db', '/data/app.db']:\n"
        "    try:\n"
        "        os.close(os.open(path, os.O_RDONLY)); print(path, 'ok')\n"
        "    except OSError as e:\n"
        "        print(path, os.strerror(e.errno))\n"
    )
    audit = tmp_path / "audit.jsonl"
    out = hvfs.ok("run", "-v", f"{tmp_path / 'data'}:/data", "--audit", str(audit),
                  "--fault", "op=open,path=/data/*.db,errno=EIO,nth=3", "--", "python3", "-c", program)  # fmt: skip
    assert out.splitlines() == [
        "/data/app.db ok",
        "/data/notes.txt ok",
        "/data/app.db ok",
        "/data/app.db Input/output error",
        "/data/app.db ok",
    ]
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    faulted = [e for e in events if e["answered_by"] == "faults"]
    assert [(e["operation"], e["paths"], e["result"]) for e in faulted] == [("open", ["/data/app.db"], "EIO")]


def test_a_latency_rule_delays_the_matching_calls(hvfs: Hvfs, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    for name in ("slow", "fast"):
        (tmp_path / "data" / name).write_text(name)
    program = (
        "import os, time\n"
        "for path in ['/data/fast', '/data/slow', '/data/fast', '/data/slow']:\n"
        "    began = time.monotonic(); os.stat(path); print(path, time.monotonic() - began)\n"
    )
    out = hvfs.ok("run", "-v", f"{tmp_path / 'data'}:/data", "--fault", "op=stat,path=/data/slow,delay=300ms",
                  "--", "python3", "-c", program)  # fmt: skip
    took: dict[str, list[float]] = {}
    for line in out.splitlines():
        path, seconds = line.split()
        took.setdefault(path, []).append(float(seconds))
    assert all(0.29 <= s < 5 for s in took["/data/slow"]), took  # loose: the delay, and not much more
    assert all(s < 0.29 for s in took["/data/fast"]), took


def test_sqlite_under_enospc_fails_cleanly_and_its_database_stays_valid(hvfs: Hvfs, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["sqlite3", str(data / "app.db"), "create table t(n); insert into t values (1), (2);"], check=True)
    full = hvfs.run("run", "-v", f"{data}:/data", "--fault", "op=open,path=/data/app.db-journal,errno=ENOSPC",
                    "--", "sqlite3", "/data/app.db", "insert into t values (3); insert into t values (4);")  # fmt: skip
    # SQLite reports a journal it cannot create as "unable to open database file".
    assert full.returncode != 0 and re.search(r"unable to open|disk is full", full.stderr), full.stderr
    assert "Traceback" not in full.stderr
    check = hvfs.ok("run", "-v", f"{data}:/data", "--", "sqlite3", "/data/app.db",
                    "pragma integrity_check; select group_concat(n) from t;")  # fmt: skip
    assert check.split() == ["ok", "1,2"]
    real = tmp_path / "real"
    real.mkdir()
    subprocess.run(["sqlite3", str(real / "app.db"), "create table t(n); insert into t values (1);"], check=True)
    # A real ENOSPC from a size-limited memory mount, for I/O on open files.
    script = (
        "cp /src/app.db /small/ && "
        "sqlite3 /small/app.db 'insert into t select randomblob(100000) from (select 1 union select 2 union select 3)';"
        " "
        "echo status=$?; sqlite3 /small/app.db 'pragma integrity_check; select count(*) from t;'"
    )
    filled = hvfs.run("run", "--tmpfs", "/small:size=256k", "-v", f"{real}:/src:ro", "--", "sh", "-c", script)
    assert "full" in filled.stderr.lower(), filled.stderr
    assert re.findall(r"status=(\d+)", filled.stdout) != ["0"] and filled.stdout.split()[-2:] == ["ok", "1"]


def test_the_audit_has_every_mutation_the_vm_made(hvfs: Hvfs, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    program = (
        "import os, collections\n"
        "made = collections.Counter()\n"
        "for i in range(200):\n"
        "    p = f'/data/f{i}'\n"
        "    with open(p, 'w') as f: f.write(str(i))\n"
        "    made['open'] += 1\n"
        "    if i % 3 == 0: os.rename(p, p + '.r'); made['rename'] += 1\n"
        "    elif i % 3 == 1: os.unlink(p); made['unlink'] += 1\n"
        "    else: os.chmod(p, 0o600); made['chmod'] += 1\n"
        "os.mkdir('/data/d'); made['mkdir'] += 1\n"
        "os.symlink('f2', '/data/link'); made['symlink'] += 1\n"
        "print(dict(made))\n"
    )
    audit, stats = tmp_path / "audit.jsonl", tmp_path / "stats.json"
    out = hvfs.ok("run", "-v", f"{tmp_path / 'data'}:/data", "--audit", str(audit), "--stats", str(stats),
                  "--", "python3", "-c", program)  # fmt: skip
    made = eval(out)  # the VM's own count of what it did
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    on_data = [e for e in events if e["paths"] and e["paths"][0].startswith("/data/") and e["result"] == "ok"]
    seen: dict[str, int] = {}
    for event in on_data:
        seen[event["operation"]] = seen.get(event["operation"], 0) + 1
    assert seen == made
    counted = json.loads(stats.read_text())
    assert len(events) == counted["served"] + counted["continued"] + counted["failed"]
    assert counted["services"]["events_dropped"] == 0


def test_names_that_are_not_utf8_keep_no_call_out_of_the_audit(hvfs: Hvfs, tmp_path: Path) -> None:
    """A VM that names its files with bytes UTF-8 cannot decode (and renames its threads so)
    is audited as any other: every call is in the file, each name as its JSON escape, and
    ``hvfs events`` prints them. Before, each such name cost the audit its whole batch."""
    (tmp_path / "data").mkdir()
    program = (
        "import os, ctypes\n"
        "ctypes.CDLL(None).prctl(15, b'n\\xffme', 0, 0, 0)\n"  # PR_SET_NAME: a comm that is not UTF-8
        "for i in range(100):\n"
        "    open(f'/data/ok{i}', 'w').close()\n"
        "    open(b'/data/\\xff\\xfe%d' % i, 'w').close()\n"
    )
    audit, stats = tmp_path / "audit.jsonl", tmp_path / "stats.json"
    hvfs.ok("run", "-v", f"{tmp_path / 'data'}:/data", "--audit", str(audit), "--stats", str(stats),
            "--", "python3", "-c", program)  # fmt: skip
    assert len(os.listdir(tmp_path / "data")) == 200
    lines = audit.read_bytes().decode().splitlines()  # UTF-8 throughout
    events = [json.loads(line) for line in lines]
    opened = {os.fsencode(e["paths"][0]) for e in events if e["operation"] == "open" and e["result"] == "ok"}
    assert {b"/data/\xff\xfe%d" % i for i in range(100)} | {b"/data/ok%d" % i for i in range(100)} <= opened
    assert any(e["comm"] == "n\ufffdme" for e in events)  # a thread's name is read with errors replaced
    counted = json.loads(stats.read_text())
    assert len(events) == counted["served"] + counted["continued"] + counted["failed"]
    assert counted["services"]["events_dropped"] == 0
    shown = subprocess.run([*hvfs.command, "events", "--op", "open", str(audit)], capture_output=True, check=True)
    assert b"/data/\xff\xfe99 " in shown.stdout and not shown.stderr


def test_events_follow_a_running_vm(hvfs: Hvfs, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    audit = tmp_path / "audit.jsonl"
    with subprocess.Popen(
        [*hvfs.command, "events", "--follow", "--op", "mkdir", str(audit)], stdout=subprocess.PIPE, text=True
    ) as follow:
        try:
            steps = "mkdir /data/one; sleep 1; mkdir /data/two; sleep 30"
            vm = subprocess.Popen([*hvfs.command, "run", "-v", f"{tmp_path / 'data'}:/data", "--audit", str(audit),
                                   "--", "sh", "-c", steps])  # fmt: skip
            assert follow.stdout is not None
            lines = [follow.stdout.readline(), follow.stdout.readline()]
            assert vm.poll() is None  # seen live, while the VM still runs
            assert ["/data/one" in lines[0], "/data/two" in lines[1]] == [True, True], lines
            vm.terminate()
            assert vm.wait(timeout=30) != 0
        finally:
            follow.terminate()


def test_services_work_rootless(rootless: Hvfs, shared_tmp: Path) -> None:
    data = shared_tmp / "data"
    data.mkdir()
    chown_to(shared_tmp, ROOTLESS_USER)
    store, quarantine = shared_tmp / "store", shared_tmp / "q"
    script = f"echo one > /data/f; echo two > /data/f; printf '%s' '{EICAR}' > /data/e; cat /data/e"
    refused = rootless.run("run", "-v", f"{data}:/data", "--scan", "--quarantine", str(quarantine),
                           "--backup", "/data/*", "--backup-store", str(store), "--", "sh", "-c", script)  # fmt: skip
    # The manager's lines share the VM's stderr, and may fall between cat's "cat: " and its message.
    # The manager's own lines share the VM's stderr and may land inside cat's line, which
    # cat writes in parts: the VM's words are read with them taken out.
    vm_said = re.sub(r"hvfs: [^\n]*?(quarantined as|found by) [^\n]*\n", "", refused.stderr)
    assert refused.returncode == 1 and "/data/e: Permission denied" in vm_said, refused.stderr
    assert [row[5] for row in _versions(rootless, store, "/data/f")] == ["/data/f", "/data/f"]
    assert "/data/e" in rootless.ok("quarantine", "list", "--store", str(quarantine))
    assert not (data / "e").exists()


MEMFD_EXEC = """
import os, sys
fd = os.memfd_create("prog", 0)
os.write(fd, sys.argv[1].encode())
os.fchmod(fd, 0o755)
try:
    os.execve(fd if sys.argv[2] == "fexecve" else f"/proc/self/fd/{fd}", ["prog"], {"PATH": "/usr/bin:/bin"})
except OSError as e:
    print(os.strerror(e.errno))
"""


@pytest.mark.parametrize("how", ["fexecve", "proc"])
def test_a_program_run_from_memory_is_scanned_rootless(rootless: Hvfs, shared_tmp: Path, how: str) -> None:
    """Rootless, memfds may be executed (vm.memfd_noexec is the host's): the fd is scanned."""
    scan = ("run", "--scan", "--quarantine", str(shared_tmp / "q"), "--", "python3", "-c", MEMFD_EXEC)
    assert rootless.ok(*scan, "#!/bin/sh\necho clean\n", how) == "clean\n"
    assert rootless.ok(*scan, EICAR, how) == "Permission denied\n"
    assert rootless.ok("run", "--", "python3", "-c", MEMFD_EXEC, EICAR, how) == "Exec format error\n"


def test_memfds_cannot_be_executed_as_root_while_scanning(hvfs: Hvfs, tmp_path: Path) -> None:
    out = hvfs.run("run", "--scan", "--quarantine", str(tmp_path / "q"), "--", "python3", "-c", MEMFD_EXEC,
                   "#!/bin/sh\necho clean\n", "fexecve")  # fmt: skip
    assert out.returncode == 1 and "PermissionError" in out.stderr and "clean" not in out.stdout  # sealed noexec
