"""The command's search along PATH (native/init/spawn.c): the outcome of Python's
os.execvpe, the oracle, with no trapped execve for a directory where the name is not
there. Real VMs, under both drivers and in strict mode (where the existence check is
itself served)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Hvfs

DRIVERS = [("seccomp", False), ("seccomp", True), ("ptrace", False)]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """bin-x/prog that is not executable, bin-ok/prog that is, bin-broken/prog whose
    interpreter is missing (execve says ENOENT for a file that is there), and a file
    where a directory is expected."""
    root = tmp_path_factory.mktemp("exec-path")
    for name, text, mode in (
        ("bin-x", "#!/bin/sh\necho not-executable\n", 0o644),
        ("bin-ok", '#!/bin/sh\necho found "$0"\n', 0o755),
        ("bin-broken", "#!/no/such/interpreter\n", 0o755),
    ):
        (root / name).mkdir()
        (root / name / "prog").write_text(text)
        os.chmod(root / name / "prog", mode)
    (root / "file").write_text("")
    os.chmod(root, 0o755)
    yield root


def _paths(root: Path) -> list[str]:
    missing, x, ok, broken, file = (f"{root}/{d}" for d in ("missing", "bin-x", "bin-ok", "bin-broken", "file"))
    return [
        f"{missing}:/nope/a:/nope/b:{ok}",  # found after three absent directories
        f"{missing}:{x}:{ok}",  # a non-executable one on the way: the next one runs
        f"{x}:{missing}",  # only a non-executable one: permission denied
        f"{missing}:/nope",  # nowhere
        f"{file}:{ok}",  # a component that is no directory (ENOTDIR), then found
        f"{broken}:{ok}",  # there, but its interpreter is not: execve's ENOENT, then found
        f"{broken}:{missing}",  # only that one: not found, as execvpe says
        f":{missing}",  # an empty entry is the working directory (bin-ok below)
    ]


def _oracle(path: str, cwd: Path) -> tuple[int, str]:
    """What os.execvpe makes of ``prog`` with ``path``: the exit code hvfs-init gives."""
    child = (
        "import os, sys\n"
        "try:\n"
        "    os.execvpe('prog', ['prog'], {'PATH': sys.argv[1]})\n"
        "except (FileNotFoundError, NotADirectoryError):\n"
        "    sys.exit(127)\n"
        "except OSError:\n"
        "    sys.exit(126)\n"
    )
    result = subprocess.run([sys.executable, "-c", child, path], capture_output=True, text=True, cwd=cwd)
    return result.returncode, result.stdout


@pytest.mark.parametrize(("driver", "strict"), DRIVERS, ids=["seccomp", "seccomp-strict", "ptrace"])
def test_path_search_as_execvpe(hvfs: Hvfs, tree: Path, driver: str, strict: bool) -> None:
    for path in _paths(tree):
        cwd = tree / "bin-ok"
        expected = _oracle(path, cwd)
        args = ["run", "--driver", driver, *(["--strict"] if strict else []), "-v", f"{tree}:{tree}:ro"]
        result = hvfs.run(*args, "-w", str(cwd), "-e", f"PATH={path}", "--", "prog", cwd=str(cwd))
        assert (result.returncode, result.stdout) == expected, (path, result.stderr)
        assert expected[0] in (0, 126, 127)
    assert {_oracle(p, tree / "bin-ok")[0] for p in _paths(tree)} == {0, 126, 127}  # every outcome was tried


def test_absent_directories_cost_no_trapped_exec(hvfs: Hvfs, tree: Path, tmp_path: Path) -> None:
    """Three directories without the name, then the one with it: one execve is trapped,
    not four (continued by the compiled loop: the VM is not strict, its caller a leader)."""
    stats = tmp_path / "stats.json"
    path = f"{tree}/missing:/nope/a:/nope/b:{tree}/bin-ok"
    out = hvfs.ok("run", "--stats", str(stats), "-v", f"{tree}:{tree}:ro", "-e", f"PATH={path}", "--", "prog")
    assert out == f"found {tree}/bin-ok/prog\n"
    compiled = json.loads(stats.read_text())["compiled"]
    assert (compiled["continued"], compiled["handed_to_python"]) == (1, 0), compiled
