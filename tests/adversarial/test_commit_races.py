"""Applying a staged mount (``hvfs run --commit-on-success``) never writes outside the
mount's host directory, whatever the staged tree holds and whatever changes the host
directory meanwhile.

The staged tree is the VM's work: symlinks to ``../outside`` (next to the volume on the
host), hard links, a FIFO, a whiteout named like a decoy. While it is applied, a second
VM that binds the same host directory exchanges each directory the staged tree writes
into with a symlink to ``../outside``, thousands of times a second. The apply enters
host directories only with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`` and acts on one
name at a time, so it must meet the symlink (and refuse, or replace the symlink itself)
and never follow it. Host-side check: ``outside``, full of decoys the manager could
write, is exactly as it was, and nothing appeared next to the two directories.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from tests.adversarial.conftest import ON_THE_NATIVE_PATH, SECONDS, Attacker
from tests.adversarial.decoys import plant, record

pytestmark = ON_THE_NATIVE_PATH

DIRECTORIES = 16
FILES = 100  # per directory and round: 1,600 staged files a round


def _met(stderr: str) -> int:
    """How often the apply met a symlink where it expected the directory: refused
    (ELOOP entering it), or the symlink itself replaced by the directory."""
    shown = len(re.findall(r"^hvfs: /vol: not applied: ", stderr, re.MULTILINE))
    more = sum(int(n) for n in re.findall(r"^hvfs: /vol: (\d+) more not applied", stderr, re.MULTILINE))
    replaced = sum(int(n) for n in re.findall(r"\((\d+) names in the way replaced\)", stderr))
    return shown + more + replaced


def test_a_staged_tree_applied_while_its_directories_are_swapped_for_symlinks(
    attacker: Attacker, shared_tmp: Path
) -> None:
    volume, outside = shared_tmp / "vol", shared_tmp / "outside"
    volume.mkdir()
    attacker.give(volume)
    plant(outside, ("victim", "f0", "f1", "h0"), attacker)
    before = record(outside)
    program = attacker.program("commit_race")
    binaries = f"{attacker.binaries}:/attacks:ro"
    racer_args = ["run", *(["--strict"] if attacker.strict else []), "-v", binaries, "-v", f"{volume}:/vol"]
    racer_command = [
        "/attacks/" + program.name,
        "100000000",
        str(SECONDS),
        "swap",
        "/vol",
        str(DIRECTORIES),
        "../outside",
    ]
    with subprocess.Popen(
        [*attacker.runner.command, *racer_args, "--", *racer_command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    ) as racer:
        assert racer.stdout is not None and racer.stdout.readline() == "ready\n", racer.stderr
        deadline = time.monotonic() + SECONDS - 1
        rounds = tries = staged = met = applied = 0
        while time.monotonic() < deadline:
            outcome = attacker.run(
                "commit_race",
                "stage",
                "/vol",
                str(DIRECTORIES),
                str(FILES),
                "../outside",
                options=("--commit-on-success", "-v", f"{volume}:/vol"),
            )
            assert outcome.code == 0, outcome.stderr
            assert "/vol: " in outcome.stderr and "changes applied" in outcome.stderr, outcome.stderr
            rounds += 1
            tries += outcome.count("tries")
            staged += outcome.count("staged")
            met += _met(outcome.stderr)
            applied += sum(int(n) for n in re.findall(r"/vol: (\d+) changes applied", outcome.stderr))
        out, err = racer.communicate(timeout=SECONDS + 60)
    assert racer.returncode == 0, err
    report = next(line for line in reversed(out.splitlines()) if line.startswith("{"))
    print(f"commit race, {attacker.variant}: {rounds} rounds, {tries} tries, {staged} staged, {applied} applied, "
          f"{met} swapped symlinks met by the apply; racer {report}")  # fmt: skip
    # Host side: nothing outside the volume changed, nothing appeared next to it.
    assert record(outside) == before, "outside changed on the host"
    assert sorted(p.name for p in shared_tmp.iterdir()) == ["outside", "vol"]
    # The race ran: thousands of staged files, the racer really swapped, and the apply met
    # its symlinks (each refused or replaced, never followed).
    assert tries >= 1000 and staged > 0 and applied > 0, (tries, staged, applied)
    assert '"swaps": ' in report and int(re.findall(r'"swaps": (\d+)', report)[0]) > 1000, report
    assert met > 0, f"the apply never met a swapped symlink in {rounds} rounds"
