"""The rules of hvfs.toml's healthcheck/depends_on/restart, of the back-off, and of the
exit code of a foreground ``hvfs up`` (the VMs that apply them: tests/test_project_ci.py)."""

from __future__ import annotations

import pytest

from hvfs.hypervisor.restart import MAX_DELAY, Restarts
from hvfs.project import lifecycle
from hvfs.project.cli import Outcome


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0), ("1.5s", 1.5), (3, 3.0), (0.25, 0.25)],
)
def test_durations_are_composes(text: object, seconds: float) -> None:
    assert lifecycle.duration("interval", text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "1 m", "s", "-1s", "1d", True, "1e400s"])
def test_what_is_no_duration(text: object) -> None:
    with pytest.raises(lifecycle.Problem):
        lifecycle.duration("interval", text)


def test_healthcheck_defaults_and_forms() -> None:
    check = lifecycle.healthcheck({"test": ["CMD", "pg_isready", "-q"]})
    assert check == lifecycle.HealthCheck(("pg_isready", "-q"), 30.0, 30.0, 3, 0.0, 5.0)
    assert lifecycle.healthcheck({"test": "curl -f x"}) == lifecycle.HealthCheck(("sh", "-c", "curl -f x"))
    assert lifecycle.healthcheck({"test": ["CMD-SHELL", "a && b"]}).argv == ("sh", "-c", "a && b")  # type: ignore[union-attr]
    assert lifecycle.healthcheck({"test": ["NONE"]}) is None
    assert lifecycle.healthcheck({"test": "true", "disable": True}) is None


def test_start_order_puts_dependencies_first() -> None:
    needs = {"web": {"db": "healthy", "cache": "started"}, "cache": {"db": "started"}, "db": {}}
    assert lifecycle.start_order(needs, ["web", "cache", "db"]) == ["db", "cache", "web"]


def test_on_failure_counts_and_backs_off() -> None:
    restarts = Restarts(lifecycle.restart("on-failure:2"))
    assert restarts.after_exit(0, 0.1) is None  # success: no restart
    delays = []
    while (delay := restarts.after_exit(1, 0.1)) is not None:
        delays.append(delay)
        restarts.count += 1
    assert delays == [0.1, 0.2] and restarts.count == 2
    always = Restarts(lifecycle.restart("always"))
    assert [always.after_exit(0, 0.1) for _ in range(12)][-1] == MAX_DELAY
    assert always.after_exit(0, 11.0) == 0.1  # a run of 10 s starts the back-off again
    always.stopped = True
    assert always.after_exit(1, 0.1) is None


def test_the_exit_code_of_a_foreground_up() -> None:
    plain = Outcome(exit_from=None, abort=False)
    for name, code in [("a", 0), ("b", 3), ("c", 5)]:
        assert not plain.exited(name, code)
    assert plain.result() == 3
    abort = Outcome(exit_from=None, abort=True)
    assert abort.exited("a", 0) and not abort.exited("b", 143)
    assert abort.result() == 0  # the first to exit decides
    named = Outcome(exit_from="b", abort=False)
    assert named.exited("a", 9) and not named.exited("b", 143)
    assert named.result() == 143
