"""The command line's surface as a docker user meets it: help, errors that name the right
help, shell completion, ``--json`` on every listing, one spelling for one thing."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvfs.cli import build_parser
from hvfs.services.scan import EICAR
from tests.conftest import REPO, Hvfs, require


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and subcommand, at every level, as the words that name it."""
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(build_parser()))


def test_every_level_is_reached() -> None:
    assert ("backup", "list") in COMMANDS and ("docker", "install") in COMMANDS and ("manager", "status") in COMMANDS
    assert len(COMMANDS) > 25


def test_hvfs_alone_prints_help_and_exits_0(hvfs: Hvfs) -> None:
    result = hvfs.run()
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: hvfs")
    assert "backup" in result.stdout and "completion" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("words", COMMANDS, ids=lambda words: " ".join(words) or "hvfs")
def test_an_error_names_the_help_of_its_own_subcommand(hvfs: Hvfs, words: tuple[str, ...]) -> None:
    result = hvfs.run(*words, "--no-such-flag")
    assert result.returncode == 125
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hvfs: ")
    assert lines[0].endswith(f"; see '{' '.join(('hvfs', *words))} --help'"), lines[0]


def test_a_missing_argument_names_the_nested_help(hvfs: Hvfs) -> None:
    result = hvfs.run("backup", "restore")
    assert (result.returncode, result.stderr) == (
        125,
        "hvfs: the following arguments are required: PATH; see 'hvfs backup restore --help'\n",
    )


# Completion, as the shell script asks for it: argcomplete's variables, answers on fd 8.


def _complete(line: str, cwd: str = "/") -> list[str]:
    env = dict(os.environ, _ARGCOMPLETE="1", _ARGCOMPLETE_IFS="\n", COMP_LINE=line, COMP_POINT=str(len(line)))
    result = subprocess.run(  # the answers on fd 8, as the shell script reads them; stdout must stay quiet
        ["sh", "-c", 'exec "$0" -m hvfs 8>&1 9>&2 >/dev/null', sys.executable],
        env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [word.strip() for word in result.stdout.split("\n") if word.strip()]


def test_completion_of_commands_subcommands_and_flags() -> None:
    assert {"run", "ps", "backup", "images", "completion"} <= set(_complete("hvfs "))
    assert _complete("hvfs bac") == ["backup"]
    assert _complete("hvfs backup l") == ["list"]
    assert _complete("hvfs backup list --backup-s") == ["--backup-store"]
    assert _complete("hvfs run --backup-s") == ["--backup-store", "--backup-store-shared"]
    assert _complete("hvfs events --sum") == ["--summary"]
    assert set(_complete("hvfs completion ")) >= {"bash", "zsh", "fish"}
    assert "--store" not in _complete("hvfs backup list --")  # the old spelling works, but is not offered


def test_completion_of_a_projects_vm_names(tmp_path: Path) -> None:
    (tmp_path / "hvfs.toml").write_text('[vms.web]\ncommand = ["true"]\n[vms.worker]\ncommand = ["true"]\n')
    assert _complete("hvfs logs w", cwd=str(tmp_path)) == ["web", "worker"]
    assert _complete("hvfs stop wo", cwd=str(tmp_path)) == ["worker"]
    assert _complete("hvfs logs w", cwd="/") == []  # no project: nothing to offer, and no error


def test_the_bash_script_completes_in_bash(hvfs: Hvfs, tmp_path: Path) -> None:
    require(shutil.which("bash") is not None, "bash is needed to source the completion script")
    script = hvfs.ok("completion", "bash")
    (tmp_path / "hvfs-completion.bash").write_text(script)
    shim = tmp_path / "bin" / "hvfs"  # `hvfs` on PATH, as the script calls it
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m hvfs "$@"\n')
    shim.chmod(0o755)
    asked = "hvfs backup li"
    driver = (
        f"source {tmp_path / 'hvfs-completion.bash'}\n"
        f"COMP_LINE='{asked}'; COMP_POINT={len(asked)}; COMP_WORDS=(hvfs backup li); COMP_CWORD=2\n"
        "_python_argcomplete hvfs li backup\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = dict(os.environ, PATH=f"{shim.parent}:{os.environ['PATH']}", PYTHONPATH=str(REPO))
    result = subprocess.run(["bash", "-c", driver], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [w.strip() for w in result.stdout.split()] == ["list"]
    for shell in ("zsh", "fish"):
        assert "hvfs" in hvfs.ok("completion", shell)
    assert hvfs.run("completion", "tcsh").returncode == 125


# One run with every service that leaves something to list.


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, hvfs: Hvfs) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("served")
    data, store, quarantine, audit = where / "data", where / "store", where / "q", where / "audit.jsonl"
    data.mkdir()
    (data / "eicar.com").write_bytes(EICAR)
    result = hvfs.run(
        "run", "--name", "surface", "-v", f"{data}:/data",
        "--backup", "/data/*.txt", "--backup-store", str(store),
        "--scan", "--quarantine", str(quarantine), "--audit", str(audit), "--",
        "sh", "-c", "echo one > /data/notes.txt; echo two > /data/notes.txt; cat /data/eicar.com; true",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {"data": data, "store": store, "quarantine": quarantine, "audit": audit}


BACKUP_KEYS = {"time", "unix_time", "vm", "trigger", "size", "sha256", "removed", "path"}
QUARANTINE_KEYS = {"id", "time", "unix_time", "vm", "path", "size", "sha256", "engine", "signature"}


def test_backup_list_json_has_the_tables_fields(hvfs: Hvfs, served: dict[str, Path]) -> None:
    store = str(served["store"])
    rows = json.loads(hvfs.ok("backup", "list", "--backup-store", store, "--json"))
    assert rows and all(set(row) == BACKUP_KEYS for row in rows)
    assert {row["path"] for row in rows} == {"/data/notes.txt"}
    assert {row["vm"] for row in rows} == {"surface"}
    table = hvfs.ok("backup", "list", "--backup-store", store).splitlines()
    assert len(table) == len(rows)
    for line, row in zip(table, rows, strict=True):
        columns = line.split()
        assert columns[0] == row["time"] and columns[1] == row["vm"] and columns[-1] == row["path"]
        assert columns[3] == str(row["size"]) and row["sha256"].startswith(columns[4])


def test_quarantine_list_json_has_the_tables_fields(hvfs: Hvfs, served: dict[str, Path]) -> None:
    records = json.loads(hvfs.ok("quarantine", "list", "--quarantine", str(served["quarantine"]), "--json"))
    assert [r["path"] for r in records] == ["/data/eicar.com"]
    assert set(records[0]) == QUARANTINE_KEYS and records[0]["size"] == len(EICAR)
    (line,) = hvfs.ok("quarantine", "list", "--quarantine", str(served["quarantine"])).splitlines()
    assert line.startswith(f"{records[0]['id']}  {records[0]['time']}  surface  /data/eicar.com  {len(EICAR)} bytes")


def test_one_spelling_everywhere_and_the_old_one_still_read(hvfs: Hvfs, served: dict[str, Path]) -> None:
    store, quarantine, audit = str(served["store"]), str(served["quarantine"]), str(served["audit"])
    assert hvfs.ok("backup", "list", "--backup-store", store) == hvfs.ok("backup", "list", "--store", store)
    assert hvfs.ok("quarantine", "list", "--quarantine", quarantine) == hvfs.ok(
        "quarantine", "list", "--store", quarantine
    )
    assert hvfs.ok("events", "--audit", audit) == hvfs.ok("events", audit)
    for words in (("backup", "list"), ("backup", "restore"), ("backup", "prune"), ("quarantine", "list")):
        shown = hvfs.ok(*words, "--help")
        assert "--store" not in shown.replace("--backup-store", ""), words  # hidden: one spelling is shown
    missing = hvfs.run("backup", "list", "--backup-store", str(served["data"]))
    assert missing.returncode == 125 and "--backup-store DIR" in missing.stderr
    both = hvfs.run("events", audit, "--audit", str(served["data"]))
    assert both.returncode == 125 and "give one" in both.stderr


def test_events_json_lines_and_images_and_manager_json(hvfs: Hvfs, served: dict[str, Path]) -> None:
    lines = hvfs.ok("events", str(served["audit"]), "--json").splitlines()
    assert lines and all(json.loads(line)["vm"] == "surface" for line in lines)
    status = json.loads(hvfs.ok("manager", "status", "--json"))
    assert isinstance(status, dict)
    assert isinstance(json.loads(hvfs.ok("images", "ls", "--json")), list)


def test_hvfs_run_does_not_import_completion(hvfs: Hvfs) -> None:
    """Completion costs `hvfs run` nothing: argcomplete is imported only while completing."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hvfs", "run", "--", "true"],
        capture_output=True, text=True, timeout=120, cwd="/",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    imported = [
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    ]
    assert "hvfs.cli" in imported  # the measurement saw hvfs's own imports
    assert not [name for name in imported if name.startswith(("argcomplete", "hvfs.completion", "hvfs.services.audit"))]
