"""The manager's CPU per served request of a few kinds, without a VM or a driver.

    PYTHONPATH=CHECKOUT python benchmarks/served_kinds.py [--requests 10000]

A real Manager over a directory of this machine serves, through ``handle_request``, as a
driver would ask for them: a read-open of ``/sub/file`` (strict mode's; the answer's fd
closed at once), a write-open of ``/file`` (the one-call open of
hvfs.manager.handlers.direct: the VM's view is taken as ``nodev``, as every view of
hvfs.manager.view is), a write-open of ``file`` relative to ``/sub`` (a base directory
found by its text and checked by identity), and a stat of ``/sub/file``. Prints the
thread CPU time per request of each, in µs, on one line: run it for two checkouts in
turn (PYTHONPATH), several rounds, to compare them. Not a test: nothing is asserted
but that each request is served.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from hvfs import api
from hvfs.manager.manager import Manager
from hvfs.manager.vm import VmContext

from dispatch import root_caller


def requests(caller: api.Caller, sub: os.stat_result) -> dict[str, api.Request]:
    relative = api.VmPath("/sub", "file", (sub.st_dev, sub.st_ino))
    return {
        "read /sub/file": api.Open(caller=caller, path=api.VmPath("/", "/sub/file"), flags=os.O_RDONLY),
        "write /file": api.Open(caller=caller, path=api.VmPath("/", "/file"), flags=os.O_WRONLY),
        "write sub/file from /sub": api.Open(caller=caller, path=relative, flags=os.O_WRONLY),
        "stat /sub/file": api.Stat(caller=caller, path=api.VmPath("/", "/sub/file"), follow=True),
    }


def per_request(manager: Manager, request: api.Request, count: int) -> float:
    """Thread CPU µs per request, after a warm-up."""
    for i in range(200 + count):
        if i == 200:
            began = time.thread_time()
        response = manager.handle_request(request)
        if isinstance(response, api.Fd):
            os.close(response.fd)
        elif isinstance(response, api.Errno):
            raise SystemExit(f"{request} answered {response}")
    return (time.thread_time() - began) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10000, help="requests of each kind (default 10000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        os.mkdir(f"{directory}/sub")
        for name in ("file", "sub/file"):
            with open(f"{directory}/{name}", "w"):
                pass
        root = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        vm = VmContext("vm", os.dup(root), os.dup(root))
        vm.view_nodev = True  # as a view of hvfs.manager.view; nothing here is a device
        manager = Manager()
        manager.add_vm(vm)
        made = requests(root_caller("vm"), os.stat(f"{directory}/sub"))
        print(" ".join(f"{name}={per_request(manager, request, args.requests):.2f}" for name, request in made.items()))
        os.close(root)


if __name__ == "__main__":
    main()
