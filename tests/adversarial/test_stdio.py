"""A host file given to a VM as stdio stays the host's: the VM gets pipes, so reopening
its stdio through magic links or changing metadata through the fds reaches no host file
(as ``docker run`` gives containers pipes)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.adversarial.conftest import ON_THE_NATIVE_PATH, SECONDS, TRIES, Attacker, compile_program
from tests.conftest import Hvfs

CONTENT = b"the host's own file\n" * 100


def _identity(path: Path) -> tuple[object, ...]:
    st = path.stat()
    return (path.read_bytes(), st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, os.listxattr(path))


@ON_THE_NATIVE_PATH
def test_host_files_given_as_stdio_are_never_changed(attacker: Attacker, shared_tmp: Path) -> None:
    source, sink = shared_tmp / "input", shared_tmp / "output"
    source.write_bytes(CONTENT)
    sink.write_bytes(b"")
    attacker.give(source, sink)
    before = _identity(source)
    sink_mode = sink.stat().st_mode, sink.stat().st_uid
    attacker.program("stdio")
    command = [*attacker.runner.command, "run", *(["--strict"] if attacker.strict else []),
               "-v", f"{attacker.binaries}:/attacks:ro", "--", "/attacks/stdio", str(TRIES), str(SECONDS)]  # fmt: skip
    with source.open("rb") as stdin, sink.open("wb") as stdout:
        result = subprocess.run(command, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, timeout=SECONDS * 4 + 60)
    assert result.returncode == 0, result.stderr
    report = sink.read_bytes().splitlines()[-1]
    assert report.startswith(b'{"tries": ') and int(report.split(b",")[0].split(b":")[1]) >= 100, report
    assert _identity(source) == before  # content, mode, owner, times, xattrs
    assert (sink.stat().st_mode, sink.stat().st_uid) == sink_mode


def test_hvfs_exec_hands_pipes_too(hvfs: Hvfs, tmp_path: Path, attack_binaries: Path) -> None:
    source = tmp_path / "input"
    source.write_bytes(CONTENT)
    before = _identity(source)
    (tmp_path / "hvfs.toml").write_text(
        'name = "stdio-exec"\n[sources.attacks]\ntype = "host"\n'
        f'path = "{attack_binaries}"\n[vms.vm]\ncommand = ["sleep", "600"]\n'
        'mounts = [{ source = "attacks", target = "/attacks", readonly = true }]\n'
    )
    compile_program("stdio", attack_binaries)
    project = ["-f", str(tmp_path / "hvfs.toml")]
    hvfs.ok(*project, "up", "-d")
    try:
        with source.open("rb") as stdin:
            command = [*hvfs.command, *project, "exec", "vm", "--", "/attacks/stdio", "2000", str(SECONDS)]
            result = subprocess.run(command, stdin=stdin, capture_output=True, timeout=SECONDS * 4 + 60)
    finally:
        hvfs.run(*project, "down")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith(b'{"tries": ')
    assert _identity(source) == before
