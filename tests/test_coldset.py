"""hvfs.coldset: the modules of a cold manager served from one compiled file, and never a
module whose source has changed since, nor from a file that is not to be trusted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hvfs import coldset
from tests.conftest import FRONT, REPO, require

# A child that serves the modules of a package of the test's own from FILE, imports them
# and says what it got: their values, and which of them came from the file.
_IMPORT = """
import importlib, json, sys
from hvfs import coldset
coldset.install(sys.argv[1])
values = {name: importlib.import_module(name).VALUE for name in sys.argv[2:]}
print(json.dumps({"values": values, "served": coldset.served()}))
"""


def _package(root: Path) -> None:
    (root / "coldpkg" / "sub").mkdir(parents=True)
    (root / "coldpkg" / "__init__.py").write_text("VALUE = 'package'\n")
    (root / "coldpkg" / "a.py").write_text("VALUE = 'a1'\n")
    (root / "coldpkg" / "sub" / "__init__.py").write_text("from coldpkg import a\nVALUE = 'sub ' + a.VALUE\n")
    (root / "coldpkg" / "sub" / "b.py").write_text("import os\nVALUE = 'b' + os.sep\n")


def _env(root: Path) -> dict[str, str]:
    # HVFS_COLDSET=0: not the installation's own file, which `import hvfs` would install
    return {**os.environ, "PYTHONPATH": f"{root}:{REPO}", coldset.ENVIRONMENT: "0"}


def _built(tmp_path: Path) -> Path:
    _package(tmp_path)
    path = tmp_path / "coldset.marshal"
    old = dict(os.environ)
    try:
        os.environ.update(_env(tmp_path))
        assert coldset.build(str(path), ("coldpkg.sub.b", "coldpkg.sub")) >= 4
    finally:
        os.environ.clear()
        os.environ.update(old)
    return path


def _imported(tmp_path: Path, path: Path, *names: str) -> dict[str, dict[str, str] | list[str]]:
    result = subprocess.run([sys.executable, "-P", "-c", _IMPORT, str(path), *names], env=_env(tmp_path),
                            capture_output=True, text=True, timeout=60, cwd="/")  # fmt: skip
    assert result.returncode == 0, result.stderr
    got: dict[str, dict[str, str] | list[str]] = json.loads(result.stdout)
    return got


def test_a_packages_modules_come_from_the_file(tmp_path: Path) -> None:
    path = _built(tmp_path)
    got = _imported(tmp_path, path, "coldpkg.sub.b", "coldpkg.sub", "coldpkg")
    assert got["values"] == {"coldpkg.sub.b": "b/", "coldpkg.sub": "sub a1", "coldpkg": "package"}
    assert {"coldpkg", "coldpkg.a", "coldpkg.sub", "coldpkg.sub.b"} <= set(got["served"])


def test_an_edited_source_is_imported_from_itself_even_with_its_size_and_mtime_put_back(tmp_path: Path) -> None:
    """The file keeps the change time, which no one can set back: an edit that keeps the
    size and restores the modification time (what a .pyc alone would trust) is seen."""
    path = _built(tmp_path)
    source = tmp_path / "coldpkg" / "a.py"
    before = source.stat()
    source.write_text("VALUE = 'a2'\n")
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert source.stat().st_size == before.st_size and source.stat().st_mtime_ns == before.st_mtime_ns
    got = _imported(tmp_path, path, "coldpkg.sub")
    assert got["values"] == {"coldpkg.sub": "sub a2"}
    assert "coldpkg.a" not in got["served"] and "coldpkg.sub" in got["served"]


def test_a_source_replaced_by_another_file_is_imported_from_itself(tmp_path: Path) -> None:
    path = _built(tmp_path)
    source = tmp_path / "coldpkg" / "sub" / "b.py"
    replacement = tmp_path / "b.new"
    replacement.write_text("VALUE = 'B' * 2\n")
    os.rename(replacement, source)
    got = _imported(tmp_path, path, "coldpkg.sub.b")
    assert got["values"] == {"coldpkg.sub.b": "BB"} and "coldpkg.sub.b" not in got["served"]


def test_a_file_others_may_write_damaged_or_of_another_python_serves_nothing(tmp_path: Path) -> None:
    path = _built(tmp_path)
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
        got = _imported(tmp_path, path, "coldpkg.sub.b", "coldpkg.sub")
        assert got["values"] == {"coldpkg.sub.b": "b/", "coldpkg.sub": "sub a1"}, name
        assert got["served"] == [], name


def test_a_symbolic_link_to_the_file_is_not_followed(tmp_path: Path) -> None:
    path = _built(tmp_path)
    link = tmp_path / "link.marshal"
    link.symlink_to(path)
    got = _imported(tmp_path, link, "coldpkg.sub.b")
    assert got["values"] == {"coldpkg.sub.b": "b/"} and got["served"] == []


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


def test_a_cold_managers_first_vm_takes_all_of_hvfs_from_the_file(fake_state: Path, tmp_path: Path) -> None:
    """The file scripts/setup built holds every hvfs module a cold `hvfs run -- true`
    imports in its manager (ENTRIES has not drifted from what the manager imports), and
    the manager takes them from it."""
    require(os.access(FRONT, os.X_OK), f"no native front at {FRONT}; run scripts/setup")
    require(os.path.exists(coldset.PATH), f"no {coldset.PATH}; run scripts/setup")
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(_AT_EXIT)
    modules = tmp_path / "modules"
    env = {**os.environ, "HVFS_STATE_DIR": str(fake_state), "PYTHONPATH": f"{REPO}:{tmp_path / 'hook'}",
           "HVFS_TEST_MODULES": str(modules)}  # fmt: skip
    env.pop(coldset.ENVIRONMENT, None)
    result = subprocess.run([FRONT, "run", "--", "true"], env=env, capture_output=True, text=True, timeout=120,
                            cwd="/", stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode == 0, result.stderr
    held_line, served_line = modules.read_text().splitlines()
    held, served = held_line.split(), set(served_line.split())
    assert "hvfs.hypervisor.daemon" in held and "hvfs.intercept.driver" in held
    # hvfs itself and hvfs.coldset are imported before the file is read; the group module is
    # this test's hook's
    missed = [name for name in held if name not in served and name not in ("hvfs", "hvfs.coldset")]
    assert missed == [], f"run scripts/setup, or add to hvfs.coldset.ENTRIES what imports {missed}"
