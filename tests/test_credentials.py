"""Several users in one VM: every served request acts with its caller's credentials."""

from __future__ import annotations

import os
import pwd
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOTLESS_USER, Hvfs, as_user, chown_to, require

PERMISSIONS = """
set -u
cd /data
echo root > root-file && chmod 644 root-file
mkdir -m 1777 sticky && echo mine > sticky/roots && chmod 666 sticky/roots
mkdir -m 2775 shared && chgrp 2000 shared
echo g > group-file && chgrp 2000 group-file && chmod 664 group-file
as() { setpriv --reuid "$1" --regid "$2" --groups "$3" sh -c "$4" 2>&1 | sed 's/.*: //'; }
echo "write root file: $(as 1000 1000 1000 'echo x >> root-file && echo ok')"
echo "unlink in sticky: $(as 1000 1000 1000 'rm -f sticky/roots && echo ok')"
echo "own file in sticky: $(as 1000 1000 1000 'echo u > sticky/users && rm sticky/users && echo ok')"
echo "group write: $(as 1000 1000 1000,2000 'echo y >> group-file && echo ok')"
echo "no group: $(as 1000 1000 1000 'echo y >> group-file && echo ok')"
echo "setgid dir: $(as 1000 1000 1000,2000 'umask 027 && touch shared/f && stat -c "%g %a" shared/f')"
echo "umask: $(as 1000 1000 1000 'umask 077 && mkdir /tmp/u && touch /tmp/u/f && stat -c %a /tmp/u /tmp/u/f | xargs')"
"""


@pytest.mark.parametrize("driver", ["seccomp", "ptrace"])  # both keep credentials per thread
def test_permission_checks_are_the_callers(hvfs: Hvfs, tmp_path: Path, driver: str) -> None:
    os.chmod(tmp_path, 0o755)  # pytest makes it 0700, which no other user may search
    out = hvfs.ok("run", "--driver", driver, "-v", f"{tmp_path}:/data", "--", "sh", "-c", PERMISSIONS)
    results = dict(line.split(": ", 1) for line in out.splitlines())
    assert results == {
        "write root file": "Permission denied",
        "unlink in sticky": "Operation not permitted",
        "own file in sticky": "ok",
        "group write": "ok",
        "no group": "Permission denied",
        "setgid dir": "2000 640",
        "umask": "700 600",
    }
    assert (tmp_path / "root-file").read_text() == "root\n"
    assert (tmp_path / "sticky" / "roots").exists()
    assert (tmp_path / "shared" / "f").stat().st_uid == 1000


def test_the_same_checks_run_natively_agree(hvfs: Hvfs, shared_tmp: Path) -> None:
    """The oracle: the script run natively, as root, on a plain directory (in one that
    uid 1000 may search, unlike pytest's own temporary directories)."""
    tmp_path = shared_tmp
    native, served = tmp_path / "native", tmp_path / "served"
    native.mkdir(mode=0o755)
    served.mkdir(mode=0o755)
    scratch = tmp_path / "tmp"
    scratch.mkdir(mode=0o1777)
    scratch.chmod(0o1777)  # as the VM's /tmp
    script = PERMISSIONS.replace("/data", str(native)).replace("/tmp/u", str(scratch / "u"))
    expected = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    got = hvfs.ok("run", "-v", f"{served}:/data", "--", "sh", "-c", PERMISSIONS)
    assert got == expected


def test_user_option_runs_the_command_as_that_user(hvfs: Hvfs, tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o777)
    out = hvfs.ok(
        "run", "-u", "1000:1000", "-v", f"{tmp_path}:/data", "--", "sh", "-c", "id -u; id -g; touch /data/f; echo $HOME"
    )
    assert out.split()[:2] == ["1000", "1000"]
    assert (tmp_path / "f").stat().st_uid == 1000
    assert hvfs.ok("run", "-u", "nobody", "--", "id", "-un").strip() == "nobody"
    bad = hvfs.run("run", "-u", "no-such-user", "--", "true")
    assert bad.returncode == 126 and "no-such-user" in bad.stderr


def test_rootless_vm_with_subordinate_ids_has_many_users(rootless: Hvfs, shared_tmp: Path) -> None:
    require(Path("/usr/bin/newuidmap").exists(), "newuidmap (package uidmap) is needed for several users")
    data = shared_tmp / "data"
    data.mkdir(mode=0o755)
    chown_to(data, ROOTLESS_USER)  # the VM's root
    script = "id -u; touch /data/x 2>&1 | sed 's/.*: //'"
    assert rootless.ok("run", "-u", "1000", "-v", f"{data}:/data", "--", "sh", "-c", script).splitlines() == [
        "1000",
        "Permission denied",
    ]
    make = "mkdir /data/u && chown 1000 /data/u && setpriv --reuid 1000 --regid 1000 --clear-groups touch /data/u/f"
    rootless.ok("run", "-v", f"{data}:/data", "--", "sh", "-c", make)
    entry = next(line for line in Path("/etc/subuid").read_text().splitlines() if line.startswith(f"{ROOTLESS_USER}:"))
    assert (data / "u" / "f").stat().st_uid == int(entry.split(":")[1]) + 999  # VM uid 1000 is subordinate 999


@pytest.fixture
def single_id_user(staged: Path) -> Hvfs:
    name = "hvfs-single"
    hvfs = as_user(name, staged)
    for table in ("/etc/subuid", "/etc/subgid"):  # a user without subordinate ids
        lines = Path(table).read_text().splitlines(keepends=True)
        Path(table).write_text("".join(line for line in lines if not line.startswith(f"{name}:")))
    return hvfs


def test_a_single_id_is_said_clearly(single_id_user: Hvfs) -> None:
    result = single_id_user.run("run", "-u", "1000", "--", "true")
    assert result.returncode == 125
    assert "cannot be mapped" in result.stderr and "subordinate ids" in result.stderr
    assert single_id_user.ok("run", "--", "id", "-u").strip() == "0"


@pytest.mark.parametrize("given", [None, "/root", "/srv/home"])
def test_run_and_a_project_give_the_same_home(hvfs: Hvfs, tmp_path: Path, given: str | None) -> None:
    """``hvfs run -u nobody [-e HOME=…]`` and the same settings in hvfs.toml are one VM
    description: HOME is the user's home unless it is given, whatever it is given as."""
    env = ["-e", f"HOME={given}"] if given else []
    by_run = hvfs.ok("run", "-u", "nobody", *env, "--", "sh", "-c", "echo $HOME").strip()
    name = f"home-{uuid.uuid4().hex[:8]}"
    environment = f'\n[vms.one.environment]\nHOME = "{given}"\n' if given else "\n"
    (tmp_path / "hvfs.toml").write_text(
        f'name = "{name}"\n[vms.one]\ncommand = "sh -c \'echo $HOME > /tmp/home; exec sleep 60\'"\n'
        f'user = "nobody"{environment}'
    )
    project = ["-f", str(tmp_path / "hvfs.toml")]
    hvfs.ok(*project, "up", "-d")
    try:
        in_exec = hvfs.ok(*project, "exec", "one", "--", "sh", "-c", "echo $HOME").strip()
        in_command = hvfs.ok(
            *project, "exec", "one", "--", "sh", "-c", "until [ -s /tmp/home ]; do sleep 0.05; done; cat /tmp/home"
        ).strip()
    finally:
        hvfs.ok(*project, "down", "-t", "1")
    home = given or pwd.getpwnam("nobody").pw_dir  # the default image is the host's root
    assert by_run == in_exec == in_command == home
