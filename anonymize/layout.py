"""Shared low-level names: the landing zone's and the output root's layout, planned files.

Every stage imports this module; it imports nothing of cdranon but the errors. Layout of the
output root::

    restricted/<dataset>/date=YYYY-MM-DD/region=R/part-*.parquet   published datasets
    shareable/<release>/<dataset>/date=.../region=.../*.parquet    what a recipient receives
    current -> _versions/<run-id>                                  the published version
    _versions/<run-id>/{restricted,shareable}/...                  complete trees, the last two
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

import os
from dataclasses import dataclass
from pathlib import Path

from anonymize.errors import InputError

FAMILIES = ("lync", "connect", "weblogs")
STAGING = "_staging"
TRASH = "_trash"  # the per-partition swaps of earlier versions (recovered, no longer made)
VERSIONS = "_versions"  # one complete tree (restricted/, shareable/) per published run
CURRENT = "current"  # symlink to the published version; restricted/, shareable/ point through it
AREAS = ("restricted", "shareable")
QUARANTINE = "_quarantine"
MANIFESTS = "_manifests"
LOCK = "_lock"
SHAREABLE = "shareable"
CANARIES = "_canaries"  # in a run's staging area: keyed hashes of the raw identifiers read
SUBJECTS_FOUND = "_subjects_found"  # in staging, on a key rotation: old -> new pseudonyms
LOOKUPS = "_lookups"  # in a run's staging area: join-source and companion tables
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 3, "statistics": True}


def scan_partitions(files: list[Path], *, hive: bool = True):
    """A lazy scan of a dataset's Parquet files whose columns may differ: a partition written
    before the dataset gained a column (an upgrade) reads it as null, instead of failing the
    scan. With ``hive``, ``date`` and ``region`` come from the folder names."""
    import polars as pl

    schema: dict = {}
    for f in files:
        for name, dtype in pl.read_parquet_schema(f).items():
            schema.setdefault(name, dtype)
    where = (
        {"hive_partitioning": True, "hive_schema": {"date": pl.Date, "region": pl.String}}
        if hive
        else {"hive_partitioning": False}
    )
    return pl.scan_parquet(files, schema=schema, missing_columns="insert", **where)


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
    # Why reading it will refuse it, when planning already knows (empty, no contract, unreadable).
    problem: str | None = None


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


def survey(landing: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Every file under the landing zone: the inputs, and the others with the reason they are not.

    Inputs are sorted ``(path, family)`` pairs: files at any depth under a family folder
    (``lync/``, ``connect/``, ``weblogs/``, in any case: ``Lync/`` as a Windows admin names it).
    Every other file is returned as ``(path relative to the landing zone, reason)``: at the
    root, under an unknown folder, hidden, a link that leaves the landing zone (refused: it could
    publish anything on the machine), a link to a folder (its files are read where they are).
    The landing zone is only read.
    """
    landing = Path(landing)
    if not landing.is_dir():
        raise InputError(f"the landing zone {landing} is not a folder")
    root = landing.resolve()
    inputs: list[tuple[str, str]] = []
    others: list[tuple[str, str]] = []
    expected = ", ".join(f"{f}/" for f in FAMILIES)
    for folder, dirs, files in os.walk(landing, followlinks=False):
        here = Path(folder)
        rel_here = here.relative_to(landing)
        family = rel_here.parts[0].lower() if rel_here.parts else None
        for name in sorted(dirs):
            path = here / name
            if path.is_symlink():
                reason = (
                    "a link to a folder inside the landing zone: its files are read where they are"
                    if _inside(path, root)
                    else "a link to a folder outside the landing zone: refused"
                )
                others.append((path.relative_to(landing).as_posix(), reason))
        dirs[:] = sorted(d for d in dirs if not (here / d).is_symlink())
        for name in sorted(files):
            path = here / name
            rel = path.relative_to(landing)
            if any(part.startswith(".") for part in rel.parts):
                others.append((rel.as_posix(), "a hidden file or folder (its name starts with .)"))
            elif path.is_symlink() and not _inside(path, root):
                others.append((rel.as_posix(), "a link to outside the landing zone: refused"))
            elif family is None:
                others.append((rel.as_posix(), f"at the landing root: expected {expected}"))
            elif family not in FAMILIES:
                reason = f"unknown folder {rel.parts[0]}/: expected {expected}"
                others.append((rel.as_posix(), reason))
            else:
                inputs.append((str(path), family))
    return sorted(inputs), sorted(others)


def _inside(path: Path, root: Path) -> bool:
    target = path.resolve()
    return target == root or root in target.parents


def discover(landing: Path) -> list[tuple[str, str]]:
    """The input files of the landing zone, as sorted (path, family) pairs (see ``survey``)."""
    return survey(landing)[0]


def fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable (a crash after this keeps them)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` so that a crash leaves the old file or the new one, never part.

    A temporary file beside it is written and ``fsync``-ed, renamed over ``path``, and the
    folder is ``fsync``-ed so the rename itself survives a power cut.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path
