"""The medians of benchmarks/callbench_ab.sh's output: per kind of call, the wall µs and the
supervisor's CPU µs per call of before, after and the floor, with their ratios. Not a test.

    python3 benchmarks/callbench_ab.py OUTPUT
"""

from __future__ import annotations

import collections
import statistics
import sys

BUILDS = ("before", "after", "floor")


def main() -> None:
    wall: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    cpu: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    with open(sys.argv[1]) as lines:
        for line in lines:
            fields = line.split()
            if len(fields) >= 7 and fields[1] in BUILDS:  # ROUND BUILD KIND MEDIAN (MIN-MAX) cpu CPU
                wall[fields[2], fields[1]].append(float(fields[3]))
                cpu[fields[2], fields[1]].append(float(fields[-1]))
    for kind in sorted({kind for kind, _ in wall}):
        b, a, f = (statistics.median(wall[kind, build]) for build in BUILDS)
        cb, ca, cf = (statistics.median(cpu[kind, build]) for build in BUILDS)
        print(
            f"{kind:9} wall µs: before {b:6.2f} after {a:6.2f} floor {f:6.2f}, after/before {a / b:.2f},"
            f" after/floor {a / f:.2f}x | CPU µs: before {cb:5.2f} after {ca:5.2f} floor {cf:5.2f},"
            f" after/before {ca / cb:.2f}, after/floor {ca / cf:.2f}x (rounds: {len(wall[kind, 'after'])})"
        )


if __name__ == "__main__":
    main()
