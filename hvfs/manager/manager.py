"""The manager: one place where requests meet VMs, handlers and credentials."""

from __future__ import annotations

import errno
import logging
import threading

from hvfs import api
from hvfs.api.messages import operation
from hvfs.manager import creds
from hvfs.manager.handlers import HANDLERS
from hvfs.manager.vm import VmContext

log = logging.getLogger("hvfs.manager")


def _outcome(response: api.Response) -> str:
    if isinstance(response, api.Errno):
        return "failed"
    if isinstance(response, api.Continue):
        return "continued"
    return "served"


class Manager:
    def __init__(self) -> None:
        self._vms: dict[str, VmContext] = {}
        self._lock = threading.Lock()
        # Unix sockets made by any VM of this manager: VMs may connect to each other's.
        self.sockets: set[tuple[int, int]] = set()

    def add_vm(self, vm: VmContext) -> None:
        with self._lock:
            if vm.name in self._vms:
                raise ValueError(f"a VM named {vm.name!r} is already registered")
            self._vms[vm.name] = vm

    def remove_vm(self, name: str) -> VmContext:
        with self._lock:
            return self._vms.pop(name)

    def vm(self, name: str) -> VmContext:
        return self._vms[name]

    def handle_request(self, request: api.Request) -> api.Response:
        """Serve one request. The only place where exceptions become errnos: an OSError
        keeps its errno; anything else is a bug, logged, and answered EIO."""
        vm = self._vms.get(request.caller.vm)
        if vm is None:
            return api.Errno(errno.ENOSYS)
        identity = request.caller.creds
        if isinstance(request, api.Access) and identity is not None and not request.flags & creds.AT_EACCESS:
            identity = creds.for_access(identity)
        try:
            with creds.acting_as(identity):
                response = HANDLERS[type(request)](vm, request)
        except OSError as e:
            response = api.Errno(e.errno or errno.EIO)
        except Exception:
            log.exception("internal error in %s for VM %s (pid %d)", request, vm.name, request.caller.pid)
            response = api.Errno(errno.EIO)
        vm.count(operation(request), _outcome(response))
        return response
