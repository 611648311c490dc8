"""``hvfs events --summary``: what each VM of an audit log did to files, in a few lines.

Per VM: the files it wrote (opened for writing, created, truncated), read (opened for
reading only: in the log with --audit-reads or --strict), removed (unlink, rmdir) and
renamed (old -> new), each path once; and its requests and its errors by operation.
Only requests that succeeded count as a file written, read, removed or renamed; a
directory, node or link made counts as written; an open for writing the kernel carried
out itself (a device, /proc) does not.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from hvfs.api.events import LOST, Event
from hvfs.api.flagnames import is_write

_NOT_ERRORS = frozenset({"ok", "continued", "waiting"})


@dataclass
class VmSummary:
    written: set[str] = field(default_factory=set)
    read: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    renamed: set[tuple[str, str]] = field(default_factory=set)
    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)  # (operation, errno name)
    lost: int = 0  # events not in the log (the audit could not keep up): the summary is short of them

    def add(self, event: Event) -> None:
        if event.operation == LOST:
            self.lost += event.value or 0
            return
        self.requests[event.operation] += 1
        if event.result not in _NOT_ERRORS:
            self.errors[event.operation, event.result] += 1
            return
        if not event.paths:
            return
        first = event.paths[0]
        if event.operation == "open":
            # "continued": the kernel opened it (a device, /proc): read, but no file changed
            if not is_write(event.flags):
                self.read.add(first)
            elif event.result == "ok":
                self.written.add(first)
        elif event.result != "ok":
            return
        elif event.operation in ("truncate", "mkdir", "mknod", "symlink", "link"):
            self.written.add(event.paths[-1] if event.operation == "link" else first)
        elif event.operation in ("unlink", "rmdir"):
            self.removed.add(first)
        elif event.operation == "rename" and len(event.paths) == 2:
            self.renamed.add((first, event.paths[1]))

    def to_json(self) -> dict[str, Any]:
        errors: dict[str, dict[str, int]] = {}
        for (operation, name), count in sorted(self.errors.items()):
            errors.setdefault(operation, {})[name] = count
        return {
            "written": sorted(self.written),
            "read": sorted(self.read),
            "removed": sorted(self.removed),
            "renamed": [{"from": old, "to": new} for old, new in sorted(self.renamed)],
            "requests": dict(sorted(self.requests.items())),
            "errors": errors,
            "lost": self.lost,
        }


def summarize(events: Iterable[Event]) -> dict[str, VmSummary]:
    """Each VM's summary, by VM name, in the order the VMs first appear."""
    summaries: dict[str, VmSummary] = {}
    for event in events:
        summaries.setdefault(event.vm, VmSummary()).add(event)
    return summaries


def write_summary(summaries: dict[str, VmSummary], out: TextIO, *, as_json: bool) -> None:
    if as_json:
        out.write(json.dumps({vm: s.to_json() for vm, s in summaries.items()}, indent=2, ensure_ascii=False) + "\n")
        return
    for vm, s in summaries.items():
        out.write(f"{vm}:\n")
        for title, paths in (("written", s.written), ("read", s.read), ("removed", s.removed)):
            out.write(f"  {title}: {len(paths)}\n")
            out.writelines(f"    {path}\n" for path in sorted(paths))
        out.write(f"  renamed: {len(s.renamed)}\n")
        out.writelines(f"    {old} -> {new}\n" for old, new in sorted(s.renamed))
        out.write(f"  requests: {sum(s.requests.values())}")
        out.write(f" ({', '.join(f'{op} {n}' for op, n in s.requests.most_common())})\n" if s.requests else "\n")
        out.write(f"  errors: {sum(s.errors.values())}")
        shown = ", ".join(f"{op} {name} {n}" for (op, name), n in s.errors.most_common())
        out.write(f" ({shown})\n" if shown else "\n")
        if s.lost:
            out.write(f"  lost: {s.lost} events (not in the log: the audit could not keep up)\n")
