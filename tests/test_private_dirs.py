"""hvfs.private_dirs: which directories hvfs keeps things in, and which it refuses."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hvfs.private_dirs import UnsafeDirectory, is_private, private_directory
from tests.conftest import require

NOBODY = 65534


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A directory only this user may change, as hvfs wants the way to be."""
    require(os.geteuid() == 0, "files of another owner are made with chown, as root")
    os.chmod(tmp_path, 0o755)
    return tmp_path


def _check(path: Path, **options: bool) -> str:
    return private_directory(str(path), "the test directory", "use another", **options)


def test_made_private_and_tightened(base: Path) -> None:
    made = Path(_check(base / "a" / "b"))
    assert made == base / "a" / "b" and stat.S_IMODE(made.stat().st_mode) == 0o700
    assert stat.S_IMODE((base / "a").stat().st_mode) == 0o700  # missing parts too
    loose = base / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    assert _check(loose) == str(loose) and stat.S_IMODE(loose.stat().st_mode) == 0o755  # kept as given
    _check(loose, tighten=True)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("plant", "mentions"),
    [
        (lambda p: (p.mkdir(), os.chown(p, NOBODY, -1)), "belongs to nobody (uid 65534), not to you"),
        (lambda p: (p.mkdir(), os.chmod(p, 0o770)), "is writable by others (mode 0770)"),
        (lambda p: (p.mkdir(), os.chmod(p, 0o1777)), "is writable by others (mode 1777)"),
        (lambda p: p.write_text(""), "is not a directory"),
        (lambda p: (p.parent.joinpath("theirs").mkdir(), os.symlink("theirs", p), os.lchown(p, NOBODY, -1)),
         "is a symbolic link that belongs to nobody"),
    ],
    ids=["another owner", "group-writable", "world-writable", "a file", "their symbolic link"],
)  # fmt: skip
def test_a_directory_someone_else_may_change_is_refused(base: Path, plant: object, mentions: str) -> None:
    target = base / "state"
    plant(target)  # type: ignore[operator]
    with pytest.raises(UnsafeDirectory) as refused:
        _check(target)
    message = str(refused.value)
    assert message.startswith(f"the test directory {target} ") and mentions in message and "\n" not in message
    assert message.endswith("use another")
    assert is_private(str(target)) is not None


def test_the_way_to_it_is_checked_too(base: Path) -> None:
    shared = base / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(UnsafeDirectory, match=f"{shared} on the way to it is writable by others"):
        _check(shared / "mine")
    assert not (shared / "mine").exists()  # nothing made in a place that failed
    os.chmod(shared, 0o1777)  # sticky, as /tmp: no one may rename what is not theirs
    assert _check(shared / "mine") == str(shared / "mine")
    theirs = base / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, -1)
    with pytest.raises(UnsafeDirectory, match=f"{theirs} on the way to it belongs to nobody"):
        _check(theirs / "mine")


def test_a_symbolic_link_of_ours_is_followed_to_a_private_place(base: Path) -> None:
    real = base / "real"
    os.symlink(real, base / "link")
    assert _check(base / "link" / "inner") == str(real / "inner")  # made through the link
    assert (real / "inner").is_dir()
    with pytest.raises(FileNotFoundError):
        _check(base / "missing", create=False)
    assert is_private(str(base / "missing")) == f"{base / 'missing'} does not exist"


def test_a_place_the_user_gives_must_hold_files(base: Path) -> None:
    with pytest.raises(UnsafeDirectory, match="is on proc, a kernel interface"):
        _check(Path("/proc/1"), ours=False)
    read_only = base / "ro"
    read_only.mkdir(mode=0o500)
    with pytest.raises(UnsafeDirectory, match=r"is not writable \(mode 0500\); chmod u\+w it"):
        _check(read_only, ours=False)
