"""examples/: each example's own instructions, run as written.

examples/pytest-in-vms is run by tests/test_pytest_plugin.py and examples/github-workflow.yml
by tests/test_github_workflow.py; this module checks that they still are, and runs
examples/shared-sqlite from the commands at the top of its hvfs.toml.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

EXAMPLES = REPO / "examples"
SQLITE = EXAMPLES / "shared-sqlite"
HVFS = str(Path(sys.executable).with_name("hvfs"))


def commands_of(project_file: Path) -> list[list[str]]:
    """The ``hvfs …`` command lines of a project file's opening comment."""
    lines = []
    for line in project_file.read_text().splitlines():
        if not line.startswith("#"):
            break
        if (text := line.lstrip("# ")).startswith("hvfs "):
            lines.append(shlex.split(text))
    return lines


def run(command: list[str], cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HVFS, *command[1:]], cwd=cwd, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload, no-any-return]


def test_shared_sqlite_runs_as_its_comment_says(tmp_path: Path) -> None:
    """up -d, writer-a inserts (and writer-b at the same time, as the example invites),
    the read-only reader reads the live WAL database (it could not before: no -shm of its
    own to make), down leaves nothing."""
    shutil.copytree(SQLITE, tmp_path / "examples" / "shared-sqlite")
    up, insert, query, down = commands_of(tmp_path / "examples" / "shared-sqlite" / "hvfs.toml")
    assert up[-2:] == ["up", "-d"] and down[-1] == "down" and "insert.py" in insert[-3] and "query.py" in query[-1]
    started = run(up, tmp_path)
    assert started.returncode == 0, started.stderr
    try:
        empty = run(query, tmp_path)  # before any insert: the writers made the database and hold it
        assert (empty.returncode, empty.stdout) == (0, "integrity: ok\n"), empty.stderr
        other = [*insert[: insert.index("writer-a")], "writer-b", "--", "python3", "/app/insert.py", "b", "2000"]
        with subprocess.Popen([HVFS, *other[1:]], cwd=tmp_path, stdout=subprocess.PIPE, text=True) as writer_b:
            during = run(query, tmp_path)  # while writer-b writes
            assert during.returncode == 0 and during.stdout.endswith("integrity: ok\n"), during.stderr
            inserted = run(insert, tmp_path)
            assert inserted.returncode == 0 and inserted.stdout == "a inserted 2000\n", inserted.stderr
            assert writer_b.communicate(timeout=300)[0] == "b inserted 2000\n"
        after = run(query, tmp_path)
        assert (after.returncode, after.stdout) == (0, "a 2000\nb 2000\nintegrity: ok\n"), after.stderr
        writes = run(
            [*insert[: insert.index("writer-a")], "reader", "--", "python3", "/app/insert.py", "r", "1"], tmp_path
        )
        assert writes.returncode == 1 and "readonly database" in writes.stderr  # the reader may only read
    finally:
        stopped = run(down, tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert sorted(os.listdir(tmp_path / "examples" / "shared-sqlite")) == sorted(os.listdir(SQLITE))


def test_every_example_is_run_by_a_test() -> None:
    """A new example needs a test; these are the modules that run each one."""
    runners = {
        "shared-sqlite": Path(__file__),
        "pytest-in-vms": REPO / "tests" / "test_pytest_plugin.py",
        "github-workflow.yml": REPO / "tests" / "test_github_workflow.py",
        "cluster": REPO / "tests" / "test_cluster.py",
    }
    assert sorted(os.listdir(EXAMPLES)) == sorted(runners)
    for example, module in runners.items():
        assert re.search(rf"examples[\"' /,]+{re.escape(example)}", module.read_text()), (example, module)


def test_pytest_in_vms_runs_as_its_readme_says() -> None:
    """The README's indented command lines, run from the top of this clone."""
    readme = (EXAMPLES / "pytest-in-vms" / "README.md").read_text()
    commands = [line.split("  #")[0].strip() for line in readme.splitlines() if line.startswith("    ")]
    assert commands == [".venv/bin/python -m pytest examples/pytest-in-vms"], commands
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(["bash", "-c", commands[0]], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0 and re.search(r"\b4 passed\b", done.stdout), done.stdout + done.stderr
