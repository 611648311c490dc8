"""The notes package, run in an HVFS VM per test (the hvfs pytest plugin): the code under
test runs in the VM, its files are served by the HVFS manager, and the test sees what it
touched (the VM's audit) and can make the file system fail (fault rules)."""

import pytest

# Every test's VM: this project read-only at /src, the test's own tmp_path at /data.
pytestmark = pytest.mark.hvfs_vm(
    mounts=["..:/src:ro", "{tmp_path}:/data"],
    env={"PYTHONPATH": "/src", "PYTHONDONTWRITEBYTECODE": "1"},
)


def notes(vm, *args):
    return vm.exec(["python3", "-m", "notes", *args], timeout=60)


def test_save_writes_exactly_the_note(hvfs_vm, tmp_path):
    result = notes(hvfs_vm, "save", "/data", "shopping", "eggs")
    assert result.code == 0, result.stderr
    assert hvfs_vm.audit.written() == {"/data/shopping.db"}
    assert (tmp_path / "shopping.db").read_text() == "eggs"


def test_show_reads_it_back(hvfs_vm):
    assert notes(hvfs_vm, "save", "/data", "todo", "write", "tests").code == 0
    result = notes(hvfs_vm, "show", "/data", "todo")
    assert result.code == 0, result.stderr
    assert result.stdout == "write tests\n"
    assert hvfs_vm.audit.written() == {"/data/todo.db"}


def test_remove(hvfs_vm, tmp_path):
    hvfs_vm.write_file("/data/old.db", "gone soon")
    assert notes(hvfs_vm, "remove", "/data", "old").code == 0
    assert hvfs_vm.audit.removed() == {"/data/old.db"}
    assert not (tmp_path / "old.db").exists()


@pytest.mark.hvfs_fault("op=open,path=/data/*.db,errno=EIO,nth=3")
def test_a_disk_error_is_reported(hvfs_vm, tmp_path):
    """The third open of a note fails with EIO: the first two land, the third is reported."""
    assert notes(hvfs_vm, "save", "/data", "a", "1").code == 0
    assert notes(hvfs_vm, "save", "/data", "b", "2").code == 0
    result = notes(hvfs_vm, "save", "/data", "c", "3")
    assert result.code == 3
    assert result.stderr == "notes: cannot save c: Input/output error\n"
    assert hvfs_vm.audit.written() == {"/data/a.db", "/data/b.db"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.db", "b.db"]
