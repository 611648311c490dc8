"""A VM's life in a project, as hvfs.toml describes it with compose's keys: its
``healthcheck``, the VMs it ``depends_on`` (and on what condition), and its ``restart``
policy. Parsed and checked here; the manager acts on them (hvfs.hypervisor.health,
hvfs.hypervisor.restart, hvfs.hypervisor.ordering).

Each parser raises ``Problem(key, text)``; hvfs.project.config puts the key path of the
file in front, so a mistake is one line naming the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hvfs.patterns import pattern

HEALTH_KEYS = ("test", "interval", "timeout", "retries", "start_period", "start_interval", "disable")
# Compose's defaults (docker's HEALTHCHECK): a probe every 30 s, failed after 30 s, three
# failures in a row make "unhealthy"; during start_period failures do not count, and
# probes come every start_interval.
DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
DEFAULT_START_INTERVAL = 5.0
MIN_INTERVAL = 0.001  # docker refuses less than 1 ms

CONDITIONS = ("started", "healthy", "completed_successfully")
POLICIES = ("no", "always", "unless-stopped", "on-failure")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION = pattern(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")


class Problem(ValueError):
    """A mistake at ``key`` (relative to the VM's table), described by ``text``."""

    def __init__(self, key: str, text: str) -> None:
        super().__init__(text)
        self.key, self.text = key, text


@dataclass(frozen=True)
class HealthCheck:
    """A VM's probe: ``argv`` run in it (as ``hvfs exec`` would) every ``interval``
    seconds; exit 0 is healthy."""

    argv: tuple[str, ...]
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    start_period: float = 0.0
    start_interval: float = DEFAULT_START_INTERVAL


@dataclass(frozen=True)
class RestartPolicy:
    """docker's ``--restart``: ``name`` one of POLICIES; ``max_retries`` for on-failure
    (0: no limit, as docker's on-failure without a count)."""

    name: str = "no"
    max_retries: int = 0

    def __str__(self) -> str:
        return f"{self.name}:{self.max_retries}" if self.name == "on-failure" and self.max_retries else self.name


def duration(key: str, value: object) -> float:
    """Seconds from compose's duration (``"1m30s"``, ``"500ms"``) or a number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Problem(key, f'must be a duration such as "10s" or "1m30s", not {type(value).__name__}')
    if isinstance(value, str):
        text = value.strip()
        parts = _DURATION.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise Problem(key, f'{value!r} is not a duration; use e.g. "10s", "500ms" or "1m30s"')
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or seconds > 365 * 86400:
        raise Problem(key, f"{value!r} is not a duration from 0 to a year")
    return seconds


def healthcheck(data: Mapping[str, Any]) -> HealthCheck | None:
    """The ``[vms.NAME.healthcheck]`` table; None when disabled (``disable = true`` or
    ``test = ["NONE"]``)."""
    unknown = sorted(set(data) - set(HEALTH_KEYS))
    if unknown:
        raise Problem(unknown[0], f"unknown key {unknown[0]!r}; known: {', '.join(sorted(HEALTH_KEYS))}")
    disable = data.get("disable", False)
    if not isinstance(disable, bool):
        raise Problem("disable", f"must be bool, not {type(disable).__name__}")
    test = data.get("test")
    if disable or test == ["NONE"]:
        return None
    argv = _test(test)
    times: dict[str, float] = {}
    for key in ("interval", "timeout", "start_period", "start_interval"):
        if key in data:
            times[key] = duration(key, data[key])
    for key in ("interval", "timeout", "start_interval"):
        if key in times and times[key] < MIN_INTERVAL:
            raise Problem(key, f"{data[key]!r} is too short; give at least 1ms")
    retries = data.get("retries", DEFAULT_RETRIES)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 1 <= retries <= 1_000_000:
        raise Problem("retries", f"{retries!r} is not a number of retries from 1")
    return HealthCheck(argv, retries=retries, **times)


def _test(test: object) -> tuple[str, ...]:
    """Compose's ``test``: ``["CMD", prog, args…]``, ``["CMD-SHELL", "a command"]``, or a
    string (as CMD-SHELL: run with sh -c)."""
    if test is None:
        raise Problem("test", 'a healthcheck needs a test, e.g. test = ["CMD", "pg_isready"] or "curl -f localhost"')
    if isinstance(test, str):
        if not test.strip():
            raise Problem("test", "an empty command; give the command that exits 0 when the VM is healthy")
        return ("sh", "-c", test)
    if not isinstance(test, list) or not all(isinstance(a, str) for a in test):
        raise Problem("test", f"must be a string or a list of strings, not {type(test).__name__}")
    kind, *rest = test or [""]
    if kind == "CMD" and rest:
        return tuple(rest)
    if kind == "CMD-SHELL" and len(rest) == 1 and rest[0].strip():
        return ("sh", "-c", rest[0])
    raise Problem("test", 'a list starts with "CMD" and a program, or is ["CMD-SHELL", "a command"], or ["NONE"]')


def depends_on(value: object, vm: str, known: Mapping[str, object]) -> dict[str, str]:
    """Compose's ``depends_on``: a list of VM names (condition "started"), or a table of
    VM name to ``{ condition = "healthy" }``; conditions as compose's, with or without
    its ``service_`` prefix. Returns VM name -> condition."""
    if isinstance(value, list):
        given: dict[str, object] = {}
        for item in value:
            if not isinstance(item, str):
                raise Problem("depends_on", f"a list of VM names, not of {type(item).__name__}")
            given[item] = {}
    elif isinstance(value, dict):
        given = dict(value)
    else:
        raise Problem("depends_on", f"must be a list of VM names or a table, not {type(value).__name__}")
    found = {}
    for name, how in given.items():
        key = f"depends_on.{name}"
        if name not in known:
            raise Problem(key, f"no VM named {name!r}; VMs: {', '.join(known)}")
        if name == vm:
            raise Problem(key, "a VM cannot depend on itself")
        if not isinstance(how, dict):
            raise Problem(key, f'must be a table such as {{ condition = "healthy" }}, not {type(how).__name__}')
        extra = sorted(set(how) - {"condition"})
        if extra:
            raise Problem(f"{key}.{extra[0]}", f"unknown key {extra[0]!r}; known: condition")
        condition = how.get("condition", "started")
        short = condition.removeprefix("service_") if isinstance(condition, str) else None
        if short not in CONDITIONS:
            raise Problem(f"{key}.condition", f"{condition!r} is not one of: {', '.join(CONDITIONS)}")
        found[name] = short
    return found


def restart(value: object) -> RestartPolicy:
    """``"no"``, ``"always"``, ``"unless-stopped"``, ``"on-failure"`` or ``"on-failure:N"``."""
    if not isinstance(value, str):
        raise Problem("restart", f'must be a string such as "on-failure:3", not {type(value).__name__}')
    name, _, count = value.partition(":")
    if name not in POLICIES or (count and name != "on-failure"):
        raise Problem("restart", f"{value!r} is not one of: no, always, unless-stopped, on-failure[:N]")
    if not count:
        return RestartPolicy(name)
    if not count.isdigit() or int(count) > 1_000_000:
        raise Problem("restart", f"on-failure:{count}: give the most restarts as a number, e.g. on-failure:3")
    return RestartPolicy(name, int(count))


def check_graph(dependencies: Mapping[str, Mapping[str, str]], checked: Mapping[str, HealthCheck | None]) -> None:
    """No cycle, and a "healthy" condition only on a VM with a healthcheck; raises
    Problem with the key of the dependent VM."""
    for vm, needs in dependencies.items():
        for name, condition in needs.items():
            if condition == "healthy" and checked.get(name) is None:
                raise Problem(
                    f"{vm}.depends_on.{name}.condition",
                    f'{name} has no healthcheck to be healthy by; add [vms.{name}.healthcheck] or use "started"',
                )
    state: dict[str, int] = {}  # 1: being visited, 2: done

    def visit(vm: str, path: list[str]) -> None:
        if state.get(vm) == 2:
            return
        if state.get(vm) == 1:
            cycle = path[path.index(vm) :]
            raise Problem(f"{path[0]}.depends_on", f"a cycle: {' -> '.join(cycle)}")
        state[vm] = 1
        for name in dependencies.get(vm, {}):
            visit(name, [*path, name])
        state[vm] = 2

    for vm in dependencies:
        visit(vm, [vm])


def start_order(dependencies: Mapping[str, Mapping[str, str]], names: list[str]) -> list[str]:
    """``names`` in an order where each VM comes after those it depends on; among VMs
    free to start, the file's order."""
    order: list[str] = []
    left = list(names)
    while left:
        ready = next(n for n in left if all(d in order for d in dependencies.get(n, {})))
        order.append(ready)
        left.remove(ready)
    return order
