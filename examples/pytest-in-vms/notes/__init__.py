"""Short notes, one file per note (NAME.db) in a directory."""

from __future__ import annotations

import os


def path_of(directory: str, name: str) -> str:
    return os.path.join(directory, f"{name}.db")


def save(directory: str, name: str, text: str) -> str:
    path = path_of(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def show(directory: str, name: str) -> str:
    with open(path_of(directory, name)) as f:
        return f.read()


def remove(directory: str, name: str) -> None:
    os.unlink(path_of(directory, name))
