"""The image unpacker on small images made here: layers, whiteouts, opaque directories,
modes, links, digests, and the formats it recognises or refuses."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from hvfs.images import ImageError, formats, store
from tests.imagebuild import Entry, docker_archive, layer, oci_layout

DIR, SYM, LNK = tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE

BASE = layer(
    Entry("etc/", DIR, mode=0o755),
    Entry("etc/keep", data=b"keep\n"),
    Entry("etc/gone", data=b"gone\n"),
    Entry("opaque/", DIR, mode=0o755),
    Entry("opaque/lower", data=b"lower\n"),
    Entry("ro/", DIR, mode=0o555),
    Entry("ro/file", data=b"ro\n", mode=0o400),
    Entry("bin/", DIR, mode=0o755),
    Entry("bin/tool", data=b"v1\n", mode=0o755),
)
TOP = layer(
    Entry("etc/.wh.gone"),
    Entry("opaque/upper", data=b"upper\n"),  # before the marker: this layer's own entry stays
    Entry("opaque/.wh..wh..opq"),
    Entry("ro/added", data=b"added\n"),  # in a directory a lower layer made read-only
    Entry("bin/tool", data=b"v2\n", mode=0o750),
    Entry("bin/alias", LNK, link="bin/tool"),
    Entry("bin/sh", SYM, link="/bin/tool"),
)


def unpacked(tmp_path: Path, image: Path) -> Path:
    return Path(store.prepare(str(image), str(tmp_path / "cache")))


@pytest.mark.parametrize("kind", ["docker-archive", "oci-directory", "oci-tarball"])
def test_layers_apply_in_order_with_whiteouts(tmp_path: Path, kind: str) -> None:
    image = tmp_path / "image"
    if kind == "docker-archive":
        docker_archive(image, [BASE, TOP], Cmd=["/bin/tool"], Env=["A=1"], WorkingDir="/etc", User="7")
    else:
        if kind == "oci-directory":
            image.mkdir()
        oci_layout(image, [BASE, TOP], tarball=kind == "oci-tarball", Cmd=["/bin/tool"], Env=["A=1"])
    root = unpacked(tmp_path, image)
    assert (root / "etc" / "keep").read_text() == "keep\n"
    assert not (root / "etc" / "gone").exists()
    assert sorted(os.listdir(root / "opaque")) == ["upper"]
    assert (root / "ro" / "added").read_text() == "added\n"
    assert stat.S_IMODE((root / "ro").stat().st_mode) == 0o555  # applied at the end
    assert stat.S_IMODE((root / "ro" / "file").stat().st_mode) == 0o400
    assert (root / "bin" / "tool").read_text() == "v2\n"
    assert stat.S_IMODE((root / "bin" / "tool").stat().st_mode) == 0o750
    assert (root / "bin" / "alias").stat().st_ino == (root / "bin" / "tool").stat().st_ino
    assert os.readlink(root / "bin" / "sh") == "/bin/tool"
    config = store.image_config(str(root))
    assert config is not None and config["Cmd"] == ["/bin/tool"] and config["Env"] == ["A=1"]
    if kind == "docker-archive":
        assert config["WorkingDir"] == "/etc" and config["User"] == "7"


def test_the_same_image_is_unpacked_once(tmp_path: Path) -> None:
    image = tmp_path / "image.tar"
    image_id = docker_archive(image, [BASE])
    first = unpacked(tmp_path, image)
    assert first.parent.name == f"sha256-{image_id[7:]}"
    marker = (first / "etc" / "keep").stat().st_mtime_ns, (first / "etc" / "keep").stat().st_ino
    copy = tmp_path / "copy.tar"
    copy.write_bytes(image.read_bytes())  # another file, the same image
    assert unpacked(tmp_path, copy) == first
    assert ((first / "etc" / "keep").stat().st_mtime_ns, (first / "etc" / "keep").stat().st_ino) == marker
    meta = store.read_meta(str(first.parent))
    assert meta is not None and meta["names"] == [str(image), str(copy)] and meta["id"] == image_id


def test_a_layer_that_is_not_what_its_digest_says_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "forged.tar"
    docker_archive(image, [BASE])
    with tarfile.open(image) as archive:
        members = [(m, archive.extractfile(m).read()) for m in archive.getmembers()]  # type: ignore[union-attr]
    forged = layer(Entry("etc/", DIR), Entry("etc/keep", data=b"evil\n"))
    with tarfile.open(image, "w") as archive:
        for member, data in members:
            if member.name.endswith("layer.tar"):
                data = forged
                member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    with pytest.raises(ImageError, match="damaged or forged"):
        unpacked(tmp_path, image)
    images = tmp_path / "cache" / "images"
    assert not [p for p in images.iterdir() if p.is_dir() and p.name != ".refs"]  # nothing left but lock files


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"not a tar at all", "neither a directory nor a tar archive"),
        (None, "holds 2 images"),
    ],
)
def test_what_is_not_an_image_is_refused_in_one_line(tmp_path: Path, content: bytes | None, problem: str) -> None:
    image = tmp_path / "bad"
    if content is None:
        docker_archive(image, [BASE])
        with tarfile.open(image, "a") as archive:
            data = b'[{"Config": "a.json", "Layers": []}, {"Config": "b.json", "Layers": []}]'
            info = tarfile.TarInfo("manifest.json")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    else:
        image.write_bytes(content)
    with pytest.raises(ImageError, match=problem) as refused, formats.opened(str(image)):
        pass
    assert "\n" not in str(refused.value)


def test_a_plain_rootfs_tarball_is_one_layer(tmp_path: Path) -> None:
    image = tmp_path / "rootfs.tar"
    image.write_bytes(layer(Entry("./"), Entry("./hello", data=b"hi\n")))
    root = unpacked(tmp_path, image)
    assert (root / "hello").read_text() == "hi\n" and root.parent.name.startswith("file-")
    assert store.image_config(str(root)) == {}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_is_a_bar_on_a_terminal_and_lines_otherwise(terminal: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from hvfs.images import progress

    monkeypatch.delenv(progress.AFTER_VARIABLE, raising=False)
    now = [0.0]
    stream = _Terminal() if terminal else io.StringIO()
    bar = progress.Progress("unpacking x", 4_000_000, stream, clock=lambda: now[0])
    for _ in range(4):
        now[0] += progress.AFTER  # a second a megabyte: slow enough to be shown
        bar(1_000_000)
    bar.finish(", 2 layers")
    text = stream.getvalue()
    if terminal:
        assert text.count("\r") == 5 and "[###############...............]  50%" in text and text.endswith("\n")
    else:
        lines = text.splitlines()
        assert lines == ["hvfs: unpacking x: 1.0 MB of 4.0 MB", "hvfs: unpacking x: 4.0 MB in 4.0 s, 2 layers"]
