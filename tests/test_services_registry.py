"""One registry of services: the ``hvfs run`` flags, the ``[services]`` keys, the
``--stats`` output and the README's table all come from the services' declarations."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hvfs import cli
from hvfs.hypervisor.services import ServiceOptions
from hvfs.services import registry
from hvfs.services.base import Kind, Option, ServiceKind
from hvfs.services.describe import OPERATIONS
from hvfs.services.plugins.faults import READ_OPERATIONS
from hvfs.spec import UsageError
from tests.conftest import REPO


def run_parser() -> argparse.ArgumentParser:
    """The parser of ``hvfs`` itself, with ``run`` and its generated flags."""
    parser = cli._Parser(prog="hvfs")
    subparsers = parser.add_subparsers(dest="subcommand", parser_class=cli._Parser)
    cli._run_parser(subparsers)
    return parser


def sample(option: Option, directory: Path) -> tuple[list[str], Any]:
    """A value of ``option`` that works: as flags, and as a [services] value (relative
    paths, which the flags resolve from the working directory and the table from the
    project file's directory: both are ``directory``)."""
    name = f"{option.key}-sample"
    match option.kind:
        case Kind.FLAG:
            return [option.spelling], True
        case Kind.INT:
            return [option.spelling, "7"], 7
        case Kind.SIZE:  # a flag's text, and a table's number of bytes: the same size
            return [option.spelling, "64m"], 64 << 20
        case Kind.TEXT:
            assert option.example, f"{option.key}: a text option needs an example"
            value = option.example
        case Kind.PATH:
            (directory / name).write_text("")  # empty: a blocklist, rules, fault rules without any
            value = name
        case Kind.OUTPUT | Kind.STORE:
            value = name
    if option.many:
        return [option.spelling, value, option.spelling, value], [value, value]
    return [option.spelling, value], value


@pytest.mark.parametrize("kind", registry.SERVICES, ids=lambda kind: kind.name)
def test_each_service_reads_the_same_options_from_flags_and_from_a_project(
    kind: ServiceKind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    flags: list[str] = []
    table: dict[str, Any] = {}
    for option in kind.options:
        given, table[option.key] = sample(option, tmp_path)
        flags += given
    args = run_parser().parse_args(["run", *flags, "--", "true"])
    from_flags = ServiceOptions.from_args(args)
    from_table = ServiceOptions.from_table(table, str(tmp_path))
    assert from_flags is not None and [e.kind.name for e in from_flags.enabled] == [kind.name]
    config = from_flags.config(kind.name)
    assert config is not None and config == from_table.config(kind.name)
    assert from_flags.enabled[0].stores == from_table.enabled[0].stores
    assert from_flags.needs == from_table.needs
    # What a front end would send to a manager elsewhere parses again to the same services.
    again = ServiceOptions.parse(from_flags.enabled[0].values, "/")
    assert again.config(kind.name) == config and again.enabled[0].stores == from_flags.enabled[0].stores


def test_relative_paths_are_the_working_directory_s_or_the_project_file_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cwd").mkdir()
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    flags = ServiceOptions.from_args(run_parser().parse_args(["run", "--audit", "a.jsonl", "--", "true"]))
    assert flags is not None and flags.config("audit").path == str(tmp_path / "cwd" / "a.jsonl")
    table = ServiceOptions.from_table({"audit": "../project/./a.jsonl"}, str(tmp_path / "project"))
    assert table.config("audit").path == str(tmp_path / "project" / "a.jsonl")


def test_no_service_flag_means_no_services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert ServiceOptions.from_args(run_parser().parse_args(["run", "--", "true"])) is None
    # A store alone asks for nothing: there is nothing to keep in it.
    assert ServiceOptions.from_args(run_parser().parse_args(["run", "--quarantine", "q", "--", "true"])) is None
    assert not ServiceOptions.from_table({}, str(tmp_path)).active
    seeded = ServiceOptions.from_args(run_parser().parse_args(["run", "--fault", "op=open,errno=EIO", "--fault-seed",
                                                                "0", "--", "true"]))  # fmt: skip
    assert seeded is not None and seeded.config("faults").seed == 0


def test_an_unknown_key_is_one_line_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as raised:
        ServiceOptions.from_table({"scna": True, "audit": "a.jsonl"}, str(tmp_path))
    message = str(raised.value)
    assert "\n" not in message and message.startswith("services: unknown key 'scna'; known: ")
    assert message.removeprefix("services: unknown key 'scna'; known: ").split(", ") == sorted(registry.keys())


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"scan": "yes"}, "scan: 'yes' is not true or false"),
        ({"yara": "rules.yar"}, "yara: 'rules.yar' is not a list"),
        ({"backup": ["/d/*"], "backup_max_file": -1}, "backup-max-file: -1 is not a size"),
        ({"faults": ["op=open,errno=EIO"], "fault_seed": "7"}, "fault-seed: '7' is not an integer"),
        ({"audit": 3}, "audit: 3 is not a file to write; give a string"),
        ({"faults": ["op=opne,errno=EIO"]}, "--fault: fault rule 'op=opne,errno=EIO': unknown operation 'opne'"),
        ({"backup": ["data/*"]}, "--backup: backup rule 'data/*': expected /PATH-GLOB"),
        ({"audit": "/proc/1/mem"}, "--audit /proc/1/mem is a kernel interface"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_option(tmp_path: Path, table: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as raised:
        ServiceOptions.from_table(table, str(tmp_path))
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value), raised.value


def test_flags_and_keys_are_unique_and_every_flag_is_in_the_help() -> None:
    spellings = [option.spelling for _, option in registry.options()]
    assert len(set(spellings)) == len(spellings)
    assert len(set(registry.keys())) == len(registry.keys())
    assert len({kind.name for kind in registry.SERVICES}) == len(registry.SERVICES)
    text = run_parser()._subparsers._group_actions[0].choices["run"].format_help()  # type: ignore[union-attr]
    assert all(spelling in text for spelling in spellings)


def test_the_readme_lists_what_the_registry_declares() -> None:
    readme = (REPO / "README.md").read_text()
    begin = readme.index("\n", readme.index("<!-- services: generated")) + 1
    end = readme.index("<!-- end of services -->")
    assert readme[begin:end] == registry.markdown(), "regenerate it: python -m hvfs.services.registry"


def test_rules_on_reads_name_operations_that_exist() -> None:
    assert READ_OPERATIONS - {"*"} <= OPERATIONS


def test_the_flags_load_no_service_implementation() -> None:
    """Every hvfs command builds the run parser: the declarations must stay light."""
    program = (
        "import json, sys\n"
        "from hvfs import cli\n"
        "parser = cli._Parser(prog='hvfs')\n"
        "cli._run_parser(parser.add_subparsers(parser_class=cli._Parser))\n"
        "print(json.dumps([m for m in sys.modules if m.startswith('hvfs.')]))\n"
    )
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, check=True)
    loaded = {m for m in json.loads(result.stdout) if m.startswith(("hvfs.services", "hvfs.api"))}
    light = {"hvfs.services", "hvfs.services.base", "hvfs.services.datadir", "hvfs.services.registry"}
    light |= {"hvfs.services.plugins"} | {f"hvfs.services.plugins.{kind.name}" for kind in registry.SERVICES}
    assert "hvfs.services.registry" in loaded and loaded <= light, loaded - light
