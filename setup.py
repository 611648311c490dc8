"""Builds hvfs-init, a VM's launcher and pid 1 (native/init/), and the drivers' hot paths
(hvfs/_native/hotpath.c and tracer.c, the extensions hvfs._native._hotpath and _tracer), and the
audit's writer (audit.c, _audit) and recorder (record.c, _record), with the package.

It is a program, not an extension module: it is exec'd in the manager's user namespace
before a VM exists (see native/init/init.h). Static when the C library allows it, so
that it needs nothing from the file system once the VM has pivoted into its boot view.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.dist import Distribution

SOURCES = sorted(glob.glob("native/init/*.c"))
TARGET = os.path.join("hvfs", "_bin", "hvfs-init")
HEADERS = sorted(glob.glob("hvfs/_native/*.h"))
HOTPATH = Extension(
    "hvfs._native._hotpath",
    sources=["hvfs/_native/hotpath.c"],
    depends=HEADERS,  # every header: hand-kept lists went stale, and a stale build serves old code
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fstack-protector-strong"],
    optional=True,  # without it hvfs serves through the Python path (hvfs/_native/__init__.py)
)
TRACER = Extension(
    "hvfs._native._tracer",
    sources=["hvfs/_native/tracer.c"],
    depends=HEADERS,
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fstack-protector-strong"],
    optional=True,  # without it the ptrace driver traces through the Python path (hvfs/intercept/ptrace/)
)
AUDIT = Extension(
    "hvfs._native._audit",
    sources=["hvfs/_native/audit.c"],
    depends=[f"hvfs/_native/{name}.h" for name in ("buffer", "shortest", "compact", "compact_line", "kinds")],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fstack-protector-strong"],
    optional=True,  # without it the audit writes its lines through the Python path (hvfs/services/audit.py)
)
RECORD = Extension(
    "hvfs._native._record",
    sources=["hvfs/_native/record.c"],
    depends=[
        "hvfs/_native/compact.h",
        "hvfs/_native/comm.h",
        "hvfs/_native/recorder.h",
        "hvfs/_native/kinds.h",
        "hvfs/_native/record_raw.h",
        "hvfs/_native/ring.h",
        "hvfs/_native/detached.h",
        "hvfs/_native/raw_event.h",
    ],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fstack-protector-strong"],
    optional=True,  # without it the dispatch records in Python (hvfs.api.events.record_request)
)
FLAGS = ["-O2", "-s", "-Wall", "-Wextra", "-D_FORTIFY_SOURCE=2", "-fstack-protector-strong", "-Wl,-z,now,-z,relro"]


class BuildInit(build_ext):
    def run(self) -> None:
        super().run()
        built = os.path.join(self.build_lib, TARGET)
        os.makedirs(os.path.dirname(built), exist_ok=True)
        compiler = os.environ.get("CC", "cc")
        static = subprocess.run([compiler, *FLAGS, "-static", "-o", built, *SOURCES], capture_output=True, text=True)
        if static.returncode != 0:  # no static C library here (libc6-dev has one; some systems do not)
            subprocess.run([compiler, *FLAGS, "-o", built, *SOURCES], check=True)
        os.chmod(built, 0o755)
        if self.inplace or getattr(self, "editable_mode", False):
            os.makedirs(os.path.dirname(TARGET), exist_ok=True)
            # Beside it, then renamed over it: the running VMs' shims execute the old one.
            shutil.copy2(built, f"{TARGET}.new")
            os.replace(f"{TARGET}.new", TARGET)

    def get_outputs(self) -> list[str]:
        return [*super().get_outputs(), os.path.join(self.build_lib, TARGET)]


class WithProgram(Distribution):
    def has_ext_modules(self) -> bool:
        return True  # a binary inside: a platform wheel, and build_ext always runs


setup(cmdclass={"build_ext": BuildInit}, distclass=WithProgram, ext_modules=[HOTPATH, TRACER, AUDIT, RECORD])
