"""The files the workloads work on, made once per session before anything is timed.

A session lives in one temporary directory:

    ROOT/work        WORK, bound writable at its own path into every sandbox
    ROOT/work/bin    openbench and floor, compiled for this session, and strict.bpf
    ROOT/templates   what a mutating workload gets a fresh copy of before each run
    ROOT/scratch     stdout, stderr and --stats files of the run in progress
    ROOT/hvfs-src    a copy of the hvfs package, which the hvfs runners import

Everything is generated from fixed seeds, so two sessions do the same work.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PYLIB_SOURCE = Path("/usr/lib/python3.11")
# Old enough that nothing is "racily clean" for git: see make_git_repo.
PAST = 1_600_000_000


@dataclass(frozen=True)
class Layout:
    """Where one session keeps things (see the module docstring)."""

    root: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def bin(self) -> Path:
        return self.work / "bin"

    @property
    def templates(self) -> Path:
        return self.root / "templates"

    @property
    def scratch(self) -> Path:
        return self.root / "scratch"

    @property
    def hvfs_source(self) -> Path:
        return self.root / "hvfs-src"

    @property
    def baseline_source(self) -> Path:
        return self.root / "hvfs-base"


def make_layout() -> Layout:
    """A new session directory. It is on the same disk as /tmp (not a tmpfs here), so
    fsync and the page cache behave as for real work."""
    layout = Layout(Path(tempfile.mkdtemp(prefix="hvfs-bench-")))
    # The sandboxes may run as other ids than ours (proot, user namespaces): let them in.
    os.chmod(layout.root, 0o755)
    for directory in (layout.work, layout.bin, layout.templates, layout.scratch, layout.work / "tmp"):
        directory.mkdir(parents=True)
    (layout.work / "home").mkdir()
    return layout


def give_work(layout: Layout, user: str) -> None:
    """WORK and everything in it made USER's ("UID:GID"), for a runner whose VM runs as that
    user: its workloads create and write files there (W3, W6, W7, W8), which the root-owned
    tree the resets leave would refuse it. Root's runners still write there (DAC overridden)."""
    uid, gid = (int(part) for part in user.split(":"))
    for directory, names, files in os.walk(layout.work):
        os.chown(directory, uid, gid)
        for name in names + files:
            os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)


def snapshot_hvfs(layout: Layout, source: Path = REPO / "hvfs", target: Path | None = None) -> str:
    """Copies the hvfs package (the work tree's, or ``source``) for the session and returns
    a digest of its sources.

    HVFS is developed while benchmarks run: importing it from the work tree would mix
    versions within one session, or catch a file half-edited. The digest tells two
    sessions' versions apart where the commit does not (uncommitted changes)."""
    target = target or layout.hvfs_source
    shutil.copytree(source, target / "hvfs", ignore=shutil.ignore_patterns("__pycache__"))
    digest = hashlib.sha256()
    for path in sorted((target / "hvfs").rglob("*.py")):
        digest.update(path.relative_to(target).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def build_binaries(layout: Layout) -> list[str]:
    """Compiles openbench and the floor supervisor into WORK/bin, and writes the floor's
    strict filter there; returns the failures, each one line, so that the runners needing
    them can be skipped with a reason."""
    failures = []
    for name, source in (("openbench", HERE / "openbench.c"), ("floor", HERE / "floor" / "floor.c")):
        failure = compile_c(source, layout.bin / name)
        if failure is not None:
            failures.append(f"{name}: {failure}")
    failure = write_strict_filter(layout.hvfs_source, layout.bin / STRICT_FILTER)
    if failure is not None:
        failures.append(f"{STRICT_FILTER}: {failure}")
    (layout.work / "file").write_text("x\n")
    return failures


def compile_c(source: Path, binary: Path) -> str | None:
    """Compiles ``source`` (and the headers beside it) into ``binary``; why not, in one line."""
    compiled = subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(source)], capture_output=True, text=True)
    return None if compiled.returncode == 0 else str(compiled.stderr.strip().splitlines()[-1:])


STRICT_FILTER = "strict.bpf"  # in WORK/bin: the floor's strict:FILE
# The program `hvfs run --strict` gives its VMs, from the seccomp backend hvfs run uses.
_STRICT_PROGRAM = """import sys
from hvfs.intercept.arch import native
from hvfs.intercept.backend import SeccompBackend
sys.stdout.buffer.write(SeccompBackend().filter_program(True, native()))
"""


def write_strict_filter(package: Path, target: Path) -> str | None:
    """Writes the BPF program that the hvfs package in ``package`` (a directory holding
    ``hvfs``) loads in a ``--strict`` VM to ``target``, for the floor's strict mode: the
    floor then traps exactly what HVFS traps. Returns why it could not, in one line."""
    made = subprocess.run(
        [sys.executable, "-c", _STRICT_PROGRAM], env={**os.environ, "PYTHONPATH": str(package)}, capture_output=True
    )
    if made.returncode != 0 or not made.stdout:
        return made.stderr.decode(errors="replace").strip().splitlines()[-1:][0] if made.stderr else "no program"
    target.write_bytes(made.stdout)
    return None


def build_front(layout: Layout, source: Path, copy: Path, name: str) -> str | None:
    """Compiles the native front (``native/client/`` beside the package ``source``, as
    scripts/setup does) into WORK/bin/NAME, for the session's copy of that package at
    ``copy`` (the ``hvfs`` directory); returns why it could not, in one line.

    The front talks only to a manager of its own code (the package's directory and its
    hvfs-init's build time: hvfs/hypervisor/version.py), so each copy of the package needs a
    front built for it; the client it hands over to is this interpreter's ``-m hvfs``, which
    imports the copy through the runner's PYTHONPATH."""
    sources = sorted((source.parent / "native" / "client").glob("*.c"))
    if not sources:
        return f"no native/client/*.c beside {source}"
    version = re.search(r'__version__ = "([^"]+)"', (copy / "__init__.py").read_text())
    defines = [
        f'-DHVFS_PYTHON="{sys.executable}"',
        f'-DHVFS_PACKAGE="{copy}"',
        f'-DHVFS_VERSION="{version.group(1) if version else ""}"',
    ]
    compiled = subprocess.run(
        ["gcc", "-O2", "-Wall", *defines, "-o", str(layout.bin / name), *map(str, sources)],
        capture_output=True,
        text=True,
    )
    if compiled.returncode != 0:
        return f"{name}: {compiled.stderr.strip().splitlines()[-1:]}"
    return None


def copy_pylib(layout: Layout) -> None:
    """W2's tree: the standard library, about 1,400 files in 120 directories."""
    shutil.copytree(PYLIB_SOURCE, layout.work / "pylib", symlinks=True)


def make_tarball(layout: Layout, files: int = 3000, per_directory: int = 100) -> None:
    """W3's tarball: ``files`` small files (100 B to 4 KiB) in directories of ``per_directory``."""
    rng = random.Random(3)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for index in range(files):
            data = rng.randbytes(rng.randint(100, 4096))
            info = tarfile.TarInfo(f"tree/d{index // per_directory:03}/f{index:05}.dat")
            info.size, info.mode, info.mtime = len(data), 0o644, PAST
            tar.addfile(info, io.BytesIO(data))
    (layout.work / "w3.tar").write_bytes(buffer.getvalue())


class Unavailable(Exception):
    """A workload this session cannot run here; the message says why."""


def tmpfs_dir(layout: Layout) -> Path:
    """W3t's directory: a tmpfs mounted inside WORK, so every sandbox sees it where it sees WORK."""
    return layout.work / "tmpfs"


def mount_tmpfs(layout: Layout) -> None:
    """W3t's fixtures: W3's tarball, and a tmpfs at ``tmpfs_dir``.

    The same untar on the disk (W3) waits on ext4's journal and writeback now and then, which
    makes its times bimodal on a shared machine, bubblewrap's and native's too; on a tmpfs
    what is left is the syscalls and their serving, the figure issue 14 compares with the
    floor."""
    if not (layout.work / "w3.tar").exists():
        make_tarball(layout)
    target = tmpfs_dir(layout)
    target.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        raise Unavailable("mounting its tmpfs needs root (run the suite as root)")
    mode = f"mode={os.stat(layout.work).st_mode & 0o7777:o}"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=512m,{mode}", "hvfs-bench", str(target)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise Unavailable(f"mount -t tmpfs failed: {done.stderr.strip()}")


def unmount_tmpfs(layout: Layout) -> None:
    """Undoes ``mount_tmpfs`` (lazily: a sandbox still ending may hold it)."""
    if os.path.ismount(tmpfs_dir(layout)):
        subprocess.run(["umount", "-l", str(tmpfs_dir(layout))], check=False)


def make_c_project(layout: Layout, modules: int = 19, functions: int = 40) -> None:
    """W4's project: ``modules`` generated C files plus main.c (20 files), and a Makefile.

    Each function has loops and a switch so that gcc -O2 has real work, about 0.1 s per
    file, as in a small real project."""
    project = layout.templates / "cproj"
    project.mkdir()
    calls = []
    for module in range(modules):
        lines = ["#include <stdint.h>", ""]
        for function in range(functions):
            name = f"m{module:02}_f{function:02}"
            calls.append(name)
            lines += [
                f"uint64_t {name}(uint64_t x) {{",
                "    uint64_t acc = x;",
                f"    for (int i = 0; i < {16 + function}; i++) {{",
                f"        switch ((acc + i) % {3 + function % 5}) {{",
                f"        case 0: acc = acc * {2 * function + 3} + i; break;",
                f"        case 1: acc ^= acc >> {1 + function % 13}; break;",
                f"        case 2: acc += (acc << {1 + module % 7}) | i; break;",
                "        default: acc -= i * 7;",
                "        }",
                "    }",
                "    return acc;",
                "}",
                "",
            ]
        (project / f"mod{module:02}.c").write_text("\n".join(lines))
    main = ["#include <stdint.h>", "#include <stdio.h>"]
    main += [f"uint64_t {name}(uint64_t);" for name in calls]
    main += ["int main(void) {", "    uint64_t acc = 1;"]
    main += [f"    acc = {name}(acc);" for name in calls]
    main += ['    printf("%llu\\n", (unsigned long long)acc);', "    return 0;", "}", ""]
    (project / "main.c").write_text("\n".join(main))
    objects = " ".join([f"mod{m:02}.o" for m in range(modules)] + ["main.o"])
    (project / "Makefile").write_text(
        f"CC = gcc\nCFLAGS = -O2\nOBJECTS = {objects}\n\n"
        "prog: $(OBJECTS)\n\t$(CC) -o $@ $(OBJECTS)\n\n"
        "%.o: %.c\n\t$(CC) $(CFLAGS) -c -o $@ $<\n"
    )


def make_git_repo(layout: Layout, files: int = 2000, per_directory: int = 50, commits: int = 10) -> None:
    """W5's repository: ``files`` text files, ``commits`` commits touching 5% of them each.

    Every file's mtime is set well in the past and the index refreshed afterwards, so no
    entry is "racily clean" (mtime not older than the index): git then trusts the stat
    data and compares no contents, as in a repository one works in every day."""
    repo = layout.templates / "repo"
    repo.mkdir()
    rng = random.Random(5)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(layout.work / "home"),
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    }

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=repo, env=env, check=True)

    paths = [repo / f"src{index // per_directory:02}" / f"file{index:04}.txt" for index in range(files)]
    for path in paths:
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(f"line {n} of {path.name}\n" for n in range(rng.randint(5, 60))))
    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "initial import")
    for commit in range(1, commits):
        for path in rng.sample(paths, files // 20):
            with path.open("a") as text:
                text.write(f"change {commit}\n")
        git("commit", "-q", "-a", "-m", f"change {commit}")
    for path in paths:
        os.utime(path, (PAST, PAST))
    git("status", "--porcelain")  # rewrites the index with the new stat data


def write_sqlite_script(layout: Layout, transactions: int = 50, per_transaction: int = 100) -> None:
    """W6's program: ``transactions`` × ``per_transaction`` inserts, one statement each."""
    (layout.work / "w6.py").write_text(
        "import sqlite3\n"
        "db = sqlite3.connect('w6.db')\n"
        "db.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, value REAL)')\n"
        "db.commit()\n"
        f"for batch in range({transactions}):\n"
        "    with db:\n"
        f"        for i in range({per_transaction}):\n"
        "            db.execute('INSERT INTO t (name, value) VALUES (?, ?)', (f'row {batch}-{i}', i * 0.5))\n"
        "print(db.execute('SELECT count(*) FROM t').fetchone()[0])\n"
    )
