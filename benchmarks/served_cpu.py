"""The manager's CPU per served read-only open, per served stat, per readlink and access
(served_link.h), per write-open of a file that exists, per write-open of /dev/null
(continued: served_dev.h), per O_CREAT|O_EXCL creation with its unlink (one pair), per
fchmod, fchown and futimens of a file the VM opened for writing (tar's calls), per mkdir with
its rmdir (one pair: served_dirs.h) and per chmod, lchown and utimensat of a path (tar's
calls on its directories: served_pathmeta.h), with the C loop
serving them and with ``HVFS_SERVED_STAT=0`` (the Python path, which also turns served
writes off), round by round, each its own manager
in a private state directory (as benchmarks/audit_cpu_vm.py measures: a run of 200 calls and
one of 20,200, the difference over 20,000). Not a test: nothing is asserted.

    python benchmarks/served_cpu.py [ROUNDS] [-u UID:GID] [--only NAME,NAME] [--ptrace]
                                    [--audit] [--baseline DIR]

``-u``: the VM's programs run as that user (``hvfs run -u``), whom the manager acts as for
each call (hvfs/manager/creds.py acting_as; in C, hvfs/_native/served_switch.h).
``--ptrace``: under ``--driver ptrace``, whose tracer's C loop serves the write-opens, unlinks
and fd metadata changes (hvfs/_native/tracer_*.h); with ``HVFS_SERVED_STAT=0`` its Python
path serves them all.
``--audit``: both served in C, ``--strict`` against ``--strict --audit FILE`` (issue 14: the
audit's cost per call), printed with their ratio. ``--baseline DIR`` (an hvfs package, e.g.
X/hvfs): DIR's build measured too, round by round with this one, each its own manager.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
HVFS = sys.executable
PROGRAMS = {
    "open r/o": "fd = os.open(p, os.O_RDONLY); os.close(fd)",
    "stat": "os.stat(p)",
    "readlink": "os.readlink(l)",  # l: a symlink to f (served_link.h)
    "access": "os.access(p, os.R_OK)",  # python's imports' call, with the caller's real ids
    "open w": "fd = os.open(p, os.O_WRONLY); os.close(fd)",  # a write-open of a file that exists (served_write.h)
    "dev w": "fd = os.open('/dev/null', os.O_WRONLY); os.close(fd)",  # W8c's, continued (served_dev.h)
    # W3's pair (tar's creation, rm's unlink: served_write.h, served_mutate.h): the figure is per pair
    "excl+unlink": "fd = os.open(p + 'x', os.O_WRONLY | os.O_CREAT | os.O_EXCL); os.close(fd); os.unlink(p + 'x')",
    # W3's metadata calls on the file tar made (served_fdmeta.h), on ``w``, opened for writing once
    "fchmod": "os.fchmod(w, 0o644)",
    "fchown": "os.fchown(w, -1, -1)",
    "futimens": "os.utime(w, ns=(1, 2))",
    # W3's directories (tar's mkdirat, rm's unlinkat AT_REMOVEDIR: served_dirs.h): per pair
    "mkdir+rmdir": "os.mkdir(p + 'd'); os.rmdir(p + 'd')",
    # tar's calls on a directory it made, by path (served_pathmeta.h)
    "chmod path": "os.chmod(p, 0o644)",
    "lchown path": "os.chown(p, -1, -1, follow_symlinks=False)",
    "utime path": "os.utime(p, ns=(1, 2))",
}


def cpu(state: Path) -> float:
    """The CPU seconds the state directory's manager has used (all its threads)."""
    pid = json.loads((state / "manager.json").read_text())["pid"]
    f = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def run(env: dict[str, str], work: Path, program: str, count: int, user: list[str]) -> float:
    """The manager's CPU seconds for one VM running ``program`` ``count`` times (audited where
    the environment names an AUDIT file, which is emptied after each run)."""
    audit = ["--audit", env["AUDIT"]] if "AUDIT" in env else []
    setup = "import os, sys\np = sys.argv[1] + '/f'\nl = sys.argv[1] + '/l'\nw = os.open(p, os.O_WRONLY)\n"
    code = f"{setup}for _ in range({count}):\n    {program}\n"
    state = Path(env["HVFS_STATE_DIR"])
    began = cpu(state)
    subprocess.run(
        [
            HVFS,
            "-m",
            "hvfs",
            "run",
            "--strict",
            *audit,
            *user,
            "-v",
            f"{work}:{work}",
            "--",
            "python3",
            "-c",
            code,
            str(work),
        ],
        env=env,
        cwd=work,
        check=True,
    )
    used = cpu(state) - began
    if audit:
        Path(audit[1]).unlink()
    return used


def main() -> None:
    args = sys.argv[1:]
    user = args[args.index("-u") : args.index("-u") + 2] if "-u" in args else []
    only = args[args.index("--only") : args.index("--only") + 2] if "--only" in args else []
    if "--ptrace" in args:  # passed on to ``hvfs run`` with the user's options
        args.remove("--ptrace")
        user += ["--driver", "ptrace"]
    programs = {name: PROGRAMS[name] for name in only[1].split(",")} if only else PROGRAMS
    audited = "--audit" in args
    baseline = args[args.index("--baseline") : args.index("--baseline") + 2] if "--baseline" in args else []
    rounds = [a for a in args if a not in user and a not in only and a not in baseline and a != "--audit"]
    # (label, HVFS_SERVED_STAT, audited, the package's parent)
    variants = [("1", "1", False, HERE), ("0", "0", False, HERE)]
    if audited:
        variants = [("strict", "1", False, HERE), ("audit", "1", True, HERE)]
    if baseline:
        variants += [(f"base {label}", v, a, Path(baseline[1]).resolve().parent) for label, v, a, _ in variants]
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)  # a VM user's to reach too
        work = Path(d) / "work"
        work.mkdir()
        (work / "f").write_text("x\n")
        (work / "l").symlink_to("f")
        if "-u" in user:  # the VM user writes f and makes files beside it, as root does without -u
            uid, _, gid = user[1].partition(":")
            for path in (work, work / "f"):
                os.chown(path, int(uid), int(gid or uid))
        envs: dict[str, dict[str, str]] = {}
        for number, (label, v, audit, package) in enumerate(variants):
            st = Path(d) / f"state{number}"
            st.mkdir(mode=0o700)
            envs[label] = {**os.environ, "HVFS_STATE_DIR": str(st), "HVFS_SERVED_STAT": v, "PYTHONPATH": str(package)}
            if audit:
                envs[label]["AUDIT"] = str(Path(d) / f"audit{number}.jsonl")
            subprocess.run([HVFS, "-m", "hvfs", "run", "--", "true"], env=envs[label], cwd=work, check=True)
        res: dict[tuple[str, str], list[float]] = {}
        for _ in range(int(rounds[0]) if rounds else 2):
            for name, prog in programs.items():
                for label in envs:
                    few = run(envs[label], work, prog, 200, user)
                    many = run(envs[label], work, prog, 20200, user)
                    res.setdefault((name, label), []).append((many - few) / 20000 * 1e6)
        for label in envs:
            subprocess.run([HVFS, "-m", "hvfs", "manager", "stop"], env=envs[label], cwd=work)
        for (name, label), xs in sorted(res.items()):
            shown = label if audited else f"HVFS_SERVED_STAT={label}"
            print(f"{name:10} {shown}: " + ", ".join(f"{x:.1f}" for x in xs) + " µs manager CPU per call")
        if audited:  # per round, each audited run over its own build's strict one
            for name in programs:
                for prefix in ("", "base ") if baseline else ("",):
                    pairs = zip(res[name, f"{prefix}audit"], res[name, f"{prefix}strict"], strict=True)
                    ratios = ", ".join(f"{a / s:.2f}" if s > 0 else "–" for a, s in pairs)
                    print(f"{name:10} {prefix}audit ÷ {prefix}strict: {ratios}")


if __name__ == "__main__":
    main()
