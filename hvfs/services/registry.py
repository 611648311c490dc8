"""Every service hvfs has, in the order their hooks run, and what is made from their
declarations: the ``hvfs run`` flags, the ``[services]`` keys and the README's table.

Order matters for hooks: faults first (a test may fail an open before anything looks at
it), then the scanner (deny an infected file), then the backup's save of what a request
is about to destroy. Adding a service: a module in plugins/ and one line here.

``python -m hvfs.services.registry`` prints the README's table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from hvfs.services.base import Kind, Option, ServiceKind
from hvfs.services.plugins import audit, backup, faults, scan

if TYPE_CHECKING:  # the run parser's, built after "ready"
    import argparse

SERVICES: tuple[ServiceKind, ...] = (
    faults.SERVICE,
    scan.SERVICE,
    backup.SERVICE,
    audit.SERVICE,
)

_METAVARS = {Kind.PATH: "FILE", Kind.OUTPUT: "FILE", Kind.STORE: "DIR", Kind.SIZE: "SIZE", Kind.INT: "N"}


def options() -> Iterator[tuple[ServiceKind, Option]]:
    """Every option of every service, with its service."""
    for kind in SERVICES:
        for option in kind.options:
            yield kind, option


def keys() -> tuple[str, ...]:
    """The keys a project's ``[services]`` table may have."""
    return tuple(option.key for _, option in options())


def dest(option: Option) -> str:
    """Where ``add_run_flags``'s parser keeps the value of ``option``."""
    return f"service_{option.key}"


def add_run_flags(group: argparse._ArgumentGroup) -> None:
    """Add every service's options to ``hvfs run``'s argument group."""
    for _, option in options():
        text = (f"{option.help}, e.g. {option.example}" if option.example else option.help).replace("%", "%%")
        metavar = option.metavar or _METAVARS.get(option.kind, "VALUE")
        if option.kind is Kind.FLAG:
            group.add_argument(option.spelling, dest=dest(option), action="store_true", help=text)
        elif option.many:
            group.add_argument(option.spelling, dest=dest(option), action="append", default=[], metavar=metavar,
                               help=text)  # fmt: skip
        else:
            kind = int if option.kind is Kind.INT else str
            group.add_argument(option.spelling, dest=dest(option), type=kind, metavar=metavar, help=text)


def markdown() -> str:
    """The table of services and their options, as the README shows it."""
    lines = [f"- **{kind.name}**: {kind.summary}." for kind in SERVICES]
    lines += [
        "",
        "| service | `hvfs run` flag | `[services]` key | value | what it does |",
        "| --- | --- | --- | --- | --- |",
    ]
    for kind, option in options():
        value = "true/false" if option.kind is Kind.FLAG else option.kind.value
        if option.many:
            value = f"{value}, repeatable (an array)"
        text = f"{option.help}, e.g. `{option.example}`" if option.example else option.help
        lines.append(f"| {kind.name} | `{option.spelling}` | `{option.key}` | {value} | {text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
