"""Differential conformance probe: run file operations and print what Linux answered.

Usage: python3 probe WORKDIR [--ro RO_DIR] [--other OTHER_DIR] [--case NAME ...]

WORKDIR is an empty, writable directory on the file system under test. RO_DIR, if given,
is a directory on a read-only mount holding a regular file `file` and an empty directory
`dir` (the EROFS cases); OTHER_DIR, if given, is a writable directory on another mount
(the EXDEV cases). Cases that need a missing directory, or root, record "skipped".

The same probe runs natively, where Linux is the oracle, and inside an HVFS VM on a
served mount; the two outputs must be identical. So the output is one JSON object, keys
sorted, mapping each case name ("group.what", e.g. "open.creat_excl_existing") to a
record with these keys:

- "result": "ok", the errno name of the OSError the case ended with (e.g. "ENOENT"),
  "skipped", or "EXCEPTION" (an unexpected exception; "value" then holds its repr).
- "value" (optional): what the operation returned or observed, as JSON: bytes read,
  sorted directory listings, exit statuses, explicitly set times in ns. Never an fd,
  inode, device or pid number, nor a time the case did not set itself.
- "stat" (optional): the normalized status of the object the case made or changed,
  taken after the operation whether or not it failed: type (reg, dir, lnk, fifo, sock,
  chr, blk), mode (permission bits in octal, with setuid, setgid and sticky), size (not
  for directories), nlink, rdev (devices only), and uid and gid relative to the running
  user: "self", "root", or the number. An errno name if the object cannot be stat'ed.
- "after" (optional): other state observed after the operation, failed or not.

Each case runs in its own subdirectory WORKDIR/<case name>, which is its working
directory, with umask 022, so cases are independent and name only relative paths.
getcwd() results are reported with the WORKDIR prefix replaced by "$W".

Only the standard library and ctypes are used: the probe runs under a VM's plain
/usr/bin/python3. Raw syscall numbers are kept in one per-architecture table.

The probe is this directory, run by its path: Python runs this file with the directory
first on sys.path, so the modules import each other by plain name, from any working
directory, and need not write __pycache__ here. observe.py holds the Json type,
normalization and small file helpers; system.py the ctypes system interface; runner.py
the Case object, the @case registry and the runner; processes.py the child-process
helpers; and the cases_*.py modules the cases, one or a few families each.
"""

import argparse
import importlib
import json
import os
import sys

from runner import CASES, run_case

# The case families, in the order their cases run (and the registry lists them): each
# module registers its cases as it is imported, in the order they are defined. A module
# may import helpers from an earlier one, never from a later one.
CASE_MODULES = (
    "cases_open",
    "cases_at",
    "cases_exec",
    "cases_names",
    "cases_links",
    "cases_modes",
    "cases_times",
    "cases_xattr",
    "cases_xattrat",
    "cases_stat",
    "cases_inotify",
    "cases_io",
    "cases_sockets",
    "cases_permissions",
    "cases_mounts",
)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", help="an empty, writable directory on the file system under test")
    parser.add_argument("--ro", help="a directory on a read-only mount with a file `file` and a directory `dir`")
    parser.add_argument("--other", help="a writable directory on another mount")
    parser.add_argument("--case", action="append", help="run only this case (repeatable)")
    options = parser.parse_args(argv)
    # getcwd() answers real paths: compare them with a real WORKDIR
    options.workdir = os.path.realpath(options.workdir)
    if not os.path.isdir(options.workdir):
        parser.error(f"{options.workdir} is not a directory")
    if os.listdir(options.workdir):
        parser.error(f"{options.workdir} is not empty")
    return options


def main(argv: list[str]) -> int:
    for module in CASE_MODULES:
        importlib.import_module(module)
    options = parse_arguments(argv)
    unknown = set(options.case or ()) - CASES.keys()
    if unknown:
        print(f"unknown cases: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    names = options.case or list(CASES)
    results = {name: run_case(name, CASES[name], options) for name in names}
    print(json.dumps(results, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
