"""Anti-malware scanning (hvfs.services.scan): infected files refused and quarantined."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hvfs.services.base import Kind, Needs, Option, OptionError, Service, ServiceKind
from hvfs.services.datadir import quarantine_directory

if TYPE_CHECKING:
    from hvfs.services.scan.engines import Engine


@dataclass(frozen=True)
class ScanConfig:
    """The scan service's options."""

    blocklist: str | None
    yara: tuple[str, ...]
    clamd: str | None
    quarantine: str


def _configure(values: Mapping[str, Any]) -> ScanConfig | None:
    if not (values["scan"] or values["yara"] or values["blocklist"] or values["clamd"]):
        return None
    return ScanConfig(values["blocklist"], values["yara"], values["clamd"], values["quarantine"])


def _engines(config: ScanConfig) -> list[Engine]:
    from hvfs.services.scan.engines import BuiltinEngine, EngineUnavailable, load_blocklist

    engines: list[Engine] = []
    try:
        engines.append(BuiltinEngine(load_blocklist(config.blocklist) if config.blocklist else None))
        if config.yara:
            from hvfs.services.scan.yara_engine import YaraEngine

            engines.append(YaraEngine(config.yara))
        if config.clamd:
            from hvfs.services.scan.clamd import ClamdEngine

            engines.append(ClamdEngine(config.clamd))
    except (EngineUnavailable, OSError, ValueError) as e:
        raise OptionError(f"--scan: {e}") from None
    return engines


def _open(config: ScanConfig) -> Service:
    from hvfs.services.scan.hook import Scan

    return Scan(_engines(config), config.quarantine)


SERVICE = ServiceKind(
    name="scan",
    summary="refuse infected files (EICAR, a SHA-256 blocklist, YARA, clamd) and quarantine them",
    options=(
        Option("scan", Kind.FLAG, "scan files for malware (EICAR and --blocklist)"),
        Option("blocklist", Kind.PATH, "SHA-256 digests of files to refuse"),
        Option("yara", Kind.PATH, "YARA rules to scan with", many=True),
        Option(
            "clamd",
            Kind.TEXT,
            "scan with ClamAV through clamd's socket",
            metavar="SOCKET",
            example="/run/clamav/clamd.ctl",
        ),
        Option(
            "quarantine",
            Kind.STORE,
            "where infected files go (default: quarantine/ in the data directory: /var/lib/hvfs as root, "
            "else ~/.local/share/hvfs)",
            noun="the quarantine",
            default_store=quarantine_directory,
        ),
    ),
    configure=_configure,
    open=_open,
    needs=lambda config: Needs(trap_reads=True, judged_reads=True),
)
