"""Fixtures for tests that run real VMs.

A test that needs a kernel feature this machine lacks is skipped with the reason; in CI
(CI=true), where everything must run, it fails instead, so nothing passes silently.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

from tests.clamd import Clamd, ClamdFailed

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI") == "true"
ROOTLESS_USER = "hvfs-rootless"
SYSTEM_PYTHON = "/usr/bin/python3"
# The native front (native/client/, installed by scripts/setup). HVFS_TEST_FRONT=1 runs the
# session's `hvfs` through it, so that the tests of the Python client are its spec too.
FRONT = str(REPO / ".venv" / "bin" / "hvfs")
THROUGH_FRONT = os.environ.get("HVFS_TEST_FRONT") == "1"


def require(condition: bool, reason: str) -> None:
    if not condition:
        unavailable(reason)


def unavailable(reason: str) -> NoReturn:
    """Skips the test, or in CI fails it: what it needs is missing (``reason``)."""
    if IN_CI:
        pytest.fail(f"CI must be able to run this: {reason}")
    pytest.skip(reason)


def _seccomp_notify_available() -> bool:
    try:
        return "user_notif" in Path("/proc/sys/kernel/seccomp/actions_avail").read_text().split()
    except OSError:
        return False


def _userns_available() -> bool:
    return subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True).returncode == 0


# Each test session has managers of its own (one per user): state directories under /tmp,
# so that sessions of several checkouts on one machine never share a manager.
_STATE_DIRS: dict[str, str] = {}


def state_dir(user: str | None, variant: str = "") -> str:
    """The state directory of this session's manager for ``user`` (None: root); a
    ``variant`` ("python": the manager serving through the Python path) has its own."""
    key = (user or "root") + (f"+{variant}" if variant else "")
    if key not in _STATE_DIRS:
        path = tempfile.mkdtemp(prefix=f"hvfs-state-{key}-")
        if user is not None:
            account = pwd.getpwnam(user)
            os.chown(path, account.pw_uid, account.pw_gid)
        _STATE_DIRS[key] = path
    return _STATE_DIRS[key]


@pytest.fixture(scope="session", autouse=True)
def private_managers() -> Iterator[None]:
    os.environ["HVFS_STATE_DIR"] = state_dir(None)
    yield
    for key, path in list(_STATE_DIRS.items()):
        command = [sys.executable, "-m", "hvfs", "manager", "stop"]
        user = key.split("+")[0]
        if user != "root":
            command = ["runuser", "-u", user, "--", "env", f"HVFS_STATE_DIR={path}", f"PYTHONPATH={REPO}", *command]
        subprocess.run(command, env={**os.environ, "HVFS_STATE_DIR": path}, capture_output=True, timeout=60)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def kernel_features() -> None:
    require(_seccomp_notify_available(), "the kernel has no seccomp user notification")
    require(_userns_available(), "user namespaces cannot be created here")


@dataclass
class Hvfs:
    """Runs ``hvfs`` as a command, the way a user does."""

    command: Sequence[str]
    user: str | None = None
    probes: Path = REPO / "tests" / "probes"  # the probe programs, where this runner can read them

    def run(
        self,
        *args: str,
        input: str | bytes | None = None,
        timeout: float = 120,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        stdin: int | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``stdin``: an fd the command gets as its standard input (instead of ``input``)."""
        text = not isinstance(input, bytes)
        return subprocess.run(
            [*self.command, *args],
            input=input,
            stdin=stdin,
            capture_output=True,
            text=text,
            timeout=timeout,
            cwd=cwd or "/",
            env=env,
        )

    def ok(self, *args: str, **kwargs: object) -> str:
        result = self.run(*args, **kwargs)  # type: ignore[arg-type]
        assert result.returncode == 0, f"hvfs {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        return result.stdout

    def with_env(self, **variables: str) -> Hvfs:
        """The same runner, with ``variables`` in hvfs's environment (past ``env -i``)."""
        at = next(i for i, part in enumerate(self.command) if part in (sys.executable, SYSTEM_PYTHON, FRONT))
        assigned = [f"{name}={value}" for name, value in variables.items()]
        return dataclasses.replace(self, command=[*self.command[:at], "env", *assigned, *self.command[at:]])

    def over(self, transport: str) -> Hvfs:
        """The same runner, its VMs' requests carried by ``transport`` (HVFS_TRANSPORT):
        the default (inprocess) as it is; another with a manager of its own, as the native
        front leaves a run whose HVFS_ variables differ from its manager's to the Python
        client (frontrun.parse), so the session's manager must not get them from whichever
        test happens to start it."""
        if transport == "inprocess":
            return self
        return self.with_env(HVFS_TRANSPORT=transport, HVFS_STATE_DIR=state_dir(self.user, transport))


@pytest.fixture(scope="session")
def hvfs() -> Hvfs:
    if THROUGH_FRONT:
        require(os.access(FRONT, os.X_OK), f"no native front at {FRONT}; run scripts/setup")
        return Hvfs([FRONT])
    return Hvfs([sys.executable, "-m", "hvfs"])


def python_path(runner: Hvfs) -> Hvfs:
    """The same runner with a manager of its own that serves through the Python path
    (HVFS_NATIVE=0, hvfs/_native): the manager's environment chooses the path."""
    return runner.with_env(HVFS_NATIVE="0", HVFS_STATE_DIR=state_dir(runner.user, "python"))


@pytest.fixture(scope="session")
def hvfs_python(hvfs: Hvfs) -> Hvfs:
    """hvfs as root, its requests served by the Python path."""
    return python_path(hvfs)


@pytest.fixture(scope="session")
def rootless_python(rootless: Hvfs) -> Hvfs:
    """hvfs run by the unprivileged user, its requests served by the Python path."""
    return python_path(rootless)


def _create_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
        return pwd.getpwnam(name)


@pytest.fixture(scope="session")
def staged() -> Iterator[Path]:
    """A world-readable copy of hvfs, its pure-Python dependencies and the probes, wherever
    the repository lives (CI may clone it where other users cannot look)."""
    require(os.geteuid() == 0, "creating unprivileged test users needs root")
    require(os.path.exists(SYSTEM_PYTHON), f"{SYSTEM_PYTHON} is needed to run hvfs as another user")
    stage = Path(tempfile.mkdtemp(prefix="hvfs-rootless-"))
    os.chmod(stage, 0o755)
    shutil.copytree(REPO / "hvfs", stage / "hvfs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "tests" / "probes", stage / "probes")
    shutil.copytree(REPO / "tests" / "conformance", stage / "conformance", ignore=shutil.ignore_patterns("__pycache__"))
    import ptrace
    import pyroute2
    import pyseccomp
    import redis

    shutil.copy(pyseccomp.__file__, stage / "pyseccomp.py")
    # python-ptrace: the exec tracer, while scanning; redis: a manager in a cluster (hvfs.cluster),
    # with async_timeout, which it imports on Python before 3.11.3 (Debian 12's 3.11.2)
    packages = [pyroute2, ptrace, redis]
    if sys.version_info < (3, 11, 3):
        import async_timeout

        packages.append(async_timeout)
    for package in packages:
        shutil.copytree(
            Path(package.__file__).parent, stage / package.__name__, ignore=shutil.ignore_patterns("__pycache__")
        )
    for path in stage.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)  # hvfs-init runs
    yield stage
    shutil.rmtree(stage, ignore_errors=True)


def as_user(name: str, stage: Path) -> Hvfs:
    """hvfs run by the user ``name`` (created if missing), from the staged copy."""
    account = _create_user(name)
    env = [
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        f"HOME={account.pw_dir}",
        f"PYTHONPATH={stage}",
        "PYTHONDONTWRITEBYTECODE=1",
        f"HVFS_STATE_DIR={state_dir(name)}",
    ]
    # -P: the staged copy, never the hvfs of the working directory (a client of other
    # code than its manager would replace the manager again and again).
    command = ["runuser", "-u", name, "--", *env, SYSTEM_PYTHON, "-P", "-m", "hvfs"]
    return Hvfs(command, user=name, probes=stage / "probes")


def staged_front(rootless: Hvfs, staged: Path, trace: Path) -> Hvfs:
    """The native front built for the ``staged`` copy, run as ``rootless``'s user, each
    run traced into ``trace`` (HVFS_FRONT_TRACE)."""
    import hvfs

    built = staged / "hvfs-front"
    if not built.exists():
        flags = [f'-DHVFS_PYTHON="{SYSTEM_PYTHON}"', f'-DHVFS_PACKAGE="{staged / "hvfs"}"',
                 f'-DHVFS_VERSION="{hvfs.__version__}"']  # fmt: skip
        sources = sorted(str(p) for p in (REPO / "native" / "client").glob("*.c"))
        subprocess.run(["cc", "-O2", *flags, "-o", str(built), *sources], check=True)
        built.chmod(0o755)
    env_prefix = rootless.command[: rootless.command.index(SYSTEM_PYTHON)]  # runuser … env -i VARS
    return Hvfs([*env_prefix, f"HVFS_FRONT_TRACE={trace}", str(built)], user=rootless.user)


def in_a_thread(body: Callable[[], T]) -> T:
    """``body()`` run in a new thread, its exception raised here: acting_as gives its thread
    an fs context of its own, which the test's thread must not keep."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(body())
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


@pytest.fixture(scope="module")
def front() -> str:
    """The native front, with this user's manager warm."""
    require(os.access(FRONT, os.X_OK), f"no native front at {FRONT}; run scripts/setup")
    warm = subprocess.run([sys.executable, "-m", "hvfs", "run", "--", "true"], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert warm.returncode == 0, warm.stderr
    return FRONT


@pytest.fixture
def fake_state(tmp_path: Path) -> Iterator[Path]:
    """A private state directory for a fake or a real manager, stopped after the test."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    yield state
    subprocess.run([sys.executable, "-m", "hvfs", "manager", "stop"], capture_output=True, timeout=60, cwd="/",
                   env={**os.environ, "HVFS_STATE_DIR": str(state)}, check=False)  # fmt: skip


@pytest.fixture(scope="session")
def rootless(staged: Path) -> Hvfs:
    """hvfs run by an unprivileged user the tests create."""
    return as_user(ROOTLESS_USER, staged)


@pytest.fixture
def shared_tmp(tmp_path: Path) -> Path:
    """A temporary directory that the unprivileged test user can use too (sticky, as /tmp:
    hvfs keeps no store in a directory where others may rename what is not theirs)."""
    path = Path(tempfile.mkdtemp(prefix="hvfs-test-"))
    os.chmod(path, 0o1777)
    yield path  # type: ignore[misc]
    shutil.rmtree(path, ignore_errors=True)


def chown_to(path: Path, user: str) -> None:
    account = pwd.getpwnam(user)
    for p in [path, *path.rglob("*")]:
        os.lchown(p, account.pw_uid, account.pw_gid)


# How the program tests (test_programs*.py) run their VMs: each test runs four ways.


@dataclass(frozen=True)
class Vm:
    """Runs commands in VMs as one test's parameters say: as root or rootless, strict or not."""

    runner: Hvfs
    strict: bool

    def give(self, *paths: Path) -> None:
        """Hands ``paths`` (recursively) to the user hvfs runs as, so that the VM may write in them.

        A rootless VM is root inside but only ``hvfs-rootless`` outside: it can write only where that user can.
        """
        if self.runner.user is not None:
            for path in paths:
                chown_to(path, self.runner.user)

    def run(
        self,
        command: Sequence[str],
        *,
        volumes: Sequence[str] = (),
        workdir: str | None = None,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """``hvfs run [--strict] -v VOLUME... [-w WORKDIR] -- COMMAND``."""
        args = ["run"]
        if self.strict:
            args.append("--strict")
        for volume in volumes:
            args += ["-v", volume]
        if workdir is not None:
            args += ["-w", workdir]
        return self.runner.run(*args, "--", *command, input=input, timeout=timeout)

    def sh(self, script: str, *, volumes: Sequence[str] = (), workdir: str | None = None, timeout: float = 120) -> str:
        """Runs a ``sh -eu`` script in a VM, asserts that it succeeded and returns its output."""
        result = self.run(["sh", "-euc", script], volumes=volumes, workdir=workdir, timeout=timeout)
        assert result.returncode == 0, (
            f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
        return result.stdout


VARIANTS = [
    pytest.param(("hvfs", False), id="root-default"),
    pytest.param(("hvfs", True), id="root-strict"),
    pytest.param(("rootless", False), id="rootless-default", marks=pytest.mark.rootless),
    pytest.param(("rootless", True), id="rootless-strict", marks=pytest.mark.rootless),
]
TRANSPORTS = ("inprocess", "socket")  # what carries a VM's requests to its manager (HVFS_TRANSPORT)
# The variants again over the socket transport, for tests that take them too:
# @pytest.mark.parametrize("vm", VARIANTS + SOCKET_VARIANTS, indirect=True).
SOCKET_VARIANTS = [
    pytest.param(("hvfs", False, "socket"), id="root-default-socket"),
    pytest.param(("hvfs", True, "socket"), id="root-strict-socket"),
    pytest.param(("rootless", False, "socket"), id="rootless-default-socket", marks=pytest.mark.rootless),
    pytest.param(("rootless", True, "socket"), id="rootless-strict-socket", marks=pytest.mark.rootless),
]


@pytest.fixture(params=VARIANTS)
def vm(request: pytest.FixtureRequest) -> Vm:
    """The same test as root and rootless, with and without ``--strict``."""
    runner_fixture, strict, *transport = request.param
    # looked up lazily so that the root variants run even where the rootless user cannot be made
    runner: Hvfs = request.getfixturevalue(runner_fixture)
    return Vm(runner.over(transport[0] if transport else "inprocess"), strict)


@pytest.fixture
def data(vm: Vm, shared_tmp: Path) -> Path:
    """An empty host directory the VM may write in; tests mount it at /data."""
    path = shared_tmp / "data"
    path.mkdir()
    vm.give(path)
    return path


@contextmanager
def running_clamd(*, stream_max: int | None = None) -> Iterator[Clamd]:
    """A clamd on the tests' own signature database (tests/clamd.py), stopped at the end."""
    try:
        daemon = Clamd(stream_max=stream_max)
    except ClamdFailed as e:
        unavailable(str(e))
    try:
        daemon.start()
    except ClamdFailed as e:
        daemon.close()
        unavailable(str(e))
    try:
        yield daemon
    finally:
        daemon.close()


@pytest.fixture(scope="session")
def clamd_socket() -> Iterator[str]:
    """The socket of a clamd that the tests share (see running_clamd); tests that stop or
    kill one start their own."""
    with running_clamd() as daemon:
        yield daemon.socket
