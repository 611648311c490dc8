"""Fault injection: which calls fail, how often, how late, and how rules are written."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from hvfs import api
from hvfs.api.hooks import EventBus, HookAnswer
from hvfs.services.faults import (
    FaultInjector,
    FaultRule,
    FaultSyntaxError,
    InjectedFault,
    load_fault_rules,
    parse_fault,
)


def open_(name: str, flags: int = os.O_RDWR, *, vm: str = "vm1") -> api.Open:
    return api.Open(caller=api.Caller(vm=vm, pid=99), path=api.VmPath(base="/", name=name), flags=flags)


def outcomes(injector: FaultInjector, requests: list[api.Open]) -> list[int | None]:
    answers = [injector.before(r.caller.vm, r) for r in requests]
    return [a.errno if isinstance(a, api.Errno) else None for a in answers]


def test_the_flag_syntax_parses_and_prints_back() -> None:
    rule = parse_fault("op=open,path=/data/*.db,errno=EIO,nth=3")
    assert rule == FaultRule(op="open", path="/data/*.db", errno=errno.EIO, first=3, last=3)
    for text in (
        "op=open,path=/data/*.db,errno=EIO,nth=3",
        "op=mkdir,path=/x/*,vm=db-*,errno=ENOSPC,p=0.25,from=2,to=9",
        "op=*,path=*,delay=50ms",
        "op=read,path=/a,errno=EACCES,from=4,delay=1.5ms",
    ):
        assert parse_fault(str(parse_fault(text))) == parse_fault(text)
    assert parse_fault("errno=28, delay=2s ,probability=1").delay == 2.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("op=open,errno=EIO,colour=red", "unknown key 'colour'"),
        ("op=open,errno=EWHAT", "unknown errno 'EWHAT'"),
        ("op=opne,errno=EIO", "unknown operation 'opne'"),
        ("op=open,path=/x", "needs errno= or delay="),
        ("errno=EIO,nth=3,from=2", "nth= or from=/to=, not both"),
        ("errno=EIO,p=1.5", "not between 0 and 1"),
        ("errno=EIO,from=5,to=3", "bad call range"),
        ("errno=EIO,nth=0", "bad call range"),
        ("errno=EIO,nth=three", "whole number"),
        ("errno=EIO,delay=50", "bad duration"),
        ("errno=EIO,errno=EROFS", "given twice"),
        ("errno", "is not key=value"),
    ],
)
def test_bad_rules_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(FaultSyntaxError, match=message) as caught:
        parse_fault(text)
    assert repr(text) in str(caught.value)


def test_exactly_the_third_matching_call_fails() -> None:
    injector = FaultInjector([parse_fault("op=open,path=/data/*.db,errno=EIO,nth=3")])
    calls = [open_("/data/a.db"), open_("/data/x.txt"), open_("/data/b.db"), open_("/etc/passwd")]
    calls += [open_("/data/sub/c.db"), open_("/data/a.db"), open_("/data/a.db")]
    assert outcomes(injector, calls) == [None, None, None, None, errno.EIO, None, None]
    (stats,) = injector.statistics().rules
    assert (stats.matched, stats.injected) == (5, 1)
    assert stats.rule == "op=open,path=/data/*.db,errno=EIO,nth=3"


def test_a_range_fails_calls_from_to() -> None:
    injector = FaultInjector([parse_fault("op=mkdir,errno=ENOSPC,from=3,to=5")])
    mkdir = api.Mkdir(caller=api.Caller(vm="vm1", pid=1), path=api.VmPath(base="/", name="/d"), mode=0o755)
    answers = [injector.before("vm1", mkdir) for _ in range(8)]
    assert [n + 1 for n, a in enumerate(answers) if a is not None] == [3, 4, 5]
    assert all(a == api.Errno(errno.ENOSPC) for a in answers if a is not None)
    assert injector.before("vm1", open_("/d")) is None  # another operation


def test_probability_zero_never_fails_and_one_always_fails() -> None:
    never = FaultInjector([parse_fault("errno=EIO,p=0")], seed=1)
    always = FaultInjector([parse_fault("errno=EIO,p=1")], seed=1)
    calls = [open_(f"/f{n}") for n in range(200)]
    assert outcomes(never, calls) == [None] * 200
    assert outcomes(always, calls) == [errno.EIO] * 200


def test_a_seed_makes_a_random_rule_reproducible() -> None:
    rules = [parse_fault("errno=EDQUOT,p=0.5")]
    calls = [open_(f"/f{n}") for n in range(200)]
    first = outcomes(FaultInjector(rules, seed=7), calls)
    assert outcomes(FaultInjector(rules, seed=7), calls) == first
    assert outcomes(FaultInjector(rules, seed=8), calls) != first
    assert 60 < first.count(errno.EDQUOT) < 140


def test_a_latency_rule_delays_the_call_and_lets_it_go_on() -> None:
    injector = FaultInjector([parse_fault("op=open,path=/slow/*,delay=50ms")])
    started = time.monotonic()
    assert injector.before("vm1", open_("/slow/f")) is None
    assert 0.045 <= time.monotonic() - started < 1.0
    started = time.monotonic()
    assert injector.before("vm1", open_("/fast/f")) is None
    assert time.monotonic() - started < 0.02


def test_rules_apply_in_order_and_every_firing_is_reported() -> None:
    reported: list[InjectedFault] = []
    injector = FaultInjector(
        [parse_fault("delay=10ms,path=/a*"), parse_fault("errno=EROFS,path=/a/*"), parse_fault("errno=EIO")],
        report=reported.append,
    )
    started = time.monotonic()
    assert injector.before("vm1", open_("/a/x")) == api.Errno(errno.EROFS)
    assert time.monotonic() - started >= 0.009
    assert injector.before("vm1", open_("/b")) == api.Errno(errno.EIO)
    assert [(f.rule, f.call, f.errno, f.paths) for f in reported] == [
        (0, 1, None, ("/a/x",)),
        (1, 1, errno.EROFS, ("/a/x",)),
        (2, 1, errno.EIO, ("/b",)),  # the call that rule 1 answered did not reach rule 2
    ]
    assert reported[0].delay == pytest.approx(0.01)
    assert (reported[1].vm, reported[1].pid, reported[1].operation) == ("vm1", 99, "open")


def test_read_vm_and_path_narrow_a_rule() -> None:
    injector = FaultInjector([parse_fault("op=read,vm=db-*,path=/data/*,errno=EACCES")])
    assert injector.before("db-1", open_("/data/f", os.O_RDONLY, vm="db-1")) == api.Errno(errno.EACCES)
    assert injector.before("db-1", open_("/data/f", os.O_WRONLY, vm="db-1")) is None
    assert injector.before("web", open_("/data/f", os.O_RDONLY, vm="web")) is None
    assert injector.before("db-1", open_("/etc/f", os.O_RDONLY, vm="db-1")) is None


def test_counts_are_exact_under_concurrent_calls() -> None:
    injector = FaultInjector([parse_fault("op=open,errno=EIO,nth=1000")])
    failures: list[int] = []

    def call() -> None:
        for _ in range(500):
            if injector.before("vm1", open_("/f")) is not None:
                failures.append(1)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (stats,) = injector.statistics().rules
    assert (stats.matched, stats.injected, len(failures)) == (4000, 1, 1)


def test_rules_load_from_a_toml_file(tmp_path: Path) -> None:
    rules_file = tmp_path / "faults.toml"
    rules_file.write_text(
        """
        [[fault]]
        op = "open"
        path = "/data/*.db"
        errno = "EIO"
        nth = 3

        [[fault]]
        op = "rename"
        errno = 28
        probability = 0.5
        from = 2
        delay = "5ms"
        """
    )
    assert load_fault_rules(str(rules_file)) == (
        FaultRule(op="open", path="/data/*.db", errno=errno.EIO, first=3, last=3),
        FaultRule(op="rename", errno=errno.ENOSPC, probability=0.5, first=2, delay=0.005),
    )
    rules_file.write_text('[[fault]]\nop = "open"\nerrno = "EIO"\nnth = "x"\n')
    with pytest.raises(FaultSyntaxError, match=r"faults.toml \[\[fault\]\] #1: nth= wants a whole number"):
        load_fault_rules(str(rules_file))
    rules_file.write_text("[faults]\n")
    with pytest.raises(FaultSyntaxError, match="expected only"):
        load_fault_rules(str(rules_file))
    rules_file.write_text("[[fault]\n")
    with pytest.raises(FaultSyntaxError, match=r"faults\.toml"):
        load_fault_rules(str(rules_file))


def test_an_injector_on_the_bus_answers_for_the_handler() -> None:
    bus = EventBus()
    bus.add_hook(FaultInjector([parse_fault("op=unlink,errno=EIO")]))
    unlink = api.Unlink(caller=api.Caller(vm="vm1", pid=5), path=api.VmPath(base="/", name="/x"))
    assert bus.run_hooks("vm1", unlink) == HookAnswer(api.Errno(errno.EIO), "faults")
    assert bus.run_hooks("vm1", open_("/x")) is None
