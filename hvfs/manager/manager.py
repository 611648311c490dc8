"""The manager: one place where requests meet VMs, handlers and credentials."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import posixpath
import stat
import threading
import time
from typing import TYPE_CHECKING

from hvfs import api, deferred
from hvfs._sys.abi import AT_EACCESS
from hvfs.manager import changes, creds, replay, trail
from hvfs.manager.closes import CloseWatcher
from hvfs.manager.resolve import fd_closing, open_object, proc_path
from hvfs.manager.served import served_paths, several
from hvfs.manager.vm import VmContext

if TYPE_CHECKING:  # the bus is made for the VMs whose services want one
    from hvfs.api.hooks import EventBus
    from hvfs.manager.handlers import Handler

log = deferred.logger("hvfs.manager")


@functools.cache
def _outcomes() -> dict[type, str]:
    """What each kind of answer counts as in a VM's statistics; any other answer is "served"."""
    return {api.Errno: "failed", api.Continue: "continued", api.WouldBlock: "waiting"}


@functools.cache
def _handlers() -> dict[type, Handler]:
    """The handlers, imported by the first request that needs one (with the messages):
    a cold manager's first VM may ask nothing (hvfs.deferred)."""
    from hvfs.manager.handlers import HANDLERS

    return HANDLERS


class Manager:
    """Serves the requests of its VMs. A VM with a bus (its VmContext's) has services:
    their hooks run before the handler and may answer instead, or after it and may
    replace its response (hvfs.api.hooks states the contracts; hooks act as the manager,
    not with the caller's credentials); their subscribers get an event after the answer,
    and their close watchers each close of a file the VM wrote. Implements
    hvfs.api.hooks.Files for them."""

    def __init__(self) -> None:
        self._vms: dict[str, VmContext] = {}
        self._lock = threading.Lock()
        # Unix sockets made by any VM of this manager: VMs may connect to each other's.
        self.sockets: set[tuple[int, int]] = set()
        self._closes: CloseWatcher[EventBus] | None = None  # made for the first VM whose services want closes

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
        bus = vm.bus
        # Read once: a bus with an audit alone (the usual one) has no hooks to call and no
        # closes to watch, and the checks cost an audited request a tenth of what it adds.
        hooked = bus if bus is not None and bus.hooked else None
        audited = bus if bus is not None and bus.audited else None
        began = time.monotonic_ns() if audited is not None else 0
        answered_by = None
        noted: trail.Trail | None = None
        identity = request.caller.creds
        if isinstance(request, api.Access) and identity is not None and not request.flags & AT_EACCESS:
            identity = identity.for_access()
        try:
            answer = hooked.run_hooks(vm.name, request) if hooked is not None else None
            if answer is None:
                done = replay.already_done(vm, request) if request.caller.replayed_since else None
                if isinstance(request, api.Open) and request.caller.replayed_since:
                    request = replay.open_again(vm, request)
                watched = type(request) in changes.watched()
                with creds.acting_as(identity):
                    if done is None:
                        # The handler notes what it resolves, for the change set and the
                        # event (which names what the handler resolved).
                        noted = trail.begin(watched, audited is not None)
                        try:
                            response = _handlers()[type(request)](vm, request)
                        finally:
                            trail.end()
                    else:
                        pending = changes.before(vm.rw_root, request) if watched else None
                        response = done
                if done is None:
                    if noted is not None and watched:
                        changes.record(vm.changes, request, noted.names, response)
                elif pending is not None:
                    changes.after(vm.changes, pending, request, response)
                if hooked is not None:
                    answer = hooked.run_after_hooks(vm.name, request, response)
            if answer is not None:
                response, answered_by = answer.response, answer.hook
            if hooked is not None and hooked.watches_closes:
                self._watch_if_written(vm, hooked, request, response)
        except OSError as e:
            response = api.Errno(e.errno or errno.EIO)
        except Exception:
            log.exception("internal error in %s for VM %s (pid %d)", request, vm.name, request.caller.pid)
            response = api.Errno(errno.EIO)
        vm.count(type(request), _outcomes().get(type(response), "served"))
        if audited is not None:
            # Only what is true now is taken here (the names served, the command); the
            # event is made later, off the request path (hvfs.api.ring). The clocks and
            # the command name are read in the same C call (record_served). A request the
            # handler found by its text is named by it (served_paths' first case, without
            # its call).
            answer_name = noted.answer if noted is not None else None
            paths = (
                (answer_name,)
                if answer_name is not None and type(request) not in several()
                else served_paths(vm, request, response, noted)
            )
            audited.record_served(vm.name, request, response, began, answered_by, paths)
        return response

    def _watch_if_written(self, vm: VmContext, bus: EventBus, request: api.Request, response: api.Response) -> None:
        if not isinstance(response, api.Fd) or not isinstance(request, api.Open):
            return
        if fcntl.fcntl(response.fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY:
            self._close_watcher().watch(vm.name, str(request.path), response.fd, bus)

    def _close_watcher(self) -> CloseWatcher[EventBus]:
        closes = self._closes
        if closes is None:
            with self._lock:
                if self._closes is None:
                    self._closes = CloseWatcher(self._closed)
                closes = self._closes
        return closes

    def _closed(self, vm_name: str, path: str, bus: EventBus) -> None:
        """A VM closed a file it wrote: its services read it through one fd of ours."""
        fd = self.open_file(vm_name, path)
        if fd is None:
            return
        try:
            bus.closed(vm_name, path, fd)
        finally:
            os.close(fd)

    def wait_closes(self) -> None:
        """Implements Files.wait_closes."""
        if self._closes is not None:
            self._closes.wait()

    def open_file(self, vm_name: str, path: str | api.VmPath) -> int | None:
        """Implements Files.open_file: in the VM's writable view."""
        found = self._regular(vm_name, path)
        if found is None:
            return None
        with fd_closing(found[0]), contextlib.suppress(OSError):
            return os.open(proc_path(found[0]), os.O_RDONLY | os.O_CLOEXEC)
        return None

    def locate_file(self, vm_name: str, path: str | api.VmPath) -> tuple[int, int, str] | None:
        """Implements Files.locate_file."""
        found = self._regular(vm_name, path)
        if found is None:
            return None
        located, vm = found
        try:
            with fd_closing(located):
                real = os.readlink(proc_path(located))  # the detached view reads as the VM's own path
                fd = os.open(proc_path(located), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            head, name = posixpath.split(real)
            directory = open_object(vm.rw_root, api.VmPath("/", head or "/"), follow=True)
        except OSError:
            os.close(fd)
            return None
        return fd, directory, name

    def _regular(self, vm_name: str, path: str | api.VmPath) -> tuple[int, VmContext] | None:
        """An O_PATH fd on the regular file ``path`` names, and its VM; None otherwise."""
        vm = self._vms.get(vm_name)
        if vm is None:
            return None
        where = path if isinstance(path, api.VmPath) else api.VmPath("/", path)
        try:
            found = open_object(vm.rw_root, where, follow=True)
        except OSError:
            return None
        if not stat.S_ISREG(os.fstat(found).st_mode):
            os.close(found)
            return None
        return found, vm

    def deliver_closes(self, timeout: float = 30.0) -> None:
        """Return once the closes the kernel reported so far are delivered (a VM that
        has exited made its last ones)."""
        if self._closes is not None:
            self._closes.wait(timeout)

    def close(self) -> None:
        """Deliver the closes already reported, then stop watching for more."""
        if self._closes is not None:
            self._closes.close()
