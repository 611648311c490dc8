"""The manager's own cost per served request, without a VM or a driver: what services add.

    python benchmarks/dispatch.py [--requests 20000] [--rounds 15]

A real Manager over a directory of this machine serves opens of one file (the answer is
an fd, closed at once), as a driver would ask for them, through ``handle_request``. One
VM has no services; others have a bus with a fault rule that never fires (a hook that
looks at every request), or an audit log (an event per request). The VMs share the
manager: a VM without services must cost the same as on a manager without any. Measured
in CPU time of the dispatching thread (what the VM waits for; the audit's writer thread
is not counted), so that other work on the machine does not blur it. Prints the median
and the best of the rounds, in µs per request. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hvfs import api
from hvfs.hypervisor.services import ServiceOptions, ServiceSet
from hvfs.manager.manager import Manager
from hvfs.manager.vm import VmContext

SETUPS = {
    "no services": None,
    "a fault rule that never fires": {"faults": ["op=mkdir,path=/nowhere,errno=EIO"]},
    "an audit log": {"audit": "audit.jsonl"},
}


def per_request(manager: Manager, vm: str, requests: int) -> float:
    request = api.Open(caller=api.Caller(vm=vm, pid=os.getpid()), path=api.VmPath("/", "/file"), flags=os.O_RDONLY)
    began = time.thread_time()
    for _ in range(requests):
        response = manager.handle_request(request)
        assert isinstance(response, api.Fd), response
        os.close(response.fd)
    return (time.thread_time() - began) / requests * 1e6


def root_caller(vm: str) -> api.Caller:
    """A caller of ``vm`` as the VM's root, with the manager's own groups and capabilities:
    no switch of credentials is made."""
    mask = 0o022
    os.umask(mask)
    creds = api.Credentials(
        uid=os.geteuid(),
        gid=os.getegid(),
        groups=tuple(os.getgroups()),
        umask=mask,
        capabilities=(1 << 41) - 1,
        real_uid=os.getuid(),
        real_gid=os.getgid(),
    )
    return api.Caller(vm=vm, pid=os.getpid(), creds=creds)


def manager_with(
    setups: Mapping[str, Mapping[str, Any] | None], root: int, directory: str
) -> tuple[Manager, list[ServiceSet]]:
    """A Manager with one VM per setup, each rooted at ``root`` (its views are copies of the
    fd) with the services its table names (files relative to ``directory``); the service
    sets, for the caller to close."""
    manager = Manager()
    sets = []
    for name, table in setups.items():
        services = ServiceSet(ServiceOptions.from_table(table, directory)) if table else None
        if services is not None:
            services.attach(manager)
            sets.append(services)
        manager.add_vm(VmContext(name, os.dup(root), os.dup(root), bus=services.bus if services else None))
    return manager, sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "file").write_text("content\n")
        root = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        manager, sets = manager_with(SETUPS, root, directory)
        samples: dict[str, list[float]] = {name: [] for name in SETUPS}
        for _ in range(args.rounds):  # interleaved, so that a slow moment of the machine falls on all
            for name in SETUPS:
                samples[name].append(per_request(manager, name, args.requests))
        for services in sets:
            services.close()
        os.close(root)
    print(f"served opens through Manager.handle_request, {args.rounds} rounds of {args.requests}:")
    for name, values in samples.items():
        print(f"  {name:<32} median {statistics.median(values):6.2f} µs   best {min(values):6.2f} µs")


if __name__ == "__main__":
    main()
