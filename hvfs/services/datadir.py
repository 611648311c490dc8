"""Where services keep data that must outlive a run: backups and quarantined files.

Unlike ``hvfs.state`` (runtime state, gone at reboot) and the image cache (re-creatable),
these hold users' data, so they live under the data directory.
"""

from __future__ import annotations

import os

from hvfs import state


def data_directory() -> str:
    """$HVFS_DATA_DIR if set (a test suite may want its own); else /var/lib/hvfs as root;
    else $XDG_DATA_HOME/hvfs, or ~/.local/share/hvfs."""
    if os.environ.get("HVFS_DATA_DIR"):
        return os.environ["HVFS_DATA_DIR"]
    if state.user_is_root():  # as decided before a rootless manager's namespace (hvfs.state)
        return "/var/lib/hvfs"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(state.home(), ".local", "share")
    return os.path.join(base, "hvfs")


def backup_directory() -> str:
    return os.path.join(data_directory(), "backup")


def quarantine_directory() -> str:
    return os.path.join(data_directory(), "quarantine")
