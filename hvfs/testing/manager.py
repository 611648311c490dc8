"""Manager handlers on a real directory tree, with no namespace and no privilege."""

from __future__ import annotations

import os

from hvfs import api
from hvfs._sys.abi import O_PATH
from hvfs._sys.files import mount_id
from hvfs.manager.manager import Manager
from hvfs.manager.vm import VmContext
from hvfs.testing.tracee import own_credentials


def directory_vm(root: str | os.PathLike[str], name: str = "vm", *, strict: bool = False) -> VmContext:
    """A VM whose writable view and boot view are both the directory ``root``.

    What differs from a booted VM: the boot view is not read-only (an fd handed out for
    reading comes from a writable mount, and no EROFS comes from it), the tree is not a
    detached mount (paths of its files read as host paths), and the VM has no procfs of
    its own. Everything a handler does by path, it does here as it would in a VM."""
    rw_root = os.open(root, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    vm_root = os.open(root, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return VmContext(name, rw_root, vm_root, strict=strict, own_mounts=frozenset({mount_id(rw_root)}))


def directory_manager(root: str | os.PathLike[str], name: str = "vm", *, strict: bool = False) -> Manager:
    """A manager serving one ``directory_vm``; ``manager.vm(name).close()`` releases it."""
    manager = Manager()
    manager.add_vm(directory_vm(root, name, strict=strict))
    return manager


def caller(vm: str = "vm", creds: api.Credentials | None = None) -> api.Caller:
    """A caller in ``vm``: this process, with its own credentials unless told others."""
    return api.Caller(vm, os.getpid(), creds if creds is not None else own_credentials())
