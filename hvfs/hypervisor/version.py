"""Which hvfs a manager runs, so that a client of another one can ask it to make way."""

from __future__ import annotations

import functools
import os

import hvfs


@functools.cache
def code_id() -> str:
    """The version, where it is installed, and when its hvfs-init was built: a manager of
    other code than the client's is restarted (its VMs carry on; hvfs.hypervisor.client)."""
    package = os.path.dirname(os.path.abspath(hvfs.__file__))
    try:
        built = os.stat(os.path.join(package, "_bin", "hvfs-init")).st_mtime_ns
    except OSError:
        built = 0
    return f"{hvfs.__version__}:{package}:{built}"
