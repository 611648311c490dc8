"""hvfs.coldset: the modules of a cold manager served from one compiled file, and never a
module whose source has changed since, nor from a file that is not to be trusted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hvfs import coldset
from tests.conftest import FRONT, REPO, require

# A child that imports modules of a copy of hvfs (with a package of the test's own in it)
# and says what it got: their values, and which of them came from the copy's file.
_IMPORT = """
import importlib, json, sys
from hvfs import coldset
coldset.install()  # as hvfs/__main__.py does
values = {name: str(importlib.import_module(name).VALUE) for name in sys.argv[1:]}
print(json.dumps({"values": values, "served": coldset.served()}))
"""


def _tree(root: Path) -> Path:
    """A copy of hvfs in ``root`` with a package of the test's own, ``hvfs.coldpkg``, and
    its file built for that package; the file's path."""
    shutil.copytree(REPO / "hvfs", root / "hvfs", ignore=shutil.ignore_patterns("__pycache__", "coldset.marshal"))
    package = root / "hvfs" / "coldpkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 'package'\n")
    (package / "a.py").write_text("VALUE = 'a1'\n")
    (package / "sub" / "__init__.py").write_text("from hvfs.coldpkg import a\nVALUE = 'sub ' + a.VALUE\n")
    (package / "sub" / "b.py").write_text("import fractions\nVALUE = fractions.Fraction(1, 2)\n")
    build = "from hvfs import coldset; print(coldset.build(entries=('hvfs.coldpkg.sub.b',)))"
    result = subprocess.run([sys.executable, "-P", "-c", build], env=_env(root, HVFS_COLDSET="0"),
                            capture_output=True, text=True, timeout=60, cwd="/")  # fmt: skip
    assert result.returncode == 0 and int(result.stdout) >= 5, result
    return root / "hvfs" / "_bin" / "coldset.marshal"


def _env(root: Path, **more: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(root), **more}
    if "HVFS_COLDSET" not in more:
        env.pop("HVFS_COLDSET", None)
    return env


def _imported(root: Path, *names: str, path: str | None = None) -> dict[str, dict[str, str] | list[str]]:
    env = _env(root) if path is None else {**_env(root), "PYTHONPATH": f"{path}:{root}"}
    result = subprocess.run([sys.executable, "-P", "-c", _IMPORT, *names], env=env,
                            capture_output=True, text=True, timeout=60, cwd="/")  # fmt: skip
    assert result.returncode == 0, result.stderr
    got: dict[str, dict[str, str] | list[str]] = json.loads(result.stdout)
    return got


def test_a_packages_modules_come_from_the_file(tmp_path: Path) -> None:
    _tree(tmp_path)
    got = _imported(tmp_path, "hvfs.coldpkg.sub.b", "hvfs.coldpkg.sub", "hvfs.coldpkg")
    assert got["values"] == {"hvfs.coldpkg.sub.b": "1/2", "hvfs.coldpkg.sub": "sub a1", "hvfs.coldpkg": "package"}
    assert {"hvfs.coldpkg", "hvfs.coldpkg.a", "hvfs.coldpkg.sub", "hvfs.coldpkg.sub.b", "fractions"} <= set(
        got["served"]
    )


def test_an_edited_source_is_imported_from_itself_even_with_its_size_and_mtime_put_back(tmp_path: Path) -> None:
    """The file keeps the change time, which no one can set back: an edit that keeps the
    size and restores the modification time (what a .pyc alone would trust) is seen."""
    _tree(tmp_path)
    source = tmp_path / "hvfs" / "coldpkg" / "a.py"
    before = source.stat()
    source.write_text("VALUE = 'a2'\n")
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert source.stat().st_size == before.st_size and source.stat().st_mtime_ns == before.st_mtime_ns
    got = _imported(tmp_path, "hvfs.coldpkg.sub")
    assert got["values"] == {"hvfs.coldpkg.sub": "sub a2"}
    assert "hvfs.coldpkg.a" not in got["served"] and "hvfs.coldpkg.sub" in got["served"]


def test_a_source_replaced_by_another_file_is_imported_from_itself(tmp_path: Path) -> None:
    _tree(tmp_path)
    source = tmp_path / "hvfs" / "coldpkg" / "sub" / "b.py"
    replacement = tmp_path / "b.new"
    replacement.write_text("VALUE = 'B' * 2\n")
    os.rename(replacement, source)
    got = _imported(tmp_path, "hvfs.coldpkg.sub.b")
    assert got["values"] == {"hvfs.coldpkg.sub.b": "BB"} and "hvfs.coldpkg.sub.b" not in got["served"]


def test_a_copy_of_the_tree_serves_its_own_sources(tmp_path: Path) -> None:
    """A tree copied with its file (a rootless user's copy) reads its own sources, never
    the ones the file was built from: their identities differ, so it imports as usual."""
    _tree(tmp_path / "first")
    shutil.copytree(tmp_path / "first", tmp_path / "second")
    (tmp_path / "first" / "hvfs" / "coldpkg" / "a.py").write_text("VALUE = 'first'\n")
    got = _imported(tmp_path / "second", "hvfs.coldpkg.sub")
    assert got["values"] == {"hvfs.coldpkg.sub": "sub a1"}
    assert not any(name.startswith("hvfs.") for name in got["served"])


def test_a_stdlib_module_shadowed_on_pythonpath_is_the_shadows(tmp_path: Path) -> None:
    """As the path finder would: a ``fractions`` ahead of the stdlib on sys.path wins."""
    _tree(tmp_path)
    (tmp_path / "ahead").mkdir()
    (tmp_path / "ahead" / "fractions.py").write_text("def Fraction(a, b):\n    return 'shadow'\n")
    got = _imported(tmp_path, "hvfs.coldpkg.sub.b", path=str(tmp_path / "ahead"))
    assert got["values"] == {"hvfs.coldpkg.sub.b": "shadow"}
    assert "fractions" not in got["served"] and "hvfs.coldpkg.sub.b" in got["served"]


def test_a_file_others_may_write_damaged_or_of_another_python_serves_nothing(tmp_path: Path) -> None:
    path = _tree(tmp_path)
    good = path.read_bytes()
    header = good[: good.index(b"\n", good.index(b" -O")) + 1]
    for name, mode, data in (
        ("writable by others", 0o666, good),
        ("writable by the group", 0o664, good),
        ("truncated", 0o644, good[: len(good) // 2]),
        ("its index damaged", 0o644, header + good[len(header) : len(header) + 8] + b"\xff" * 64),
        ("another Python's", 0o644, good.replace(sys.version.encode(), b"3.0.0 (other)", 1)),
        ("empty", 0o644, b""),
    ):
        path.write_bytes(data)
        path.chmod(mode)
        got = _imported(tmp_path, "hvfs.coldpkg.sub.b", "hvfs.coldpkg.sub")
        assert got["values"] == {"hvfs.coldpkg.sub.b": "1/2", "hvfs.coldpkg.sub": "sub a1"}, name
        assert got["served"] == [], name


def test_a_symbolic_link_in_place_of_the_file_is_not_followed(tmp_path: Path) -> None:
    path = _tree(tmp_path)
    path.rename(tmp_path / "elsewhere.marshal")
    path.symlink_to(tmp_path / "elsewhere.marshal")
    got = _imported(tmp_path, "hvfs.coldpkg.sub.b")
    assert got["values"] == {"hvfs.coldpkg.sub.b": "1/2"} and got["served"] == []


# On a cold manager's PYTHONPATH: when the first VM's exit is told, which of hvfs's modules
# the manager holds and which of them came from the file.
_AT_EXIT = r"""
import os, sys
if sys.argv[1:3] == ["manager", "serve"]:
    import importlib.machinery

    def _told(tell):
        def told(self, message):
            if "exited" in message:
                from hvfs import coldset, deferred
                held = sorted(n for n, m in list(sys.modules.items())
                              if n.startswith("hvfs") and not isinstance(m, deferred.Deferred)
                              and isinstance(getattr(m, "__spec__", None) and m.__spec__.loader,
                                             importlib.machinery.SourceFileLoader))
                with open(os.environ["HVFS_TEST_MODULES"], "w") as f:
                    f.write(" ".join(held) + "\n" + " ".join(coldset.served()) + "\n")
            return tell(self, message)
        return told

    class _Finder:
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name != "hvfs.hypervisor.group":
                return None
            for finder in sys.meta_path[sys.meta_path.index(cls) + 1:]:
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
            execute = spec.loader.exec_module

            def exec_module(module):
                execute(module)
                module.Group.tell = _told(module.Group.tell)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Finder)
"""


@pytest.mark.parametrize("driver", ["seccomp", "ptrace"])
def test_a_cold_managers_first_vm_takes_all_of_hvfs_from_the_file(
    driver: str, fake_state: Path, tmp_path: Path
) -> None:
    """The file scripts/setup built holds every hvfs module a cold `hvfs run -- true`
    imports in its manager, under either driver (ENTRIES has not drifted from what the
    manager imports), and the manager takes them from it."""
    require(os.access(FRONT, os.X_OK), f"no native front at {FRONT}; run scripts/setup")
    require(os.path.exists(coldset.PATH), f"no {coldset.PATH}; run scripts/setup")
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(_AT_EXIT)
    modules = tmp_path / "modules"
    env = {**os.environ, "HVFS_STATE_DIR": str(fake_state), "PYTHONPATH": f"{REPO}:{tmp_path / 'hook'}",
           "HVFS_TEST_MODULES": str(modules)}  # fmt: skip
    env.pop(coldset.ENVIRONMENT, None)
    result = subprocess.run([FRONT, "run", "--driver", driver, "--", "true"], env=env, capture_output=True, text=True,
                            timeout=120, cwd="/", stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode == 0, result.stderr
    held_line, served_line = modules.read_text().splitlines()
    held, served = held_line.split(), set(served_line.split())
    assert "hvfs.hypervisor.daemon" in held
    assert ("hvfs.intercept.driver" if driver == "seccomp" else "hvfs.intercept.ptrace.driver") in held
    # hvfs itself and hvfs.coldset are imported before the file is read; the group module is
    # this test's hook's
    missed = [name for name in held if name not in served and name not in ("hvfs", "hvfs.coldset")]
    assert missed == [], f"run scripts/setup, or add to hvfs.coldset.ENTRIES what imports {missed}"


# What a child holds as each served module's __cached__, and what importlib says it is.
_CACHED = """
import importlib, json, sys
from importlib.util import cache_from_source
from hvfs import coldset
coldset.install()
modules = [importlib.import_module(name) for name in sys.argv[1:]]
print(json.dumps([[m.__cached__, cache_from_source(m.__file__)] for m in modules] + [coldset.served()]))
"""


@pytest.mark.parametrize("prefix", [None, "pycache-prefix"])
def test_a_served_modules_cached_path_is_importlibs(tmp_path: Path, prefix: str | None) -> None:
    """The file's finder names a module's ``.pyc`` itself (not importlib's
    ``cache_from_source``, for its cost): the same name, under a PYTHONPYCACHEPREFIX too."""
    _tree(tmp_path)
    env = _env(tmp_path) if prefix is None else _env(tmp_path, PYTHONPYCACHEPREFIX=str(tmp_path / prefix))
    names = ["hvfs.coldpkg.sub.b", "hvfs.coldpkg.sub", "fractions"]
    result = subprocess.run([sys.executable, "-P", "-c", _CACHED, *names], env=env,
                            capture_output=True, text=True, timeout=60, cwd="/")  # fmt: skip
    assert result.returncode == 0, result.stderr
    *pairs, served = json.loads(result.stdout)
    assert set(names) <= set(served)
    assert [held for held, _ in pairs] == [wanted for _, wanted in pairs]
    assert all((prefix is None) == ("/__pycache__/" in held) for held, _ in pairs)
