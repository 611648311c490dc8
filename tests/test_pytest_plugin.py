"""The pytest plugin (hvfs.pytest_plugin), through pytester: suites that use it, run in a
pytest of their own, with real VMs of this session's manager."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import REPO

pytest_plugins = ["pytester"]

EXAMPLE = REPO / "examples" / "pytest-in-vms"


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", *args, timeout=300)


def test_the_sample_project_passes_in_vms(pytester: pytest.Pytester) -> None:
    """examples/pytest-in-vms: the package runs in a VM per test on served mounts; its
    tests pass, among them one whose fault marker makes the third open of a note fail
    with EIO (asserted there, with the audit listing exactly the two notes written),
    while the others, writing the same way, see no fault."""
    shutil.copytree(EXAMPLE, pytester.path / "example")
    result = _run(pytester, "-v", str(pytester.path / "example"))
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_save_writes_exactly_the_note PASSED*",
                                 "*test_a_disk_error_is_reported PASSED*"])  # fmt: skip


def test_the_fault_marker_is_the_only_difference(pytester: pytest.Pytester) -> None:
    """The same code in two tests: the one with the marker sees EIO, the other does not,
    and the audits list exactly what each wrote."""
    pytester.makepyfile(
        """
        import pytest

        SAVE = "python3 -c 'open(\\"/data/x.db\\", \\"w\\").write(\\"1\\")'"

        @pytest.mark.hvfs_vm(mounts=["{tmp_path}:/data"])
        def test_plain(hvfs_vm):
            result = hvfs_vm.run(SAVE)
            assert result.code == 0, result.stderr
            assert hvfs_vm.audit.written() == {"/data/x.db"}

        @pytest.mark.hvfs_vm(mounts=["{tmp_path}:/data"])
        @pytest.mark.hvfs_fault("op=open,path=/data/*.db,errno=EIO")
        def test_faulted(hvfs_vm):
            result = hvfs_vm.run(SAVE)
            assert result.code == 1 and "OSError: [Errno 5] Input/output error" in result.stderr
            assert hvfs_vm.audit.written() == set()
            faulted = [(e.operation, e.paths, e.result) for e in hvfs_vm.audit.faulted()]
            assert faulted == [("open", ("/data/x.db",), "EIO")]
        """
    )
    _run(pytester).assert_outcomes(passed=2)


def test_a_failing_test_shows_the_vm_logs_and_audit_tail(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.hvfs_vm(command=["sh", "-c", "echo booted-and-waiting; exec sleep 1000"], tmpfs=["/scratch"])
        def test_fails(hvfs_vm):
            hvfs_vm.run("echo said-by-a-command; echo x > /scratch/left-behind")
            assert hvfs_vm.run("cat /scratch/missing").code == 0

        def test_passes_without_a_vm():
            pass
        """
    )
    result = _run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- hvfs VM hvfs-*: logs -*",
            "booted-and-waiting",
            "[[]hvfs[]] $ sh -c 'echo said-by-a-command; echo x > /scratch/left-behind'  (exit 0)",
            "said-by-a-command",
            "[[]hvfs[]] $ sh -c 'cat /scratch/missing'  (exit 1)",
            "cat: /scratch/missing: No such file or directory",
            "*- hvfs VM hvfs-*: audit, last 20 events -*",
            "* hvfs-* */sh open /scratch/left-behind flags=O_WRONLY|O_CREAT|O_TRUNC ok *",
        ]
    )


def test_a_project_failure_shows_every_vm_and_the_audit(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".toml",
        hvfs='name = "plugin-project"\n[services]\naudit = "audit.jsonl"\n[sources.shared]\ntype = "memory"\n'
        '[vms.web]\ncommand = "echo web-is-up; exec sleep 1000"\nmounts = [{ target = "/s", source = "shared" }]\n'
        '[vms.db]\ncommand = "echo db-is-up; exec sleep 1000"\nmounts = [{ target = "/s", source = "shared" }]\n',
    )
    pytester.makepyfile(
        """
        def test_project(hvfs_project):
            assert [vm["state"] for vm in hvfs_project.ps()] == ["running", "running"]
            hvfs_project["web"].run("echo 1 > /s/shared-file")
            assert hvfs_project["db"].read_file("/s/shared-file") == b"2\\n"
        """
    )
    result = _run(pytester, "--hvfs-audit-tail=5")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- hvfs VM web (project plugin-project): logs -*",
            "web-is-up",
            "*- hvfs VM db (project plugin-project): logs -*",
            "db-is-up",
            "*- hvfs project plugin-project: audit, last 5 events -*",
            "* web */sh open /s/shared-file flags=O_WRONLY|O_CREAT|O_TRUNC ok *",
        ]
    )


def test_a_fixture_override_configures_the_vm(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def hvfs_vm_options(tmp_path):
            (tmp_path / "given").write_text("from the conftest")
            return {"mounts": [f"{tmp_path}:/data:ro"], "env": {"WHO": "override"}, "audit": False}
        """
    )
    pytester.makepyfile(
        """
        import hvfs, pytest

        def test_it(hvfs_vm):
            assert hvfs_vm.run('cat /data/given; echo " $WHO"').stdout == "from the conftest override\\n"
            assert "Read-only file system" in hvfs_vm.run("echo x > /data/new").stderr
            with pytest.raises(hvfs.AuditError, match="audit=True"):
                hvfs_vm.audit
        """
    )
    _run(pytester).assert_outcomes(passed=1)


def test_the_plugin_loads_nothing_for_suites_that_do_not_use_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import sys

        def test_nothing_heavy():
            loaded = sorted(m for m in sys.modules if m.startswith("hvfs"))
            assert loaded == ["hvfs", "hvfs.pytest_plugin"], loaded
        """
    )
    result = _run(pytester, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.hvfs_vm(*", "@pytest.mark.hvfs_fault(*", "@pytest.mark.hvfs_project(*"])
    _run(pytester).assert_outcomes(passed=1)


def test_a_vm_that_cannot_start_is_one_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.hvfs_vm(mounts=["/nonexistent-hvfs-dir:/x"])
        def test_it(hvfs_vm):
            pass
        """
    )
    result = _run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*UsageError*/nonexistent-hvfs-dir*"])
