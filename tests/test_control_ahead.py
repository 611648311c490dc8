"""A request sent right behind the hello, before its answer (hvfs.hypervisor.client.connect's
``first``: how a VM's start saves a round trip), is served only when that hello passed: the
manager itself refuses it otherwise, so a manager of other code, or one that sees a host
path otherwise, never starts a VM it should have given way for."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import hvfs
from hvfs import spec
from hvfs.hypervisor import client, control
from hvfs.hypervisor.layout import Layout, read_json
from hvfs.hypervisor.spec import run_project, to_json
from hvfs.hypervisor.version import code_id


def _run_message(marker: Path) -> dict[str, Any]:
    """A run whose VM, if it ever started, would leave ``marker`` (a served mount's file)."""
    name = f"ahead-{os.urandom(4).hex()}"
    mount = spec.parse_volume(f"{marker.parent}:/data", "/")
    run = spec.RunSpec(argv=("sh", "-c", f"echo started > /data/{marker.name}"), name=name, mounts=(mount,))
    return {"hvfs": control.VERSION, "op": "run", "project": to_json(run_project(run)), "stop_timeout": 1.0}


def _exchange(hello: dict[str, Any], then: dict[str, Any], stdio: list[int]) -> list[dict[str, Any]]:
    """Send ``hello`` and ``then`` back to back on one connection: the answers, up to the
    refusal of ``then`` or its VM's exit (the connection owns the VM: it stays open till then)."""
    layout = Layout()
    connection = control.connect(layout.socket, manager_pid=read_json(layout.info)["pid"])
    try:
        connection.send({"hvfs": control.VERSION, "op": "hello", **hello})
        connection.send(then, stdio)
        answers: list[dict[str, Any]] = []
        while len(answers) < 2 or not ("error" in answers[-1] or "exited" in answers[-1]):
            connection.wait_answer(30)
            reply, fds = connection.receive()
            for fd in fds:
                os.close(fd)
            answers.append(reply)
        return answers
    finally:
        connection.close()


@pytest.fixture
def stdio() -> Any:
    fds = [os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC) for _ in range(3)]
    yield fds
    for fd in fds:
        os.close(fd)


def _groups() -> dict[str, Any]:
    return dict(client.ask(client.connect(start=False), "ps", wait=10)["groups"])


@pytest.mark.parametrize("failing", ["other code", "a path seen otherwise"])
def test_a_run_behind_a_failed_hello_is_refused(tmp_path: Path, stdio: list[int], failing: str) -> None:
    hvfs.VM(command=["true"]).stop()  # a manager up, of this code
    marker = tmp_path / "marker"
    before = set(_groups())
    if failing == "other code":
        hello: dict[str, Any] = {"code": "0.0.1:/elsewhere/hvfs:1", "views": []}
    else:  # what the manager sees at this directory is not what this "client" says it sees
        st = os.stat(tmp_path)
        hello = {"code": code_id(), "views": [[str(tmp_path), st.st_dev + 1, st.st_ino]]}
    greeting, answer = _exchange(hello, _run_message(marker), stdio)  # nothing after the refusal
    assert greeting["version"] == code_id()
    assert bool(greeting["unseen"]) == (failing != "other code"), greeting
    assert answer.get("refused") is True and "hello failed" in answer["error"], answer
    assert set(_groups()) <= before  # no group was made for it (one of a VM before may have gone)
    assert not marker.exists()


def test_the_same_run_behind_a_hello_that_passes_is_served(tmp_path: Path, stdio: list[int]) -> None:
    hvfs.VM(command=["true"]).stop()
    marker = tmp_path / "marker"
    greeting, *answers = _exchange({"code": code_id(), "views": []}, _run_message(marker), stdio)
    assert greeting["unseen"] == [] and "started" in answers[0], answers
    assert answers[-1].get("code") == 0, answers
    assert marker.read_text() == "started\n"


def test_a_manager_record_says_it_refuses(tmp_path: Path) -> None:
    hvfs.VM(command=["true"]).stop()
    assert read_json(Layout().info)["ahead"] == 1  # what lets a client send on without waiting
