"""hvfs.deferred: the manager's stand-ins for inspect and linecache (docs/performance.md,
"A cold start's imports deferred"). Each case runs in a fresh interpreter, where the
module is not imported yet, as in a manager that starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_stand_in_imports_its_module_on_the_first_name_asked() -> None:
    out = _run(
        "import sys\nfrom hvfs import deferred\ndeferred.defer('inspect')\n"
        "import inspect\nbefore = 'ast' in sys.modules, type(sys.modules['inspect']).__name__\n"
        "def f(a, b=2): pass\n"
        "print(before, str(inspect.signature(f)), type(sys.modules['inspect']).__name__, 'ast' in sys.modules,"
        " inspect.getsource is sys.modules['inspect'].getsource)"
    )
    assert out.split() == ["(False,", "'Deferred')", "(a,", "b=2)", "module", "True", "True"]


def test_threads_asking_at_once_all_get_the_real_names() -> None:
    """Python 3.11's LazyLoader hands a module out before it has run: a second thread
    asking meanwhile gets AttributeError. Here 2,000 threads, in 100 fresh starts, ask at once."""
    out = _run(
        """
import subprocess, sys
child = '''
import sys, threading
from hvfs import deferred
deferred.defer("inspect")
import inspect
barrier = threading.Barrier(20)
got = []
def ask():
    barrier.wait()
    got.append(inspect.isclass(int) and inspect.signature is sys.modules["inspect"].signature)
threads = [threading.Thread(target=ask) for _ in range(20)]
for t in threads: t.start()
for t in threads: t.join()
print(sum(got))
'''
total = 0
for _ in range(100):
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    total += int(done.stdout)
print(total)
"""
    )
    assert out.split() == ["2000"]


def test_a_dataclass_without_a_docstring_gets_the_same_one() -> None:
    code = "import dataclasses\n@dataclasses.dataclass\nclass A:\n    x: int\n    y: str = 'y'\nprint(A.__doc__)"
    plain = _run(code)
    deferred = _run("from hvfs import deferred\ndeferred.defer(*deferred.MANAGER)\n" + code)
    assert plain == deferred == "A(x: int, y: str = 'y')\n"


def test_a_traceback_still_shows_its_source_lines(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import traceback\ntry:\n    {}['missing']\nexcept KeyError:\n    print(traceback.format_exc())\n")
    out = _run(
        "from hvfs import deferred\ndeferred.defer(*deferred.MANAGER)\nimport linecache\n"
        "assert type(linecache).__name__ == 'Deferred'\n"
        f"exec(compile(open({str(probe)!r}).read(), {str(probe)!r}, 'exec'))"
    )
    assert "{}['missing']" in out and "KeyError" in out


def test_a_module_that_cannot_be_imported_stays_deferred_and_says_so() -> None:
    out = _run(
        "import sys\nfrom hvfs import deferred\ndeferred.defer('hvfs_no_such_module')\n"
        "import hvfs_no_such_module as m\n"
        "for _ in range(2):\n"
        "    try:\n        m.anything\n    except ModuleNotFoundError as e:\n        print(e.name)\n"
        "print(type(sys.modules['hvfs_no_such_module']).__name__)"
    )
    assert out.split() == ["hvfs_no_such_module", "hvfs_no_such_module", "Deferred"]


def test_a_module_imported_already_is_left_alone() -> None:
    out = _run("import sys, inspect\nfrom hvfs import deferred\ndeferred.defer('inspect')\n"
               "print(sys.modules['inspect'] is inspect)")  # fmt: skip
    assert out.split() == ["True"]


def test_a_deferred_logging_installs_the_handlers_before_the_first_record(tmp_path: Path) -> None:
    """As a manager: logging deferred, hvfs.logs configured, a module's logger made; the
    first record imports logging, whose handlers are in before it is handled."""
    out = _run(
        f"""
import os, sys
os.environ["HVFS_STATE_DIR"] = {str(tmp_path)!r}
from hvfs import deferred, logs
deferred.defer("logging")
logs.configure()
log = deferred.logger("hvfs.test")
before = "logging" in sys.modules and not isinstance(sys.modules["logging"], deferred.Deferred)
import logging
still = isinstance(sys.modules["logging"], deferred.Deferred)
log.warning("VM x: a first record")
import logging as real
print(before, still, type(sys.modules["logging"]).__name__, len(real.getLogger().handlers), log.name)
"""
    )
    assert out.split() == ["False", "True", "module", "2", "hvfs.test"]
    assert "VM x: a first record" in (tmp_path / "manager.log").read_text()


def test_when_loaded_runs_at_once_where_nothing_is_deferred() -> None:
    out = _run("from hvfs import deferred\ndeferred.when_loaded('logging', lambda: print('now'))\nprint('after')")
    assert out.split() == ["now", "after"]
