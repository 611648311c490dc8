"""Pieces that need no VM: parsing, path splitting, struct layouts, the syscall table."""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

import pytest

from hvfs import spec
from hvfs.hypervisor.mounts import MountSpec
from hvfs.intercept import syscalls
from hvfs.intercept.arch import native
from hvfs.intercept.filter import FilterConfig, compile_filter, known_syscalls
from hvfs.manager.resolve import split
from hvfs.manager.sources.registry import SourceSpec
from tests.conftest import REPO


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/a/b/c", ("/a/b", "c")),
        ("/a/b/c/", ("/a/b", "c/")),
        ("/a", ("/", "a")),
        ("/", ("/", "")),
        ("//", ("/", "")),
        ("/a/..", ("/a", "..")),
        ("/a/.", ("/a", ".")),
        ("x", ("", "x")),
        ("a/b/", ("a", "b/")),
        ("..", ("", "..")),
    ],
)
def test_split_keeps_the_last_component_as_the_kernel_sees_it(path: str, expected: tuple[str, str]) -> None:
    assert split(path) == expected


def test_volume_parsing(tmp_path: Path) -> None:
    volume = spec.parse_volume(f"{tmp_path}:/data/x/:ro")
    assert volume == MountSpec("/data/x", SourceSpec("host", {"path": str(tmp_path)}), readonly=True)
    assert spec.parse_volume(".:/w", cwd=str(tmp_path)).source.options["path"] == str(tmp_path)
    for bad in (
        "x",
        f"{tmp_path}:",
        f"{tmp_path}:/a:/b:c",
        f"{tmp_path}:/",
        f"{tmp_path}:/dev/x",
        f"{tmp_path}:/a/../b",
    ):
        with pytest.raises(spec.UsageError):
            spec.parse_volume(bad)


def test_tmpfs_and_size_parsing() -> None:
    memory = SourceSpec("memory", {"size": 64 << 20, "mode": "700"})
    assert spec.parse_tmpfs("/t:size=64m,mode=700") == MountSpec("/t", memory)
    assert spec.parse_tmpfs("/t:ro").readonly
    assert spec.parse_size("1g", "x") == 1 << 30
    assert spec.parse_size("512KiB", "x") == 512 << 10
    with pytest.raises(spec.UsageError):
        spec.parse_tmpfs("/t:noexec")


def test_environment_is_clean_with_additions() -> None:
    env = spec.parse_env(["A=1", "B", "C"], {"B": "host", "SECRET": "x"}, name="vm", tty=False)
    assert env == {"A": "1", "B": "host"}  # PATH, HOSTNAME and HOME: the manager's (and the image's)


def test_our_struct_stat_is_the_kernels(tmp_path: Path) -> None:
    """pack_stat must produce the bytes the kernel writes for newfstatat on this machine."""
    arch = native()
    number = {"x86_64": 262, "aarch64": 79}[platform.machine()]
    target = tmp_path / "f"
    target.write_bytes(b"x" * 12345)
    os.utime(target, ns=(1_234_567_890_123_456_789, 987_654_321_000_000_001))
    buffer = ctypes.create_string_buffer(256)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(ctypes.c_long(number), ctypes.c_int(-100), str(target).encode(), buffer, ctypes.c_int(0)) == 0
    packed = arch.pack_stat(os.stat(target))
    assert packed == buffer.raw[: len(packed)]


def test_the_table_names_real_syscalls() -> None:
    known = set(known_syscalls(native()).values())
    for entry in syscalls.TABLE:
        assert (
            entry.name in known
            or entry.number is not None
            or entry.name
            in {
                "open",
                "creat",
                "stat",
                "lstat",
                "access",
                "readlink",
                "mkdir",
                "mknod",
                "unlink",
                "rmdir",
                "rename",
                "link",
                "symlink",
                "chmod",
                "chown",
                "lchown",
                "utime",
                "utimes",
                "futimesat",
                "uselib",
                "quotactl_fd",
            }
        ), entry.name


@pytest.mark.parametrize("trap_reads", [False, True])
def test_the_filter_compiles(trap_reads: bool) -> None:
    program = compile_filter(FilterConfig(trap_reads=trap_reads), native())
    assert len(program) % 8 == 0 and 100 < len(program) // 8 < 4096


def test_compatibility_doc_is_generated_from_the_table() -> None:
    assert (REPO / "docs" / "compatibility.md").read_text() == syscalls.compatibility_markdown()
