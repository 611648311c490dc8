"""The manager's own path handling, raced: symlinks swapped in, buffers flipped, directories
moved out from under a directory fd. It held in the adversarial run; these keep it held.

Every lookup the manager makes is the kernel's, in the VM's root (``openat2`` with
``RESOLVE_IN_ROOT``), from a path it read once. Each attack aims at host files that a
lookup done any other way would reach: a directory next to the volume (``../outside``),
the same by its absolute host path, the host's root, a ``:ro`` mount. There the host
holds decoys (``decoys.py``); after thousands of tries each must be exactly as it was and
no name may have appeared next to them. Each program also counts both sides of its race
(the same call landing on the volume, and refused through the swapped path), so that a
race that never ran fails the test.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.adversarial.conftest import Attacker, Outcome
from tests.adversarial.decoys import TIMES_NS, changes, plant, record

SWAP_CALLS = ("open", "create", "rename", "unlink", "chmod", "chown", "utimes", "truncate", "link", "symlink",
              "mkdir", "xattr", "last_open", "last_chmod", "last_chown", "last_utimes", "last_truncate",
              "last_xattr", "last_link")  # fmt: skip
FLIP_CALLS = ("open", "chmod", "truncate", "unlink", "rename_away", "rename_within", "rename_over")
DOTDOT_CALLS = ("open", "create", "unlink", "mkdir", "chmod", "rename")


def host_tree(attacker: Attacker, root: Path, decoys: tuple[str, ...]) -> tuple[Path, Path, Path]:
    """``root/vol`` (the writable volume), ``root/outside`` (next to it, in no mount) and
    ``root/ro`` (a :ro mount), the last two full of decoys."""
    volume, outside, ro = root / "vol", root / "outside", root / "ro"
    volume.mkdir()
    attacker.give(volume)
    plant(outside, decoys, attacker)
    plant(ro, decoys, attacker)
    return volume, outside, ro


def assert_untouched(
    root: Path, before: dict[str, dict[str, tuple[object, ...]]], outcome: Outcome, others: tuple[str, ...] = ("vol",)
) -> None:
    """The recorded directories under ``root`` are as they were, and next to them and the
    ``others`` nothing appeared."""
    for name, recorded in before.items():
        found = changes(recorded, record(root / name))
        assert not found, f"{name} changed on the host:\n" + "\n".join(found[:20]) + f"\n{outcome.report}"
    assert sorted(p.name for p in root.iterdir()) == sorted([*before, *others]), outcome.report


def times(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns


def both_sides(outcome: Outcome, calls: tuple[str, ...]) -> None:
    """Each call both acted on the volume and was refused through the other path."""
    for call in calls:
        assert outcome.count(f"{call}_ok") > 0 and outcome.count(f"{call}_refused") > 0, (call, outcome.report)


def test_a_directory_swapped_for_a_symlink_out_of_the_volume(attacker: Attacker, shared_tmp: Path) -> None:
    """A thread exchanges /vol/dK with a symlink to the host's root, to the absolute path
    of a host directory, to ``../outside`` (the same directory, next to the volume on the
    host), to ``/ro`` and to ``../ro``, while every mutation goes through it; and /vol/fK,
    a file, with a symlink to the decoy in there, while every call that follows a last
    symlink acts on /vol/fK."""
    volume, outside, ro = host_tree(attacker, shared_tmp, ("victim", "over", "gone", "src"))
    before = {"outside": record(outside), "ro": record(ro)}
    targets = (f"/:{str(outside).lstrip('/')}", f"{outside}:", "../outside:", "/ro:", "../ro:")
    outcome = attacker.run("path_swap", "/vol", *targets, options=("-v", f"{volume}:/vol", "-v", f"{ro}:/ro:ro"))
    print(f"symlink swap, {attacker.variant}: {outcome.report}")
    assert_untouched(shared_tmp, before, outcome)
    assert outcome.code == 0, outcome.stderr
    assert outcome.count("elsewhere") == 0, outcome.report
    # The race ran, against every target: the same write-open landed on the volume (the
    # directory) and was refused (the symlink); the swapper really swapped.
    assert outcome.count("swaps") > 1000 and outcome.count("swap_errno") == 0, outcome.report
    for k in range(len(targets)):
        assert outcome.count(f"t{k}_open_ok") > 0 and outcome.count(f"t{k}_open_refused") > 0, k
        assert outcome.count(f"t{k}_last_ok") > 0, k
    # The window of a last symlink is narrower: refused at least for some target (one
    # target may see none in a run, as under load).
    assert sum(outcome.count(f"t{k}_last_refused") for k in range(len(targets))) > 0, outcome.report
    both_sides(outcome, SWAP_CALLS)


def test_path_buffers_flipped_to_a_read_only_mount_and_out(attacker: Attacker, shared_tmp: Path) -> None:
    """A thread flips each path between a file of the volume and the same name on a :ro
    mount, at the host path of a directory outside every mount, and up and out of the
    volume with ``..`` (absolute and relative), while the main thread write-opens with
    O_TRUNC, chmods, truncates, unlinks and renames through the buffers."""
    volume, outside, ro = host_tree(attacker, shared_tmp, ("f", "u", "r", "r2", "o"))
    before = {"outside": record(outside), "ro": record(ro)}
    up = "../" * 12
    forbidden = ("/ro", str(outside), f"/vol/{up}{str(outside).lstrip('/')}", "../ro", "../outside",
                 f"{up}{str(outside).lstrip('/')}")  # fmt: skip
    outcome = attacker.run("path_flip", "/vol", *forbidden, options=("-v", f"{volume}:/vol", "-v", f"{ro}:/ro:ro"))
    print(f"path flips, {attacker.variant}: {outcome.report}")
    assert_untouched(shared_tmp, before, outcome)
    assert sorted(p.name for p in volume.iterdir()) == ["f", "o", "r", "r2", "src", "u"], outcome.report
    assert outcome.code == 0, outcome.stderr
    assert outcome.count("odd") == 0, outcome.report
    for k in range(len(forbidden)):
        assert outcome.count(f"t{k}_ok") > 0 and outcome.count(f"t{k}_refused") > 0, (k, outcome.report)
    both_sides(outcome, FLIP_CALLS)


def test_a_directory_moved_out_from_under_its_fd(attacker: Attacker, shared_tmp: Path) -> None:
    """Two volumes of one host directory, /vol and /inner (= /vol/x). The attacker holds a
    directory fd (and its cwd) of /inner/y/z while a thread exchanges /vol/x/y/z with /vol/z:
    the directory jumps out of /inner's subtree, where an unchecked ``..`` climbs the host's
    file system. From it, every mutation through ``../`` (1 to 5 times, and up to the
    host's root) + the decoys' directory, and reads of a host secret no mount shows."""
    volume = shared_tmp / "vol"
    for directory in ("x/y/z", "z", "outside", "x/outside", "x/y/outside"):
        (volume / directory).mkdir(parents=True)
    for directory in ("outside", "x/outside", "x/y/outside"):
        for name in ("f", "g"):
            (volume / directory / name).write_bytes(b"volume\n")
    attacker.give(volume)
    outside = shared_tmp / "outside"
    plant(outside, ("f", "g"), attacker)
    # A host file no mount shows, read as the manager would read it. Its atime is older
    # than its mtime, so that any read moves it (relatime): the host sees a read.
    secret = shared_tmp / "secret"
    secret.write_bytes(b"HVFS-SECRET-" + os.urandom(8).hex().encode() + b"\n")
    attacker.give(secret)
    os.utime(secret, ns=(TIMES_NS[0], TIMES_NS[1] + 10**9))
    before = {"outside": record(outside)}
    secret_times = times(secret)
    outcome = attacker.run(
        "dotdot_race", "/vol", "/inner", "x/y/z", "z", str(outside).lstrip("/"), str(secret).lstrip("/"),
        options=("-v", f"{volume}:/vol", "-v", f"{volume / 'x'}:/inner"),
    )  # fmt: skip
    print(f"dotdot race, {attacker.variant}: {outcome.report}")
    assert times(secret) == secret_times, "the host's secret was read or changed"
    assert_untouched(shared_tmp, before, outcome, others=("vol", "secret"))
    assert outcome.code == 0, outcome.stderr
    assert outcome.count("secret_read") == 0, outcome.report
    # The race ran: the directory was seen at depth 1 (outside /inner) after calls, the
    # probe ../../outside/f landed on /inner/outside/f at depth 3 and failed at depth 1.
    assert outcome.count("swaps") > 1000 and outcome.count("swap_errno") == 0, outcome.report
    assert outcome.count("shallow") > 0 and outcome.count("inside") > 0, outcome.report
    assert outcome.count("climbed_refused") > 0, outcome.report
    both_sides(outcome, DOTDOT_CALLS)
