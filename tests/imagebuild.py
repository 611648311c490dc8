"""Images made in the tests, byte by byte: layers (tar streams of any content, hostile
ones included), ``docker save`` tarballs and OCI image layouts (directory or tarball)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Entry:
    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    link: str = ""
    size: int | None = None  # a size other than the data's (a sparse file's)
    sparse: Sequence[tuple[int, int]] = field(default_factory=tuple)


def layer(*entries: Entry) -> bytes:
    """A tar stream of ``entries``, exactly as given (no name is cleaned)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type, info.mode, info.linkname = entry.kind, entry.mode, entry.link
            info.mtime = 1_700_000_000
            if entry.kind in (tarfile.REGTYPE, tarfile.AREGTYPE):
                info.size = len(entry.data)
                archive.addfile(info, io.BytesIO(entry.data))
            else:
                archive.addfile(info)
    return out.getvalue()


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def config(layers: Sequence[bytes], **runtime: object) -> bytes:
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": runtime,
            "rootfs": {"type": "layers", "diff_ids": [sha256(x) for x in layers]},
        }
    ).encode()


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def docker_archive(path: Path, layers: Sequence[bytes], *, gzipped: bool = False, **runtime: object) -> str:
    """A ``docker save`` tarball of ``layers`` (uncompressed, as docker 20.10 writes, or
    gzip-compressed); returns the image ID."""
    blob = config(layers, **runtime)
    digest = sha256(blob)
    with tarfile.open(path, "w") as archive:
        names = []
        for i, data in enumerate(layers):
            names.append(f"layer{i}/layer.tar")
            _add(archive, names[-1], gzip.compress(data, compresslevel=9, mtime=0) if gzipped else data)
        _add(archive, f"{digest[7:]}.json", blob)
        _add(archive, "manifest.json", json.dumps([{"Config": f"{digest[7:]}.json", "Layers": names}]).encode())
    return digest


def oci_layout(path: Path, layers: Sequence[bytes], *, tarball: bool = False, **runtime: object) -> str:
    """An OCI image layout of ``layers`` (gzip-compressed blobs), a directory at ``path``
    or a tarball of one; returns the image ID (its configuration's digest)."""
    blobs: dict[str, bytes] = {}

    def put(data: bytes) -> str:
        blobs[sha256(data)] = data
        return sha256(data)

    config_blob = config(layers, **runtime)
    described = []
    for data in layers:
        compressed = gzip.compress(data, mtime=0)
        described.append(
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(compressed),
             "size": len(compressed)}
        )  # fmt: skip
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config_blob),
                       "size": len(config_blob)},
            "layers": described,
        }
    ).encode()  # fmt: skip
    index = {
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest),
             "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"}}
        ],
    }  # fmt: skip
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": json.dumps(index).encode()}
    files.update({f"blobs/sha256/{d[7:]}": data for d, data in blobs.items()})
    if tarball:
        with tarfile.open(path, "w") as archive:
            for name, data in files.items():
                _add(archive, name, data)
    else:
        for name, data in files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(data)
    return sha256(config_blob)


def from_docker_save(saved: Path, out: Path, *, tarball: bool = False) -> str:
    """The image of the ``docker save`` tarball ``saved`` as an OCI layout at ``out``."""
    with tarfile.open(saved) as archive:
        manifest = json.loads(archive.extractfile("manifest.json").read())[0]  # type: ignore[union-attr]
        runtime = json.loads(archive.extractfile(manifest["Config"]).read())["config"]  # type: ignore[union-attr]
        layers = [archive.extractfile(name).read() for name in manifest["Layers"]]  # type: ignore[union-attr]
    if not tarball:
        os.makedirs(out, exist_ok=True)
    return oci_layout(out, layers, tarball=tarball, **runtime)
