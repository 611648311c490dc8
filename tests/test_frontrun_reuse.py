"""What a manager keeps from one run's request for the next (issue 14, the request's
Python before START): the run's project handed over as parsed, not as JSON read back,
and argparse's parse of an argument list seen before. Each must give exactly what a
fresh parse gives, and nothing kept may stand in for a request that differs."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from pathlib import Path

import pytest

from hvfs.hypervisor import frontrun, kept_runs
from hvfs.hypervisor.layout import Layout
from hvfs.hypervisor.spec import from_json, group_id, to_json
from hvfs.project.config import NetworkConfig, Project
from hvfs.spec import UsageError
from tests.conftest import ROOTLESS_USER, Hvfs, staged_front
from tests.test_front import run, said, traced

ARGVS = [
    ["run", "--", "true"],
    [
        *("run", "-v", "/tmp:/data", "--tmpfs", "/scratch", "-e", "A=1", "-e", "B", "--name", "x", "--strict"),
        *("--", "sh", "-c", "echo $A"),
    ],
    ["run", "--driver", "ptrace", "-w", "/tmp", "--read-only", "--memory", "64m", "--", "true"],
    ["run", "--audit", "/tmp/hvfs-reuse-audit.log", "--", "true"],
]


@pytest.fixture(autouse=True)
def fresh_parses() -> None:
    frontrun._parsed_kept.clear()
    kept_runs.forget()


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    return tmp_path / "trace"


@pytest.mark.parametrize("argv", ARGVS)
def test_a_project_read_back_from_its_json_is_the_same(argv: list[str]) -> None:
    project, _ = frontrun._parse_here(argv, {**os.environ, "B": "2"}, [])
    assert from_json(to_json(project)) == project
    assert to_json(from_json(to_json(project))) == to_json(project)


@pytest.mark.parametrize("argv", ARGVS)
def test_a_kept_parse_is_a_fresh_parse(argv: list[str]) -> None:
    fresh = vars(frontrun._run_parser().parse_args(argv))
    first, again = frontrun._parsed(argv), frontrun._parsed(argv)
    assert vars(first) == vars(again) == fresh
    assert first is not again
    for name, value in vars(first).items():
        if isinstance(value, list):  # shares no list with the kept one, nor with argparse's defaults
            value.append("changed")
            assert vars(frontrun._parsed(argv))[name] == fresh[name]


def test_another_argument_list_is_parsed_anew() -> None:
    plain = frontrun._parsed(["run", "--", "true"])
    other = frontrun._parsed(["run", "-e", "A=1", "--", "true"])
    assert (plain.env, other.env) == ([], ["A=1"])
    assert frontrun._parsed(["run", "--", "false"]).command == ["--", "false"]


def test_a_mistake_is_said_each_time_and_never_kept() -> None:
    for _ in range(3):
        with pytest.raises(UsageError, match="no-such-flag"):
            frontrun._parsed(["run", "--no-such-flag", "--", "true"])
    assert not frontrun._parsed_kept


def test_the_kept_parses_are_bounded() -> None:
    for n in range(frontrun._PARSED_KEPT * 2):
        frontrun._parsed(["run", "--", "echo", str(n)])
    assert len(frontrun._parsed_kept) == frontrun._PARSED_KEPT
    assert ("run", "--", "echo", str(frontrun._PARSED_KEPT * 2 - 1)) in frontrun._parsed_kept


def test_what_a_run_takes_from_its_environment_and_files_is_read_again(front: str, trace: Path, tmp_path: Path) -> None:
    """The same words run twice by the native front, the client's environment and an
    --env-file changed between: each run sees its own, and each gets a name of its own."""
    env_file = tmp_path / "env"
    command = ["run", "-e", "FROM_CLIENT", "--env-file", str(env_file), "--", "sh", "-c",
               'echo "$FROM_CLIENT $FROM_FILE $HOSTNAME"']  # fmt: skip
    seen = []
    for n in range(3):
        env_file.write_text(f"FROM_FILE=file{n}\n")
        result = run([front], *command, env=traced(trace, FROM_CLIENT=f"client{n}"))
        assert result.returncode == 0, result.stderr
        seen.append(result.stdout.split())
    assert said(trace) == ["native"] * 3
    assert [words[:2] for words in seen] == [[f"client{n}", f"file{n}"] for n in range(3)]
    assert len({words[2] for words in seen}) == 3  # a name drawn for each run, not kept


def test_a_project_parsed_in_the_manager_is_saved_as_its_json(front: str, trace: Path) -> None:
    """group.json, which a manager after this one takes the group back from, holds the
    project's JSON, though the run's project was made JSON only after its VM started."""
    name = f"reuse-{os.getpid()}"
    group_file = Path(Layout().group_file(group_id(Project(name, "", "/", NetworkConfig(), {}, {}, {}, kind="run"))))
    running = subprocess.Popen([front, "run", "--name", name, "-e", "K=v", "--", "sleep", "30"], cwd="/",
                               env=traced(trace), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not group_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        document = json.loads(group_file.read_text())
        project = from_json(document["project"])
        assert project.name == name and project.kind == "run"
        vm = project.vms[name]
        assert (vm.command, vm.environment) == (("sleep", "30"), {"K": "v"})
        assert json.loads(json.dumps(to_json(project))) == document["project"]
    finally:
        running.kill()
        running.communicate(timeout=60)
    assert said(trace) == ["native"]


PURE_ARGVS = [
    ["run", "--", "true"],
    ["run", "-e", "A=1", "-e", "HOME", "-w", "/tmp", "--strict", "--read-only", "--hostname", "h", "--", "sh"],
    ["run", "--driver", "ptrace", "--entrypoint", "/bin/sh", "--stop-timeout", "3", "--init", "-i"],
    ["run", "--name", "given", "--", "true"],
]
READING = [  # flags whose checks read files or the machine: never kept
    ["-v", "/tmp:/data"],
    ["--mount", "type=bind,source=/tmp,target=/data"],
    ["--tmpfs", "/scratch"],
    ["--env-file", "/dev/null"],
    ["--memory", "64m"],
    ["--pids-limit", "100"],
    ["--cpus", "1"],
    ["-u", "1000"],
    ["--audit", "/tmp/hvfs-reuse-audit.log"],
]


@pytest.mark.parametrize("argv", PURE_ARGVS)
def test_two_parses_of_the_same_words_differ_by_the_name_alone(argv: list[str]) -> None:
    first, _ = frontrun._parse_here(argv, dict(os.environ), [])
    second, _ = frontrun._parse_here(argv, dict(os.environ), [])
    assert kept_runs.renamed(first, second.name) == second
    assert (first == second) == ("--name" in argv)


@pytest.mark.parametrize("argv", PURE_ARGVS)
def test_a_kept_run_is_the_parse_it_stands_for(argv: list[str]) -> None:
    env = {**os.environ, kept_runs_variable(): "1"}  # the ptrace driver chosen: a line said
    said: list[str] = []
    first, timeout = frontrun._parse_kept(argv, "/", env, said)
    assert kept_runs.take(kept_runs.key(argv, "/", env)) is not None
    names = {first.name}
    for _ in range(3):
        again_said: list[str] = []
        again, again_timeout = frontrun._parse_kept(argv, "/", env, again_said)
        fresh, _ = frontrun._parse_here(argv, env, [])
        assert again == kept_runs.renamed(fresh, again.name)
        assert (again_said, again_timeout) == (said, timeout)
        names.add(again.name)
    assert len(names) == (1 if "--name" in argv else 4)  # a name drawn for each run, unless given


def kept_runs_variable() -> str:
    from hvfs import driver_choice

    return driver_choice.AS_IF_MISSING


@pytest.mark.parametrize("flags", READING)
def test_a_run_whose_flags_read_files_is_parsed_every_time(flags: list[str]) -> None:
    argv = ["run", *flags, "--", "true"]
    frontrun._parse_kept(argv, "/", dict(os.environ), [])
    assert kept_runs.take(kept_runs.key(argv, "/", dict(os.environ))) is None


def test_another_request_is_parsed_anew() -> None:
    argv, env = ["run", "-e", "KEY", "--", "true"], {**os.environ, "KEY": "one"}
    first, _ = frontrun._parse_kept(argv, "/", env, [])
    other_env, _ = frontrun._parse_kept(argv, "/", {**env, "KEY": "two"}, [])
    other_cwd, _ = frontrun._parse_kept(argv, "/tmp", env, [])
    other_words, _ = frontrun._parse_kept(["run", "-e", "KEY", "--", "false"], "/", env, [])
    assert first.vms[first.name].environment == {"KEY": "one"}
    assert other_env.vms[other_env.name].environment == {"KEY": "two"}
    assert other_cwd.vms[other_cwd.name].environment == {"KEY": "one"}
    assert other_words.vms[other_words.name].command == ("false",)
    assert len(kept_runs._kept) == 4


def test_a_mistake_or_a_fallback_is_never_kept() -> None:
    for argv, error in ((["run", "-w", "relative", "--", "true"], UsageError), (["run", "-d", "--", "true"],
                        frontrun.Fallback)):  # fmt: skip
        for _ in range(2):
            with pytest.raises(error):
                frontrun._parse_kept(argv, "/", dict(os.environ), [])
    assert not kept_runs._kept


def test_the_kept_runs_are_bounded() -> None:
    for n in range(kept_runs.MOST + 5):
        frontrun._parse_kept(["run", "--", "echo", str(n)], "/", dict(os.environ), [])
    assert len(kept_runs._kept) == kept_runs.MOST


def test_the_same_words_run_again_by_the_front(front: str, trace: Path) -> None:
    """Run three times with the same words and environment (the kept parse taken): each
    run's own output, exit code and VM name."""
    seen = []
    for _ in range(3):
        result = run([front], "run", "-e", "K=v", "--", "sh", "-c", 'echo "$K $HOSTNAME"; exit 5', env=traced(trace))
        assert result.returncode == 5, result.stderr
        seen.append(result.stdout.split())
    assert said(trace) == ["native"] * 3
    assert [words[0] for words in seen] == ["v"] * 3
    assert len({words[1] for words in seen}) == 3


def test_the_same_words_run_again_by_a_rootless_front(rootless: Hvfs, staged: Path, shared_tmp: Path) -> None:
    """A rootless manager parses in a thread that gave up its capabilities: a kept run is
    taken there too, and a flag that reads a file (the user's own --env-file, changed
    between runs, then made unreadable) is read for each run, as the user."""
    trace = shared_tmp / "trace-kept"
    front = staged_front(rootless, staged, trace)
    assert rootless.run("run", "--", "true").returncode == 0  # its manager, warm
    seen = [front.run("run", "--", "sh", "-c", "echo $HOSTNAME; exit 3") for _ in range(3)]
    assert [r.returncode for r in seen] == [3, 3, 3], [r.stderr for r in seen]
    assert len({r.stdout for r in seen}) == 3
    env_file = shared_tmp / "kept.env"
    account = pwd.getpwnam(ROOTLESS_USER)
    for n in range(2):
        env_file.write_text(f"KEY=value{n}\n")
        os.chown(env_file, account.pw_uid, account.pw_gid)
        env_file.chmod(0o600)
        result = front.run("run", "--env-file", str(env_file), "--", "sh", "-c", "echo $KEY")
        assert (result.returncode, result.stdout) == (0, f"value{n}\n"), result.stderr
    env_file.chmod(0)
    refused = front.run("run", "--env-file", str(env_file), "--", "sh", "-c", "echo $KEY")
    assert refused.returncode == 125 and "Permission denied" in refused.stderr
    assert said(trace) == ["native"] * 5  # the mistake: neither the Python client nor a VM
    rootless.ok("manager", "stop")  # started with HVFS_FRONT_TRACE: not the next tests' manager
