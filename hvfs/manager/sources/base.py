"""The contract every source implements."""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass


class SourceError(Exception):
    """A problem the user can fix; the message names it and says how."""


@dataclass(frozen=True)
class Scratch:
    """Per-VM storage a source may keep state in (overlay upper layers)."""

    directory: str

    def layer(self, key: str) -> tuple[str, str]:
        """An (upper, work) pair of directories for one overlay, created if missing."""
        upper = os.path.join(self.directory, key, "upper")
        work = os.path.join(self.directory, key, "work")
        os.makedirs(upper, exist_ok=True)
        os.makedirs(work, exist_ok=True)
        return upper, work


class Source(abc.ABC):
    """A file system that can be mounted inside a VM's writable view.

    Sources run in the manager's own mount namespace, before the VM exists. They only
    mount; the view applies read-only-ness and makes the VM's boot view from the result.
    """

    kind: str

    @property
    def is_directory(self) -> bool:
        """Whether the mount point must be a directory (False: a single file)."""
        return True

    @abc.abstractmethod
    def mount(self, target: int, scratch: Scratch) -> None:
        """Mount this source on ``target``.

        Preconditions: ``target`` is an O_PATH fd of an existing directory (or file, when
        ``is_directory`` is False) inside the view, resolved within the VM's root, so that
        no symlink can redirect the mount. The caller keeps ownership of the fd.
        Postcondition: ``target`` shows the source, writable unless the source itself
        is read-only.
        Raises ``SourceError`` for what the user can fix, ``OSError`` otherwise.
        """

    def inner_mounts(self) -> tuple[str, ...]:
        """Where this source mounts further file systems below its own mount point, as
        paths relative to it (an image's nested layers). The view records the mount of
        each as the VM's own: files on them belong to the VM."""
        return ()

    def capacities(self) -> tuple[tuple[str, str], ...]:
        """For a copy-on-write source: (mount, directory) pairs, each a mount this source
        makes (a path relative to its mount point, "" for that point) and a directory of
        the manager's whose file system holds what that mount shows (its image). statfs
        there reports that file system's use, not only the copy-on-write layer's."""
        return ()

    @abc.abstractmethod
    def describe(self) -> str:
        """A short human description, for messages and ``hvfs ps``."""
