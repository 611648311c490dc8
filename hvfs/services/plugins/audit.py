"""The audit log (hvfs.services.audit): every request, as JSON lines in a file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hvfs.services.base import Kind, Needs, Option, Service, ServiceKind


@dataclass(frozen=True)
class AuditConfig:
    """The audit service's options."""

    path: str
    reads: bool


def _configure(values: Mapping[str, Any]) -> AuditConfig | None:
    return AuditConfig(values["audit"], values["audit_reads"]) if values["audit"] else None


def _open(config: AuditConfig) -> Service:
    from hvfs.services.audit import Audit

    return Audit(config.path)


def _adopt(config: AuditConfig, given: Mapping[str, int]) -> Service:
    from hvfs.services.audit import Audit

    return Audit(config.path, given.get(config.path), opens=False)


SERVICE = ServiceKind(
    name="audit",
    summary="every request the manager sees, as JSON lines (hvfs events reads them)",
    options=(
        Option("audit", Kind.OUTPUT, "write every request the manager sees as JSON lines to FILE"),
        Option("audit_reads", Kind.FLAG, "trap and audit reads too"),
    ),
    configure=_configure,
    open=_open,
    needs=lambda config: Needs(trap_reads=config.reads),
    adopt=_adopt,
)
