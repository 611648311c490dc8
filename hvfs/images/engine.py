"""Images of the local Docker engine, through the docker SDK: never pulled.

An image is taken with ``docker save`` (``Image.save``), streamed into a file of the
cache and unpacked as any ``docker save`` tarball, rather than by exporting a container
made from it: save needs no container (nothing to create and clean up, no command the
image must have), keeps the layers and their digests (so what is unpacked is checked
against the image ID it is cached under), and gives the image's own files, without the
/etc/hosts, /etc/resolv.conf and /.dockerenv a container adds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hvfs.images import ImageError
from hvfs.patterns import pattern

PREFIX = "docker:"
REFERENCE = pattern(r"^[a-zA-Z0-9][a-zA-Z0-9._/:@-]{0,254}$")


def reference_problem(image: str) -> str | None:
    """What keeps ``docker:NAME[:TAG]`` from naming an image, or None."""
    name = image[len(PREFIX) :]
    if not REFERENCE.match(name):
        return "is not docker:NAME[:TAG] (e.g. docker:busybox:latest); give a name docker images lists"
    return None


def _client() -> Any:
    try:
        import docker
    except ImportError:
        raise ImageError("docker: images need the docker Python package; install it (pip install docker)") from None
    try:
        return docker.from_env(timeout=300)
    except docker.errors.DockerException as e:
        raise ImageError(
            f"docker: cannot reach the Docker engine ({_first_line(e)}); start dockerd or set DOCKER_HOST"
        ) from None


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


class EngineImage:
    """A local image of the engine: its ID and size at once, its contents on ``save``."""

    def __init__(self, image: str) -> None:
        import docker

        self.reference = image[len(PREFIX) :]
        self.client = _client()
        try:
            self.image = self.client.images.get(self.reference)
        except docker.errors.ImageNotFound:
            raise ImageError(
                f"image {image}: no such image in the local Docker engine; build it (docker build -t "
                f"{self.reference} .) or load it (docker load); hvfs never pulls"
            ) from None
        except docker.errors.DockerException as e:
            raise ImageError(
                f"image {image}: the Docker engine did not answer ({_first_line(e)}); start dockerd or set DOCKER_HOST"
            ) from None
        self.id: str = self.image.id  # sha256:… of its configuration
        self.size = int(self.image.attrs.get("Size") or 0)

    def save(self, out: int, progress: Callable[[int], None]) -> None:
        """Write the image as ``docker save`` does into the fd ``out``."""
        import docker

        try:
            for chunk in self.image.save(chunk_size=1 << 20, named=False):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
                progress(len(chunk))
        except docker.errors.DockerException as e:
            raise ImageError(f"image docker:{self.reference}: the export failed ({_first_line(e)})") from None

    def close(self) -> None:
        self.client.close()
