"""frontrun.prepare: a manager builds the run's parser right after "ready", while the
front that started it connects, so that its first run_argv does not (docs/performance.md)."""

from __future__ import annotations

import argparse

import pytest

from hvfs import cli
from hvfs.hypervisor import frontrun


@pytest.fixture(autouse=True)
def _fresh_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test builds it anew; building it makes cli's parsers raise (the manager's way)."""
    monkeypatch.setattr(cli._Parser, "raising", cli._Parser.raising)
    frontrun._run_parser.cache_clear()


def test_prepare_builds_the_parser_the_first_parse_uses() -> None:
    frontrun.prepare()
    assert frontrun._run_parser.cache_info().currsize == 1
    parser = frontrun._run_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    assert parser.parse_args(["run", "--", "true"]).command == ["--", "true"]
    assert frontrun._run_parser.cache_info().misses == 1  # built once, by prepare


def test_a_parser_that_cannot_be_built_is_the_first_parses_to_report(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(argv: list[str] | None = None) -> argparse.ArgumentParser:
        raise RuntimeError("no parser")

    monkeypatch.setattr(cli, "build_parser", broken)
    frontrun.prepare()  # says nothing: the manager starts
    with pytest.raises(RuntimeError, match="no parser"):
        frontrun._run_parser()
    frontrun._run_parser.cache_clear()
