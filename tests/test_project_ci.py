"""``hvfs up`` for CI: exit codes, --exit-code-from, --abort-on-container-exit,
depends_on with healthchecks, restart policies, an edited hvfs.toml, and two projects of
one name. Real VMs on the session's manager; the VMs write timestamps to a host
directory, which the test reads."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import pytest

from tests.conftest import Hvfs
from tests.test_project import Project, _project

OUT = '[sources.out]\ntype = "host"\npath = "./out"\n'
MOUNT_OUT = 'mounts = [{ source = "out", target = "/out" }]\n'


def _with_out(hvfs: Hvfs, directory: Path, text: str) -> Project:
    (directory / "out").mkdir(parents=True)
    return _project(hvfs, directory, OUT + text)


def _wait(what: str, condition: object, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, f"waited {seconds}s for {what}"
        time.sleep(0.05)


def _groups(prefix: str) -> list[str]:
    return [g for g in os.listdir(Path(os.environ["HVFS_STATE_DIR"], "groups")) if g.startswith(prefix)]


def test_foreground_up_exits_with_the_first_failing_vms_code(hvfs: Hvfs, tmp_path: Path) -> None:
    project = _project(
        hvfs,
        tmp_path / "fails",
        '[vms.ok]\ncommand = "exit 0"\n[vms.three]\ncommand = "sleep 0.3; exit 3"\n'
        '[vms.five]\ncommand = "sleep 1.5; exit 5"\n',
    )
    result = project.run("up")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "five  | exited with code 5" in result.stdout  # up waited for every VM
    assert project.ps() == {} and not _groups("fails-")  # and took the project down, as it came
    passing = _project(hvfs, tmp_path / "passes", '[vms.a]\ncommand = "exit 0"\n[vms.b]\ncommand = "true"\n')
    assert passing.run("up").returncode == 0


def test_exit_code_from_stops_the_others(hvfs: Hvfs, tmp_path: Path) -> None:
    project = _project(
        hvfs,
        tmp_path / "suite",
        '[vms.server]\ncommand = "sleep 600"\n[vms.tests]\ncommand = "echo ran; sleep 0.5; exit 4"\n',
    )
    began = time.monotonic()
    result = project.run("up", "--exit-code-from", "tests")
    assert result.returncode == 4, result.stdout + result.stderr
    assert time.monotonic() - began < 30  # the server was stopped, not waited for
    lines = result.stdout.splitlines()
    assert "tests  | ran" in lines and "Aborting on VM exit..." in lines
    assert "server | exited with code 143" in lines  # SIGTERM, as hvfs stop sends
    assert project.ps() == {}
    # The VM named may be the one the abort stops: its code then, as compose's.
    killed = project.run("up", "--exit-code-from", "server")
    assert killed.returncode == 143, killed.stdout + killed.stderr
    wrong = project.run("up", "--exit-code-from", "nosuch")
    assert wrong.returncode == 125 and "--exit-code-from nosuch: no such VM" in wrong.stderr
    assert "cannot be combined" in project.run("up", "-d", "--abort-on-container-exit").stderr


def test_abort_on_container_exit(hvfs: Hvfs, tmp_path: Path) -> None:
    project = _project(
        hvfs, tmp_path / "abort", '[vms.long]\ncommand = "sleep 600"\n[vms.short]\ncommand = "sleep 0.5; exit 7"\n'
    )
    began = time.monotonic()
    result = project.run("up", "--abort-on-container-exit")
    assert result.returncode == 7, result.stdout + result.stderr
    assert time.monotonic() - began < 30
    assert "long  | exited with code 143" in result.stdout.splitlines()
    assert project.ps() == {}


HEALTHY_DB = """
[vms.db]
command = "sleep 1.5; date +%s.%N > /out/db-ready; touch /tmp/ready; sleep 600"
healthcheck = { test = ["CMD", "test", "-f", "/tmp/ready"], interval = "100ms", start_period = "30s", start_interval = "100ms" }
"""  # noqa: E501


def test_depends_on_waits_for_the_health_check(hvfs: Hvfs, tmp_path: Path) -> None:
    project = _with_out(
        hvfs,
        tmp_path / "healthy",
        HEALTHY_DB
        + MOUNT_OUT
        + '[vms.web]\ncommand = "date +%s.%N > /out/web-start; exit 0"\n'
        + MOUNT_OUT
        + 'depends_on = { db = { condition = "healthy" } }\n'
        + '[vms.cache]\ncommand = "date +%s.%N > /out/cache-start; sleep 600"\n'
        + MOUNT_OUT
        + 'depends_on = ["db"]\n',
    )
    result = project.run("up", "--exit-code-from", "web")
    assert result.returncode == 0, result.stdout + result.stderr
    out = tmp_path / "healthy" / "out"
    ready, web, cache = (float((out / name).read_text()) for name in ("db-ready", "web-start", "cache-start"))
    assert web > ready  # web waited for db's check to pass
    assert cache < ready  # "started" did not wait for it


def test_health_is_shown_in_ps(hvfs: Hvfs, tmp_path: Path) -> None:
    project = _with_out(
        hvfs,
        tmp_path / "health",
        HEALTHY_DB
        + MOUNT_OUT
        + '[vms.sick]\ncommand = "sleep 600"\n'
        + 'healthcheck = { test = "echo no disk >&2; exit 1", interval = "100ms", retries = 2 }\n',
    )
    project.ok("up", "-d")
    try:
        assert project.ps()["db"]["health"]["status"] == "starting"
        _wait("db to be healthy", lambda: project.ps()["db"]["health"]["status"] == "healthy")
        sick = project.ps()["sick"]["health"]
        assert sick["status"] == "unhealthy" and sick["failing_streak"] >= 2
        assert sick["last"]["code"] == 1 and sick["last"]["output"] == "no disk\n"
        table = project.ok("ps")
        assert any(line.split()[:3] == ["sick", "running", "unhealthy"] for line in table.splitlines())
    finally:
        project.ok("down")


def test_a_dependency_that_fails_fails_up(hvfs: Hvfs, tmp_path: Path) -> None:
    project = _with_out(
        hvfs,
        tmp_path / "migrate",
        '[vms.migrate]\ncommand = "sleep 0.5; exit 2"\n'
        '[vms.app]\ncommand = "touch /out/app-ran"\n'
        + MOUNT_OUT
        + 'depends_on = { migrate = { condition = "service_completed_successfully" } }\n',
    )
    result = project.run("up", "-d")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "dependency failed to start: migrate exited with code 2" in result.stderr
    assert not (tmp_path / "migrate" / "out" / "app-ran").exists() and not _groups("migrate-")
    (tmp_path / "migrate" / "hvfs.toml").write_text(
        (tmp_path / "migrate" / "hvfs.toml").read_text().replace("exit 2", "exit 0")
    )
    assert project.run("up").returncode == 0
    assert (tmp_path / "migrate" / "out" / "app-ran").exists()


def test_on_failure_restarts_a_crashing_vm_up_to_its_limit(hvfs: Hvfs, tmp_path: Path) -> None:
    project = _with_out(
        hvfs,
        tmp_path / "crashy",
        '[vms.crash]\ncommand = "date +%s.%N >> /out/runs; echo ok > /shared/alive; exit 4"\n'
        'restart = "on-failure:3"\n'
        'mounts = [{ source = "out", target = "/out" }, { source = "mem", target = "/shared" }]\n'
        '[vms.steady]\ncommand = "sleep 600"\nrestart = "on-failure"\n'
        'mounts = [{ source = "mem", target = "/shared" }]\n'
        '[sources.mem]\ntype = "memory"\n',
    )
    project.ok("up", "-d")
    try:
        _wait("three restarts", lambda: project.ps()["crash"]["state"] == "exited", seconds=30)
        time.sleep(1.0)  # a fourth would come within 0.8 s of the third: none must
        crash = project.ps()["crash"]
        assert crash["state"] == "exited" and crash["code"] == 4 and crash["restarts"] == 3
        assert crash["restart"] == "on-failure:3"
        runs = [float(t) for t in (tmp_path / "crashy" / "out" / "runs").read_text().split()]
        assert len(runs) == 4  # the first run and three restarts
        gaps = [b - a for a, b in itertools.pairwise(runs)]
        assert all(gap >= 0.1 for gap in gaps) and gaps[2] >= 0.4  # docker's back-off: 0.1, 0.2, 0.4 s
        assert project.ps()["steady"]["restarts"] == 0
        shared = project.ok("exec", "steady", "--", "cat", "/shared/alive")
        assert shared == "ok\n"  # the memory source lived on across the restarts
        table = project.ok("ps").splitlines()
        assert any(line.split()[:5] == ["crash", "exited", "-", "4", "3"] for line in table), table
    finally:
        project.ok("down")


def test_foreground_up_follows_restarts_and_stop_ends_always(hvfs: Hvfs, tmp_path: Path) -> None:
    project = _project(
        hvfs,
        tmp_path / "again",
        '[vms.flaky]\ncommand = "exit 6"\nrestart = "on-failure:2"\n'
        '[vms.forever]\ncommand = "sleep 0.2"\nrestart = "always"\n',
    )
    result = project.run("up", "--exit-code-from", "flaky")
    assert result.returncode == 6, result.stdout + result.stderr
    assert result.stdout.count("flaky   | exited with code 6 (restarting)") == 2
    project.ok("up", "-d")
    try:
        _wait("forever to restart twice", lambda: project.ps()["forever"]["restarts"] >= 2)
        project.ok("stop", "forever", "-t", "1")
        stopped = project.ps()["forever"]
        time.sleep(1.0)
        assert project.ps()["forever"]["state"] == "exited"
        assert project.ps()["forever"]["restarts"] == stopped["restarts"]  # stopped by the user: for good
    finally:
        project.ok("down")


def test_an_edited_project_recreates_exactly_the_changed_vms(hvfs: Hvfs, tmp_path: Path) -> None:
    text = '[vms.keep]\ncommand = "sleep 600"\n[vms.edit]\ncommand = "sleep 600"\nenvironment = { V = "1" }\n'
    project = _project(hvfs, tmp_path / "edited", text)
    project.ok("up", "-d")
    try:
        before = project.ps()
        again = project.run("up", "-d")
        assert again.returncode == 0 and "already up" in again.stdout
        (tmp_path / "edited" / "hvfs.toml").write_text(text.replace('V = "1"', 'V = "2"'))
        out = project.ok("up", "-d")
        assert "started: edit" in out
        after = project.ps()
        assert after["keep"]["pid"] == before["keep"]["pid"] and after["keep"]["state"] == "running"
        assert after["edit"]["pid"] != before["edit"]["pid"] and after["edit"]["state"] == "running"
        assert project.ok("exec", "edit", "--", "sh", "-c", "echo $V") == "2\n"
        # A VM added, one removed, one exited: each as compose's up does.
        project.ok("stop", "keep", "-t", "1")
        (tmp_path / "edited" / "hvfs.toml").write_text(
            '[vms.keep]\ncommand = "sleep 600"\n[vms.new]\ncommand = "sleep 600"\n'
        )
        out = project.ok("up", "-d")
        assert "started: keep, new" in out
        assert {n: vm["state"] for n, vm in project.ps().items()} == {"keep": "running", "new": "running"}
        assert project.run("up", "-d").stdout.count("already up") == 1
    finally:
        project.ok("down")


def test_same_named_projects_in_two_directories_are_two_projects(hvfs: Hvfs, tmp_path: Path) -> None:
    one = _project(hvfs, tmp_path / "one", 'name = "same"\n[vms.web]\ncommand = "sleep 600"\n')
    both = '[vms.web]\ncommand = "sleep 600"\n[vms.db]\ncommand = "sleep 600"\n'
    two = _project(hvfs, tmp_path / "two", 'name = "same"\n' + both)
    one.ok("up", "-d")
    try:
        assert "is up" in two.ok("up", "-d")  # not "already up": another project
        try:
            assert set(one.ps()) == {"web"} and set(two.ps()) == {"web", "db"}
            assert one.ps()["web"]["pid"] != two.ps()["web"]["pid"]
            assert len(_groups("same-")) == 2
            one.ok("down")
            assert one.ps() == {} and two.ps()["web"]["state"] == "running"
            assert two.ok("exec", "web", "--", "echo", "still") == "still\n"
        finally:
            two.ok("down")
    finally:
        one.run("down")
    assert not _groups("same-")


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ('[vms.a]\ncommand = "true"\nrestart = "sometimes"\n', "vms.a.restart: 'sometimes' is not one of"),
        ('[vms.a]\ncommand = "true"\nrestart = "on-failure:x"\n', "vms.a.restart: on-failure:x: give the most"),
        ('[vms.a]\ncommand = "true"\nrestart = "always:3"\n', "vms.a.restart: 'always:3' is not one of"),
        ('[vms.a]\ncommand = "true"\nhealthcheck = { test = "true", intervall = "1s" }\n',
         "vms.a.healthcheck.intervall: unknown key 'intervall'"),
        ('[vms.a]\ncommand = "true"\nhealthcheck = { test = "true", interval = "1 minute" }\n',
         "vms.a.healthcheck.interval: '1 minute' is not a duration"),
        ('[vms.a]\ncommand = "true"\nhealthcheck = { test = ["pg_isready"] }\n',
         'vms.a.healthcheck.test: a list starts with "CMD"'),
        ('[vms.a]\ncommand = "true"\nhealthcheck = { interval = "1s" }\n',
         "vms.a.healthcheck.test: a healthcheck needs"),
        ('[vms.a]\ncommand = "true"\nhealthcheck = { test = "true", retries = 0 }\n',
         "vms.a.healthcheck.retries: 0 is not a number of retries"),
        ('[vms.a]\ncommand = "true"\nhealthcheck = "true"\n', "vms.a.healthcheck: must be a table"),
        ('[vms.a]\ncommand = "true"\ndepends_on = ["b"]\n', "vms.a.depends_on.b: no VM named 'b'; VMs: a"),
        ('[vms.a]\ncommand = "true"\ndepends_on = ["a"]\n', "vms.a.depends_on.a: a VM cannot depend on itself"),
        ('[vms.a]\ncommand = "true"\ndepends_on = ["b"]\n[vms.b]\ncommand = "true"\ndepends_on = ["a"]\n',
         "vms.a.depends_on: a cycle: a -> b -> a"),
        ('[vms.a]\ncommand = "true"\ndepends_on = { b = { condition = "healthy" } }\n[vms.b]\ncommand = "true"\n',
         "vms.a.depends_on.b.condition: b has no healthcheck to be healthy by"),
        ('[vms.a]\ncommand = "true"\ndepends_on = { b = { condition = "ready" } }\n[vms.b]\ncommand = "true"\n',
         "vms.a.depends_on.b.condition: 'ready' is not one of: started, healthy, completed_successfully"),
        ('[vms.a]\ncommand = "true"\ndepends_on = "b"\n[vms.b]\ncommand = "true"\n',
         "vms.a.depends_on: must be a list of VM names or a table"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key(hvfs: Hvfs, tmp_path: Path, text: str, mentions: str) -> None:
    project = _project(hvfs, tmp_path / "bad", text)
    result = project.run("up", "-d")
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("hvfs: hvfs.toml") and mentions in result.stderr
    assert not _groups("bad-")
