"""Sources as plug-ins: the registry of kinds and their options, descriptions as plain
data, the pool that releases a source when its last VM is gone, and each kind in VMs."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from hvfs import spec
from hvfs.hypervisor.mounts import MountSpec, check_mounts, mount_table, prepare_mounts
from hvfs.hypervisor.pool import SourcePool
from hvfs.manager.sources import registry
from hvfs.manager.sources.base import OptionError, SourceError
from hvfs.manager.sources.memory import MemorySource
from hvfs.manager.sources.registry import SourceSpec
from hvfs.manager.sources.schema import SourceKind
from hvfs.project import config
from tests.conftest import REPO, ROOTLESS_USER, Hvfs, chown_to, require
from tests.helpers import snapshot
from tests.test_project import Project, _project

ROOT = MountSpec("/", spec.HOST_IMAGE)


def _given(kind: SourceKind, where: Path) -> dict[str, str]:
    """Values for the options ``kind`` requires, that exist on this machine."""
    values = {"path": str(where), "image": "host", "metadata URL": f"sqlite3://{where}/meta.db"}
    return {o.name: values[o.type.name] for o in kind.options if o.required}


# -- the registry -------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(registry.KINDS.values()), ids=list(registry.KINDS))
def test_every_kind_has_a_schema_and_makes_its_source(kind: SourceKind, tmp_path: Path) -> None:
    assert kind.role in ("mount", "root", "system")
    assert kind.summary and "\n" not in kind.summary
    names = [option.name for option in kind.options]
    assert len(set(names)) == len(names) and "type" not in names and "target" not in names
    for option in kind.options:
        assert option.description and "\n" not in option.description, option
        assert not (option.required and option.default is not None), option
        if option.default is not None:  # a default is in normal form: normalising keeps it
            assert option.type.parse(option.default, None) == option.default
    description = registry.parse(kind.name, _given(kind, tmp_path), str(tmp_path), role=kind.role)
    # Plain data, and what a manager rebuilds from it is the same kind of source.
    again = SourceSpec.from_json(json.loads(json.dumps(description.to_json())))
    assert again == description
    source = registry.make(again)
    assert source.kind == kind.name and source.describe()
    source.release()  # made, never mounted: holds nothing, releases without error


def test_the_docs_list_every_kind_and_option() -> None:
    assert (REPO / "docs" / "sources.md").read_text() == registry.markdown()


def test_options_are_normalised_once() -> None:
    memory = registry.parse("memory", {"size": "64m", "mode": "0700"}, "/")
    assert memory.options == {"size": 64 << 20, "mode": "700"}
    assert registry.parse("memory", memory.options, "/") == memory  # a normal form stays itself
    assert registry.parse("memory", {}, "/").options == {"mode": "1777"}  # defaults are written out
    assert registry.parse("host", {"path": "data/.."}, "/tmp").options == {"path": "/tmp"}


@pytest.mark.parametrize(
    ("kind", "given", "option", "problem"),
    [
        ("nfs", {}, "type", "no source type 'nfs'; types: host, memory, overlay"),
        (None, {}, "type", "a source needs a type; types: host, memory, overlay"),
        ("devices", {}, "type", "no source type 'devices'"),  # hvfs's own kinds are not offered
        ("image", {"path": "host"}, "type", "an image source is a VM's root, not a mount"),
        ("host", {}, "path", "a host source needs path: the host directory or file to serve"),
        ("host", {"path": "/nonexistent-hvfs"}, "path", "/nonexistent-hvfs does not exist; create it or fix the path"),
        ("host", {"path": "/tmp", "size": "1g"}, "size", "a host source has no size; its options: path"),
        ("host", {"path": 5}, "path", "must be str, not int"),
        ("memory", {"size": True}, "size", "must be str or int, not bool"),
        ("memory", {"size": "lots"}, "size", "size 'lots' is not a size; use e.g. 64m, 1g or 512k"),
        ("memory", {"size": "100t"}, "size", "size 100t is more than this machine's memory and swap"),
        ("memory", {"mode": "999"}, "mode", "mode '999' is not octal"),
        ("memory", {"mode": "77777"}, "mode", "mode '77777' is not a file mode"),
        ("overlay", {"path": "/etc/passwd"}, "path", "/etc/passwd is not a directory; give a host directory"),
        ("image", {"path": "host", "unpacked": "/tmp"}, "unpacked", "an image source has no unpacked"),  # internal
    ],
)
def test_a_wrong_source_is_one_line_naming_the_option(
    kind: str | None, given: dict[str, object], option: str, problem: str
) -> None:
    role = "root" if kind == "image" and option != "type" else "mount"
    with pytest.raises(OptionError) as caught:
        registry.parse(kind, given, "/", role=role)  # type: ignore[arg-type]
    assert caught.value.option == option
    assert problem in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("flag", "toml", "problem"),
    [
        ("type=memory,size=lots", 'type = "memory"\nsize = "lots"', "size 'lots' is not a size; use e.g. 64m"),
        ("type=host,path=missing", 'type = "host"\npath = "missing"', "missing does not exist; create it or fix"),
        ("type=host,path=.,size=1g", 'type = "host"\npath = "."\nsize = "1g"', "a host source has no size"),
        ("type=nfs", 'type = "nfs"', "no source type 'nfs'; types: host, memory, overlay"),
        ("type=overlay", 'type = "overlay"', "an overlay source needs path"),
    ],
)
def test_flags_and_hvfs_toml_say_the_same(tmp_path: Path, flag: str, toml: str, problem: str) -> None:
    with pytest.raises(spec.UsageError) as from_flag:
        spec.parse_mount(f"{flag},target=/x", cwd=str(tmp_path))
    (tmp_path / "hvfs.toml").write_text(f'[sources.s]\n{toml}\n[vms.web]\ncommand = "true"\n')
    with pytest.raises(config.ConfigError) as from_file:
        config.load(str(tmp_path / "hvfs.toml"))
    flag_problem = str(from_flag.value).split("': ", 1)[1]
    file_problem = str(from_file.value).split(": ", 2)[2]
    assert problem in flag_problem and flag_problem == file_problem


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["--mount", "type=nfs,target=/x"], "--mount 'type=nfs,target=/x': no source type 'nfs'; types: host,"),
        (["--mount", "type=memory"], "no target; add target=/PATH"),
        (["--mount", "type=memory,target=/x,noexec"], "unknown option 'noexec'; use ro, rw or sockets"),
        (["--mount", "type=memory,target=/x,size=1m,size=2m"], "size is given twice"),
        (["--mount", "type=image,path=host,target=/x"], "is a VM's root, not a mount"),
        (["--mount", "type=overlay,path=/etc/passwd,target=/x"], "/etc/passwd is not a directory"),
        (["--mount", "type=memory,target=/proc/x"], "/proc/x is managed by hvfs"),
        (["--tmpfs", "/x:noexec"], "unknown option 'noexec'; use size=, mode=, ro or rw"),
        (["--tmpfs", "/x:path=/tmp"], "a memory source has no path; its options: size, mode"),
        (["-v", "/tmp:/x", "--tmpfs", "/x"], "two mounts at /x; give each its own target"),
    ],
)
def test_a_wrong_mount_flag_gets_one_line_and_125(hvfs: Hvfs, args: list[str], mentions: str) -> None:
    name = f"bad-{uuid.uuid4().hex[:8]}"
    result = hvfs.run("run", "--name", name, *args, "--", "true")
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("hvfs: ") and mentions in result.stderr
    assert not list(Path("/run/hvfs").glob(f"{name}*"))


def test_descriptions_from_afar_are_checked(tmp_path: Path) -> None:
    """A manager rebuilds sources from descriptions it was sent or kept: they are checked
    as what a user wrote is, and their paths must be absolute."""
    with pytest.raises(OptionError, match="'data' is relative"):
        registry.make(SourceSpec("host", {"path": "data"}))
    with pytest.raises(OptionError, match="/nonexistent-hvfs does not exist"):
        registry.make(SourceSpec("host", {"path": "/nonexistent-hvfs"}))
    with pytest.raises(OptionError, match="no source type 'nfs'"):
        registry.make(SourceSpec("nfs"))
    for bad in ({"kind": 1}, {"kind": "memory", "options": []}, {"kind": "memory", "extra": 1}, "memory"):
        with pytest.raises(SourceError, match="not a source description"):
            SourceSpec.from_json(bad)
    with pytest.raises(SourceError, match="not a mount description"):
        MountSpec.from_json({"target": "/x", "source": {"kind": "memory"}, "readonly": "yes"})
    mount = MountSpec("/x", SourceSpec("memory", {"mode": "1777"}, name="p/m"), readonly=True, sockets=True)
    assert MountSpec.from_json(json.loads(json.dumps(mount.to_json()))) == mount


@pytest.mark.parametrize(
    ("mounts", "problem"),
    [
        ([], "a VM needs one root image, not 0"),
        ([ROOT, ROOT], "a VM needs one root image, not 2"),
        ([MountSpec("/", SourceSpec("memory"))], "a source of type memory cannot be a VM's root"),
        ([ROOT, MountSpec("/x", SourceSpec("memory")), MountSpec("/x", SourceSpec("memory"))], "two mounts at /x"),
        ([ROOT, MountSpec("/dev/x", SourceSpec("memory"))], "/dev/x is managed by hvfs"),
        ([ROOT, MountSpec("/x/../y", SourceSpec("memory"))], "contains '..'"),
        ([ROOT, MountSpec("/x/", SourceSpec("memory"))], "not in normal form; give /x"),
    ],
)
def test_a_mount_table_checks_its_descriptions(mounts: list[MountSpec], problem: str) -> None:
    with pytest.raises(SourceError, match=problem):
        check_mounts(mounts)


def test_an_image_tarball_is_prepared_once_as_the_user(tmp_path: Path) -> None:
    tree = tmp_path / "rootfs"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("tiny\n")
    tarball = shutil.make_archive(str(tmp_path / "rootfs"), "tar", tree)
    image = registry.parse("image", {"path": tarball}, "/", role="root")
    with pytest.raises(SourceError, match="a tarball is unpacked before its VM is made"):
        registry.make(image)
    cache = tmp_path / "cache"
    (prepared,) = prepare_mounts([MountSpec("/", image)], cache=lambda: str(cache))
    unpacked = Path(prepared.source.options["unpacked"])
    assert unpacked.parent.parent == cache / "images" and (unpacked / "etc" / "hostname").read_text() == "tiny\n"
    assert prepare_mounts([prepared], cache=lambda: str(cache)) == (prepared,)  # prepared: nothing more to do
    assert registry.make(prepared.source).describe() == tarball


# -- the pool: a source lives while a VM uses it -------------------------------------


def test_a_shared_source_is_released_once_when_its_last_vm_is_gone() -> None:
    require(os.geteuid() == 0, "making a tmpfs outside a user namespace needs root")
    pool = SourcePool()
    shared_spec = SourceSpec("memory", {"size": 1 << 20, "mode": "1777"}, name="p/shared")
    shared = pool.take("a", shared_spec)
    assert pool.take("b", shared_spec) is shared
    assert isinstance(shared, MemorySource)
    tree = shared._file_system()  # the tmpfs, as the first VM's mount makes it
    releases: list[str] = []
    release = shared.release
    shared.release = lambda: (releases.append("shared"), release())[1]  # type: ignore[method-assign]
    private = pool.take("a", SourceSpec("memory", {"mode": "1777"}))
    assert private is not pool.take("b", SourceSpec("memory", {"mode": "1777"}))  # a mount's own
    with pytest.raises(SourceError, match="described twice, differently"):
        pool.take("c", SourceSpec("memory", {"mode": "700"}, name="p/shared"))

    pool.drop("a")
    assert releases == [] and os.fstat(tree).st_size >= 0  # b still uses it: the tmpfs is held
    stats = pool.statistics()
    assert stats.named == {"p/shared": ("b",)} and stats.private == 1 and stats.released_total == 1

    pool.drop("b")
    assert releases == ["shared"]
    with pytest.raises(OSError):
        os.fstat(tree)  # the source's hold on the tmpfs is gone
    pool.drop("b")
    pool.close()
    assert releases == ["shared"]  # once, whatever comes after
    stats = pool.statistics()
    assert stats.named == {} and stats.private == 0 and stats.released == {"p/shared": 1}


def test_a_table_that_fails_takes_nothing(tmp_path: Path) -> None:
    pool = SourcePool()
    gone = tmp_path / "gone"
    gone.mkdir()
    mounts = [
        ROOT,
        MountSpec("/a", SourceSpec("memory", {"mode": "1777"})),
        MountSpec("/b", SourceSpec("host", {"path": str(gone)})),
    ]
    gone.rmdir()  # since it was checked
    with pytest.raises(OptionError, match="does not exist"):
        mount_table("vm", mounts, pool)
    assert pool.statistics().private == 0 and pool.statistics().released_total == 2  # the image, /a
    gone.mkdir()
    table = mount_table("vm", mounts, pool)
    assert [m.target for m in table] == ["/", "/a", "/b", "/dev", "/dev/shm", "/dev/pts", "/proc"]
    pool.drop("vm")
    assert pool.statistics().private == 0


# -- each kind in VMs -----------------------------------------------------------------


def test_host_memory_and_overlay_sources_in_one_vm(hvfs: Hvfs, tmp_path: Path) -> None:
    host, tree = tmp_path / "host", tmp_path / "tree"
    host.mkdir()
    (tree / "sub").mkdir(parents=True)
    (tree / "keep").write_text("host\n")
    (tree / "sub" / "f").write_text("x\n")
    before = snapshot(tree)
    script = (
        "echo from-vm > /h/written && "
        "df -k /m | tail -n 1 && stat -c %a /m && "
        "cat /src/keep && echo vm > /src/keep && echo new > /src/new && rm -r /src/sub && "
        "cat /src/keep /src/new && ls /src && stat -f -c '%b %f %S' /src"
    )
    out = hvfs.ok(
        "run",
        "--mount", f"type=host,path={host},target=/h",
        "--mount", "type=memory,size=2m,mode=700,target=/m",
        "--mount", f"type=overlay,path={tree},target=/src",
        "--", "sh", "-c", script,
    ).splitlines()  # fmt: skip
    assert (host / "written").read_text() == "from-vm\n"  # host: the VM's writes reach the host
    assert out[0].split()[1] == "2048" and out[1] == "700"  # memory: the size and mode asked for
    assert out[2:5] == ["host", "vm", "new"] and out[5:7] == ["keep", "new"]  # overlay: the VM changes its copy...
    assert snapshot(tree) == before  # ... and the host directory never changes
    blocks, free, size = map(int, out[7].split())
    host_fs = os.statvfs(tree)
    assert (blocks - free) * size >= (
        host_fs.f_blocks - host_fs.f_bfree
    ) * host_fs.f_frsize * 0.9  # its fs, not the layer


def test_an_overlay_keeps_its_changes_with_persist(hvfs: Hvfs, tmp_path: Path) -> None:
    tree, persist = tmp_path / "tree", tmp_path / "state"
    tree.mkdir()
    persist.mkdir(mode=0o700)
    mount = f"type=overlay,path={tree},target=/src"
    hvfs.ok("run", "--persist", str(persist), "--mount", mount, "--", "sh", "-c", "echo kept > /src/new")
    assert hvfs.ok("run", "--persist", str(persist), "--mount", mount, "--", "cat", "/src/new") == "kept\n"
    assert hvfs.run("run", "--mount", mount, "--", "cat", "/src/new").returncode == 1  # without it, the tree as it is
    assert list(tree.iterdir()) == []


@pytest.mark.rootless
def test_an_overlay_source_rootless(rootless: Hvfs, shared_tmp: Path) -> None:
    tree = shared_tmp / "tree"
    tree.mkdir()
    (tree / "keep").write_text("host\n")
    chown_to(tree, ROOTLESS_USER)
    before = snapshot(tree)
    script = "echo vm > /src/keep && touch /src/new && cat /src/keep && ls /src"
    out = rootless.ok("run", "--mount", f"type=overlay,path={tree},target=/src", "--", "sh", "-c", script)
    assert out.split() == ["vm", "keep", "new"]
    assert snapshot(tree) == before


def test_a_project_shares_sources_and_releases_them_after_the_last_vm(hvfs: Hvfs, tmp_path: Path) -> None:
    """Two VMs mount one memory source and one overlay source: the memory file system is
    one for both, the overlay a copy each; the memory source is released (the manager
    lets go of its tmpfs) when the second VM stops, not the first, and once."""
    require(os.geteuid() == 0, "reading the manager's fds needs root")
    name = f"pool-{uuid.uuid4().hex[:8]}"
    tree = tmp_path / name / "tree"
    tree.mkdir(parents=True)
    (tree / "keep").write_text("host\n")
    mounts = '[{ source = "shared", target = "/data" }, { source = "tree", target = "/tree" }]'
    project = _project(
        hvfs,
        tmp_path / name,
        f'name = "{name}"\n'
        '[sources.shared]\ntype = "memory"\nsize = "8m"\n'
        '[sources.tree]\ntype = "overlay"\npath = "tree"\n'
        f'[vms.a]\ncommand = "sleep 600"\nmounts = {mounts}\n'
        f'[vms.b]\ncommand = "sleep 600"\nmounts = {mounts}\n',
    )
    project.ok("up", "-d")
    try:
        device = int(
            project.ok("exec", "a", "--", "sh", "-c", "echo hi > /data/f && echo a > /tree/a && stat -c %d /data")
        )
        assert project.ok("exec", "b", "--", "cat", "/data/f") == "hi\n"  # one memory file system
        assert project.run("exec", "b", "--", "cat", "/tree/a").returncode == 1  # an overlay each
        assert sorted(p.name for p in tree.iterdir()) == ["keep"]
        manager = _manager(project)
        shared = f"{name}/shared"
        assert manager["sources"]["named"][shared] == ["a", "b"]
        assert _fds_on(manager["pid"], device) >= 1

        project.ok("stop", "a")
        manager = _manager(project)
        assert manager["sources"]["named"][shared] == ["b"] and shared not in manager["sources"]["released"]
        assert _fds_on(manager["pid"], device) >= 1
        assert project.ok("exec", "b", "--", "cat", "/data/f") == "hi\n"  # still there for b

        project.ok("stop", "b")
        manager = _manager(project)
        assert shared not in manager["sources"]["named"] and manager["sources"]["released"][shared] == 1
        assert _fds_on(manager["pid"], device) == 0  # no hold on the tmpfs is left
    finally:
        project.run("down")


def _manager(project: Project) -> dict[str, object]:
    return json.loads(project.ok("ps", "--json"))["manager"]  # type: ignore[no-any-return]


def _fds_on(pid: object, device: int) -> int:
    """How many of process ``pid``'s fds are on the file system with device ``device``."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.stat(f"/proc/{pid}/fd/{fd}").st_dev == device
        except OSError:
            continue
    return count


def test_a_vm_that_exits_at_once_leaves_the_shared_source_to_the_others(hvfs: Hvfs, tmp_path: Path) -> None:
    """The VMs of a project take their sources before the first starts: one that writes
    and exits at once does not take the memory file system with it."""
    name = f"early-{uuid.uuid4().hex[:8]}"
    mounts = '[{ source = "shared", target = "/data" }]'
    project = _project(
        hvfs,
        tmp_path / name,
        f'name = "{name}"\n[sources.shared]\ntype = "memory"\n'
        f'[vms.quick]\ncommand = "echo early > /data/f"\nmounts = {mounts}\n'
        f'[vms.late]\ncommand = "sleep 600"\nmounts = {mounts}\n',
    )
    project.ok("up", "-d")
    try:
        deadline = time.monotonic() + 20
        while project.ps()["quick"]["state"] != "exited":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert project.ps()["quick"]["code"] == 0
        assert _manager(project)["sources"]["named"] == {f"{name}/shared": ["late"]}  # type: ignore[index]
        assert project.ok("exec", "late", "--", "cat", "/data/f") == "early\n"
    finally:
        project.run("down")
