"""A metadata change through an fd whose number a second thread swaps while the manager
serves it (issue 14: tar's fchmod, fchown and futimens answered in the driver's C loop,
hvfs/_native/served_fdmeta.h).

The C loop duplicates the caller's fd once (pidfd_getfd through the thread's published
pidfd, ID_VALID after) and decides and acts on that duplicate alone: a file on one of the
VM's own mounts is changed, anything else declined to Python, which refuses a file from
outside the VM (EPERM). The VM receives a host file, ``outside/secret`` next to the volume,
from a host process over a mount marked ``sockets``, as such a mount allows; thousands of
times a thread dup2s that file and one of the VM's own over one fd number, while the main
thread calls fchmod, fchown and futimens on it. From the host: the secret's mode, owner,
times and content never change; the program saw both sides (its own file changed, the host
file refused); ``--stats`` shows C served those calls meanwhile (under
``HVFS_ATTACK_DRIVER=ptrace``, the tracer's C loop: tracer_fdmeta.h, ``fdmeta_here``).
"""

from __future__ import annotations

from pathlib import Path

from tests.adversarial.conftest import ON_THE_NATIVE_PATH, Attacker
from tests.adversarial.flip_scene import assert_untouched, flip_scene, run_flip
from tests.adversarial.test_inherited_fds import fd_server

pytestmark = ON_THE_NATIVE_PATH


def test_a_metadata_change_on_a_swapped_fd_never_reaches_the_host_file(attacker: Attacker, shared_tmp: Path) -> None:
    scene = flip_scene(attacker, shared_tmp, b"secret\n", link_to_secret=False)
    sockets = shared_tmp / "sockets"
    sockets.mkdir(mode=0o777)
    sockets.chmod(0o777)
    scene = scene.__class__(**{**scene.__dict__, "around": sorted(p.name for p in shared_tmp.iterdir())})
    with fd_server(sockets / "files.sock", scene.secret):
        outcome, record = run_flip(
            attacker, scene, "fdmeta_flip", "/s/files.sock", options=("-v", f"{sockets}:/s:sockets")
        )
    assert outcome.count("fchmod_tries") > 0 and outcome.count("futimens_tries") > 0, outcome.report
    if record.get("driver") == "ptrace":  # HVFS_ATTACK_DRIVER=ptrace: its tracer's C loop (tracer_fdmeta.h)
        assert record["fdmeta_here"] > 0, record  # type: ignore[operator]
    else:
        compiled = record["compiled"]
        assert isinstance(compiled, dict), compiled
        for kind in ("chmod", "chown", "utimens"):
            assert compiled.get(f"{kind}_served", 0) > 0, compiled  # C served them during the race
    assert_untouched(scene, "st_mode", "st_uid", "st_gid", "st_mtime_ns", "st_atime_ns", "st_ctime_ns")
