"""The seccomp driver: receives a VM's notifications and answers them through the manager.

Some facts about seccomp user notification, which the code below relies on:

* A notification is a stopped thread. Nothing read from it is trustworthy until
  ``NOTIF_ID_VALID`` says the notification is still pending: only then is the pid we read
  memory and /proc entries from still that thread (pids are reused). An id that turned
  invalid never turns valid again, so one check after all reads covers them all.
* ``CONTINUE`` is not a security boundary: the kernel re-reads the arguments, and another
  thread may have changed them since we looked (measured on this machine: a forbidden file
  was opened dozens of times in 2,000 racing tries). HVFS continues only where the outcome
  cannot matter: every continued call runs against the VM's boot view, which is read-only,
  so a continued write can only touch what a VM may write natively (devices, procfs).
* The fd table is as much the VM's as its memory: another thread may ``dup2`` another
  file over an fd number between the manager's ``pidfd_getfd`` and the kernel's own
  lookup when the call continues (measured: an INET socket checked, a unix socket
  connected to a host socket). So a decision taken on a duplicated fd is carried out on
  that duplicate (socket calls are performed by the manager), or continued only where
  any file the number might name by then gives a harmless outcome.
* A served call that would block (a send to a full queue, a connect in progress) never
  blocks a worker in the kernel: the manager answers ``WouldBlock`` and the worker waits
  on the manager's duplicate, checking ``ID_VALID`` and the thread's pending signals.
* ``ADDFD`` installs the manager's open file in the target; the VM gets exactly the file
  the manager opened, which no race can change. It cannot carry ``O_PATH`` files. With
  ``SEND`` it also answers, in one step; but then the VM runs on while the manager still
  holds its own reference to the file, so the VM's close is not the last: inotify's
  IN_CLOSE_WRITE comes late, and an exec right after writing fails with ETXTBSY. So a
  writable file is installed first, the manager's reference dropped, and only then the
  call answered; read-only files take the one-step path.
* A signal to a trapped thread cancels its notification (``NOTIF_SEND`` then fails with
  ENOENT); with ``WAIT_KILLABLE_RECV`` only a fatal signal can, once it has been received.
  Both ENOENT on send and a dying target are normal and never stop the loop.
* ``NOTIF_RECV`` blocks for ever once the last target has exited, and the kernel wakes no
  one when that happens: only one worker at a time (the receiver) polls and receives,
  and the poll sees ``POLLHUP``.
* Waking another thread costs more than serving a request: a cross-CPU wake-up and a
  GIL handoff, tens of microseconds each on this machine. So the receiver serves what
  it receives itself and goes back to receiving, and no other thread runs. The other
  workers exist for requests that block (a lookup on a hung network file system): a
  watchdog that sees the receiver stuck in one request for ``TAKEOVER`` seconds hands
  the receiving to an idle worker, or starts one if none is idle (up to ``MAX_WORKERS``),
  so one blocked request never freezes a VM. One worker is started with the driver: the
  others would only wait, each costing a thread's start and, for a spare, a wake-up at
  ``bind``; a takeover waits ``TAKEOVER`` anyway, against which a thread's start is nothing. The
  watchdog is one thread for every driver of the process (``watchdog.py``).
* ``SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`` (6.6+) makes the kernel switch straight to the waiting
  supervisor thread on the trapping CPU: a round trip drops from about 54 to 11 µs here.
* The ADDFD round trip gets no such flag: the kernel wakes the target as usual, which the
  scheduler moves to an idle CPU if there is one, and a writable file then costs two
  cross-CPU wake-ups (install, then answer). Pinning the worker to the notifying CPU for
  the install does not keep the target there; measured, it made W8 slower (102 against
  77 µs for the install), as did pinning it to the other CPU (docs/fast-paths.md).
* The kernel calls of a request (receive, the path and credential reads, ID_VALID,
  ADDFD and the answer) run in C where hvfs/_native is built, each with the GIL released
  (``hvfs._sys.notify``, ``tracee.py``); the order above is the driver's, whichever
  implementation runs: every read before the one ID_VALID check that covers them, a
  writable file installed and released before the answer. ``HVFS_NATIVE=0`` forces
  the ctypes path. The receive loop runs in C too: it answers itself, without Python,
  what the driver would answer without the manager (``compiled.py``), and returns the rest.
* Each worker keeps, from request to request, fds naming the threads it served (their /proc
  status files and pidfds): they name a thread, never a reused number, and the ID_VALID
  check after all reads covers them as it covers every read (``kept.py``).
* It keeps their credentials too, under a pidfd of the thread, until the thread may have changed
  them: every call that can (set*id, setgroups, capset, umask, prctl, execve) is trapped, and the
  driver forgets what it kept before letting it continue (``credcache.py``: umask, shared by
  threads; an exec that takes over its leader's pid).
* A warm spare's driver (hvfs.hypervisor.spares) starts its threads with the spare, before
  its VM is any run's: made without a transport, its workers wait for ``bind`` (the run's
  VM name and its group's transport) before they receive anything, so no request is
  served by, or told to, anyone but the run's manager. Its listener, credentials and table
  in flight are the spare's own, never another VM's; a spare dropped unbound ends them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import select
import threading
import time
from typing import Any

from hvfs import _native as native
from hvfs import api, deferred
from hvfs._sys import notify, process
from hvfs._sys.abi import MSG_LEN
from hvfs.api import Transport
from hvfs.api.transport import TransportError
from hvfs.intercept import awake, compiled, inflight, orphans, served_stat
from hvfs.intercept.arch import Arch
from hvfs.intercept.compiled import credential_calls, decoders_for
from hvfs.intercept.credcache import CredWatch, before_change
from hvfs.intercept.decoders.context import Context, Output, Passthrough
from hvfs.intercept.decoders.tracee import CallError, TargetGone
from hvfs.intercept.filter import syscall_numbers
from hvfs.intercept.inflight import InflightTable, Pending
from hvfs.intercept.served_stat import ServedStat
from hvfs.intercept.tracee import Inspector, Tracee
from hvfs.intercept.watchdog import TAKEOVER, WATCHDOG

log = deferred.logger("hvfs.driver")

MAX_WORKERS = 64  # workers a VM may have when requests block (a socket call waiting for its peer)
WAIT_TICK = 0.05  # seconds between checks of a waiting caller (still there? a signal for it?)
DIE_AFTER_RECV = "HVFS_TEST_DIE_AFTER_RECV"  # tests only: a syscall name; see _die_at


class _Unbound:
    """The transport of a spare's driver until ``bind``; no worker receives before, so
    nothing asks it."""

    def handle_request(self, request: api.Request) -> api.Response:
        raise TransportError("this driver is not bound to a VM yet")

    def close(self) -> None:
        pass


class SeccompDriver:
    """Serves one VM's listener with a pool of worker threads, ``workers`` at first, more
    as requests block."""

    def __init__(
        self,
        listener: int,
        vm: str,
        transport: Transport | None,
        arch: Arch,
        *,
        workers: int = 1,
        inflight: InflightTable | None = None,
        strict: bool = True,
    ) -> None:
        self._listener = listener
        self._inflight = inflight  # where each worker notes what it serves, for a manager after this one
        self._vm = vm
        self._transport: Transport = transport if transport is not None else _Unbound()
        self._bound = threading.Event()  # a spare's (no transport yet): its workers wait for bind
        if transport is not None:
            self._bound.set()
        self._arch = arch
        self._decoders = decoders_for(arch)
        self._credential_calls = credential_calls(arch)
        self._creds = CredWatch()  # what the workers' Inspectors may keep of their callers' credentials
        self._publish = served_stat.switch_of if served_stat.wanted() else None  # whom C may act as
        self._checks_exec = strict  # the filter traps execs in every VM; only strict ones ask the manager
        self._turn_lock = threading.Lock()  # taken bare once per request: a Condition's ``with`` costs more
        self._turn = threading.Condition(self._turn_lock)
        self._receiver: threading.Thread | None = None  # the one thread allowed to poll and receive
        self._serving_since: float | None = None  # when the receiver began its current request
        self._done = False
        self._stop_read, self._stop_write = os.pipe2(os.O_CLOEXEC)
        self._threads = [
            threading.Thread(target=self._work, args=(i,), name=f"hvfs-{vm}-{i}", daemon=True) for i in range(workers)
        ]
        self._idle = 0  # workers waiting for their turn to receive
        self.sync_wake_up = False
        self._die_at = self._test_death(arch) if inflight is not None else None
        self._kept = (self._die_at,) if self._die_at is not None else ()
        tables = compiled.packed(arch, self._kept, strict)
        self._loop = compiled.Loop(vm, tables, self._die_at, self._creds.bumps)  # what C answers itself

    @staticmethod
    def _test_death(arch: Arch) -> int | None:
        """Tests only: the manager dies right after receiving this syscall, before its
        record (tests/test_manager_orphans.py)."""
        name = os.environ.get(DIE_AFTER_RECV)
        if not name:
            return None
        return next((nr for nr, known in syscall_numbers(arch).items() if known == name), None)

    def kept(self) -> dict[str, int]:
        """The listener (the shim holds a copy, so the VM's calls wait for the next
        manager) and the table of requests in flight, which a manager after this one
        needs to serve the VM again."""
        kept = {"listener": self._listener}
        if self._inflight is not None:
            kept["inflight"] = self._inflight.fd
        return kept

    def statistics(self) -> dict[str, Any]:
        document: dict[str, Any] = {"sync_wake_up": self.sync_wake_up, "hot_path": native.status()}
        document["credentials"] = self._creds.counts()
        if native.hotpath is not None:
            document["compiled"] = self._loop.counted()
        return document

    def serve_stats(self, served: ServedStat) -> ServedStat | None:
        """Serve a strict VM's plain stats (and what ``served`` says: opens, writes, an audit) in C
        from the next receive on; None where C cannot (``served_stat.wanted``)."""
        if self._publish is None:
            return None
        tables = compiled.packed(self._arch, self._kept, self._checks_exec, served_stat=True)
        self._loop.serve_stats(tables, served, self._creds.shared)
        return served

    def start(self) -> None:
        try:
            notify.set_flags(self._listener, notify.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
            self.sync_wake_up = True
        except OSError as e:  # kernels before 6.6
            if e.errno not in (errno.EINVAL, errno.ENOTTY):
                raise
        awake.start()
        for thread in self._threads:
            thread.start()
        if self._bound.is_set():  # a spare's is watched from its bind: nothing to watch until then
            WATCHDOG.watch(self)

    def bind(self, vm: str, transport: Transport) -> None:
        """A spare's driver is now the VM ``vm``'s, served through ``transport``: its
        workers, started with the spare and waiting, begin to receive."""
        assert not self._bound.is_set(), "a driver is bound once"
        self._vm, self._transport = vm, transport
        self._loop.vm = vm
        for slot, thread in enumerate(self._threads):
            thread.name = f"hvfs-{vm}-{slot}"
        WATCHDOG.watch(self)
        self._bound.set()

    def stop(self) -> None:
        """Stop serving; requests still pending then fail with ENOSYS when the listener closes."""
        if not self._bound.is_set():  # a spare's, dropped: its workers never received
            with self._turn:
                self._done = True
            self._bound.set()
        os.write(self._stop_write, b"x")
        self.join()
        WATCHDOG.forget(self)

    def join(self, timeout: float | None = None) -> None:
        for thread in list(self._threads):  # the watchdog may add some meanwhile; they end with the others
            thread.join(timeout)

    def close(self) -> None:
        for fd in (self._listener, self._stop_read, self._stop_write):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._inflight is not None:
            self._inflight.close()

    def take_over(self, pending: list[Pending], last_id: int | None, vm_pid: int) -> None:
        """Before ``start``: answer what a manager before this one took and left
        (``serve_pending``), and the requests it received and died before recording
        (hvfs.intercept.orphans), found near ``last_id`` among the threads of the pid
        namespace of ``vm_pid``."""
        self._creds.distrust()  # the filter is another manager's: it may not trap every change of credentials
        known = {}
        for request in pending:
            notif = notify.Received.from_raw(request.notification)
            known[notif.id] = notif.pid
        around = last_id if last_id is not None else max(known, default=None)
        lost = orphans.probe(self._listener, around, set(known)) if around is not None else []
        if lost:
            valid = {pid for notif_id, pid in known.items() if notify.id_valid(self._listener, notif_id)}
            try:
                namespace: tuple[int, int] | None = orphans.pid_namespace(vm_pid)
            except OSError:  # pid 1 is gone: the VM is ending, its threads with it
                namespace = None
            found = orphans.find(self._listener, lost, valid, namespace, self._arch.audit)
            for orphan in found.served:
                log.warning("VM %s: a request of pid %d received by a manager killed before noting it (syscall %d)"
                            " served again", self._vm, orphan.pid, orphan.data.nr)  # fmt: skip
            for orphan in [*found.received, *found.served]:
                args = (notify.Received.of(orphan), False, 0)
                threading.Thread(target=self._serve_alone, args=args, daemon=True).start()
            if found.unexplained:
                log.warning("VM %s: %d request(s) received by a manager killed before noting them, not told apart:"
                            " answered EIO", self._vm, len(found.unexplained))  # fmt: skip
            for notif_id in found.unexplained:
                self._respond(notif_id, error=errno.EIO)
        self.serve_pending(pending)

    def serve_pending(self, pending: list[Pending]) -> None:
        """Answer the requests a manager before this one took and never answered
        (``InflightTable.pending``), if their callers still wait: with the result it noted,
        or by serving them again, each in a thread of its own."""
        for request in pending:
            notif = notify.Received.from_raw(request.notification)
            if not notify.id_valid(self._listener, notif.id):
                continue
            log.warning("VM %s: a request of pid %d taken before a restart (syscall %d) answered again (state %d)",
                        self._vm, notif.pid, notif.nr, request.state)  # fmt: skip
            if request.state == inflight.ANSWERED:
                self._respond(notif.id, value=request.value, error=request.errno)
            elif request.state == inflight.CONTINUED:
                self._respond(notif.id, flags=notify.SECCOMP_USER_NOTIF_FLAG_CONTINUE)
            else:
                created = request.state == inflight.OPENED  # an O_EXCL create made its file already
                args = (notif, created, request.received_ns)
                threading.Thread(target=self._serve_alone, args=args, daemon=True).start()

    def _serve_alone(self, notif: notify.Received, created: bool, received_ns: int) -> None:
        inspector = Inspector(self._creds, self._publish)
        try:
            self._serve(notif, inspector, created=created, replayed_since=received_ns)
        finally:
            inspector.close()

    def _work(self, slot: int) -> None:
        self._bound.wait()
        if self._done:
            return
        inspector = Inspector(self._creds, self._publish)
        try:
            self._work_with(inspector, slot)
        finally:
            inspector.close()

    def _work_with(self, inspector: Inspector, slot: int) -> None:
        me = threading.current_thread()
        while True:
            with self._turn:
                self._idle += 1
                while self._receiver is not None and not self._done:
                    self._turn.wait()
                self._idle -= 1
                if self._done:
                    return
                self._receiver = me
            while True:  # the fast path: receive, serve, receive, with no other thread awake
                published = inspector.creds.published
                notif = self._loop.receive(self._listener, self._stop_read, self._inflight, slot, published)  # recorded
                if notif is None:
                    with self._turn:
                        self._done = True
                        self._receiver = None
                        self._turn.notify_all()
                    return
                self._serving_since = time.monotonic()
                inspector.creds.adopt()  # the credentials C read meanwhile (first_credentials.h)
                table = self._inflight
                self._serve(notif, inspector, slot=slot)
                if table is not None:
                    table.clear(slot)
                with self._turn_lock:
                    self._serving_since = None
                    if self._receiver is not me:
                        break  # taken over while this request blocked: wait for a turn

    def check(self) -> bool:
        """The watchdog's (``watchdog.WATCHDOG``, every ``TAKEOVER``): a receiver stuck in
        one request that long hands the receiving on. False once this driver is done."""
        with self._turn:
            if self._done:
                return False
            since = self._serving_since
            if since is not None and time.monotonic() - since > TAKEOVER:
                self._receiver = None
                self._serving_since = None
                if not self._idle and len(self._threads) < MAX_WORKERS:  # every worker is blocked
                    slot = len(self._threads)
                    thread = threading.Thread(
                        target=self._work, args=(slot,), name=f"hvfs-{self._vm}-{slot}", daemon=True
                    )
                    self._threads.append(thread)
                    thread.start()
                self._turn.notify()
            return True

    def _serve(
        self,
        notif: notify.Received,
        inspector: Inspector,
        *,
        slot: int | None = None,
        created: bool = False,
        replayed_since: int = 0,
    ) -> None:
        tracee = Tracee(self._listener, notif.id, notif.pid, inspector)
        request: api.Request | None = None
        self._creds.seen(notif.pid, notif.id)  # a umask of this thread's, before, has returned
        try:
            if notif.nr in self._credential_calls and self._credentials_change(notif, tracee):
                return
            try:
                decode = self._decoders[notif.nr]
            except KeyError:
                self._respond(notif.id, error=errno.ENOSYS)
                return
            try:
                request, output = decode(Context(tracee, self._vm), notif.args)
                tracee.check_valid()
            except CallError as e:
                self._respond(notif.id, error=e.errno)
                return
            except Passthrough:
                self._respond(notif.id, flags=notify.SECCOMP_USER_NOTIF_FLAG_CONTINUE)
                return
            if created and isinstance(request, api.Open):
                request = dataclasses.replace(request, flags=request.flags & ~os.O_EXCL)
            if replayed_since:
                caller = dataclasses.replace(request.caller, replayed_since=replayed_since)
                request = dataclasses.replace(request, caller=caller)  # type: ignore[call-arg]
            response = self._transport.handle_request(request)
            if slot is not None and self._inflight is not None:
                self._inflight.performed(slot, response)
            self._apply(tracee, response, output)
        except TargetGone:
            pass
        except Exception:
            log.exception("internal error serving syscall %d of pid %d", notif.nr, notif.pid)
            self._respond(notif.id, error=errno.EIO)
        finally:
            tracee.close()

    def _credentials_change(self, notif: notify.Received, tracee: Tracee) -> bool:
        """A call that may change its caller's credentials: forget what the workers kept of
        them before it runs; True when answered here (``credcache.before_change``)."""

        def proceed() -> None:
            self._respond(notif.id, flags=notify.SECCOMP_USER_NOTIF_FLAG_CONTINUE)

        name = self._credential_calls[notif.nr]
        checks_exec, sequence, number = self._checks_exec, notif.id, notif.nr
        return before_change(
            self._creds, name, notif.args, tracee, proceed, checks_exec=checks_exec, sequence=sequence, number=number
        )

    def _apply(self, tracee: Tracee, response: api.Response, output: Output | None) -> None:
        notif_id = tracee.notif_id
        match response:  # the usual answer (an open's) first: each case is an isinstance
            case api.Fd(fd, cloexec):
                self._install(notif_id, fd, os.O_CLOEXEC if cloexec else 0)
            case api.Errno(code, signal):
                if signal:
                    tracee.send_signal(signal)
                self._respond(notif_id, error=code)
            case api.Value(value) if output is not None and output.kind == "msg_len":
                self._write_back(tracee, output, MSG_LEN.pack(value), 1)  # sendmmsg: one message sent
            case api.Value(value):
                self._respond(notif_id, value=value)
            case api.WouldBlock():
                self._wait(tracee, response, output)
            case api.Continue():
                self._respond(notif_id, flags=notify.SECCOMP_USER_NOTIF_FLAG_CONTINUE)
            case api.StatResult(stat):
                assert output is not None
                self._write_back(tracee, output, self._arch.pack_stat(stat), 0)
            case api.StatxResult(raw) | api.StatfsResult(raw):
                assert output is not None
                self._write_back(tracee, output, raw, 0)
            case api.Data(data):
                assert output is not None
                data = data[: output.size]
                self._write_back(tracee, output, data, len(data))

    def _wait(self, tracee: Tracee, blocked: api.WouldBlock, output: Output | None) -> None:
        """Waits as the kernel would have waited in the call: until the manager's socket is
        ready (then asks again), a signal comes for the caller (then answers as a signal
        would have ended the call), the caller is gone, or the driver stops. Where the
        socket's readiness does not tell this call's (a datagram to an address, while the
        socket itself is writable), it asks again after growing pauses."""
        pause = 0.001
        while True:
            poller = select.poll()
            poller.register(self._stop_read, select.POLLIN)
            if blocked.events:
                poller.register(blocked.fd, blocked.events)
            ready = [fd for fd, _ in poller.poll(int((WAIT_TICK if blocked.events else pause) * 1000))]
            if self._stop_read in ready:
                return
            tracee.check_valid()
            if tracee.signal_pending():
                self._apply(tracee, blocked.interrupted, output)
                return
            response = self._transport.handle_request(blocked.again)
            if not isinstance(response, api.WouldBlock):
                self._apply(tracee, response, output)
                return
            if blocked.fd in ready or not blocked.events:  # no readiness to wait for: back off
                if blocked.events:
                    time.sleep(pause)
                pause = min(pause * 2, WAIT_TICK)
            blocked = response

    def _install(self, notif_id: int, fd: int, newfd_flags: int) -> None:
        failed = notify.install(self._listener, notif_id, fd, newfd_flags)  # takes fd; answers EMFILE itself
        if failed not in (0, errno.ENOENT, errno.EMFILE):
            raise OSError(failed, os.strerror(failed), "NOTIF_ADDFD")

    def _write_back(self, tracee: Tracee, output: Output, data: bytes, result: int) -> None:
        tracee.check_valid()
        try:
            process.write_memory(tracee.pid, output.address, data)
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise TargetGone() from e
            self._respond(tracee.notif_id, error=errno.EFAULT)
            return
        self._respond(tracee.notif_id, value=result)

    def _respond(self, notif_id: int, *, value: int = 0, error: int = 0, flags: int = 0) -> None:
        try:
            notify.respond(self._listener, notif_id, value=value, error=error, flags=flags)
        except OSError as e:
            if e.errno != errno.ENOENT:  # ENOENT: cancelled by a signal, or the target died
                raise
