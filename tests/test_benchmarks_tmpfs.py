"""W3t, the untar on a tmpfs (benchmarks/fixtures.py mount_tmpfs): its tmpfs is mounted
inside WORK, where every sandbox sees WORK, the untar runs in it, and the session leaves no
mount behind; a user who cannot mount gets the reason, and the suite goes on without W3t."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import REPO, SYSTEM_PYTHON, require

_spec = importlib.util.spec_from_file_location("benchmark_fixtures", REPO / "benchmarks" / "fixtures.py")
assert _spec is not None and _spec.loader is not None
fixtures = sys.modules["benchmark_fixtures"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)


def test_w3t_untars_on_its_own_tmpfs_and_leaves_no_mount(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "mounting W3t's tmpfs needs root")
    layout = fixtures.Layout(tmp_path)
    layout.work.mkdir()
    fixtures.mount_tmpfs(layout)
    try:
        target = fixtures.tmpfs_dir(layout)
        kind = subprocess.run(["stat", "-f", "-c", "%T", str(target)], capture_output=True, text=True, check=True)
        assert kind.stdout.strip() == "tmpfs"
        (target / "w3").mkdir()
        subprocess.run(["tar", "-xf", str(layout.work / "w3.tar")], cwd=target / "w3", check=True)
        assert sum(1 for path in (target / "w3" / "tree").rglob("*.dat")) == 3000
    finally:
        fixtures.unmount_tmpfs(layout)
    assert not os.path.ismount(fixtures.tmpfs_dir(layout))
    assert (layout.work / "w3.tar").is_file()  # made for W3t alone, on the disk beside it


def test_without_root_w3t_is_unavailable_with_its_reason() -> None:
    require(os.geteuid() == 0, "switching to an unprivileged user needs root")
    with tempfile.TemporaryDirectory(prefix="hvfs-w3t-") as name:  # pytest's tmp_path is root's alone
        os.chmod(name, 0o777)
        _unavailable_as_nobody(Path(name))


def _unavailable_as_nobody(tmp_path: Path) -> None:
    probe = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('f', {str(REPO / 'benchmarks' / 'fixtures.py')!r})\n"
        "f = sys.modules['f'] = importlib.util.module_from_spec(spec); spec.loader.exec_module(f)\n"
        f"layout = f.Layout(__import__('pathlib').Path({str(tmp_path)!r}))\n"
        "layout.work.mkdir()\n"
        "try:\n    f.mount_tmpfs(layout)\nexcept f.Unavailable as why:\n    print('unavailable:', why)\n"
    )
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SYSTEM_PYTHON, "-c", probe],
        capture_output=True, text=True, env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "unavailable: mounting its tmpfs needs root (run the suite as root)"
    assert not os.path.ismount(tmp_path / "work" / "tmpfs")
