"""Hypervisor-layer services: they run in the manager, for the VMs that ask for them, with
nothing inside the VMs.

- ``base.py``: the one contract of a service (declared options, needs, attach,
  statistics, close) and ``registry.py``, the list of services in hook order.
- ``plugins/``: each service as hvfs assembles it (its ``SERVICE`` declaration).
- ``audit.py``: AuditLog (JSON lines), read_events, ``hvfs events`` (add_events_command).
- ``faults.py``: FaultRule, parse_fault, load_fault_rules, FaultInjector (a hook).
- ``backup/``: BackupService, its store, index, restore, prune and ``hvfs backup``.
- ``scan/``: engines, Scanner, ScanHook, Quarantine and ``hvfs quarantine``.
- ``describe.py``: operation names and errnos, as rules and filters spell them.
- ``snapshot.py``: reading a file's content as one version, never torn.

Services take part in requests through the hooks the manager owns (hvfs.api.hooks:
``before``, ``after``, event subscribers, close watchers) on the bus of their VMs, and
read VMs' files through ``hvfs.api.hooks.Files``. They never import the manager, the
driver, the sandbox or the front ends: they see api requests and responses, VM names,
VM paths and fds. hvfs.hypervisor.services assembles them for ``hvfs run`` and ``hvfs up``.

Adding a service: its implementation, a module ``plugins/NAME.py`` defining ``SERVICE``
(see base.py), and one line in registry.py. The flags, the ``[services]`` keys, the
``--stats`` output and the README's table follow; regenerate the README's table with
``python -m hvfs.services.registry``.
"""
