"""Reads what benchmarks/etxtbsy_holders.bt printed: for each exec refused with ETXTBSY,
the manager's child (thread clones never exec, so only spawned processes count) cloned
before the failure while the manager had an ``s*`` file open, whose own exec came after
the failure: that child still held its copy of the manager's fd table.

    python benchmarks/etxtbsy_holders.py trace.log
"""

from __future__ import annotations

import sys


def main(path: str) -> int:
    fails: list[int] = []
    children: list[tuple[int, int, int]] = []  # cloned, exec'd, manager
    held: list[tuple[int, int, int]] = []  # opened, closed, manager
    with open(path) as lines:
        for line in lines:
            parts = line.split()
            if len(parts) < 2 or not parts[0].isdigit():
                continue
            at = int(parts[0])
            if parts[1] == "ETXTBSY":
                fails.append(at)
            elif parts[1] == "CHILDEXEC":
                children.append((int(parts[7]), at, int(parts[5])))
            elif parts[1] == "HELD":
                held.append((int(parts[5]), at, int(parts[3])))
    explained = 0
    for failed in fails:
        found = [
            (cloned, execd, opened, closed)
            for cloned, execd, manager in children
            if cloned < failed < execd
            for opened, closed, holder in held
            if holder == manager and opened <= cloned <= closed
        ]
        if not found:
            print(f"ETXTBSY at {failed}: no child of the manager's held the file")
            continue
        explained += 1
        cloned, execd, _, closed = found[0]
        print(f"ETXTBSY at {failed}: a child cloned {(failed - cloned) / 1e3:.0f} µs before, while the manager "
              f"held an s file (closed {(closed - cloned) / 1e3:.0f} µs after the clone); "
              f"its exec {(execd - failed) / 1e3:.0f} µs after the failure")  # fmt: skip
    print(f"{explained} of {len(fails)} failures: a child of the manager's held the file")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
