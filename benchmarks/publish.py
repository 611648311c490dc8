"""docs/performance.md and docs/performance.png, generated from a results document."""

from __future__ import annotations

from pathlib import Path

from report import BWRAP, NATIVE, Results, evaluate_targets, fmt, fmt_count, fmt_ms, fmt_ratio, to_mib

REQUEST_TIME = Path(__file__).parent / "request_time.md"  # "Where a request's time goes"
SANDBOXES = ["bwrap", "proot", "runsc", "hvfs", "hvfs-strict", "hvfs-ptrace"]
COLORS = {
    "bwrap": "#4c72b0",
    "proot": "#dd8452",
    "runsc": "#8172b3",
    "hvfs": "#55a868",
    "hvfs-strict": "#c44e52",
    "hvfs-ptrace": "#937860",
}


def write_chart(results: Results, path: Path) -> None:
    """Grouped bars of each sandbox's median wall time relative to native (top) and to
    bubblewrap (bottom), on log scales so that 1.1× and 100× both read."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the chart only goes to a file
    import matplotlib.pyplot as plt

    keys = [w["key"] for w in results.workloads if results.runners_of(w["key"])]
    runners = [r for r in SANDBOXES if any((k, r) in results.cases for k in keys)]
    figure, axes = plt.subplots(2, 1, figsize=(11, 7.5), sharex=True)
    width = 0.8 / max(len(runners), 1)
    for axis, base in zip(axes, (NATIVE, BWRAP), strict=True):
        for index, runner in enumerate(runners):
            xs, ys = [], []
            for position, key in enumerate(keys):
                ratio = results.ratio(key, runner, base)
                if ratio is not None:
                    xs.append(position + (index - (len(runners) - 1) / 2) * width)
                    ys.append(ratio)
            axis.bar(xs, ys, width, label=results.labels[runner], color=COLORS.get(runner))
        axis.axhline(1, color="black", linewidth=0.8)
        axis.set_yscale("log")
        axis.set_ylabel(f"wall time × {results.labels.get(base, base)}")
        axis.grid(axis="y", which="both", alpha=0.3)
    axes[0].legend(ncol=len(runners), loc="lower left", bbox_to_anchor=(0, 1.01), fontsize="small", frameon=False)
    axes[1].set_xticks(range(len(keys)), keys)
    figure.suptitle("Median wall time relative to native and to bubblewrap (lower is better)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def _summary_table(results: Results) -> list[str]:
    keys = [w for w in results.workloads if results.runners_of(w["key"])]
    runners = [r for r in SANDBOXES if any((w["key"], r) in results.cases for w in keys)]
    rows = []
    for workload in keys:
        key = workload["key"]
        row = [f"{key} {workload['title']}", fmt_ms(results.summary(key, NATIVE))[0]]
        for runner in runners:
            median = fmt_ms(results.summary(key, runner))[0] if (key, runner) in results.cases else "–"
            ratio = results.ratio(key, runner, BWRAP)
            row.append(median if ratio is None or runner == BWRAP else f"{median} ({fmt_ratio(ratio)})")
        rows.append(row)
    head = ["workload", "native ms", *(results.labels[r] + " ms" for r in runners)]
    return _table(head, rows)


def _per_op_table(results: Results) -> list[str]:
    keys = [k for k in ("W8", "W8r", "W8c") if results.runners_of(k)]
    runners = []
    for key in keys:
        runners += [r for r in results.runners_of(key) if r not in runners]
    rows = []
    for runner in runners:
        row = [results.labels[runner]]
        for key in keys:
            summary = results.summary(key, runner, "per_op_us")
            if summary is None:
                row += ["–", "–"]
                continue
            ratio = fmt_ratio(results.ratio(key, runner, NATIVE, "per_op_us"))
            row += [f"{fmt(summary.median)} ({fmt(summary.low)}–{fmt(summary.high)})", ratio]
        rows.append(row)
    head = ["runner"]
    for key in keys:
        head += [f"{key} µs per open+close", "× native"]
    return _table(head, rows)


def _startup_table(results: Results) -> list[str]:
    rows = []
    for runner in results.runners_of("S"):
        median, spread = fmt_ms(results.summary("S", runner))
        rows.append([results.labels[runner], median, spread, fmt_ratio(results.ratio("S", "hvfs", runner))])
    return _table(["runner", "median ms", "min–max ms", "hvfs ÷ this"], rows)


def _trap_table(results: Results) -> list[str]:
    rows = []
    for workload in results.workloads:
        key, row = workload["key"], [workload["key"]]
        for runner in ("hvfs", "hvfs-strict"):
            case = results.cases.get((key, runner))
            if case is None or not case["trapped"]:
                row += ["–", ""]
                continue
            ops = sorted(case["requests"].items(), key=lambda item: -sum(item[1].values()))[:4]
            row += [fmt_count(results.trapped(key, runner)), ", ".join(f"{op} {sum(c.values())}" for op, c in ops)]
        if row[1:] != ["–", "", "–", ""]:
            rows.append(row)
    head = ["workload", "hvfs: trapped per run", "most trapped", "--strict: trapped per run", "most trapped"]
    return _table(head, rows)


def _memory_table(results: Results) -> list[str]:
    rows = []
    for key, by_runner in (results.document.get("memory") or {}).items():
        for runner, figures in by_runner.items():
            manager, tree = to_mib(figures.get("manager_peak_kib")), to_mib(figures.get("tree_peak_kib"))
            rows.append([key, results.labels[runner], fmt(manager), fmt(tree)])
    return _table(["workload", "runner", "hvfs process (manager) MiB", "largest process in the tree MiB"], rows)


def _detail_table(results: Results) -> list[str]:
    rows = []
    for workload in results.workloads:
        key = workload["key"]
        for runner in results.runners_of(key):
            median, spread = fmt_ms(results.summary(key, runner))
            rows.append(
                [
                    key,
                    results.labels[runner],
                    median,
                    spread,
                    fmt_ratio(results.ratio(key, runner, NATIVE)),
                    fmt_ratio(results.ratio(key, runner, BWRAP)),
                    fmt_count(results.trapped(key, runner)),
                    str(len(results.cases[(key, runner)]["failures"]) or ""),
                ]
            )
    head = ["workload", "runner", "median ms", "min–max ms", "× native", "× bwrap", "trapped", "failed runs"]
    return _table(head, rows)


def _breakdown() -> list[str]:
    """The section "Where start-up goes": measured by hand (benchmarks/startup_phases.py and
    startup_compare.py, which need two installations) and kept in startup_breakdown.md."""
    source = Path(__file__).with_name("startup_breakdown.md")
    return [*source.read_text().rstrip("\n").splitlines(), ""] if source.exists() else []


def write_markdown(results: Results, path: Path, chart: str) -> None:
    doc = results.document
    settings, machine = doc["settings"], doc["machine"]
    lines = [
        "# Performance",
        "",
        "<!-- Generated by benchmarks/run.py (benchmarks/publish.py); re-run it rather than editing this file. -->",
        "",
        f"Measured {doc['created']} on HVFS {machine.get('HVFS commit', '?')} with `{doc['command']}`: every",
        f"workload under every runner, {settings['repeat']} rounds interleaved in one session (each round runs",
        "every pair once, in a shuffled order). Wall time in milliseconds, median of the rounds; in",
        "parentheses the ratio to bubblewrap, which isolates with namespaces alone and serves nothing.",
        "",
        *_summary_table(results),
        f"![median wall time relative to native and to bubblewrap]({chart})",
        "",
        "## Targets",
        "",
        *_table(["target", "status", "measured"], [[t.goal, t.status, t.detail] for t in evaluate_targets(results)]),
        "## Trapped open",
        "",
        "The program's own figure (openbench.c: median of 5 batches), without start-up. W8 opens a",
        "file in WORK for writing, which HVFS serves (opens it itself, installs it with ADDFD); W8c",
        "opens /dev/null for writing, which HVFS lets continue. The floor rows are",
        "`benchmarks/floor/floor.c`, a minimal C supervisor doing the least a correct one can (receive,",
        "read the path, check the id, answer), with and without the sync wake-up flag and with both",
        "processes pinned to one CPU or not. Unpinned runs can be bimodal (a wide min–max): fast",
        "while the scheduler keeps supervisor and target on one CPU, slow while every answer wakes a",
        "task on the other CPU. Its ORDERED rows trap and serve `openat` alone; its STRICT rows",
        "(W2, W3, W3t, W5, W6, W8r) load the very filter of `hvfs run --strict` and serve what HVFS's C",
        "loop serves (stats, access checks, readlinks, unlinks and opens by path; fchmod, fchown",
        "and futimens on a fd), the rest continued: the floor of issue 14's served-request target.",
        "",
        *_per_op_table(results),
        # Measured by hand (a profile of the serving thread), so kept as written.
        *REQUEST_TIME.read_text().splitlines(),
        "",
        "## Start-up",
        "",
        f"`true` under each runner, {settings['starts']} runs interleaved with the workloads.",
        "",
        *_startup_table(results),
        *_breakdown(),
        "## Trapped syscalls",
        "",
        "Requests the HVFS manager saw per run (served + continued + failed, from `--stats`).",
        "",
        *_trap_table(results),
        "## Memory",
        "",
        "Peak resident memory in separate untimed runs (maximum of 3): of the `hvfs` process, which is",
        "the manager (its `VmHWM`, sampled every 5 ms), and of the largest process anywhere in the",
        "tree (`/usr/bin/time -f %M`); natively the latter is the command's own.",
        "",
        *_memory_table(results),
        "## All figures",
        "",
        *_detail_table(results),
        "## How it is measured",
        "",
        "Run it with `python benchmarks/run.py` (matplotlib needed: `pip install -e .[bench]`);",
        "`--only W3,W8 --runners native,hvfs --repeat 2` for a quick look (a partial run leaves this",
        "file alone unless `--write-docs`); `--replot benchmarks/results/latest.json` redraws it;",
        "`--hvfs DIR` measures the hvfs package in DIR instead (another commit's, to compare two",
        "versions one session after the other; such runs never reach this file); `--baseline DIR`",
        "runs the hvfs runners on both packages in one session, interleaved (the Audit section).",
        "",
        "- Each run starts with a fresh copy of what the workload changes, then `sync`, both before",
        "  the clock starts; wall time is measured around the whole runner process, start-up",
        "  included, so short workloads (W1, W2, W5) mostly measure each sandbox's start-up.",
        "- Every runner gets the same small environment (PATH, LANG, HOME and TMPDIR in WORK) and",
        "  WORK, a directory on the host's disk, writable at its own path.",
        "- HVFS runs from a copy of `hvfs/` taken when the session starts (its digest is under",
        "  Machine), so that edits made meanwhile do not mix versions within one session.",
        "- Failed runs are reported (last column of All figures) and left out of the medians.",
        f"- W8 runs {settings['iterations']:,} opens per run.",
        "- Workloads (WORK is the session's directory):",
        "",
        *[f"  - {w['key']} {w['title']}: `{w['command']}`" for w in results.workloads],
        "",
        "- Runners:",
        "",
        *[f"  - {r['label']}: `{r['example']}`" for r in doc["runners"] if r["reason"] is None],
        *[f"  - {r['label']}: not run ({r['reason']})" for r in doc["runners"] if r["reason"] is not None],
        "",
        "## Machine",
        "",
        *[f"- {name}: {value}" for name, value in machine.items()],
        "",
    ]
    path.write_text("\n".join([*lines, *kept_sections(path, lines)]))


def kept_sections(path: Path, generated: list[str]) -> list[str]:
    """The sections of the file as it is that ``generated`` does not write (measured by hand:
    --baseline runs, many_vms.py, a helper's before/after), to write again after the rest,
    in their order: a full run must never drop what a person measured."""
    written = {line[3:].strip() for line in generated if line.startswith("## ")}
    try:
        old = path.read_text().splitlines()
    except OSError:
        return []
    kept: list[str] = []
    keeping = False
    for line in old:
        if line.startswith("## "):
            keeping = line[3:].strip() not in written
        if keeping:
            kept.append(line)
    return [*kept, ""] if kept else []
