"""The YARA engine: rules compiled by yara-python, imported only when this engine is used.

yara-python is optional (``pip install 'hvfs[services]'`` or ``pip install yara-python``);
without it, building a YaraEngine raises EngineUnavailable saying so. Compiled rules are
safe to match from several threads at once (libyara 4 makes a scanner per match).
"""

from __future__ import annotations

import importlib
from typing import Any

from hvfs.services.scan.engines import Detection, EngineUnavailable, ScanError


def _yara() -> Any:
    try:
        return importlib.import_module("yara")
    except ImportError:
        raise EngineUnavailable("YARA scanning needs yara-python: pip install yara-python") from None


class YaraEngine:
    """Implements Engine with YARA rules from files (``paths``) and/or ``source`` text.
    Raises EngineUnavailable when yara-python is missing or a rule does not compile."""

    name = "yara"

    def __init__(self, paths: tuple[str, ...] = (), *, source: str | None = None, timeout: int = 10) -> None:
        yara = _yara()
        sources = _read_all(paths)
        if source is not None:
            sources["inline"] = source
        if not sources:
            raise EngineUnavailable("the YARA engine needs rule files or rule source")
        try:
            self._rules = yara.compile(sources=sources)
        except yara.Error as e:  # SyntaxError is one
            raise EngineUnavailable(f"YARA rules do not compile: {e}") from None
        self._timeout = timeout
        self._errors: tuple[type[BaseException], ...] = (yara.Error, yara.TimeoutError)

    def scan(self, data: bytes) -> Detection | None:
        try:
            matches = self._rules.match(data=data, timeout=self._timeout)
        except self._errors as e:
            raise ScanError(f"YARA failed: {e}") from None
        if not matches:
            return None
        return Detection(self.name, str(matches[0].rule))


def _read_all(paths: tuple[str, ...]) -> dict[str, str]:
    """Each file's text under a namespace of its own, so two files may use one rule name."""
    sources = {}
    for i, path in enumerate(paths):
        try:
            with open(path, encoding="utf-8") as f:
                sources[f"file{i}"] = f.read()
        except OSError as e:
            raise EngineUnavailable(f"cannot read YARA rules {path}: {e.strerror}") from None
    return sources
