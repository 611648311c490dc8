"""Real programs in VMs, working on served mounts: git, sqlite3, venv and pip, make. Archivers and unix
sockets are in test_programs_files.py.

Every test runs four ways: as root and rootless (the unprivileged user ``hvfs-rootless``), each with the
default driver (reads run natively on the boot view) and with ``--strict`` (reads are served too). What a
program leaves behind is checked on the host, with the host's own tools where they exist (``git fsck``,
Python's ``sqlite3``), so a test passes only if the program really worked, not merely exited 0.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import sqlite3
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.conftest import SOCKET_VARIANTS, VARIANTS, Vm, require

# ---------------------------------------------------------------------------------------------------------------------
# Reading what a VM printed and left behind


def host_git(repo: Path, *args: str) -> str:
    # The repository may belong to hvfs-rootless; git refuses other users' repositories unless told.
    result = subprocess.run(
        ["git", "-c", "safe.directory=*", "-C", str(repo), *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"host git {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def section(output: str, name: str) -> list[str]:
    """The lines a VM script printed between ``== name`` and the next ``==`` marker."""
    lines = output.splitlines()
    start = lines.index(f"== {name}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("== ")), len(lines))
    return lines[start:end]


# ---------------------------------------------------------------------------------------------------------------------
# git

GIT_SCRIPT = """
git init -q -b main repo
cd repo
git config user.name 'HVFS Test'
git config user.email hvfs@example.invalid
mkdir -p src docs
printf 'hello\\n' > README
printf '#!/bin/sh\\necho run\\n' > run.sh
chmod +x run.sh
printf 'int main(void) { return 0; }\\n' > src/main.c
printf 'notes\\n' > docs/notes.txt
ln -s README link
git add -A
echo '== staged'
git status --porcelain
git commit -q -m 'first commit'
printf 'more\\n' >> README
git rm -q docs/notes.txt
git commit -q -a -m 'second commit'
git gc -q
echo '== clean'
git status --porcelain
echo '== log'
git log --format=%s
cd ..
git clone -q repo clone
echo '== clone'
git -C clone log --format=%s
"""


@pytest.mark.parametrize("vm", VARIANTS + SOCKET_VARIANTS, indirect=True)
def test_git_init_add_commit_gc(vm: Vm, data: Path) -> None:
    """git can create a repository on a served mount, commit twice, repack it, and the host's git finds it valid.

    git exercises lock files renamed into place, object files made read-only, directories created on demand,
    a symlink in the tree, ``gc`` (packing, pruning loose objects, unlinking empty directories) and a local
    clone, which hard-links the objects of the repository it clones.
    """
    out = vm.sh(GIT_SCRIPT, volumes=[f"{data}:/data"], workdir="/data")

    assert sorted(section(out, "staged")) == ["A  README", "A  docs/notes.txt", "A  link", "A  run.sh", "A  src/main.c"]
    assert section(out, "clean") == []
    assert section(out, "log") == ["second commit", "first commit"]
    assert section(out, "clone") == ["second commit", "first commit"]

    repo = data / "repo"
    host_git(repo, "fsck", "--full", "--strict", "--no-dangling")
    assert host_git(repo, "log", "--format=%s").splitlines() == ["second commit", "first commit"]
    assert host_git(repo, "ls-tree", "-r", "--name-only", "HEAD").split() == ["README", "link", "run.sh", "src/main.c"]
    assert host_git(repo, "status", "--porcelain") == ""
    assert host_git(repo, "count-objects", "-v").count("count: 0") == 1  # gc packed every loose object
    assert (repo / "README").read_text() == "hello\nmore\n"
    assert os.readlink(repo / "link") == "README"
    assert os.stat(repo / "run.sh").st_mode & 0o111
    # a local clone hard-links the pack instead of copying it
    host_git(data / "clone", "fsck", "--full", "--strict", "--no-dangling")
    (pack,) = (data / "clone/.git/objects/pack").glob("*.pack")
    assert pack.stat().st_nlink == 2


# ---------------------------------------------------------------------------------------------------------------------
# sqlite3


def sqlite_script(journal_mode: str, transactions: int = 3, rows_per_transaction: int = 100) -> str:
    """SQL for the sqlite3 CLI: a table filled row by row in a few transactions, then some deletes."""
    lines = [
        f"PRAGMA journal_mode={journal_mode};",
        "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, payload TEXT NOT NULL);",
        "CREATE INDEX items_name ON items(name);",
    ]
    for t in range(transactions):
        lines.append("BEGIN;")
        for r in range(rows_per_transaction):
            n = t * rows_per_transaction + r
            lines.append(f"INSERT INTO items(name, payload) VALUES ('item-{n}', '{'x' * (n % 200)}');")
        lines.append("COMMIT;")
    lines += [
        "DELETE FROM items WHERE id % 10 = 0;",
        "SELECT count(*) FROM items;",
        "PRAGMA integrity_check;",
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("vm", VARIANTS + SOCKET_VARIANTS, indirect=True)
@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_sqlite3_cli_writes_a_sound_database(vm: Vm, data: Path, journal_mode: str) -> None:
    """The sqlite3 CLI builds a database with WAL or a rollback journal; the host reads it back intact.

    WAL needs a shared-memory index (``-shm``, mmapped MAP_SHARED) and a ``-wal`` file checkpointed and
    removed at close; the rollback journal is created and unlinked at every commit. Both need POSIX locks.
    """
    require(shutil.which("sqlite3") is not None, "the sqlite3 CLI (Debian package sqlite3) is needed")
    out = vm.run(["sqlite3", "-bail", "/data/db.sqlite"], volumes=[f"{data}:/data"], input=sqlite_script(journal_mode))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [journal_mode, "270", "ok"]
    # a second process in another VM sees the same database
    again = vm.run(["sqlite3", "/data/db.sqlite", "SELECT count(*), max(id) FROM items;"], volumes=[f"{data}:/data"])
    assert again.stdout.strip() == "270|299", again.stderr

    # the last connection's close checkpoints and removes the WAL, and no rollback journal is left behind
    assert sorted(p.name for p in data.iterdir()) == ["db.sqlite"]
    with contextlib.closing(sqlite3.connect(data / "db.sqlite")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == (journal_mode,)
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("SELECT count(*), count(DISTINCT name) FROM items").fetchone() == (270, 270)
        assert db.execute("SELECT name FROM items WHERE id = 299").fetchone() == ("item-298",)


# ---------------------------------------------------------------------------------------------------------------------
# python3 -m venv and an offline pip install


def build_wheel(directory: Path, name: str = "hvfsprobe", version: str = "1.0") -> Path:
    """A minimal pure-Python wheel made by hand (a wheel is a zip with a dist-info directory and a RECORD)."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b'WHERE = "installed from a wheel"\n',
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hvfs-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(content)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, content in files.items():
            archive.writestr(path, content)
    return wheel


def test_venv_and_offline_pip_install(vm: Vm, data: Path, shared_tmp: Path) -> None:
    """``python3 -m venv`` on a served mount bootstraps pip, pip installs a local wheel, and the venv imports it.

    ensurepip unpacks pip's bundled wheel, writes console scripts, compiles bytecode and renames files into
    place; the venv's ``python`` is a symlink the kernel must follow at exec time.
    """
    # the VM runs the host's /usr/bin/python3, whose version names the venv's lib directory
    probe = "import ensurepip, sys; print('python%d.%d' % sys.version_info[:2])"
    python = subprocess.run(["/usr/bin/python3", "-c", probe], capture_output=True, text=True, check=False)
    require(python.returncode == 0, "python3 -m venv needs ensurepip (Debian package python3-venv)")
    site_packages = f"lib/{python.stdout.strip()}/site-packages"
    wheels = shared_tmp / "wheels"
    wheels.mkdir()
    wheel = build_wheel(wheels)
    os.chmod(wheel, 0o644)
    script = f"""
python3 -m venv /data/venv
/data/venv/bin/python -m pip install --no-index --no-cache-dir --disable-pip-version-check -q /wheels/{wheel.name}
echo '== import'
/data/venv/bin/python -c 'import sys, hvfsprobe; print(hvfsprobe.WHERE); print(hvfsprobe.__file__); print(sys.prefix)'
"""
    out = vm.sh(script, volumes=[f"{data}:/data", f"{wheels}:/wheels:ro"], timeout=240)
    assert section(out, "import") == [
        "installed from a wheel",
        f"/data/venv/{site_packages}/hvfsprobe/__init__.py",
        "/data/venv",
    ]

    # the venv works on the host too: the interpreter finds its prefix through pyvenv.cfg next to it
    venv = data / "venv"
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    host = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import hvfsprobe, pip; print(hvfsprobe.WHERE)"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert host.stdout.strip() == "installed from a wheel", host.stderr
    assert (venv / site_packages / "hvfsprobe-1.0.dist-info/RECORD").is_file()
    assert os.access(venv / "bin" / "pip", os.X_OK)


# ---------------------------------------------------------------------------------------------------------------------
# make -j2 of a small C project

PARTS = 7  # part0.c … part6.c, and main.c: 8 sources

MAKEFILE = """\
CC := gcc
CFLAGS := -O0 -Wall -Werror
OBJS := main.o $(patsubst %.c,%.o,$(sort $(wildcard part*.c)))

prog: $(OBJS)
\t$(CC) -o $@ $(OBJS)

%.o: %.c common.h
\t$(CC) $(CFLAGS) -c -o $@ $<

clean:
\trm -f prog $(OBJS)

.PHONY: clean
"""


def write_c_project(root: Path, mtime: int) -> int:
    """Writes the project with every file's mtime set to ``mtime``; returns what the program prints."""
    (root / "Makefile").write_text(MAKEFILE)
    (root / "common.h").write_text("#define OFFSET 1000\n" + "".join(f"int part{i}(void);\n" for i in range(PARTS)))
    for i in range(PARTS):
        (root / f"part{i}.c").write_text(f'#include "common.h"\nint part{i}(void) {{ return OFFSET + {i} * {i}; }}\n')
    calls = " + ".join(f"part{i}()" for i in range(PARTS))
    (root / "main.c").write_text(
        f'#include <stdio.h>\n#include "common.h"\nint main(void) {{ printf("%d\\n", {calls}); return 0; }}\n'
    )
    for path in root.iterdir():
        os.utime(path, (mtime, mtime))
    return sum(1000 + i * i for i in range(PARTS))


def compiled(make_output: str) -> set[str]:
    """The objects make compiled, from the recipes it echoed."""
    return {line.split("-o ")[1].split()[0] for line in make_output.splitlines() if " -c -o " in line}


def test_make_builds_rebuilds_incrementally_and_cleans(vm: Vm, data: Path) -> None:
    """``make -j2`` builds on a served mount, rebuilds exactly what changed, and ``make clean`` removes it.

    Incremental builds depend on mtimes the manager sets (utimensat from ``touch``) and reads back (stat).
    """
    require(shutil.which("make") is not None and shutil.which("gcc") is not None, "make and gcc are needed")
    sources_time = 1_600_000_000  # long ago, so that everything make writes is newer than its sources
    expected = write_c_project(data, sources_time)
    sources = sorted(p.name for p in data.iterdir())
    vm.give(data)
    everything = {"main.o", *(f"part{i}.o" for i in range(PARTS))}

    def make(script: str) -> str:
        return vm.sh(script, volumes=[f"{data}:/src"], workdir="/src")

    first = make("make -j2; ./prog")
    assert compiled(first) == everything
    assert first.splitlines()[-1] == str(expected)

    # Outputs are first set back to a known time (still after the sources'), so that "touched after the
    # build" never depends on two writes landing in different clock ticks.
    outputs_time = sources_time + 60
    age_outputs = f"touch -d @{outputs_time} prog *.o"
    second = make(f"{age_outputs}; touch part3.c; make -j2; ./prog")
    assert compiled(second) == {"part3.o"}
    assert "gcc -o prog" in second
    assert second.splitlines()[-1] == str(expected)

    third = make(f"{age_outputs}; touch common.h; make -j2")
    assert compiled(third) == everything  # every object depends on the header

    nothing = make("make")
    assert "is up to date" in nothing
    assert compiled(nothing) == set()

    make("make clean")
    assert sorted(p.name for p in data.iterdir()) == sources
