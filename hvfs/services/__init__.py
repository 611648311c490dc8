"""Hypervisor-layer services: they run once, in the manager, for every VM.

- ``events.py``: Event, EventBus (synchronous hooks, asynchronous subscribers), event_for.
- ``audit.py``: AuditLog (JSON lines), read_events, ``hvfs events`` (add_events_command).
- ``faults.py``: FaultRule, parse_fault, load_fault_rules, FaultInjector (a hook).
- ``backup/``: BackupService, its store, index, restore, prune and ``hvfs backup``.
- ``scan/``: engines, Scanner, ScanHook, Quarantine and ``hvfs quarantine``.
- ``describe.py``: a request's operation names, paths and flags, as services see them.
- ``snapshot.py``: reading a file's content as one version, never torn.

How the manager uses them, in its one dispatch place::

    answer = bus.run_hooks(vm.name, request)       # FaultInjector, ScanHook, …
    if answer is None:
        response = HANDLERS[type(request)](vm, request)
        answer = bus.run_after_hooks(vm.name, request, response)  # ScanHook on an fd
    bus.publish(event_for(...))                    # AuditLog and other subscribers

and the backup service from the handlers of unlink and rename and from its close
watcher (see backup/service.py). Services never import the manager, the driver or the
sandbox: they see api requests and responses, VM names, VM paths and fds.
"""
