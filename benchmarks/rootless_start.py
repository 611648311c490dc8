"""A rootless user's start-up, two checkouts of hvfs compared round by round (as root).

    python benchmarks/rootless_start.py BEFORE_REPO AFTER_REPO [ROUNDS]

Each checkout is staged as tests/conftest.py stages one (a world-readable copy of its
``hvfs`` and of the pure-Python packages it needs from its ``.venv``, compiled), and run
as the tests' unprivileged user (``hvfs-rootless``) with ``python3 -P -m hvfs``, each with
a HOME and a state directory of its own, so that each has its own caches and manager.
Per round, in turn (the order swapped each round):

- the first VM's filter in a fresh process that has entered the manager's namespaces as
  a rootless manager does (``backend("seccomp").filter_program``): what a cold manager
  spends on it, a compile or a read of the user's filter cache;
- a cold ``hvfs run -- true`` (its manager stopped first), then a warm one.

Medians, and after ÷ before.
"""

from __future__ import annotations

import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

USER = "hvfs-rootless"
PYTHON = "/usr/bin/python3"
PACKAGES = ("ptrace", "pyroute2", "redis")
PROBE = """
import time
from hvfs import private_dirs, state
from hvfs.intercept.arch import native
from hvfs.intercept.backend import backend
from hvfs.sandbox import userns
if hasattr(state, "decide_user"):  # a checkout before it named root's cache in the namespace
    state.decide_user()
userns.enter_manager_namespaces()
private_dirs.trust_unmapped_owners()
began = time.perf_counter()
backend("seccomp").filter_program(False, native())
print((time.perf_counter() - began) * 1e3)
"""


def stage(repo: str, into: str) -> str:
    """A copy of ``repo``'s hvfs that the test user can import."""
    where = os.path.join(into, "stage")
    shutil.copytree(os.path.join(repo, "hvfs"), os.path.join(where, "hvfs"),
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    site = subprocess.run([os.path.join(repo, ".venv/bin/python"), "-c", "import pyseccomp; print(pyseccomp.__file__)"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    shutil.copy(site, where)
    for package in PACKAGES:
        shutil.copytree(os.path.join(os.path.dirname(site), package), os.path.join(where, package))
    subprocess.run([PYTHON, "-m", "compileall", "-q", where], check=True, capture_output=True)
    for root, dirs, files in os.walk(into):
        for name in dirs + files:
            path = os.path.join(root, name)
            os.chmod(path, os.stat(path).st_mode | 0o444 | (0o111 if os.path.isdir(path) else 0))
    return where


def own_directory(path: str) -> str:
    account = pwd.getpwnam(USER)
    os.mkdir(path, 0o700)
    os.chown(path, account.pw_uid, account.pw_gid)
    return path


class Checkout:
    def __init__(self, repo: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="hvfs-rootless-bench-")
        os.chmod(self.dir, 0o755)
        self.stage = stage(os.path.abspath(repo), self.dir)
        self.home = own_directory(os.path.join(self.dir, "home"))
        self.state = own_directory(os.path.join(self.dir, "state"))

    def command(self, *args: str) -> list[str]:
        env = [f"HOME={self.home}", f"PYTHONPATH={self.stage}", f"HVFS_STATE_DIR={self.state}"]
        return ["runuser", "-u", USER, "--", "env", "-i", "PATH=/usr/bin:/bin", *env, PYTHON, "-P", *args]

    def timed(self, *args: str) -> float:
        began = time.perf_counter()
        subprocess.run(self.command(*args), check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        return (time.perf_counter() - began) * 1e3

    def close(self) -> None:
        subprocess.run(self.command("-m", "hvfs", "manager", "stop"), capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> int:
    before, after = sys.argv[1:3]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    checkouts = {"before": Checkout(before), "after": Checkout(after)}
    figures: dict[str, dict[str, list[float]]] = {name: {"filter": [], "cold": [], "warm": []} for name in checkouts}
    try:
        for checkout in checkouts.values():  # the caches made once, as a user's first run makes them
            checkout.timed("-m", "hvfs", "run", "--", "true")
        for round_ in range(rounds):
            for name in list(checkouts)[:: 1 if round_ % 2 == 0 else -1]:
                checkout = checkouts[name]
                probe = subprocess.run(checkout.command("-c", PROBE), capture_output=True, text=True, check=True)
                figures[name]["filter"].append(float(probe.stdout))
                subprocess.run(checkout.command("-m", "hvfs", "manager", "stop"), check=True, capture_output=True)
                figures[name]["cold"].append(checkout.timed("-m", "hvfs", "run", "--", "true"))
                figures[name]["warm"].append(checkout.timed("-m", "hvfs", "run", "--", "true"))
    finally:
        for checkout in checkouts.values():
            checkout.close()
    for what in ("filter", "cold", "warm"):
        old, new = (statistics.median(figures[name][what]) for name in ("before", "after"))
        print(f"{what:7} before {old:8.2f} ms  after {new:8.2f} ms  after/before {new / old:.2f}  (n={rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
