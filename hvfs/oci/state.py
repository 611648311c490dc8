"""What the runtime keeps of each container, under its ``--root`` (root only, 0700):
``ROOT/ID/state.json``. The rest is the manager's; whether the container still runs is
whether its waiter (the pid docker knows) still lives."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
from dataclasses import asdict, dataclass, field
from typing import Any

from hvfs.oci.bundle import BundleError

DEFAULT_ROOT = "/run/hvfs-runtime"
ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,1023}$")


@dataclass
class State:
    id: str
    bundle: str
    pid: int  # the waiter's
    pid_start: int  # its start time, so that a pid reused by another process is not taken for it
    init: int  # the VM's pid 1, as the host sees it
    gid: str
    vm: str
    created: str
    started: bool = False
    annotations: dict[str, str] = field(default_factory=dict)
    hooks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def status(self) -> str:
        if not alive(self.pid, self.pid_start):
            return "stopped"
        return "running" if self.started else "created"

    def oci(self) -> dict[str, Any]:
        """The state of the OCI runtime spec, as ``state`` prints it and hooks read it."""
        status = self.status()
        return {
            "ociVersion": "1.0.2",
            "id": self.id,
            "pid": self.pid if status != "stopped" else 0,
            "status": status,
            "bundle": self.bundle,
            "rootfs": os.path.join(self.bundle, "rootfs"),
            "created": self.created,
            "owner": "",
            "annotations": self.annotations,
        }


def start_time(pid: int) -> int:
    """The start time of ``pid`` (clock ticks since boot), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def alive(pid: int, started: int) -> bool:
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and int(fields[19]) == started


class Store:
    def __init__(self, root: str) -> None:
        self.root = root

    def prepare(self) -> None:
        """The root directory, made 0700 if missing; refused if anyone but root could
        change what is in it."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        st = os.lstat(self.root)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise BundleError(f"--root {self.root}: must be a directory of this user's, mode 0700")

    def directory(self, container: str) -> str:
        if not ID.match(container):
            raise BundleError(f"container id {container!r}: use letters, digits, '_', '.', '+' and '-'")
        return os.path.join(self.root, container)

    def new(self, container: str) -> str:
        self.prepare()
        directory = self.directory(container)
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            raise BundleError(f"container {container} exists already") from None
        return directory

    def save(self, state: State) -> None:
        path = os.path.join(self.directory(state.id), "state.json")
        temporary = path + ".tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(state), f)
        os.rename(temporary, path)

    def load(self, container: str) -> State:
        path = os.path.join(self.directory(container), "state.json")
        try:
            with open(path) as f:
                return State(**json.load(f))
        except FileNotFoundError:
            raise BundleError(f"container {container} does not exist") from None
        except (OSError, ValueError, TypeError) as e:
            raise BundleError(f"container {container}: its state cannot be read ({e})") from None

    def remove(self, container: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.directory(container))
