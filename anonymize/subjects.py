"""Data-subject requests: erasure, opt-out and access, by pseudonym only.

A request names a person by the identifiers they give (SIP address, email, phone number in any
form, Connect login). ``pseudonyms_of`` normalises each one as the pipeline does, in every kind it
can take (a person's URI or email, a phone number), and keeps only the pseudonyms under the
current key: the raw value is never written. The requests live in ``<out>/_subjects/requests.json``
(owner-only, like the rest of the output root's state):

- **erasure**: the person's rows leave every restricted dataset, every event release and every
  statistic, and their raw rows leave the quarantine;
- **opt-out**: the person's rows leave what recipients receive (statistics and event releases);
  the restricted data keeps them.

A request is *pending* until a run applies it: that run rebuilds every published partition that
holds one of its pseudonyms (from the published rows, so a partition whose inputs were purged is
rebuilt too) and every later run drops those rows when it reads its inputs. The manifest of the
applying run lists the request ids and the partitions rebuilt. A key rotation (``--rekey``) finds
the people again under the new key from the inputs it reads, given the previous key
(``CDRANON_PREVIOUS_MASTER_KEY``): see ``anonymize.run``.

>>> from anonymize.keys import KeyRing
>>> from anonymize.policy import load_policy, DEFAULT_POLICY
>>> ring, policy = KeyRing.development(), load_policy(DEFAULT_POLICY)
>>> pseudonyms_of("sip:Jane.Doe@contoso.com", ring, policy) == pseudonyms_of(
...     "jane.doe@contoso.com", ring, policy)
True
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import polars as pl

from anonymize.errors import InputError
from anonymize.identifiers import normalize_identifier, pseudonym
from anonymize.keys import KeyRing
from anonymize.layout import QUARANTINE, scan_partitions, write_atomically
from anonymize.stage import make_context

SUBJECTS = "_subjects"
REQUESTS = "requests.json"
Reason = Literal["erasure", "opt-out"]
_TOKENS = re.compile(r"[\s,\"'<>|]+")


def pseudonyms_of(identifier: str, keyring: KeyRing, policy, ctx=None) -> list[str]:
    """Every pseudonym the pipeline can give ``identifier``, under ``keyring`` (sorted).

    ``ctx``: an operator context of ``keyring`` to reuse (its derived keys) over many values.
    """
    ctx = ctx or make_context(policy, keyring)
    region = policy.organization.default_phone_region
    forms: set[tuple[str, str]] = set()
    value = identifier.strip()
    for kind in ("auto", "person", "phone"):
        try:
            found_kind, norm = normalize_identifier(value, kind, region)  # type: ignore[arg-type]
        except Exception:  # not a phone number, for instance
            continue
        if norm and (found_kind != "phone" or any(ch.isdigit() for ch in norm)):
            forms.add((found_kind, norm))
    return sorted(pseudonym(ctx.key_for(k), k, n) for k, n in forms)  # type: ignore[arg-type]


@dataclass
class Subjects:
    """The requests of one output root (see the module docstring)."""

    requests: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, out: Path) -> Subjects:
        path = Path(out) / SUBJECTS / REQUESTS
        if not path.exists():
            return cls()
        try:
            body = json.loads(path.read_text())
            return cls(list(body["requests"]))
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(
                f"the data-subject requests {path} cannot be read; restore them from a backup "
                "(without them, erased people would come back)"
            ) from None

    def save(self, out: Path) -> Path:
        folder = Path(out) / SUBJECTS
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        body = {"version": 1, "requests": self.requests}
        return write_atomically(folder / REQUESTS, json.dumps(body, indent=1) + "\n")

    def add(self, pseudonyms: list[str], reason: Reason, key_id: str) -> dict:
        request = {
            "id": f"req-{secrets.token_hex(4)}",
            "reason": reason,
            "received": datetime.now(UTC).date().isoformat(),
            "key_id": key_id,
            "pseudonyms": sorted(set(pseudonyms)),
            "state": "pending",
            "applied_by": None,
            "partitions": [],
        }
        self.requests.append(request)
        return request

    def pseudonyms(self, key_id: str, reasons: tuple[str, ...]) -> frozenset[str]:
        """The pseudonyms (under ``key_id``) of every request with one of ``reasons``."""
        return frozenset(
            p
            for r in self.requests
            if r["reason"] in reasons and r["key_id"] == key_id
            for p in r["pseudonyms"]
        )

    def pending(self, key_id: str) -> list[dict]:
        return [r for r in self.requests if r["state"] == "pending" and r["key_id"] == key_id]

    def mark_applied(self, ids: list[str], run_id: str, partitions: list[str]) -> None:
        for r in self.requests:
            if r["id"] in ids:
                r["state"], r["applied_by"], r["partitions"] = "applied", run_id, partitions


def rows_holding(restricted: Path, policy, pseudonyms: frozenset[str]) -> dict[str, pl.DataFrame]:
    """dataset -> the rows of ``restricted`` (with date and region) that hold a pseudonym."""
    found = {}
    if not pseudonyms:
        return found
    for name, ds in policy.datasets.items():
        files = sorted((Path(restricted) / name).glob("date=*/region=*/*.parquet"))
        cols = ds.pseudonym_columns
        if not files or not cols:
            continue
        hit = pl.any_horizontal(pl.col(c).is_in(list(pseudonyms)).fill_null(False) for c in cols)
        rows = scan_partitions(files).filter(hit)
        frame = rows.collect()
        if frame.height:
            found[name] = frame
    return found


def partitions_holding(restricted: Path, policy, pseudonyms: frozenset[str]) -> set[str]:
    """The ``date/region`` keys of the restricted partitions that hold one of ``pseudonyms``."""
    return {
        f"{d.isoformat()}/{r}"
        for frame in rows_holding(restricted, policy, pseudonyms).values()
        for d, r in frame.select("date", "region").unique().iter_rows()
    }


def without(frame: pl.DataFrame, columns: list[str], pseudonyms: frozenset[str]) -> pl.DataFrame:
    """``frame`` without the rows that hold one of ``pseudonyms`` in ``columns``."""
    cols = [c for c in columns if c in frame.columns]
    if not cols or not pseudonyms:
        return frame
    return frame.filter(
        ~pl.any_horizontal(pl.col(c).is_in(list(pseudonyms)).fill_null(False) for c in cols)
    )


def quarantine_hits(
    frame: pl.DataFrame, pseudonyms: frozenset[str], keyring: KeyRing, policy
) -> pl.Series:
    """Which raw quarantined rows name a person of ``pseudonyms`` (by any value of any text
    column, or any token of a raw line); Python over the distinct values only."""
    hits = pl.Series("hit", [False] * frame.height)
    ctx = make_context(policy, keyring)
    for column, dtype in frame.schema.items():
        if dtype != pl.String or column.startswith("_"):
            continue
        values = frame[column].drop_nulls().unique().to_list()
        matching = []
        for v in values:
            tokens = {v, *_TOKENS.split(v)} if len(v) > 64 else {v}
            if any(set(pseudonyms_of(t, keyring, policy, ctx)) & pseudonyms for t in tokens if t):
                matching.append(v)
        if matching:
            hits = hits | frame[column].is_in(matching).fill_null(False)
    return hits


def quarantine_files(out: Path) -> list[Path]:
    return sorted((Path(out) / QUARANTINE).glob("*/**/*.parquet"))


def erase_from_quarantine(out: Path, pseudonyms: frozenset[str], keyring: KeyRing, policy) -> int:
    """Remove the raw rows of these people from every quarantine file; return how many."""
    removed = 0
    for f in quarantine_files(out):
        frame = pl.read_parquet(f)
        hits = quarantine_hits(frame, pseudonyms, keyring, policy)
        n = int(hits.sum())
        if not n:
            continue
        removed += n
        rest = frame.filter(~hits)
        if rest.height:
            tmp = f.with_name(f".{f.name}.tmp")
            rest.write_parquet(tmp)
            tmp.replace(f)
        else:
            f.unlink()
    return removed


def export(
    out: Path,
    restricted: Path,
    policy,
    keyring: KeyRing,
    pseudonyms: frozenset[str],
    dest: Path,
    fmt: Literal["parquet", "csv"],
    include_quarantine: bool = False,
) -> dict[str, int]:
    """Write a person's rows, one file per dataset (and per quarantined dataset), to ``dest``;
    return the row counts by file name."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}

    def write(frame: pl.DataFrame, name: str) -> None:
        path = dest / f"{name}.{fmt}"
        if fmt == "csv":
            flat = frame.with_columns(
                pl.col(c).cast(pl.List(pl.String)).list.join(";")
                for c, t in frame.schema.items()
                if isinstance(t, pl.List)
            )
            flat.write_csv(path)
        else:
            frame.write_parquet(path)
        counts[path.name] = frame.height

    for name, frame in rows_holding(restricted, policy, pseudonyms).items():
        write(frame, name)
    if include_quarantine:
        found: dict[str, list[pl.DataFrame]] = {}
        for f in quarantine_files(out):
            frame = pl.read_parquet(f)
            hits = quarantine_hits(frame, pseudonyms, keyring, policy)
            if hits.any():
                found.setdefault(f.parent.name, []).append(frame.filter(hits))
        for dataset, frames in found.items():
            write(pl.concat(frames, how="diagonal_relaxed"), f"quarantine-{dataset}")
    return counts
