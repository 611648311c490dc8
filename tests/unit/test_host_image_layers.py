"""The host image's layers (hvfs.manager.sources.image): looked at when the source is
first used, not when it is made, as a run that takes a spare makes its table's sources
and never mounts them; once looked at, what the host has then."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hvfs.manager.sources import image
from hvfs.manager.sources.registry import SourceSpec, make


def test_the_host_images_layers_are_the_hosts_trees() -> None:
    made = make(SourceSpec("image", {"path": "host"}))
    assert isinstance(made, image.ImageSource)
    trees = [name for name in image.HOST_TREES if os.path.isdir(f"/{name}") and not os.path.islink(f"/{name}")]
    expected = (("/", ""), *((f"/{name}", f"/{name}") for name in trees))
    assert made.layers == expected == image.host_layers()
    assert made.inner_mounts() == tuple(path.lstrip("/") for path, _ in expected[1:])
    assert made.capacities()[0] == ("", "/")


def test_a_host_image_made_looks_at_nothing_until_used() -> None:
    looked: list[str] = []
    real = os.path.isdir

    def isdir(path: str) -> bool:
        looked.append(path)
        return real(path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os.path, "isdir", isdir)
        made = make(SourceSpec("image", {"path": "host"}))
        assert looked == []
        layers = made.layers
        assert looked  # now, and once
        count = len(looked)
        assert made.layers is layers and len(looked) == count


def test_an_image_directorys_layers_are_given_when_made(tmp_path: Path) -> None:
    made = image.directory_image(str(tmp_path))
    assert made.layers == (("/", str(tmp_path)),)
