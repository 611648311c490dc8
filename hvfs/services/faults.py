"""Fault injection: make chosen requests of chosen VMs fail, or slow them down.

A rule names an operation (the names of hvfs.api.messages.operation(): "open", "mkdir",
"rename", …; "read" for an open for reading only; "*" for any), a path glob (fnmatch,
matched against each path of the request, so ``*`` crosses ``/``), a VM glob, and what to
do: answer an errno, wait a delay first, or both. It fires on the matching calls it
counts from ``from`` to ``to`` (``nth=N`` is from=N,to=N), each with ``probability``.

Syntax, for ``hvfs run --fault``::

    op=open,path=/data/*.db,errno=EIO,nth=3
    op=mkdir,path=/data/*,errno=ENOSPC,p=0.1
    op=*,path=/slow/*,delay=50ms,from=10,to=20

and the same keys in a TOML file (``load_fault_rules``), one ``[[fault]]`` table each
(the way to write a glob that contains a comma).

Integration: ``bus.add_hook(FaultInjector(rules, seed=…))`` (``Faults``, the service,
does it for ``--fault``). Rules are tried in order;
each rule counts every matching call it sees, a firing latency rule sleeps (in the
dispatching thread: that is the point) and the next rules are tried, and the first
firing errno rule answers, so later rules do not see that call. Every firing rule is
passed to ``report`` (an InjectedFault), and the request's own event carries
``answered_by="faults"`` when a fault answered it. Only requests the manager is asked
about can fail this way: I/O on an fd the VM already holds (read, write, fsync) is not
trapped, and a size-limited memory mount (``--tmpfs /data:size=1m``) gives a real ENOSPC.
"""

from __future__ import annotations

import fnmatch
import random
import threading
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from hvfs import api
from hvfs.api.events import errno_name, request_paths
from hvfs.api.hooks import EventBus, Files
from hvfs.cluster.identity import host_name
from hvfs.services.base import service_event
from hvfs.services.describe import FAULT, OPERATIONS, operations, parse_errno
from hvfs.services.units import parse_duration

_HOST = host_name()  # a rule's host= matches it: one manager, one host, for its life
_KEYS = ("op", "path", "vm", "host", "errno", "p", "probability", "nth", "from", "to", "delay")


class FaultSyntaxError(ValueError):
    """A rule that cannot be parsed; the message names the rule, the key and the fix."""


@dataclass(frozen=True, slots=True)
class FaultRule:
    op: str = "*"
    path: str = "*"
    vm: str = "*"
    host: str = "*"  # a glob of the host names the rule holds on (hvfs.cluster.identity.host_name)
    errno: int | None = None  # None: the rule only adds latency
    probability: float = 1.0
    first: int = 1  # the first matching call it fires on, counting from 1
    last: int | None = None  # the last one; None: no end
    delay: float = 0.0  # seconds

    def __post_init__(self) -> None:
        if self.op != "*" and self.op not in OPERATIONS:
            raise ValueError(f"unknown operation {self.op!r}; one of *, {', '.join(sorted(OPERATIONS))}")
        if self.errno is None and self.delay <= 0:
            raise ValueError("a rule needs errno= or delay= (or both)")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability {self.probability} is not between 0 and 1")
        if self.first < 1 or (self.last is not None and self.last < self.first):
            raise ValueError(f"bad call range {self.first}..{self.last}: calls count from 1 and to >= from")
        if self.delay < 0:
            raise ValueError("delay must not be negative")

    def matches(self, vm: str, request: api.Request) -> bool:
        """Whether the call counts for this rule (before its range and probability)."""
        if self.op != "*" and self.op not in operations(request):
            return False
        if self.vm != "*" and not fnmatch.fnmatchcase(vm, self.vm):
            return False
        if self.host != "*" and not fnmatch.fnmatchcase(_HOST, self.host):
            return False
        return self.path == "*" or any(fnmatch.fnmatchcase(p, self.path) for p in request_paths(request))

    def in_range(self, call: int) -> bool:
        return call >= self.first and (self.last is None or call <= self.last)

    def __str__(self) -> str:
        """The rule in --fault syntax."""
        parts = [f"op={self.op}", f"path={self.path}"]
        if self.vm != "*":
            parts.append(f"vm={self.vm}")
        if self.host != "*":
            parts.append(f"host={self.host}")
        if self.errno is not None:
            parts.append(f"errno={errno_name(self.errno)}")
        if self.probability != 1.0:
            parts.append(f"p={self.probability:g}")
        if self.first == self.last:
            parts.append(f"nth={self.first}")
        else:
            parts += [f"from={self.first}"] if self.first != 1 else []
            parts += [f"to={self.last}"] if self.last is not None else []
        if self.delay:
            parts.append(f"delay={self.delay * 1000:g}ms")
        return ",".join(parts)


def _integer(value: object, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise ValueError(f"{key}= wants a whole number, not {value!r}")


def _number(value: object, key: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{key}= wants a number, not {value!r}") from None


def _text(value: object, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key}= wants a non-empty string, not {value!r}")
    return value


def rule_from(fields: Mapping[str, object], *, source: str) -> FaultRule:
    """A rule from its keys (values as strings or TOML types). Raises FaultSyntaxError
    naming ``source`` (the flag or the file and table)."""
    try:
        unknown = sorted(set(fields) - set(_KEYS))
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}; keys are {', '.join(_KEYS)}")
        if "nth" in fields and ("from" in fields or "to" in fields):
            raise ValueError("give nth= or from=/to=, not both")
        if "p" in fields and "probability" in fields:
            raise ValueError("give p= or probability=, not both")
        nth = _integer(fields["nth"], "nth") if "nth" in fields else None
        code = fields.get("errno")
        return FaultRule(
            op=_text(fields.get("op", "*"), "op"),
            path=_text(fields.get("path", "*"), "path"),
            vm=_text(fields.get("vm", "*"), "vm"),
            host=_text(fields.get("host", "*"), "host"),
            errno=None if code is None else code if isinstance(code, int) else parse_errno(_text(code, "errno")),
            probability=_number(fields.get("p", fields.get("probability", 1.0)), "p"),
            first=nth if nth is not None else _integer(fields.get("from", 1), "from"),
            last=nth if nth is not None else (_integer(fields["to"], "to") if "to" in fields else None),
            delay=parse_duration(_text(fields["delay"], "delay")) if "delay" in fields else 0.0,
        )
    except ValueError as e:
        raise FaultSyntaxError(f"fault rule {source}: {e}") from None


def parse_fault(text: str) -> FaultRule:
    """A rule from ``key=value,…`` (``--fault`` syntax). Raises FaultSyntaxError."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise FaultSyntaxError(f"fault rule {text!r}: {part!r} is not key=value (as op=open,errno=EIO)")
        if key in fields:
            raise FaultSyntaxError(f"fault rule {text!r}: {key}= given twice")
        fields[key] = value.strip()
    return rule_from(fields, source=repr(text))


def load_fault_rules(path: str) -> tuple[FaultRule, ...]:
    """The rules of a TOML file: ``[[fault]]`` tables with the keys of parse_fault.
    Raises OSError, or FaultSyntaxError naming the file and the table."""
    with open(path, "rb") as f:
        try:
            document = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise FaultSyntaxError(f"fault rules {path}: {e}") from None
    extra = sorted(set(document) - {"fault"})
    tables = document.get("fault", [])
    if extra or not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise FaultSyntaxError(f"fault rules {path}: expected only [[fault]] tables")
    return tuple(rule_from(table, source=f"{path} [[fault]] #{i + 1}") for i, table in enumerate(tables))


@dataclass(frozen=True, slots=True)
class InjectedFault:
    """A rule fired on a call: it answered ``errno`` (None for latency only) after ``delay``."""

    time: float
    vm: str
    pid: int
    operation: str
    paths: tuple[str, ...]
    rule: int  # index in the injector's rules
    call: int  # the rule's count of matching calls, this one included
    errno: int | None
    delay: float


@dataclass(frozen=True, slots=True)
class RuleStatistics:
    rule: str
    matched: int
    injected: int


@dataclass(frozen=True, slots=True)
class FaultStatistics:
    injected: int  # faults injected, by every rule
    rules: tuple[RuleStatistics, ...]


class FaultInjector:
    """Implements Hook: fails or delays the calls its rules select. Thread-safe; with a
    ``seed`` and one calling thread, the same calls fail on every run."""

    name = "faults"

    def __init__(
        self,
        rules: Sequence[FaultRule],
        *,
        seed: int | None = None,
        report: Callable[[InjectedFault], None] | None = None,
    ) -> None:
        self.rules = tuple(rules)
        self._random = random.Random(seed)
        self._report = report
        self._lock = threading.Lock()
        self._matched = [0] * len(self.rules)
        self._injected = [0] * len(self.rules)

    def before(self, vm: str, request: api.Request) -> api.Response | None:
        for index, rule in enumerate(self.rules):
            if not rule.matches(vm, request):
                continue
            with self._lock:  # counts and draws in one order, so a seed reproduces a run
                self._matched[index] += 1
                call = self._matched[index]
                fires = rule.in_range(call) and (rule.probability >= 1.0 or self._random.random() < rule.probability)
                if fires:
                    self._injected[index] += 1
            if not fires:
                continue
            if rule.delay:
                time.sleep(rule.delay)
            if self._report is not None:
                self._report(self._injected_fault(vm, request, index, call))
            if rule.errno is not None:
                return api.Errno(rule.errno)
        return None

    def _injected_fault(self, vm: str, request: api.Request, index: int, call: int) -> InjectedFault:
        rule = self.rules[index]
        paths = request_paths(request)
        return InjectedFault(
            time.time(), vm, request.caller.pid, operations(request)[0], paths, index, call, rule.errno, rule.delay
        )

    def statistics(self) -> FaultStatistics:
        with self._lock:
            matched, injected = list(self._matched), list(self._injected)
        rules = zip(self.rules, matched, injected, strict=True)
        return FaultStatistics(sum(injected), tuple(RuleStatistics(str(rule), m, i) for rule, m, i in rules))


class Faults:
    """Implements hvfs.services.base.Service: a FaultInjector on the bus of its VMs, whose
    latency rules are published as events (an errno rule shows in the request's own)."""

    name = "faults"

    def __init__(self, rules: Sequence[FaultRule], seed: int | None) -> None:
        self._bus: EventBus | None = None
        self.injector = FaultInjector(rules, seed=seed, report=self._injected)

    def attach(self, bus: EventBus, files: Files) -> None:
        self._bus = bus
        bus.add_hook(self.injector)

    def _injected(self, fault: InjectedFault) -> None:
        if fault.errno is None and self._bus is not None:
            result = f"delay {fault.delay * 1000:.0f}ms"
            self._bus.publish(service_event(fault.vm, fault.pid, FAULT, fault.paths, result))

    def statistics(self) -> FaultStatistics:
        return self.injector.statistics()

    def close(self) -> None:
        pass
