"""Hostile image tarballs: nothing they hold may land outside the directory they are
unpacked into. The unpacker is deterministic (no race to win), so each class of attack
is one image, unpacked as root and as an unprivileged user, and the outcome is checked
on the host: a decoy directory (writable by the unprivileged user too, so that an escape
would succeed there) and /etc/shadow are unchanged, and the hostile entry was really
met (it is in the unpacked tree, contained, or the image was refused because of it).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from hvfs.images import ImageError, store
from tests.conftest import require
from tests.helpers import snapshot
from tests.imagebuild import Entry, docker_archive, layer

DIR, SYM, LNK, CHR = tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE
NOBODY = 65534
AS = [pytest.param(0, id="root"), pytest.param(NOBODY, id="unprivileged")]


@pytest.fixture
def where(shared_tmp: Path) -> Path:
    """The test's directory, which the unprivileged user reaches too."""
    return shared_tmp


@pytest.fixture
def decoy(where: Path) -> Path:
    decoy = where / "decoy"
    decoy.mkdir()
    (decoy / "secret").write_text("host secret\n")
    os.chmod(decoy, 0o777)  # an escape as the unprivileged user would succeed here
    return decoy


def unpack_as(uid: int, image: Path, cache: Path) -> str:
    """The rootfs, or the refusal's message, of ``image`` unpacked by the user ``uid``."""
    cache.mkdir(mode=0o700, exist_ok=True)
    os.chown(cache, uid, uid)
    os.chmod(image, 0o644)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drops privilege, unpacks, reports
        os.close(read)
        outcome: object
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            outcome = store.prepare(str(image), str(cache))
        except ImageError as e:
            outcome = e
        except BaseException as e:
            outcome = RuntimeError(repr(e))
        os.write(write, pickle.dumps(outcome))
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        outcome = pickle.loads(f.read())
    os.waitpid(pid, 0)
    if isinstance(outcome, RuntimeError):
        raise outcome
    return str(outcome)


def host_state(decoy: Path) -> tuple[object, ...]:
    shadow = os.stat("/etc/shadow")
    return snapshot(decoy), shadow.st_nlink, shadow.st_mtime_ns, shadow.st_size


def attack(tmp_path: Path, decoy: Path, uid: int, *layers: bytes, gzipped: bool = False) -> tuple[str, Path]:
    image = tmp_path / "hostile.tar"
    docker_archive(image, list(layers), gzipped=gzipped)
    assert image.stat().st_size < 1 << 20
    before = host_state(decoy)
    outcome = unpack_as(uid, image, tmp_path / f"cache-{uid}")
    assert host_state(decoy) == before, "an entry of the image landed outside it"
    images = tmp_path / f"cache-{uid}" / "images"
    return outcome, images


def _inside(outcome: str) -> Path:
    root = Path(outcome)
    assert root.is_dir(), outcome
    return root


@pytest.mark.parametrize("uid", AS)
def test_a_file_through_a_symlink_stays_in_the_image(where: Path, decoy: Path, uid: int) -> None:
    links = (Entry("abs", SYM, link=str(decoy)), Entry("rel", SYM, link="../../../../../../../../" + str(decoy)))
    planted = layer(Entry("abs/planted", data=b"abs\n"), Entry("rel/planted2", data=b"rel\n"))
    # Where the links lead is not in the image: refused.
    outcome, _ = attack(where, decoy, uid, layer(*links), planted)
    assert "goes through a link that leads nowhere" in outcome, outcome
    # It is: the links resolve inside the image, as they will in the VM; the files are there.
    outcome, _ = attack(where, decoy, uid, layer(Entry(str(decoy).lstrip("/") + "/", DIR), *links), planted)
    root = _inside(outcome)
    assert (root / str(decoy).lstrip("/") / "planted").read_text() == "abs\n"
    assert (root / str(decoy).lstrip("/") / "planted2").read_text() == "rel\n"


@pytest.mark.parametrize("uid", AS)
def test_a_symlink_at_a_files_name_is_replaced_not_followed(where: Path, decoy: Path, uid: int) -> None:
    outcome, _ = attack(
        where, decoy, uid,
        layer(Entry("secret", SYM, link=str(decoy / "secret"))),
        layer(Entry("secret", data=b"overwritten\n")),
    )  # fmt: skip
    root = _inside(outcome)
    assert not (root / "secret").is_symlink() and (root / "secret").read_text() == "overwritten\n"


@pytest.mark.parametrize("uid", AS)
@pytest.mark.parametrize("target", ["/etc/shadow", "DECOY/secret", "via/secret"])
def test_a_hard_link_to_a_host_file_is_refused(where: Path, decoy: Path, uid: int, target: str) -> None:
    target = target.replace("DECOY", str(decoy))
    outcome, images = attack(
        where, decoy, uid, layer(Entry("via", SYM, link=str(decoy)), Entry("stolen", LNK, link=target))
    )
    assert "is not a file of the image" in outcome, outcome
    assert not [p for p in images.iterdir() if p.is_dir() and p.name != ".refs"]  # nothing kept


@pytest.mark.parametrize("uid", AS)
@pytest.mark.parametrize("name", ["../../../../planted", "a/../../planted", "../DECOY/planted"])
def test_a_name_that_climbs_out_is_refused(where: Path, decoy: Path, uid: int, name: str) -> None:
    outcome, _ = attack(where, decoy, uid, layer(Entry(name.replace("DECOY", decoy.name), data=b"x\n")))
    assert "climbs out of the image" in outcome, outcome


@pytest.mark.parametrize("uid", AS)
def test_an_absolute_name_lands_inside(where: Path, decoy: Path, uid: int) -> None:
    outcome, _ = attack(where, decoy, uid, layer(Entry(str(decoy / "planted"), data=b"abs\n")))
    assert (_inside(outcome) / str(decoy).lstrip("/") / "planted").read_text() == "abs\n"


@pytest.mark.parametrize("uid", AS)
def test_device_nodes_are_skipped(where: Path, decoy: Path, uid: int) -> None:
    outcome, _ = attack(where, decoy, uid, layer(Entry("dev/", DIR), Entry("dev/sda", CHR), Entry("ok", data=b"")))
    root = _inside(outcome)
    assert (root / "ok").exists() and not (root / "dev" / "sda").exists()


def _gnu_sparse(tmp_path: Path, size: int) -> bytes:
    """A layer with one file of ``size`` bytes that are all a hole, by GNU tar --sparse."""
    require(subprocess.run(["tar", "--version"], capture_output=True).returncode == 0, "GNU tar is needed")
    hole = tmp_path / "sparse" / "huge"
    hole.parent.mkdir()
    with open(hole, "wb") as f:
        f.truncate(size)
    out = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "-C", str(hole.parent), "-cf", str(out), "huge"], check=True)
    hole.unlink()
    return out.read_bytes()


@pytest.mark.parametrize("uid", AS)
@pytest.mark.parametrize("make", [lambda p: _gnu_sparse(p, 1 << 40), None], ids=["sparse-1TiB", "gzip-bomb"])
def test_a_huge_file_is_refused_before_it_is_written(
    where: Path, decoy: Path, uid: int, make: Callable[[Path], bytes] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if make is None:  # 64 MiB of zeros, gzip-compressed to 64 KiB, with a 16 MiB limit
        monkeypatch.setenv(store.LIMIT_VARIABLE, str(16 << 20))
        data = layer(Entry("bomb", data=bytes(64 << 20)))
    else:
        data = make(where)
    free = os.statvfs(where).f_bavail
    outcome, images = attack(where, decoy, uid, data, gzipped=make is None)
    assert "more than the cache's file system has free" in outcome, outcome
    assert abs(os.statvfs(where).f_bavail - free) * os.statvfs(where).f_frsize < 32 << 20
    assert not [p for p in images.iterdir() if p.is_dir() and p.name != ".refs"]
