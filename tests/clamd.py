"""A clamd of the tests' own: ClamAV's daemon on a signature database the tests write.

No official signature can be had here (freshclam needs ClamAV's mirrors) and none is
needed: clamd loads unsigned databases as it loads official ones, and reports their
signatures as NAME.UNOFFICIAL. The database names three contents: the EICAR test file
(a body signature at offset 0, as ClamAV's own), MARKER anywhere in a file (a body
signature, which the builtin engine does not know: what it finds in a VM, clamd found)
and DROPPER exactly (a SHA-256 hash signature).

Everything clamd has lives in one temporary directory: database, socket, temporary
files, log (its stderr). Started as root, clamd drops privileges to ``clamav`` before it
binds its socket and loads its database, as Debian's does; so the directory is readable
by all and the socket's directory is clamav's.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from hvfs.services.scan import EICAR, Detection

MARKER = b"HVFS-CLAMD-TEST-MARKER-41c9"
DROPPER = bytes(range(256)) * 16 + b"a dropper only its hash betrays"
DATABASE = {
    "hvfs-test.ndb": f"Hvfs.Test.Eicar:0:0:{EICAR.hex()}\nHvfs.Test.Marker:0:*:{MARKER.hex()}\n",
    "hvfs-test.hsb": f"{hashlib.sha256(DROPPER).hexdigest()}:{len(DROPPER)}:Hvfs.Test.Dropper\n",
}
CLAMD_USER = "clamav"  # the user Debian's and Fedora's packages run clamd as
START_SECONDS = 60.0
STOP_SECONDS = 30.0


def detected(name: str) -> Detection:
    """What ClamdEngine reports for the signature ``name`` of this database."""
    return Detection("clamav", f"{name}.UNOFFICIAL")


def clamd_program() -> str | None:
    return shutil.which("clamd") or next((p for p in ("/usr/sbin/clamd", "/sbin/clamd") if os.access(p, os.X_OK)), None)


def ping(path: str, timeout: float = 1.0) -> bool:
    """Whether clamd answers PING at ``path`` (independent of the engine under test)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout)
            connection.connect(path)
            connection.sendall(b"zPING\0")
            return connection.recv(16) == b"PONG\0"
    except OSError:
        return False


class ClamdFailed(Exception):
    """clamd is not installed, or did not start; the message says why."""


class Clamd:
    """One clamd process serving ``socket`` from a database in a directory of its own.
    ``start`` again after ``kill`` or ``stop`` starts a new process on the same socket."""

    def __init__(self, *, stream_max: int | None = None) -> None:
        """``stream_max``: clamd's StreamMaxLength (default ClamAV's, 100 MB in 1.4: more
        than the scanner ever sends)."""
        program = clamd_program()
        if program is None:
            raise ClamdFailed("clamd is not installed: scripts/setup --test installs it (apt install clamav-daemon)")
        self.program = program
        # In /tmp whatever TMPDIR says: the AppArmor profile Debian and Ubuntu ship for clamd
        # lets it use /tmp/** (and its own directories), nothing else of ours.
        self.directory = Path(tempfile.mkdtemp(prefix="hvfs-clamd-", dir="/tmp"))
        os.chmod(self.directory, 0o755)  # clamav, and hvfs run by the rootless test user, pass through it
        database, run = self.directory / "db", self.directory / "run"
        database.mkdir(mode=0o755)
        run.mkdir(mode=0o755)
        for name, text in DATABASE.items():
            (database / name).write_text(text)
            os.chmod(database / name, 0o644)
        self.socket = str(run / "clamd.ctl")
        self.log = self.directory / "clamd.log"
        user = self._user()
        if user is not None:
            os.chown(run, user.pw_uid, user.pw_gid)
        self.config = self.directory / "clamd.conf"
        self.config.write_text(
            f"LocalSocket {self.socket}\n"
            "LocalSocketMode 666\n"  # rootless VMs' managers scan through it too
            "FixStaleSocket true\n"  # a killed clamd leaves its socket behind
            f"DatabaseDirectory {database}\n"
            f"TemporaryDirectory {run}\n"  # INSTREAM content goes to a file there
            "Foreground true\n"  # our child: its pid is the daemon's, its stderr our log
            "MaxThreads 4\n"
            + (f"StreamMaxLength {stream_max}\n" if stream_max is not None else "")
            + (f"User {user.pw_name}\n" if user is not None else "")
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.started_in = 0.0  # seconds from exec to the first PONG, last start

    @staticmethod
    def _user() -> pwd.struct_passwd | None:
        """Whom clamd runs as: ``clamav`` when we are root and it exists, else ourselves."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(CLAMD_USER)
        except KeyError:
            return None

    def start(self) -> None:
        """Starts clamd and waits until it answers PING. Raises ClamdFailed with its log."""
        assert self.process is None or self.process.poll() is not None, "clamd is running"
        began = time.monotonic()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [self.program, "--config-file", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = began + START_SECONDS
        while not ping(self.socket):
            if self.process.poll() is not None:
                raise ClamdFailed(f"clamd exited {self.process.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise ClamdFailed(f"clamd did not answer PING in {START_SECONDS:.0f} s: {self.log_tail()}")
            time.sleep(0.02)
        self.started_in = time.monotonic() - began

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:]) or "(no output)"
        except OSError as e:
            return f"(no log: {e})"

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it: clamd removes its socket."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL: clamd gone at once, its socket left behind."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: clamd still accepts connections (the kernel does) but never answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()  # a stopped process would not act on SIGTERM until continued
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
