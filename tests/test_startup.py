"""Start-up costs that must not creep back (docs/performance.md, "Where start-up goes"):
what `hvfs run -- true` imports in the client, and that nothing on the way reads package
metadata or goes through setuptools' editable finder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import hvfs
from tests.conftest import FRONT, REPO, require

# The client as the `hvfs` script runs it, reporting sys.modules as it leaves (main()
# leaves with os._exit, which runs no atexit handler).
_CLIENT = """
import os, sys
leave = os._exit
def report(code):
    sys.stderr.write("MODULES " + " ".join(sorted(sys.modules)) + "\\n")
    sys.stderr.flush()
    leave(code)
os._exit = report
from hvfs.cli import main
sys.argv = ["hvfs", "run", "--", "true"]
sys.exit(main())
"""

# What only the manager, a project file, an image or another command needs.
_NOT_IN_RUN = (
    "hvfs.api.messages",  # forty dataclasses: the manager's
    "hvfs.api.hooks",
    "hvfs.hypervisor.pool",
    "hvfs.hypervisor.daemon",
    "hvfs.manager.manager",
    "hvfs.manager.mounts",
    "hvfs.manager.sources.memory",  # kinds a run does not name
    "hvfs.manager.sources.overlay",
    "hvfs.images.store",  # the host image needs no image store
    "hvfs.images.formats",
    "hvfs.intercept",
    "hvfs.sandbox.launcher",
    "hvfs.completion",
    "argcomplete",
    "tarfile",
    "shutil",  # with bz2, lzma and zlib: argparse's formatter imports it, ours does not
    "hashlib",  # OpenSSL: a run's group id needs no digest
    "tomllib",
    "pathlib",  # setuptools' editable finder imports it before hvfs runs a line
    "importlib.metadata",
    "pkg_resources",
    "pyseccomp",
    "docker",
)
_MOST_HVFS_MODULES = 57  # 53 when written, 68 before; hvfs.coldset since


def _modules_of_run() -> list[str]:
    result = subprocess.run([sys.executable, "-c", _CLIENT], capture_output=True, text=True, timeout=120, cwd="/")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("MODULES ")]
    assert lines, result.stderr
    return lines[-1].split()[1:]


def test_hvfs_run_imports_only_what_run_needs() -> None:
    modules = _modules_of_run()
    assert "hvfs.run" in modules and "hvfs.client.session" in modules  # it did run a VM's client
    loaded = [name for name in _NOT_IN_RUN if name in modules or any(m.startswith(name + ".") for m in modules)]
    assert not loaded, f"hvfs run -- true imports {loaded}"
    ours = [m for m in modules if m == "hvfs" or m.startswith("hvfs.")]
    assert len(ours) <= _MOST_HVFS_MODULES, f"{len(ours)} hvfs modules: {ours}"
    assert not [m for m in modules if m.startswith("__editable__")], "the install goes through an editable finder"


def test_hvfs_runs_from_the_checkout_without_a_finder() -> None:
    """scripts/setup installs with editable_mode=compat: a path in a .pth file, which
    still lets the tests (and `hvfs`) import this checkout, new modules included."""
    result = subprocess.run(
        [sys.executable, "-c", "import hvfs, sys; print(hvfs.__file__); print(sorted(sys.modules))"],
        capture_output=True, text=True, timeout=60, cwd="/",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    where, modules = result.stdout.splitlines()
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert where == os.path.join(checkout, "hvfs", "__init__.py")
    assert "__editable__" not in modules and "pathlib" not in modules, modules


def test_the_manager_command_parses_without_the_other_commands() -> None:
    """`hvfs manager serve` is how a client starts a manager: every cold run waits for it."""
    code = "import sys; from hvfs import cli; cli.build_parser(['manager', 'serve']); print(' '.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    modules = result.stdout.split()
    assert "hvfs.hypervisor.commands" in modules
    others = ("hvfs.run_flags", "hvfs.services.registry", "hvfs.project.cli", "hvfs.services.audit", "hvfs.images.cli")
    assert not [name for name in others if name in modules]


def test_version_imports_no_command() -> None:
    """`hvfs --version` (issue 14 measured it at 105 ms) prints hvfs.__version__ and no more."""
    code = (
        "import sys\nfrom hvfs import cli\nsys.argv = ['hvfs', '--version']\ntry:\n    cli.main()\n"
        "except SystemExit:\n    sys.stderr.write(' '.join(m for m in sys.modules if m.startswith('hvfs')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0 and result.stdout == f"hvfs {hvfs.__version__}\n", result
    assert sorted(result.stderr.split()) == ["hvfs", "hvfs.cli"]


# What `hvfs manager serve` imports before it serves (benchmarks/cold_phases.py's list),
# with hvfs/__main__.py's stand-ins; then what its first run adds (the cluster's settings,
# the run's parser, the handlers of a first request with the messages).
_MANAGER = """
import sys
from hvfs import deferred
deferred.defer(*deferred.MANAGER)
import dataclasses
import hvfs.cli, hvfs.hypervisor.commands, hvfs.hypervisor.daemon
print(" ".join(sorted(name for name, module in sys.modules.items() if not isinstance(module, deferred.Deferred))))
import hvfs.cluster.identity
hvfs.cli.build_parser(["run"])
import hvfs.manager.handlers  # a first request's, with the messages
for name, module in sorted(sys.modules.items()):
    for value in vars(module).values() if name.startswith("hvfs") else ():
        if isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == name:
            # dataclass() makes a missing docstring out of inspect.signature(cls)
            if (value.__doc__ or "").startswith(value.__name__ + "("):
                print(f"{name}.{value.__name__}", file=sys.stderr)
"""


def _manager_imports() -> tuple[list[str], list[str]]:
    result = subprocess.run([sys.executable, "-c", _MANAGER], capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    return result.stdout.split(), result.stderr.split()


def test_the_managers_dataclasses_have_docstrings() -> None:
    """A dataclass without a docstring gets one from inspect.signature(cls), at import: the
    60 the manager imported before it could serve cost 3.5-5.5 ms of CPU of each cold start
    (measured, of 67-75 ms of its imports); one on a first run's way imports inspect, which
    the manager defers (hvfs.deferred), ~5 ms more."""
    modules, undocumented = _manager_imports()
    assert "hvfs.manager.manager" in modules
    assert undocumented == []


# What only later features use: a manager's first VM needs none of them.
_NOT_IN_SERVE = (
    "hvfs.hypervisor.client",  # status, stop and restart's
    "hvfs.sandbox.terminal",  # a run with a terminal's
    "termios",
    "hvfs.manager.fuseclient",  # the juicefs source's
    "subprocess",  # the manager spawns through hvfs._sys.spawner
    "concurrent.futures",  # the spawner answers with an Event
    "resource",  # a shared library, for the few VMs with rlimits
    "hvfs.api.hooks",  # the event bus, made for the VMs whose services want one
    "hashlib",  # OpenSSL: an audited run's kept output names its role with a digest
    "inspect",  # dataclasses' (hvfs.deferred), with ast and dis
    "ast",
    "dis",
    "linecache",  # traceback's (hvfs.deferred), with tokenize
    "tokenize",
)


def test_manager_serve_imports_no_later_feature() -> None:
    modules, _ = _manager_imports()
    assert "hvfs.hypervisor.daemon" in modules
    assert [name for name in _NOT_IN_SERVE if name in modules] == []


# Put on a manager's PYTHONPATH (the front passes it on): once the manager has told its
# first VM's exit, the modules really imported by then (not a hvfs.deferred stand-in), and
# which modules had called compile() by then.
_AT_EXIT = r"""
import os, sys
if sys.argv[1:3] == ["manager", "serve"]:
    import builtins, importlib.machinery

    _compiled_by = []
    _compile = builtins.compile

    def _counted(*args, **kwargs):
        _compiled_by.append(sys._getframe(1).f_globals.get("__name__", "?"))
        return _compile(*args, **kwargs)

    builtins.compile = _counted

    def _told(tell):
        def told(self, message):
            if "exited" in message:
                from hvfs import deferred
                real = sorted(n for n, m in list(sys.modules.items()) if not isinstance(m, deferred.Deferred))
                with open(os.environ["HVFS_TEST_MODULES"], "a") as f:
                    f.write(" ".join(real) + "\n" + " ".join(_compiled_by) + "\n")
            return tell(self, message)
        return told

    class _Finder:
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name != "hvfs.hypervisor.group":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path, target)
            execute = spec.loader.exec_module

            def exec_module(module):
                execute(module)
                module.Group.tell = _told(module.Group.tell)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _Finder)
"""

# What a cold manager defers past its first VM (hvfs.deferred): a `true` that asks the
# manager nothing, run through the C loop, needs none of it.
_NOT_SERVING_TRUE = (
    "logging",  # hvfs.deferred.logger: the manager's loggers, looked up at a first record
    "traceback",  # logging's
    "textwrap",
    "hvfs.log_handlers",
    "hvfs.hypervisor.tell_handlers",
    "hvfs.api.messages",  # the requests and responses: a first request's (hvfs.api)
    "hvfs.api.events",  # the audit's
    "hvfs.manager.handlers",  # imported by the manager's first request (manager._handlers)
    "hvfs.services.describe",
    "hvfs._native._tracer",  # the ptrace driver's loop, loaded on first use (hvfs._native)
    "hvfs._native._audit",  # the audit's writer, likewise
    "shlex",  # a project file's entrypoint string
    *_NOT_IN_SERVE,
)


def test_a_cold_managers_first_vm_imports_nothing_deferred(fake_state: Path, tmp_path: Path) -> None:
    require(os.access(FRONT, os.X_OK), f"no native front at {FRONT}; run scripts/setup")
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(_AT_EXIT)
    modules = tmp_path / "modules"
    env = {**os.environ, "HVFS_STATE_DIR": str(fake_state), "PYTHONPATH": f"{REPO}:{tmp_path / 'hook'}",
           "HVFS_TEST_MODULES": str(modules)}  # fmt: skip
    result = subprocess.run([FRONT, "run", "--", "true"], env=env, capture_output=True, text=True, timeout=120,
                            cwd="/", stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10  # the front may exit on the shim's word, before the manager tells
    while not (modules.exists() and modules.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.01)
    first, compiled_by = modules.read_text().split("\n")[:2]
    loaded = first.split()
    assert "hvfs.hypervisor.daemon" in loaded and "hvfs.intercept.driver" in loaded
    assert [name for name in _NOT_SERVING_TRUE if name in loaded] == []
    # A process's first compile() makes the AST's types (~0.7 ms), and typing compiles each
    # string annotation of a NamedTuple: the modules that define one evaluate theirs. Only
    # a source without its .pyc and the dataclass cache's misses compile (once each).
    expected = ("importlib._bootstrap", "hvfs.dataclass_cache")
    assert [name for name in compiled_by.split() if name not in expected] == []


def test_manager_serve_in_another_spelling_goes_to_the_parser(fake_state: Path) -> None:
    """The fronts' `manager serve --ready-fd N` is read without argparse (hvfs.hypervisor.
    commands.serve_spawned); anything else is the command line parser's to judge."""
    env = {**os.environ, "HVFS_STATE_DIR": str(fake_state)}
    for wrong in (["--ready-fd", "x"], ["--ready-fd"], ["--other"]):
        result = subprocess.run([sys.executable, "-P", "-m", "hvfs", "manager", "serve", *wrong], env=env, cwd="/",
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 125 and result.stderr.startswith("hvfs: "), (wrong, result.stderr)
        assert "'hvfs manager serve --help'" in result.stderr and "Traceback" not in result.stderr
    assert not (fake_state / "manager.json").exists()
