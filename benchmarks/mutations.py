"""The manager's own cost per served mutation, without a VM or a driver.

    python benchmarks/mutations.py [--requests 5000] [--rounds 7]

A real Manager over a directory of this machine serves, through ``handle_request``, the
mutations a build or an untar makes: a write-open that creates a file (the answer is an
fd, closed at once), its unlink, a mkdir and its rmdir, a chmod, a rename and back; paths
absolute and relative (``sub/f`` from a dirfd base, as most programs name them). One VM
has no services; the other has an audit log (its events name the served paths, as the
kernel resolved them). The VMs' root is a detached copy of a directory's mount, as a
writable view is (run as root). Both keep the change set of ``hvfs diff``. Measured in CPU time of
the dispatching thread, per request, interleaved rounds. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from hvfs import api
from hvfs._sys.mount import clone_tree
from hvfs.manager.manager import Manager

from dispatch import manager_with, root_caller

SETUPS = {"no services": None, "an audit log": {"audit": "audit.jsonl"}}
WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


def cycle(vm: str, base: str, name: str) -> list[api.Request]:
    """One round of mutations that leaves the tree as it found it."""
    caller = root_caller(vm)

    def path(p: str) -> api.VmPath:
        return api.VmPath(base, p) if not p.startswith("/") else api.VmPath("/", p)

    return [
        api.Open(caller=caller, path=path(name), flags=WRITE, mode=0o644),
        api.Chmod(caller=caller, target=path(name), mode=0o600),
        api.Rename(caller=caller, old=path(name), new=path(name + ".new")),
        api.Rename(caller=caller, old=path(name + ".new"), new=path(name)),
        api.Unlink(caller=caller, path=path(name)),
        api.Mkdir(caller=caller, path=path(name + ".d"), mode=0o755),
        api.Rmdir(caller=caller, path=path(name + ".d")),
    ]


def per_request(manager: Manager, requests: list[api.Request], rounds: int) -> float:
    began = time.thread_time()
    for _ in range(rounds):
        for request in requests:
            response = manager.handle_request(request)
            assert isinstance(response, api.Value | api.Fd), (request, response)
            if isinstance(response, api.Fd):
                os.close(response.fd)
    return (time.thread_time() - began) / (rounds * len(requests)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "sub").mkdir()
        # A detached copy of the directory's mount, as a VM's writable view is: its paths
        # read back through procfs as the VM's own (needs CAP_SYS_ADMIN).
        root = clone_tree(directory, recursive=False)
        manager, sets = manager_with(SETUPS, root, directory)
        kinds = {"absolute": ("/", "/sub/f"), "relative": ("/sub", "f")}
        samples: dict[tuple[str, str], list[float]] = {(s, k): [] for s in SETUPS for k in kinds}
        each = max(1, args.requests // 7)
        for _ in range(args.rounds):  # interleaved, so that a slow moment of the machine falls on all
            for setup in SETUPS:
                for kind, (base, name) in kinds.items():
                    requests = cycle(setup, base, name)
                    samples[setup, kind].append(per_request(manager, requests, each))
        for services in sets:
            services.close()
        os.close(root)
    print(f"served mutations through Manager.handle_request, {args.rounds} rounds of {each * 7}:")
    for (setup, kind), values in samples.items():
        print(f"  {setup:<16} {kind:<9} median {statistics.median(values):6.2f} µs   best {min(values):6.2f} µs")


if __name__ == "__main__":
    main()
