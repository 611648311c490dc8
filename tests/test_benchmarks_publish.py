"""benchmarks/publish.py writes docs/performance.md again after a full run: the sections it
generates are replaced, and every section written by hand (a helper's before/after, a
--baseline run) is kept, whatever its heading."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from tests.conftest import REPO


def _benchmark(name: str) -> ModuleType:
    """benchmarks/NAME.py by its path, under a name of its own (the benchmarks are no package;
    publish imports report by name, so report is loaded first under that name)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_benchmark("report")
publish = _benchmark("publish")

OLD = """# Performance

an old summary

## Targets

old targets

## A native client (2026-12-06)

measured by hand
### its own subsection

## Memory

old memory

## Many VMs

measured by hand too
"""


def test_a_full_run_keeps_every_section_written_by_hand(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(OLD)
    generated = ["# Performance", "", "## Targets", "", "new targets", "## Memory", "", "new memory", ""]
    kept = publish.kept_sections(doc, generated)
    assert kept == [
        "## A native client (2026-12-06)",
        "",
        "measured by hand",
        "### its own subsection",
        "",
        "## Many VMs",
        "",
        "measured by hand too",
        "",
    ]


def test_a_first_run_keeps_nothing(tmp_path: Path) -> None:
    assert publish.kept_sections(tmp_path / "missing.md", ["## Targets"]) == []
