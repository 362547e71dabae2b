"""What every reader hands the pipeline: batches of raw string rows, plus rejected rows.

A reader (CSV export, access log, Connect XML response) never types or interprets values: it
splits a file into records and fields. Typing is the contract's job (``parse.type_frame``), so a
bad value is quarantined instead of silently nulled. A record the reader cannot split comes back
as ``ragged`` (CSV rows with the wrong number of fields) or in ``rejected`` with a reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

ROW = "_row"  # 1-based record (or line) number in the file
RAW_LINE = "_raw_line"
REASON = "_reason"
REJECTED_SCHEMA = {ROW: pl.Int64, RAW_LINE: pl.String, REASON: pl.String}


@dataclass
class RawBatch:
    """One batch of records as strings, plus the records the reader could not split.

    ``frame`` has one String column per field, named as the source names it. ``row_numbers``
    gives each frame row's record (or line) number when they are not consecutive from
    ``first_row`` (log files skip directives and blank lines). ``rejected`` holds the raw text of
    records no layout explains, with a reason (columns ``_row``, ``_raw_line``, ``_reason``).
    """

    frame: pl.DataFrame
    first_row: int  # 1-based index of the batch's first record among the file's records
    ragged: list[tuple[int | None, str]] = field(default_factory=list)
    rejected: pl.DataFrame | None = None
    row_numbers: pl.Series | None = None

    @property
    def rows_read(self) -> int:
        """Every record of the batch: parsed, ragged and rejected."""
        extra = self.rejected.height if self.rejected is not None else 0
        return self.frame.height + len(self.ragged) + extra


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, streamed (about 0.85 GB/s here)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def prefetch(batches: Iterator[RawBatch], depth: int = 1) -> Iterator[RawBatch]:
    """Read the next batch in a background thread while the caller works on the current one.

    Parsing (pyarrow, polars) and transforming (polars) both release the GIL, so on two cores they
    overlap. Order is kept; ``depth`` batches wait at most (memory stays bounded). An error in
    the reader is raised in the caller, at the batch where it happened.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for b in batches:
                if stop.is_set():
                    return
                q.put(b)
            q.put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(exc)

    t = threading.Thread(target=work, name="cdranon-prefetch", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                q.get_nowait()
            t.join(timeout=0.05)
