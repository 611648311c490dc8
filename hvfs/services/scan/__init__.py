"""Anti-malware scanning: engines behind one interface, a verdict cache, the Scanner, the
hook that denies infected files, and the quarantine.

- ``engines.py``: the Engine interface; BuiltinEngine (SHA-256 blocklist, EICAR).
- ``yara_engine.py``: YaraEngine (yara-python, imported lazily).
- ``clamd.py``: ClamdEngine (a running clamd, INSTREAM over its unix socket).
- ``cache.py``: VerdictCache, keyed by (device, inode, size, mtime_ns, ctime_ns).
- ``scanner.py``: Scanner.check(vm, path, fd) -> Verdict.
- ``hook.py``: ScanHook, for EventBus.add_hook: judges the fd an open hands out, and
  execs before and after the fact (see its docstring for the integration); Scan, the
  service that puts it on the bus of its VMs.
- ``quarantine.py``: Quarantine (move_in, restore, restore_into).
- ``cli.py``: ``hvfs quarantine list|restore|delete`` (add_quarantine_command).
"""

from hvfs.services.scan.cache import VerdictCache
from hvfs.services.scan.engines import (
    EICAR,
    BuiltinEngine,
    Detection,
    Engine,
    EngineUnavailable,
    ScanError,
    load_blocklist,
)
from hvfs.services.scan.hook import Detected, Located, ScanHook
from hvfs.services.scan.quarantine import Quarantine, QuarantineError, QuarantineRecord
from hvfs.services.scan.scanner import Scanner, ScanStatistics, Verdict

__all__ = [
    "EICAR",
    "BuiltinEngine",
    "Detected",
    "Detection",
    "Engine",
    "EngineUnavailable",
    "Located",
    "Quarantine",
    "QuarantineError",
    "QuarantineRecord",
    "ScanError",
    "ScanHook",
    "ScanStatistics",
    "Scanner",
    "Verdict",
    "VerdictCache",
    "load_blocklist",
]
