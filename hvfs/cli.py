"""The ``hvfs`` command line. Exit codes follow docker: 125 when hvfs itself fails or is
given bad input, 126 when the command cannot be run, 127 when it is not found, and
otherwise the command's own status (128+N for a signal)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, cast

from hvfs import __version__

EXIT_HVFS = 125


_DEEPEST = "_hvfs_prog"  # the namespace attribute naming the innermost (sub)command parsed


class _Formatter(argparse.HelpFormatter):
    """argparse's, with the terminal's width found without shutil: argparse imports it
    for every argument it adds, and shutil brings bz2, lzma and zlib, 10 % of `hvfs run`'s
    imports (the same rule as shutil.get_terminal_size: COLUMNS, then the terminal, then 80)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:  # fmt: skip
        if width is None:
            try:
                columns = int(os.environ["COLUMNS"])
            except (KeyError, ValueError):
                try:
                    columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
                except (AttributeError, ValueError, OSError):
                    columns = 80
            width = columns - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    """Errors as one line naming the help of the (sub)command at fault, exit 125.

    argparse lets a subcommand's parser pass the arguments it does not know up to the top
    one, which would then blame ``hvfs``: the innermost parser notes its name instead."""

    raising = False  # the manager parses a native front's argv (hvfs.hypervisor.frontrun): raise, never exit

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if not hasattr(parsed, _DEEPEST):  # an inner parser returns first: it sets it
            setattr(parsed, _DEEPEST, self.prog)
        return parsed, extras

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.fail(getattr(parsed, _DEEPEST, self.prog), f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def error(self, message: str) -> NoReturn:
        self.fail(self.prog, message)

    @staticmethod
    def fail(prog: str, message: str) -> NoReturn:
        if _Parser.raising:
            from hvfs.spec import UsageError

            raise UsageError(f"{message}; see '{prog} --help'")
        sys.stderr.write(f"hvfs: {message}; see '{prog} --help'\n")
        sys.exit(EXIT_HVFS)


def _run_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    run: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="run a command in a new VM",
        description="Run COMMAND in a new VM whose file requests are served by the HVFS manager.",
        usage="hvfs run [OPTIONS] [--] COMMAND [ARG...]",
    )
    run.add_argument("--name", help="the VM's name and hostname (default: a random one)")
    run.add_argument(
        "--image", default="host",
        help="root: 'host' (default), docker:NAME[:TAG], a docker save or OCI layout tarball or directory, "
        "a root directory, or a rootfs tarball",
    )  # fmt: skip
    run.add_argument("--entrypoint", help="the program to run, replacing the image's entrypoint ('' for none)")
    run.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DST[:ro]", help="bind a host path")
    run.add_argument(
        "--tmpfs", action="append", default=[], metavar="DST[:size=64m]", help="mount a memory file system"
    )
    run.add_argument(
        "--mount", action="append", default=[], metavar="type=TYPE,target=DST[,ro][,OPTION=VALUE...]",
        help="mount a source of any type (docs/sources.md)",
    )  # fmt: skip
    run.add_argument("-w", "--workdir", help="working directory inside the VM (default: the image's, or /)")
    run.add_argument("-u", "--user", help="run the command as USER[:GROUP] (names or ids) of the VM")
    run.add_argument(
        "-e", "--env", action="append", default=[], metavar="KEY[=VALUE]", help="set an environment variable"
    )
    run.add_argument("--strict", action="store_true", help="serve reads too, not only writes")
    run.add_argument(
        "--driver", default="", metavar="seccomp|ptrace|auto",
        help="what traps the VM's calls (default: auto, seccomp where the kernel has user notification)",
    )  # fmt: skip
    run.add_argument("--persist", metavar="DIR", help="keep the VM's changes to its image in DIR")
    run.add_argument(
        "-i", "--interactive", action="store_true", help="forward input to the terminal (stdin always passes through)"
    )
    run.add_argument("-t", "--tty", action="store_true", help="give the command a pseudo-terminal")
    run.add_argument("--stats", metavar="FILE", help="write request statistics as JSON to FILE at exit")
    run.add_argument(
        "--stop-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="after INT, TERM, HUP or QUIT, kill the VM if it still runs this long after (default 10)",
    )
    from hvfs import run_flags
    from hvfs.services.registry import add_run_flags

    run_flags.add_flags(run)
    add_run_flags(run.add_argument_group("services"))
    from hvfs.changes_cli import add_run_flags as add_change_flags

    add_change_flags(run)
    run.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return run


def _spec(args: argparse.Namespace, environ: Mapping[str, str] = os.environ):  # type: ignore[no-untyped-def]
    """The RunSpec of ``hvfs run``'s ``args``; ``environ``: the client's environment (-e KEY
    and --env-file take values from it), which the manager is given by a native front."""
    from hvfs import run_flags, spec
    from hvfs.hypervisor.services import ServiceOptions

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    name = spec.check_name(args.name) if args.name else spec.drawn_name()
    if args.tty and args.interactive and not os.isatty(0):
        raise spec.UsageError("the input device is not a TTY; drop -t or run from a terminal")
    env = spec.parse_env(args.env, environ, name=name, tty=args.tty)
    docker = run_flags.fields(args, env, environ)
    from hvfs.changes_cli import options_from, staged_mounts

    changes = options_from(args)
    mounts, staged = staged_mounts(
        (
            *(spec.parse_volume(v) for v in args.volume),
            *(spec.parse_tmpfs(t) for t in args.tmpfs),
            *(spec.parse_mount(m) for m in args.mount),
        ),
        changes,
    )
    return spec.RunSpec(
        argv=(*spec.check_entrypoint(args.entrypoint), *command) if args.entrypoint is not None else tuple(command),
        name=name,
        image=spec.check_image(args.image),
        mounts=mounts,
        changes=changes,
        staged=staged,
        workdir=spec.check_workdir(args.workdir) if args.workdir else "/",
        env=env,
        strict=args.strict,
        driver=spec.check_driver(args.driver),
        persist=spec.check_persist(args.persist) if args.persist else None,
        tty=args.tty,
        interactive=args.interactive,
        stats=spec.check_output_file(args.stats, "--stats") if args.stats else None,
        user=spec.check_user(args.user) if args.user else None,
        stop_timeout=spec.check_timeout(args.stop_timeout, "--stop-timeout"),
        home_set="HOME" in env or any(item.partition("=")[0] == "HOME" for item in args.env),
        services=ServiceOptions.from_args(args),
        from_image=tuple(
            what
            for what, given in (
                ("entrypoint", args.entrypoint is not None),
                ("command", bool(command) or args.entrypoint is not None),
                ("workdir", bool(args.workdir)),
                ("user", bool(args.user)),
                ("environment", False),
            )
            if not given
        ),
        **docker,
    )


def _subcommand(argv: list[str]) -> str | None:
    """The command word of ``argv``: the first argument that is neither an option nor
    the value of ``-f``."""
    words = iter(argv)
    for word in words:
        if word in ("-f", "--file"):
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; only ``run``'s when ``argv`` names ``run``, only
    ``manager``'s when it names ``manager``, none for ``--version`` (None: all)."""
    parser = _Parser(prog="hvfs", description="HVFS: a hypervisor file system for VMs made of Linux namespaces.")
    parser.add_argument("--version", action="version", version=f"hvfs {__version__}")
    parser.add_argument(
        "-f", "--file", help="the project file for up, ps, exec, logs, stop, down (default ./hvfs.toml)"
    )
    subparsers = parser.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=_Parser)
    command = None if argv is None else _subcommand(list(argv))
    if command is None and argv is not None and "--version" in argv and not {"-h", "--help"} & set(argv):
        return parser  # it prints the version and exits while parsing: no command's modules needed
    if command == "manager":  # `manager serve` is how a client starts the manager: its start-up is every cold run's
        from hvfs.hypervisor.commands import add_manager_command

        add_manager_command(cast("argparse._SubParsersAction[argparse.ArgumentParser]", subparsers))
        return parser
    _run_parser(subparsers)
    if command != "run":
        # The other commands' modules cost `hvfs run` a third of its start-up: only when needed.
        from hvfs.project import cli as project_cli
        from hvfs.services.audit import add_events_command
        from hvfs.services.backup.cli import add_backup_command
        from hvfs.services.scan.cli import add_quarantine_command

        project_cli.add_commands(subparsers)
        from hvfs.changes_cli import add_commands as add_change_commands
        from hvfs.completion import add_completion_command
        from hvfs.doctor import add_doctor_command
        from hvfs.hypervisor.commands import add_manager_command
        from hvfs.images.cli import add_images_command
        from hvfs.oci.install import add_docker_command

        add_change_commands(subparsers)
        for add in (add_events_command, add_backup_command, add_quarantine_command, add_manager_command,
                    add_doctor_command, add_images_command, add_completion_command):  # fmt: skip
            add(cast("argparse._SubParsersAction[argparse.ArgumentParser]", subparsers))  # _Parser is one
        add_docker_command(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (hvfs/completion.py)
        from hvfs.completion import complete

        complete(parser)
    args = parser.parse_args(argv)
    from hvfs import logs

    logs.configure()
    if args.subcommand is None:  # as docker: `hvfs` alone asks what there is
        parser.print_help(sys.stdout)
        return 0
    from hvfs.errors import HvfsError

    try:
        if hasattr(args, "handler"):  # events, backup, quarantine, manager, doctor
            return int(args.handler(args))
        if args.subcommand != "run":
            from hvfs.project import cli as project_cli

            return project_cli.run(args)
        spec = _spec(args)
        from hvfs.run import run

        code = run(spec)
    except HvfsError as e:
        sys.stderr.write(f"hvfs: {e}\n")
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        return _internal_error(e)
    # The VM is gone and run() released everything it held: skip the interpreter's
    # teardown of every module, a tenth of `hvfs run -- true`.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):
            stream.flush()
    os._exit(code)


def _internal_error(e: Exception) -> int:
    if os.environ.get("HVFS_DEBUG"):
        raise e
    detail = f"{e.strerror} ({e.filename})" if isinstance(e, OSError) and e.strerror else repr(e)
    sys.stderr.write(f"hvfs: internal error: {detail}; run again with HVFS_DEBUG=1 for details\n")
    return EXIT_HVFS
