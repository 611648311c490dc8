"""What the services' subcommands share: how they report errors, and how ``hvfs`` runs them.

Each ``add_*_command(subparsers)`` defines its subcommand and sets ``handler`` in the
parsed namespace to a function ``(argparse.Namespace) -> int`` returning the exit status;
``hvfs.cli.main`` calls ``args.handler(args)``. Handlers print errors as ``hvfs: MESSAGE``
on stderr and return 125, as the rest of hvfs does for bad input.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from typing import TypeAlias, TypeVar

EXIT_HVFS = 125  # as hvfs.cli.EXIT_HVFS; not imported, so that cli.py can import the services

# What ArgumentParser.add_subparsers returns (generic only to type checkers).
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler = Callable[[argparse.Namespace], int]


T = TypeVar("T")


def argument(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` as an argparse ``type=``: its ValueError message reaches the user (argparse
    would otherwise replace it with "invalid value")."""

    @functools.wraps(parse)
    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert


class ServiceError(Exception):
    """A failure to show the user as one line that says what to do; exit status 125."""


def guarded(handler: Handler) -> Handler:
    """``handler``, with ServiceError, OSError and ValueError turned into one line and 125,
    and Ctrl-C into 130 (``--follow`` ends that way)."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (ServiceError, ValueError) as e:
            sys.stderr.write(f"hvfs: {e}\n")
        except BrokenPipeError:  # `hvfs events … | head`: the reader is gone, which is not an error
            # Python would complain again when it flushes stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except OSError as e:
            where = f" ({e.filename})" if e.filename else ""
            sys.stderr.write(f"hvfs: {e.strerror or e}{where}\n")
        except KeyboardInterrupt:
            return 130
        return EXIT_HVFS

    return run
