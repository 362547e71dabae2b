"""Shared low-level names: the landing zone's and the output root's layout, planned files.

Every stage imports this module; it imports nothing of cdranon but the errors. Layout of the
output root::

    restricted/<dataset>/date=YYYY-MM-DD/region=R/part-*.parquet   published datasets
    shareable/<release>/<dataset>/date=.../region=.../*.parquet    what a recipient receives
    _staging/<run-id>/...                                          this run's outputs, unswapped
    _quarantine/<run-id>/<dataset>/*.parquet                       rejected raw rows (restricted)
    _manifests/<run-id>.json                                       what was done
    _lock                                                          the run that owns the root

Examples
--------
>>> partition_key("restricted/lync_sessions/date=2026-11-01/region=EMEA")
'2026-11-01/EMEA'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anonymize.errors import InputError

FAMILIES = ("lync", "connect", "weblogs")
STAGING = "_staging"
TRASH = "_trash"
QUARANTINE = "_quarantine"
MANIFESTS = "_manifests"
LOCK = "_lock"
SHAREABLE = "shareable"
CANARIES = "_canaries"  # in a run's staging area: keyed hashes of the raw identifiers read
LOOKUPS = "_lookups"  # in a run's staging area: join-source and companion tables
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 3, "statistics": True}


@dataclass(frozen=True)
class PlannedFile:
    """An input file and what its header says it is (None when it matches no contract yet)."""

    path: str
    family: str
    contract: str | None
    dataset: str | None
    priority: int
    sha256: str | None = None
    duplicate_of: str | None = None  # an earlier file of the batch with the same bytes
    # A join source or companion: publishes nothing itself, read by the files after it.
    side: bool = False
    merge_into: str | None = None  # a companion: the contract whose rows it completes
    size: int = 0
    mtime_ns: int = 0


def partition_key(rel: str) -> str | None:
    """``date/region`` of a partition path (``.../date=D/region=R[/...]``), None if it has none.

    >>> partition_key("restricted/lync_sessions/date=2026-11-01/region=EMEA")
    '2026-11-01/EMEA'
    """
    day = region = None
    for part in Path(rel).parts:
        if part.startswith("date="):
            day = part[5:]
        elif part.startswith("region="):
            region = part[7:]
    return f"{day}/{region}" if day and region else None


def discover(landing: Path) -> list[tuple[str, str]]:
    """Every input file of the landing zone, as sorted (path, family) pairs.

    Files sit in one subfolder per source family (``lync/``, ``connect/``, ``weblogs/``), at any
    depth. Hidden files and folders (``.``-prefixed) are skipped. The landing zone is only read.
    """
    landing = Path(landing)
    if not landing.is_dir():
        raise InputError(f"the landing zone {landing} is not a folder")
    found = []
    for family in FAMILIES:
        root = landing / family
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(landing).parts
            if path.is_file() and not any(p.startswith(".") for p in rel):
                found.append((str(path), family))
    return found
