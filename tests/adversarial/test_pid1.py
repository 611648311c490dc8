"""A VM's pid 1, and every process that still holds its memory, are out of the VM's
reach: no ptrace, no process_vm_readv, no pidfd_getfd, no /proc/PID/{mem,environ}; and
nothing of the host (its environment) or of other VMs (their settings) is in reach."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

from tests.adversarial.conftest import ON_THE_NATIVE_PATH, SECONDS, Attacker, compile_program
from tests.conftest import Hvfs


@ON_THE_NATIVE_PATH
def test_pid1_and_the_host_environment_are_out_of_reach(attacker: Attacker) -> None:
    secret = f"hvfs-secret-{uuid.uuid4().hex}"
    outcome = attacker.with_host_env({"HVFS_TEST_SECRET": secret}).run("pid1", secret)
    assert outcome.code == 0, outcome.stderr
    assert outcome.count("tries") >= 100, outcome.report
    assert outcome.count("refused") >= outcome.count("tries"), outcome.report  # every try on pid 1 was made
    assert outcome.count("escapes") == 0, outcome.report
    assert outcome.count("secret_found") == 0, outcome.report


PROJECT = """
name = "{name}"

[sources.attacks]
type = "host"
path = "{attacks}"

[services]
faults = ["op=exec,path=/usr/bin/true,delay=150ms"]

[vms.victim]
command = ["/attacks/pid1", "{tries}", "{seconds}", "{secret}"]
mounts = [{{ source = "attacks", target = "/attacks", readonly = true }}]

[vms.other]
command = ["sleep", "600"]
environment = {{ TOKEN = "{secret}" }}
"""


def test_processes_of_hvfs_exec_are_out_of_reach_before_they_exec(
    hvfs: Hvfs, tmp_path: Path, attack_binaries: Path
) -> None:
    """A process that pid 1 forked holds pid 1's memory until it execs. A fault rule
    holds each such process at its exec for 150 ms, so the attacker surely sees it."""
    compile_program("pid1", attack_binaries)
    secret = f"hvfs-secret-{uuid.uuid4().hex}"
    name = f"pid1-{uuid.uuid4().hex[:8]}"
    text = PROJECT.format(name=name, attacks=attack_binaries, tries=10**9, seconds=SECONDS + 4, secret=secret)
    (tmp_path / "hvfs.toml").write_text(text)
    project = ["-f", str(tmp_path / "hvfs.toml")]
    hvfs.ok(*project, "up", "-d")
    try:
        deadline = time.monotonic() + SECONDS
        execs = 0
        while time.monotonic() < deadline:
            started = [subprocess.Popen([*hvfs.command, *project, "exec", "victim", "--", "/usr/bin/true"])
                       for _ in range(2)]  # fmt: skip
            execs += sum(p.wait(timeout=60) == 0 for p in started)
        report: dict[str, int] = {}
        for _ in range(int(SECONDS * 4) + 60):
            lines = [line for line in hvfs.ok(*project, "logs", "victim").splitlines() if line.startswith("{")]
            if lines:
                report = json.loads(lines[-1])
                break
            time.sleep(0.25)
    finally:
        hvfs.run(*project, "down")
    assert execs >= 4, execs
    assert report.get("preexec_seen", 0) > 0, report  # the attacker met processes before their exec
    assert report["escapes"] == 0 and report["secret_found"] == 0, report
