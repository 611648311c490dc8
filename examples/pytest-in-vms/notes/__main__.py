"""python -m notes save DIR NAME TEXT | show DIR NAME | remove DIR NAME

Exits 3, with one line on stderr, when the file system fails it."""

from __future__ import annotations

import sys

from notes import remove, save, show


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in ("save", "show", "remove"):
        print(__doc__, file=sys.stderr)
        return 2
    verb, directory, name, *rest = argv
    try:
        if verb == "save":
            save(directory, name, " ".join(rest))
        elif verb == "show":
            print(show(directory, name))
        else:
            remove(directory, name)
    except OSError as e:
        print(f"notes: cannot {verb} {name}: {e.strerror}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
