"""A project file's ``entrypoint``: a string split as a shell would (shlex, imported only
for it: not on a cold run's way), a list taken as it is; either goes before the command."""

from __future__ import annotations

from pathlib import Path

from hvfs.project.config import load


def _command(tmp_path: Path, entrypoint: str) -> tuple[str, ...]:
    file = tmp_path / "hvfs.toml"
    file.write_text(f'name = "p"\n[vms.web]\ncommand = ["-c", "echo hi"]\nentrypoint = {entrypoint}\n')
    return load(str(file)).vms["web"].command


def test_a_string_entrypoint_is_split_as_a_shell_would(tmp_path: Path) -> None:
    assert _command(tmp_path, "\"/bin/sh -e 'a b'\"") == ("/bin/sh", "-e", "a b", "-c", "echo hi")


def test_a_list_entrypoint_is_taken_as_it_is(tmp_path: Path) -> None:
    assert _command(tmp_path, '["/bin/sh", "-e x"]') == ("/bin/sh", "-e x", "-c", "echo hi")
