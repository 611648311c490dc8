"""Fault injection (hvfs.services.faults): chosen requests fail, or wait."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hvfs.services.base import Kind, Needs, Option, OptionError, Service, ServiceKind

if TYPE_CHECKING:
    from hvfs.services.faults import FaultRule

# Operations that are reads: a rule on one of them needs reads trapped to see them.
READ_OPERATIONS = frozenset({"open", "read", "stat", "statx", "access", "readlink", "exec", "chdir", "lookup", "*"})


@dataclass(frozen=True)
class FaultConfig:
    """The fault injection service's options."""

    rules: tuple[FaultRule, ...]
    seed: int | None


def _configure(values: Mapping[str, Any]) -> FaultConfig | None:
    if not values["faults"] and not values["fault_file"]:
        return None
    from hvfs.services.faults import FaultSyntaxError, load_fault_rules, parse_fault

    try:
        rules = [parse_fault(text) for text in values["faults"]]
        if values["fault_file"]:
            rules += load_fault_rules(values["fault_file"])
    except (FaultSyntaxError, OSError) as e:
        raise OptionError(f"--fault: {e}") from None
    return FaultConfig(tuple(rules), values["fault_seed"]) if rules else None


def _needs(config: FaultConfig) -> Needs:
    return Needs(trap_reads=any(rule.op in READ_OPERATIONS for rule in config.rules))


def _open(config: FaultConfig) -> Service:
    from hvfs.services.faults import Faults

    return Faults(config.rules, config.seed)


SERVICE = ServiceKind(
    name="faults",
    summary="make chosen requests of chosen VMs fail with an errno, or slow them down",
    options=(
        Option(
            "faults",
            Kind.TEXT,
            "inject a fault",
            flag="--fault",
            many=True,
            metavar="RULE",
            example="op=open,path=/data/*.db,errno=EIO,nth=3",
        ),
        Option("fault_file", Kind.PATH, "fault rules from a TOML file ([[fault]] tables)", flag="--faults"),
        Option("fault_seed", Kind.INT, "seed for fault probabilities"),
    ),
    configure=_configure,
    open=_open,
    needs=_needs,
)
