"""hvfs.dataclass_cache: the API's dataclasses made from kept code are the classes
``dataclasses`` makes (same generated code, same behaviour), and only a file this user
alone could have written is used."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hvfs import dataclass_cache

# Every dataclass of the modules the manager imports before its first VM, described by
# what makes its behaviour: the generated methods' code (bytecode, constants, names,
# annotations, defaults), its fields and parameters, its doc.
_FINGERPRINT = """
import dataclasses, importlib, json, re, sys, types
def rep(value):  # without the addresses, which differ from process to process
    return re.sub(r" at 0x[0-9a-f]+", "", repr(value))
if sys.argv[1] != "-":
    from hvfs import dataclass_cache
    dataclass_cache.install(sys.argv[1])
MODULES = ("hvfs.api.messages", "hvfs.api.events", "hvfs.hypervisor.daemon", "hvfs.hypervisor.commands")
for name in MODULES:
    importlib.import_module(name)

def code(c):
    consts = [code(k) if isinstance(k, types.CodeType) else rep(k) for k in c.co_consts]
    return [c.co_code.hex(), consts, list(c.co_names), list(c.co_varnames), list(c.co_freevars),
            c.co_flags, c.co_filename, c.co_name, c.co_qualname]

def method(f):
    if not isinstance(f, types.FunctionType):
        return rep(f)
    return [code(f.__code__), rep(f.__annotations__), rep(f.__defaults__), rep(f.__kwdefaults__),
            f.__qualname__, [rep(cell.cell_contents) for cell in f.__closure__ or ()]]

found = {}
for module in list(sys.modules.values()):
    if not (getattr(module, "__name__", "") or "").startswith("hvfs"):
        continue
    for value in vars(module).values():
        if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == module.__name__:
            names = ("__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__",
                     "__lt__", "__le__", "__gt__", "__ge__")
            found[f"{value.__module__}.{value.__qualname__}"] = {
                "methods": {n: method(value.__dict__.get(n)) for n in names},
                "fields": [(f.name, rep(f.type), rep(f.default), f.init, f.repr, f.compare, f.hash, f.kw_only)
                           for f in dataclasses.fields(value)],
                "params": rep(value.__dataclass_params__),
                "doc": value.__doc__,
                "match_args": rep(getattr(value, "__match_args__", None)),
                "slots": rep(getattr(value, "__slots__", None)),
            }
stats = dataclass_cache.statistics() if sys.argv[1] != "-" else (0, 0)
if sys.argv[1] != "-":
    dataclass_cache.save()
print(json.dumps({"classes": found, "hits": stats[0], "compiled": stats[1]}))
"""


def _fingerprints(cache: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-P", "-c", _FINGERPRINT, cache], capture_output=True, text=True, timeout=120, cwd="/"
    )
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


def test_the_classes_made_from_the_cache_are_those_dataclasses_makes(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    cache = str(tmp_path / "dataclasses.marshal")
    plain = _fingerprints("-")
    first = _fingerprints(cache)  # compiles, and saves
    second = _fingerprints(cache)  # from the cache alone
    classes = plain["classes"]
    assert isinstance(classes, dict) and len(classes) > 80, "the manager's dataclasses were not all found"
    assert isinstance(first["hits"], int) and isinstance(first["compiled"], int) and first["compiled"] > 300
    # The second start compiles nothing (a method whose source two classes share is kept once).
    assert second["compiled"] == 0 and second["hits"] == first["hits"] + first["compiled"]
    for name, described in classes.items():
        assert first["classes"][name] == described, name  # type: ignore[index]
        assert second["classes"][name] == described, name  # type: ignore[index]


def _define_probe() -> type:
    """The same class statement each time: with the cache off, compiling into it, from it."""

    @dataclasses.dataclass(frozen=True)
    class _Probe:
        """The features of the API's requests: defaults, a factory, a field left out of eq and hash."""

        path: str
        flags: int = 0
        names: tuple[str, ...] = ()
        extra: dict[str, int] = dataclasses.field(default_factory=dict, compare=False, hash=False)

    return _Probe


def _exercise(cls: type) -> list[object]:
    """What hooks and the wire do with a request type; the results, to compare."""
    a = cls("/x", 2, ("a",))
    b = cls("/x", 2, ("a",), {"ignored": 1})
    c = dataclasses.replace(a, flags=3)
    seen: list[object] = [
        repr(a),
        a == b,
        hash(a) == hash(b),
        a == c,
        c.flags,
        [(f.name, f.compare, f.hash) for f in dataclasses.fields(cls)],
        dataclasses.asdict(c),
        copy.copy(c) == c,  # as hvfs.hypervisor.telling copies a record
        copy.deepcopy(c) == c,
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.path = "/y"
    with pytest.raises(dataclasses.FrozenInstanceError):
        del a.flags
    with pytest.raises(TypeError):
        cls()
    return seen


def test_a_class_made_from_the_cache_behaves_as_one_made_without(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    cache = str(tmp_path / "dataclasses.marshal")
    plain = _define_probe()
    try:
        dataclass_cache.install(cache)
        compiled = _define_probe()
        assert dataclass_cache.statistics() == (0, 6)  # init, repr, eq, hash, setattr, delattr
        assert dataclass_cache.save()
        dataclass_cache.uninstall()
        dataclass_cache.install(cache)
        kept = _define_probe()
        assert dataclass_cache.statistics() == (6, 0)
    finally:
        dataclass_cache.uninstall()
    assert _exercise(kept) == _exercise(compiled) == _exercise(plain)
    for name in ("__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__"):
        assert getattr(kept, name).__code__.co_code == getattr(plain, name).__code__.co_code, name
        assert getattr(kept, name).__annotations__ == getattr(plain, name).__annotations__, name


def _written_cache(tmp_path: Path) -> str:
    tmp_path.chmod(0o700)
    cache = str(tmp_path / "dataclasses.marshal")
    try:
        dataclass_cache.install(cache)
        _define_probe()
        assert dataclass_cache.save()
    finally:
        dataclass_cache.uninstall()
    return cache


def _hits_of(cache: str) -> tuple[int, int]:
    try:
        dataclass_cache.install(cache)
        _define_probe()
        return dataclass_cache.statistics()
    finally:
        dataclass_cache.uninstall()


def test_a_cache_others_could_write_is_not_used(tmp_path: Path) -> None:
    cache = _written_cache(tmp_path)
    assert _hits_of(cache) == (6, 0)
    os.chmod(cache, 0o620)  # writable by its group
    assert _hits_of(cache) == (0, 6)
    os.chmod(cache, 0o600)
    tmp_path.chmod(0o770)  # its directory writable by the group
    assert _hits_of(cache) == (0, 6)
    tmp_path.chmod(0o700)
    link = str(tmp_path / "link.marshal")
    os.symlink(cache, link)
    assert _hits_of(link) == (0, 6)
    if os.geteuid() == 0:
        os.chown(cache, 65534, 65534)  # another user's
        assert _hits_of(cache) == (0, 6)


def test_a_damaged_cache_or_another_pythons_is_a_miss(tmp_path: Path) -> None:
    cache = _written_cache(tmp_path)
    raw = Path(cache).read_bytes()
    Path(cache).write_bytes(raw[: len(raw) // 2])
    assert _hits_of(cache) == (0, 6)
    Path(cache).write_bytes(raw.replace(sys.version.encode(), b"3.99.0 (other)", 1))
    assert _hits_of(cache) == (0, 6)
    Path(cache).write_bytes(b"")
    assert _hits_of(cache) == (0, 6)


def test_a_cold_manager_writes_the_cache_and_the_next_one_compiles_nothing(tmp_path: Path) -> None:
    """End to end, through ``python -m hvfs manager serve`` as the clients start it: the
    first manager of an installation compiles and saves (at its exit at the latest), the
    next one finds every method its start and its VM need, so saves nothing."""
    from tests.conftest import FRONT, require

    require(os.access(FRONT, os.X_OK), f"no native front at {FRONT}; run scripts/setup")
    cache_home, state = tmp_path / "cache", tmp_path / "state"
    cache_home.mkdir(mode=0o700)
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home), "HVFS_STATE_DIR": str(state)}
    env.pop("HVFS_FRONT", None)

    def cold_run() -> None:
        try:
            result = subprocess.run(
                [FRONT, "run", "--", "sh", "-c", "echo kept"], env=env, capture_output=True, text=True, timeout=120
            )
            assert (result.returncode, result.stdout) == (0, "kept\n"), result.stderr
        finally:
            subprocess.run([FRONT, "manager", "stop"], env=env, capture_output=True, timeout=120)

    cold_run()
    written = list((cache_home / "hvfs").glob("dataclasses-*.marshal"))
    assert len(written) == 1, "the first manager saved no cache"
    first = written[0].stat()
    assert stat.S_IMODE(first.st_mode) == 0o600 and first.st_size > 100_000
    try:
        dataclass_cache.install(str(written[0]))
        # what the manager's start and its VM compiled: 285 methods since a first VM no longer
        # imports the handlers that C serves for it (hvfs.manager.manager._handlers)
        assert dataclass_cache.kept() > 200
    finally:
        dataclass_cache.uninstall()
    cold_run()
    assert written[0].stat().st_mtime_ns == first.st_mtime_ns, "the second manager compiled again"
