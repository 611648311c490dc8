"""Parsing the times and durations that service options take (``--at``, ``--max-age``, ``delay=``)."""

from __future__ import annotations

import datetime
import re

_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|µs|ms|s|m|h|d|w)\s*")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number and a unit (us, ms, s, m, h, d, w), as ``50ms``, ``12h``, ``7d``.

    Raises ValueError naming the expected form. A unit is required: a bare ``7`` could mean
    seconds or days, and guessing wrong would prune a week of backups.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"bad duration {text!r}: expected a number and a unit, as 50ms, 30s, 12h or 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_time(text: str) -> float:
    """A unix time from ``text``: a unix time in seconds (``1714564800``, ``1714564800.5``) or
    ISO 8601 (``2024-05-01``, ``2024-05-01T12:00:00``, ``2024-05-01 12:00:00+02:00``); an ISO
    time without a zone is local time, as ``date`` prints it. Raises ValueError."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(
            f"bad time {text!r}: expected ISO 8601 (2024-05-01T12:00:00) or a unix time (1714564800)"
        ) from None


def format_time(unix: float) -> str:
    """``unix`` as local ISO 8601 with microseconds, as listings show it."""
    return datetime.datetime.fromtimestamp(unix).isoformat(timespec="microseconds")


def format_size(size: int) -> str:
    """``size`` bytes in binary units with one decimal, as the services' messages say it:
    ``512 B``, ``64.0 MiB``, ``50.0 GiB``."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            break
    return f"{value:.1f} {unit}"
