"""HVFS: a hypervisor file system for Linux machines without virtualization.

As a library: ``hvfs.VM`` and ``hvfs.Project`` (docs/python-api.md). They are imported
on first use, so that ``import hvfs`` (every ``hvfs run``, the pytest plugin's start)
stays as cheap as it was.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Not typing's: ``import hvfs`` imports nothing, and a manager (hvfs/__main__.py) installs
# hvfs.coldset's finder before typing and the rest are imported.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from hvfs.client.audit import Audit as Audit
    from hvfs.client.audit import AuditError as AuditError
    from hvfs.client.commands import CommandFailed as CommandFailed
    from hvfs.client.commands import CommandTimeout as CommandTimeout
    from hvfs.client.commands import Result as Result
    from hvfs.client.project import Project as Project
    from hvfs.client.project import ProjectVM as ProjectVM
    from hvfs.client.vm import VM as VM
    from hvfs.client.vm import Mount as Mount
    from hvfs.errors import HvfsError as HvfsError
    from hvfs.spec import UsageError as UsageError

_PUBLIC = {
    "VM": "hvfs.client.vm",
    "Mount": "hvfs.client.vm",
    "Project": "hvfs.client.project",
    "ProjectVM": "hvfs.client.project",
    "Result": "hvfs.client.commands",
    "CommandTimeout": "hvfs.client.commands",
    "CommandFailed": "hvfs.client.commands",
    "Audit": "hvfs.client.audit",
    "AuditError": "hvfs.client.audit",
    "HvfsError": "hvfs.errors",
    "UsageError": "hvfs.spec",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'hvfs' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
