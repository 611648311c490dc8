"""hvfs.patterns: a pattern compiled on its first use answers as re.compile's."""

from __future__ import annotations

import re

from hvfs import machine, patterns, run_flags, spec
from hvfs.api import magic


def test_a_pattern_is_compiled_on_first_use_and_answers_as_re_compiles() -> None:
    source = r"^(?P<name>[a-z]+)(?::(?P<port>\d+))?$"
    lazy = patterns.pattern(source, re.IGNORECASE)
    assert lazy._compiled is None  # type: ignore[attr-defined]
    eager = re.compile(source, re.IGNORECASE)
    for text in ("web:80", "WEB", "web:", "", "a:1:2"):
        for method in ("match", "fullmatch", "search"):
            got, wanted = getattr(lazy, method)(text), getattr(eager, method)(text)
            assert (got and (got.span(), got.groupdict())) == (wanted and (wanted.span(), wanted.groupdict()))
    assert lazy._compiled is eager  # type: ignore[attr-defined]  # re's cache: the very pattern
    assert (lazy.pattern, lazy.flags, lazy.groupindex) == (eager.pattern, eager.flags, eager.groupindex)
    assert lazy.findall("a:1 b:2") == eager.findall("a:1 b:2")


def test_the_modules_patterns_check_as_before() -> None:
    assert machine.SIZE.match("64M") and not machine.SIZE.match("64x")
    assert spec.NAME.match("web-1") and not spec.NAME.match("-web")
    assert spec.USER.match("1000:1000") and not spec.USER.match("a b")
    assert run_flags.parse_publish("127.0.0.1:8080:80") == ("127.0.0.1", 8080, 80)
    assert run_flags.check_hostname("box.example") == "box.example"
    assert magic.FD_LINK.match("/proc/12/task/13/fd/4") and not magic.FD_LINK.match("/proc/12/fd/x")
