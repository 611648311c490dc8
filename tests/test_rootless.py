"""hvfs run by an unprivileged user: the same VM, with only that user's rights."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOTLESS_USER, Hvfs, chown_to
from tests.helpers import snapshot

pytestmark = pytest.mark.rootless


def test_python_runs_on_the_default_image(rootless: Hvfs) -> None:
    out = rootless.ok("run", "--", "python3", "-c", "import json, sqlite3, os; print(1, os.getuid())")
    assert out.split() == ["1", "0"]  # the user is root inside, as in rootless podman


def test_shell_script_on_a_volume_matches_native(rootless: Hvfs, shared_tmp: Path) -> None:
    native, served = shared_tmp / "native", shared_tmp / "served"
    native.mkdir()
    served.mkdir()
    chown_to(shared_tmp, ROOTLESS_USER)
    subprocess.run(
        ["runuser", "-u", ROOTLESS_USER, "--", "sh", str(rootless.probes / "ops.sh")],
        cwd=native,
        check=True,
        capture_output=True,
    )
    out = rootless.ok(
        "run",
        "-v",
        f"{served}:/data",
        "-v",
        f"{rootless.probes}:/probes:ro",
        "-w",
        "/data",
        "--",
        "sh",
        "/probes/ops.sh",
    )
    assert out.strip() == "done"
    assert snapshot(served) == snapshot(native)
    owner = {p.stat().st_uid for p in served.rglob("*") if not p.is_symlink()}
    assert owner == {native.stat().st_uid}  # files belong to the user, not to root


def test_errnos_equal_native(rootless: Hvfs, shared_tmp: Path) -> None:
    native, served = shared_tmp / "native", shared_tmp / "served"
    native.mkdir()
    served.mkdir()
    chown_to(shared_tmp, ROOTLESS_USER)
    expected = subprocess.run(
        ["runuser", "-u", ROOTLESS_USER, "--", "python3", str(rootless.probes / "errnos.py"), str(native)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    got = rootless.ok(
        "run",
        "-v",
        f"{served}:/data",
        "-v",
        f"{rootless.probes}:/probes:ro",
        "--",
        "python3",
        "/probes/errnos.py",
        "/data",
    )
    assert json.loads(got) == json.loads(expected)


def test_the_root_is_copy_on_write_and_host_files_keep_their_owner(rootless: Hvfs) -> None:
    script = "echo vm > /hvfs-rootless && echo tmp > /tmp/t && cat /hvfs-rootless /tmp/t; touch /usr/bin/hvfs-x"
    result = rootless.run("run", "--", "sh", "-c", script)
    assert result.stdout.split() == ["vm", "tmp"]
    # /usr belongs to the host's root, whom a rootless VM cannot act as (EACCES, as natively)
    assert "Permission denied" in result.stderr
    assert not Path("/hvfs-rootless").exists()
    assert not Path("/usr/bin/hvfs-x").exists()


def test_a_rootless_vm_cannot_touch_what_the_user_cannot(rootless: Hvfs, shared_tmp: Path) -> None:
    private = shared_tmp / "root-owned"
    private.mkdir(mode=0o755)
    secret = private / "secret"
    secret.write_text("root only")
    os.chmod(secret, 0o600)
    script = (
        "cat /data/secret; echo x >> /data/secret; rm /data/secret; touch /data/new; chmod 777 /data/secret; exit 0"
    )
    result = rootless.run("run", "-v", f"{private}:/data", "--", "sh", "-c", script)
    assert result.stderr.count("Permission denied") + result.stderr.count("Operation not permitted") == 5, result.stderr
    assert secret.read_text() == "root only"
    assert sorted(p.name for p in private.iterdir()) == ["secret"]
    assert secret.stat().st_mode & 0o777 == 0o600
