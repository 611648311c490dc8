"""Shell completion: ``hvfs completion bash|zsh|fish`` prints the script to source, which
runs ``hvfs`` with argcomplete's variables set (``_ARGCOMPLETE``, ``COMP_LINE``,
``COMP_POINT``) to ask what may come next.

argcomplete completes the argparse parser hvfs already has, with its commands, flags and
choices, so nothing is declared twice; and it is imported only when completing, so
``hvfs run`` starts as fast as before (click or typer would be imported on every run).
The names of a project's VMs complete ``hvfs logs``, ``exec`` and ``stop``, read from the
project file (``-f``, default ./hvfs.toml) without asking the manager.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

from hvfs.services.commands import ServiceError, Subparsers, guarded

COMPLETING = "_ARGCOMPLETE"  # set by the shell script while it asks for completions
SHELLS = ("bash", "zsh", "fish")
_TAKES_VM = ("logs", "exec", "stop")


def completing() -> bool:
    return COMPLETING in os.environ


def _project_vms(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    from hvfs.project import config

    try:
        project = config.load(getattr(parsed_args, "file", None) or "hvfs.toml")
    except Exception:  # no project here, or one that does not parse: nothing to offer
        return []
    return [name for name in project.vms if name.startswith(prefix)]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def complete(parser: argparse.ArgumentParser) -> NoReturn:
    """Print the completions of the command line the shell gave, and exit."""
    try:
        import argcomplete
    except ImportError:  # an installation older than its pyproject.toml: no completions, no noise
        sys.exit(0)

    commands = _subparsers(parser)
    for name in _TAKES_VM:
        for action in commands[name]._actions if name in commands else ():
            if action.dest == "vm":
                action.completer = _project_vms  # type: ignore[attr-defined]
    argcomplete.autocomplete(parser)
    sys.exit(0)  # not reached: autocomplete exits when the variables are set


def add_completion_command(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "completion",
        help="print the shell completion script (bash, zsh, fish)",
        description="Print the script that makes SHELL complete hvfs's commands, flags and VM names. "
        'bash: eval "$(hvfs completion bash)" in ~/.bashrc; zsh: eval "$(hvfs completion zsh)" in ~/.zshrc; '
        "fish: hvfs completion fish > ~/.config/fish/completions/hvfs.fish",
    )
    parser.add_argument("shell", metavar="SHELL", choices=SHELLS, help=" or ".join(SHELLS))
    parser.set_defaults(handler=guarded(_print_script))
    return parser


def _print_script(args: argparse.Namespace) -> int:
    try:
        import argcomplete
    except ImportError:
        raise ServiceError("shell completion needs argcomplete; install it: pip install 'argcomplete>=3.1'") from None

    sys.stdout.write(argcomplete.shellcode(["hvfs"], shell=args.shell))  # type: ignore[attr-defined]
    return 0
