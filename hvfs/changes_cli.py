"""What a VM changed, on the command line (docs/changes.md).

- ``hvfs run --diff``: the run's changes on stderr after its command ends;
  ``--commit-on-success`` / ``--review`` with ``--stage DST``: writable bind mounts are
  staged (copy-on-write) and applied to the host only if the command exits 0 (or the
  user says yes); ``--export FILE``: the changes as a tarball at exit.
- ``hvfs diff VM [--json]`` and ``hvfs export VM [-o FILE]``: a running VM's, asked of the
  manager by name.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, replace
from typing import Any

from hvfs.hypervisor.mounts import MountSpec
from hvfs.manager.sources.registry import SourceSpec
from hvfs.spec import UsageError


@dataclass(frozen=True)
class ChangeOptions:
    """What a run does with its VM's changes: ``--diff``, staging and commit, ``--export``."""

    diff: bool = False
    commit: str = ""  # "", "success" or "review"
    stage: tuple[str, ...] = ()  # targets to stage; empty: every writable bind mount
    export: str | None = None

    @property
    def staging(self) -> bool:
        return bool(self.commit)


def add_run_flags(run: argparse.ArgumentParser) -> None:
    group = run.add_argument_group("changes (docs/changes.md)")
    group.add_argument("--diff", action="store_true", help="print what the VM changed on stderr when it ends")
    commit = group.add_mutually_exclusive_group()
    commit.add_argument(
        "--commit-on-success", action="store_true",
        help="stage changes to writable bind mounts; apply them to the host only if the command exits 0",
    )  # fmt: skip
    commit.add_argument(
        "--review", action="store_true", help="stage changes; show them at the end and apply them if you answer y"
    )
    group.add_argument(
        "--stage", action="append", default=[], metavar="DST",
        help="with --commit-on-success or --review: stage only this mount (repeatable; default: every writable -v)",
    )  # fmt: skip
    group.add_argument("--export", metavar="FILE", help="write the VM's changes as a tarball to FILE at exit")


def options_from(args: argparse.Namespace) -> ChangeOptions:
    commit = "success" if args.commit_on_success else "review" if args.review else ""
    if args.stage and not commit:
        raise UsageError("--stage chooses what --commit-on-success or --review stage; add one of them")
    if commit == "review" and not os.isatty(0):
        raise UsageError("--review asks on the terminal and stdin is none; use --commit-on-success instead")
    if commit and args.persist:
        raise UsageError(
            "--persist keeps root changes as they happen and cannot be staged; drop --persist or the commit flag"
        )
    export = None
    if args.export:
        from hvfs.spec import check_output_file

        export = check_output_file(args.export, "--export")
    return ChangeOptions(args.diff, commit, tuple(os.path.normpath(s) for s in args.stage), export)


def staged_mounts(
    mounts: tuple[MountSpec, ...], options: ChangeOptions
) -> tuple[tuple[MountSpec, ...], tuple[str, ...]]:
    """The mounts with each staged bind mount made an ``overlay`` of its host directory,
    and the targets staged."""
    if not options.staging:
        return mounts, ()
    candidates = {m.target for m in mounts if m.source.kind == "host" and not m.readonly}
    for target in options.stage:
        if target not in candidates:
            raise UsageError(
                f"--stage {target}: not a writable -v bind mount of this run; stage one of: "
                + (", ".join(sorted(candidates)) or "(none)")
            )
    chosen = set(options.stage) or candidates
    result, staged = [], []
    for mount in mounts:
        path = mount.source.options.get("path")
        if mount.target in chosen and isinstance(path, str) and os.path.isdir(path):
            result.append(replace(mount, source=SourceSpec("overlay", {"path": path})))
            staged.append(mount.target)
        elif mount.target in chosen:
            raise UsageError(
                f"{path} (at {mount.target}) is a file and only directories can be staged; "
                "mount its directory, add :ro, or choose the mounts to stage with --stage"
            )
        else:
            result.append(mount)
    return tuple(result), tuple(staged)


def outputs(options: ChangeOptions | None) -> dict[str, int]:
    """What the manager writes at the VM's exit, by role: ``export`` (the file of
    --export, opened here as the user) and ``diff`` (this process's stderr, for --diff)."""
    found: dict[str, int] = {}
    if options is None:
        return found
    if options.diff:
        found["diff"] = os.dup(2)
    if options.export is not None:
        try:
            found["export"] = os.open(options.export, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as e:
            for fd in found.values():
                os.close(fd)
            raise UsageError(f"--export {options.export}: cannot write: {e.strerror}; give another path") from None
    return found


def format_changes(document: dict[str, Any]) -> str:
    from hvfs.manager.changes import render

    return render(document)


def report(
    commit: dict[str, Any] | None, options: ChangeOptions | None = None, lost: dict[str, Any] | None = None
) -> None:
    """What ``hvfs run`` prints on stderr at the end: a commit's lines (the diff itself the
    manager wrote there already); after a manager restart, which lost the fds it was to
    write to, the changes the new manager saw, from its exit message (``lost``)."""
    if options is not None and lost is not None:
        if options.diff:
            sys.stderr.write(format_changes(lost))
            sys.stderr.write("hvfs: the manager was replaced during the run: changes before that are not listed\n")
        if options.export:
            sys.stderr.write(f"hvfs: the manager was replaced during the run: {options.export} was not written\n")
    if commit is not None:
        for line in commit.get("lines", []):
            sys.stderr.write(f"hvfs: {line}\n")
    sys.stderr.flush()


def ask(document: dict[str, Any]) -> bool:
    """--review: show the staged changes on the terminal and ask there."""
    try:
        tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(tty, (format_changes(document) + "hvfs: apply these changes to the host? [y/N] ").encode())
        answer = b""
        while not answer.endswith(b"\n") and (chunk := os.read(tty, 256)):
            answer += chunk
    except OSError:
        return False
    finally:
        os.close(tty)
    return answer.strip().lower() in (b"y", b"yes")


# -- hvfs diff / hvfs export ---------------------------------------------------------------


def _ask_manager(op: str, name: str, fds: list[int] | None = None, **fields: Any) -> dict[str, Any]:
    from hvfs.hypervisor import client, control

    try:
        connection = client.connect(start=False)
    except control.ControlError:
        raise UsageError(f"no VM named {name!r} is running (no manager); see 'hvfs ps'") from None
    reply = client.ask(connection, op, fds, vm=name, **fields)  # no bound: the manager writes first
    if "error" in reply:
        raise UsageError(str(reply["error"]))
    return reply


def _diff(args: argparse.Namespace) -> int:
    sys.stdout.flush()
    _ask_manager("changes", args.vm, [1], json=args.json)  # written by the manager: no size limit
    return 0


def _export(args: argparse.Namespace) -> int:
    if args.output in (None, "-"):
        if os.isatty(1):
            raise UsageError("refusing to write a tarball to a terminal; give -o FILE or redirect stdout")
        fd = os.dup(1)
    else:
        try:
            fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise UsageError(f"-o {args.output}: cannot write: {e.strerror}; give another path") from None
    try:
        _ask_manager("export", args.vm, [fd])
    finally:
        os.close(fd)
    return 0


def add_commands(subparsers: Any) -> None:
    diff = subparsers.add_parser(
        "diff", help="list the files a running VM added (A), changed (C) and deleted (D)",
        description="What a running VM changed in its root and its writable mounts, as the manager served it.",
    )  # fmt: skip
    diff.add_argument("vm", metavar="VM", help="the VM's name (hvfs ps)")
    diff.add_argument("--json", action="store_true", help="print JSON, for scripts")
    diff.set_defaults(handler=_diff)
    export = subparsers.add_parser(
        "export", help="write a running VM's changes as a tarball (removals as .wh. whiteouts)",
        description="The files a running VM added or changed, and OCI whiteouts for those it removed.",
    )  # fmt: skip
    export.add_argument("vm", metavar="VM", help="the VM's name (hvfs ps)")
    export.add_argument("-o", "--output", metavar="FILE", help="the tarball to write (default: stdout)")
    export.set_defaults(handler=_export)
