"""The adversarial suite: hostile programs in VMs, and a host-side check of what they got.

Every class of attack runs as root, in ``--strict`` and rootless (the ``attacker``
fixture), for thousands of tries bounded in time, and asserts **0** escapes as seen from
the host, never as reported by the attacker alone. An attack program also reports how
often its race actually happened (both values of a flipped buffer seen by the kernel,
say), so that a test whose race never ran fails instead of passing vacuously.

Attack programs are small C files in ``programs/``, compiled statically once per session
into a directory every test user can read. Each prints one JSON line at the end.

``HVFS_ATTACK_DRIVER=ptrace`` runs every attack under the ptrace driver instead (the
driver chosen as where the kernel lacks seccomp user notification); not in CI, whose
time the suite already fills: run it so before changing that driver.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import SYSTEM_PYTHON, Hvfs, chown_to, require

PROGRAMS = Path(__file__).resolve().parent / "programs"
# How long one attack may race, and how many tries it makes at most: whichever is spent
# first ends it. 3,000 tries show a race measured at 1 in a few hundred many times over and
# keep each test's own counts (">= 1,000 inside", say) two to three times clear; most attacks
# make them in 0.2-4 s on a loaded 2-CPU machine, where they used to spin on to 10,000 tries
# or the 6 s (the attacks are 46% of the suite's time: docs/performance.md, "The CI run
# under 20 minutes"). The slower ones (an exec or a process per try) still race for the 6 s.
# HVFS_ATTACK_SECONDS and HVFS_ATTACK_TRIES scale both up for a longer hunt.
SECONDS = float(os.environ.get("HVFS_ATTACK_SECONDS", "6"))
TRIES = int(os.environ.get("HVFS_ATTACK_TRIES", "3000"))
DRIVER = os.environ.get("HVFS_ATTACK_DRIVER", "")  # "ptrace": every attack under the ptrace driver

ATTACK_VARIANTS = [
    pytest.param(("hvfs", False), id="root"),
    pytest.param(("hvfs", True), id="strict"),
    pytest.param(("rootless", False), id="rootless", marks=pytest.mark.rootless),
    # The same through the Python path (HVFS_NATIVE=0): both paths must hold.
    pytest.param(("hvfs_python", False), id="root-python"),
    pytest.param(("hvfs_python", True), id="strict-python"),
    pytest.param(("rootless_python", False), id="rootless-python", marks=pytest.mark.rootless),
]
# For attacks on what both paths share (the services, pid 1, the state directory, the
# apply of a staged tree): the native and Python paths differ only in receiving, reading
# the caller's memory and credentials, ID_VALID and ADDFD, so running these twice would
# prove nothing more and cost CI minutes.
NATIVE_PATH = ATTACK_VARIANTS[:3]
ON_THE_NATIVE_PATH = pytest.mark.parametrize("attacker", NATIVE_PATH, indirect=True)


@pytest.fixture(scope="session")
def attack_binaries() -> Iterator[Path]:
    """A world-readable directory for the compiled attack programs."""
    require(shutil.which("gcc") is not None, "gcc is needed to build the attack programs (apt install gcc)")
    directory = Path(tempfile.mkdtemp(prefix="hvfs-attacks-"))
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def compile_program(name: str, into: Path, *, variant: str = "", defines: Sequence[str] = ()) -> Path:
    """``programs/NAME.c`` as a static binary in ``into`` (built once); a ``variant`` is
    another binary of the same source, built with ``-D`` ``defines`` as NAME-VARIANT."""
    binary = into / (f"{name}-{variant}" if variant else name)
    if not binary.exists():
        source = PROGRAMS / f"{name}.c"
        result = subprocess.run(
            [
                "gcc",
                "-O2",
                "-static",
                "-pthread",
                "-Wall",
                *(f"-D{d}" for d in defines),
                "-o",
                str(binary),
                str(source),
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, f"cannot build {source}:\n{result.stderr}"
        os.chmod(binary, 0o755)
    return binary


@dataclass
class Outcome:
    """What an attack program printed (its last JSON line), and how the VM exited."""

    code: int
    report: dict[str, object]
    stdout: str
    stderr: str

    def count(self, key: str) -> int:
        value = self.report.get(key, 0)
        assert isinstance(value, int), (key, self.report)
        return value


@dataclass
class Attacker:
    """Runs attack programs in VMs as one variant says: root, strict or rootless."""

    runner: Hvfs
    strict: bool
    binaries: Path
    variant: str

    @property
    def rootless(self) -> bool:
        return self.runner.user is not None

    def with_host_env(self, env: dict[str, str]) -> Attacker:
        """The same attacker, with ``env`` in the environment hvfs itself runs with."""
        assigned = [f"{key}={value}" for key, value in env.items()]
        if self.rootless:  # the runner's command is runuser ... env -i VAR=... python -m hvfs
            command = list(self.runner.command)
            at = command.index(SYSTEM_PYTHON)
            runner = dataclasses.replace(self.runner, command=[*command[:at], *assigned, *command[at:]])
        else:
            runner = dataclasses.replace(self.runner, command=["env", *assigned, *self.runner.command])
        return dataclasses.replace(self, runner=runner)

    def program(self, name: str, *, variant: str = "", defines: Sequence[str] = ()) -> Path:
        """The binary of ``programs/NAME.c`` (or of its variant), as /attacks/NAME[-VARIANT] in the VM."""
        return compile_program(name, self.binaries, variant=variant, defines=defines)

    def give(self, *paths: Path) -> None:
        """Hands ``paths`` to the user hvfs runs as (a rootless VM writes only where it may)."""
        if self.runner.user is not None:
            for path in paths:
                chown_to(path, self.runner.user)

    def run(
        self,
        program: str,
        *arguments: str,
        options: Sequence[str] = (),
        timeout: float | None = None,
        input: str | None = None,
        stdin: int | None = None,
        tries: int = TRIES,
    ) -> Outcome:
        """``hvfs run [--strict] OPTIONS -v BINARIES:/attacks:ro -- /attacks/PROGRAM ARGS``
        with the time and try budget as the first two arguments (``tries``: a test whose
        own counts need more than the budget gives, with its reason)."""
        self.program(program)
        args = ["run", *(["--strict"] if self.strict else []), *options, "-v", f"{self.binaries}:/attacks:ro"]
        command = [f"/attacks/{program}", str(max(tries, TRIES)), str(SECONDS), *arguments]
        began = time.monotonic()
        result = self.runner.run(*args, "--", *command, timeout=timeout or SECONDS * 4 + 60, input=input, stdin=stdin)
        took = time.monotonic() - began
        report: dict[str, object] = {}
        for line in reversed(result.stdout.splitlines()):
            if line.startswith("{"):
                report = json.loads(line)
                break
        assert report, f"{program} printed no report (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
        # The rate, for -s: what a budget of tries (HVFS_ATTACK_TRIES) costs each attack in time.
        print(f"attack {program} [{self.variant}]: {report.get('tries')} tries in {took:.1f} s")
        return Outcome(result.returncode, report, result.stdout, result.stderr)


@pytest.fixture(params=ATTACK_VARIANTS)
def attacker(request: pytest.FixtureRequest, attack_binaries: Path) -> Attacker:
    """The same attack as root, as root with ``--strict``, and rootless."""
    runner_fixture, strict = request.param
    attacker = Attacker(request.getfixturevalue(runner_fixture), strict, attack_binaries, request.node.callspec.id)
    if DRIVER == "ptrace":
        return attacker.with_host_env({"HVFS_AS_IF_NO_USER_NOTIF": "1"})
    return attacker
