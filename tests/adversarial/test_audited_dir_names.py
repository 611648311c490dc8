"""An audited strict VM's mkdir, rmdir and chmod of a path, served in the driver's C loop and
recorded there (hvfs/_native/served_dirs.h, served_pathmeta.h, served_audit.h), name what
was made, removed or changed: the path's text only where C found it with no symlink on the
way, as the Python path names them.

As tests/adversarial/test_audited_stat_names.py: a directory ``d`` and a symlink ``s`` to
``other`` are swapped without pause (renameat2 RENAME_EXCHANGE) by a second thread, while the
main thread, thousands of times, makes ``/data/d/n`` and looks where it landed (``other``
never moves: ``/data/other/n`` there, else in ``d``), removes it there (``/data/other/n``, or
``n`` from an fd of ``d`` opened before the race: an unlinkat whose base C reads back from
the fd), then makes ``/data/d/e`` (``d`` holds a directory ``e``: EEXIST; ``other`` does not:
made, and removed by ``/data/other/e``), then changes the mode of ``/data/d/x`` (each holds
an ``x``), looks whose changed, and changes it back the same two ways (fchmodat of ``d``'s fd).
Each call's event, in order, must name what the VM changed or was answered for: ``d``'s
``n``, ``e`` or ``x`` as ``/data/d/...`` or ``/data/s/...``
(the two names ``d`` has had), ``other``'s as ``/data/other/...``, never one for the
other; one event per call, none lost, none twice. As root (``--strict --audit``) and
rootless; ``--stats`` shows the C loop served mkdirs and rmdirs meanwhile, so that a race
run only on Python fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.adversarial.test_audited_stat_names import swap_race
from tests.conftest import Hvfs, chown_to

TRIES = 3000
RACE = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
AT_REMOVEDIR = 0x200
held = os.open("/data/d", os.O_RDONLY | os.O_DIRECTORY)  # d itself, before the race: wherever it goes

def rmdir_in_d():
    if libc.unlinkat(held, b"n", AT_REMOVEDIR) != 0:
        raise OSError(ctypes.get_errno(), "unlinkat")
    return 0

""" + swap_race(
    r"""
    made = attempt(lambda: os.mkdir("/data/d/n"))
    where = "other" if os.path.lexists("/data/other/n") else "d"
    seen.append(("mkdir", where, made))
    seen.append(("rmdir", where, attempt(lambda: os.rmdir("/data/other/n") if where == "other" else rmdir_in_d())))
    made = attempt(lambda: os.mkdir("/data/d/e"))
    seen.append(("mkdir", "other" if made is None else "d", made))
    if made is None:
        seen.append(("rmdir", "other", attempt(lambda: os.rmdir("/data/other/e"))))
    changed = attempt(lambda: os.chmod("/data/d/x", 0o600))
    where = "other" if os.stat("/data/other/x").st_mode & 0o777 == 0o600 else "d"
    seen.append(("chmod", where, changed))
    back = ("/data/other/x", None) if where == "other" else ("x", held)
    seen.append(("chmod", where, attempt(lambda: os.chmod(back[0], 0o644, dir_fd=back[1]))))
"""[1:]
)
# The names an event may give, by where the call acted: d's (either of the two names it has
# had) or other's.
NAMES = {"d": ("/data/d/", "/data/s/"), "other": ("/data/other/",)}


def _scene(root: Path) -> Path:
    data = root / "data"
    (data / "d" / "e").mkdir(parents=True)
    (data / "other").mkdir()
    for directory in ("d", "other"):
        (data / directory / "x").write_text("x\n")
        (data / directory / "x").chmod(0o644)
    (data / "s").symlink_to("other")
    (root / "race.py").write_text(RACE)
    root.chmod(0o755)
    return data


def _escapes(events: list[dict[str, object]], seen: list[list[object]]) -> list[tuple[object, object]]:
    """The events that name something else than where their call acted, or answer otherwise."""
    escapes = []
    for event, (operation, where, answer) in zip(events, seen, strict=True):
        paths = event["paths"]
        assert isinstance(paths, list)
        name = paths[0]
        assert isinstance(name, str) and isinstance(where, str)
        expected = "ok" if answer in (None, 0) else "EEXIST" if answer == -17 else str(answer)
        if event["operation"] != operation or event["result"] != expected or not name.startswith(NAMES[where]):
            escapes.append((event["operation"], name, event["result"], (operation, where, answer)))
    return escapes


@pytest.mark.parametrize("runner", ["hvfs", pytest.param("rootless", marks=pytest.mark.rootless)])
def test_audited_mkdirs_and_rmdirs_name_what_was_changed(
    runner: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    hvfs: Hvfs = request.getfixturevalue(runner)
    root = tmp_path if hvfs.user is None else request.getfixturevalue("shared_tmp")
    data = _scene(root)
    if hvfs.user is not None:
        chown_to(root, hvfs.user)
    stats, log = root / "stats.json", root / "audit.jsonl"
    args = ["run", "--strict", "--stats", str(stats), "--audit", str(log), "-v", f"{data}:/data"]
    out = hvfs.ok(*args, "-v", f"{root}:/probe:ro", "--", "python3", "/probe/race.py", str(TRIES))
    result = json.loads(out)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    made = [event for event in events if event["operation"] in ("mkdir", "rmdir", "chmod")]
    seen = result["seen"]
    assert len(made) == len(seen) >= 5 * TRIES  # one event per call: none lost, none twice
    escapes = _escapes(made, seen)
    assert escapes == [], (len(escapes), escapes[:10])
    places = {(operation, where) for operation, where, _ in seen}
    raced = {("mkdir", "d"), ("mkdir", "other"), ("rmdir", "d"), ("chmod", "d"), ("chmod", "other")}
    assert raced <= places and result["flips"] > 100, (places, result["flips"])  # it raced
    compiled = json.loads(stats.read_text())["compiled"]
    print(f"{len(seen)} calls, {len(escapes)} escapes, {result['flips']} swaps, C: {compiled}")  # for -s
    assert compiled.get("mkdir_served", 0) + compiled.get("mkdir_failed", 0) > TRIES // 10, compiled
    assert compiled.get("rmdir_served", 0) > TRIES // 10 and compiled.get("chmod_served", 0) > TRIES // 10, compiled
    d = next(path for path in (data / "d", data / "s") if not path.is_symlink())  # wherever the last swap left it
    assert [path.name for path in (data / "other").iterdir()] == ["x"]
    assert sorted(path.name for path in d.iterdir()) == ["e", "x"]
    assert (d / "x").stat().st_mode & 0o777 == (data / "other" / "x").stat().st_mode & 0o777 == 0o644
