"""What hvfs.machine reads of this machine, against the kernel's own files."""

from __future__ import annotations

from hvfs import machine


def test_memory_is_ram_and_swap_as_meminfo_says() -> None:
    found: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, _, rest = line.partition(":")
            found[name] = int(rest.split()[0]) * 1024
    assert found["MemTotal"] > 0
    # Nothing else in the sum (MemFree, SwapFree and the rest change from read to read).
    assert machine.memory() == found["MemTotal"] + found.get("SwapTotal", 0)


def test_a_size_is_judged_against_ram_and_swap() -> None:
    total = machine.memory()
    for size in (4096, total // 2, total, total + 1, total * 2):
        problem = machine.size_problem(size)
        assert (problem is None) == (size <= total), (size, problem)
    assert machine.size_problem(total + 4096) == (
        f"size {machine.format_size(total + 4096)} is more than this machine's memory and swap "
        f"({machine.format_size(total)}); give at most {machine.format_size(total)}"
    )
