"""The privacy gate: nothing is published unless the staged outputs are shown to be clean.

While reading, the pipeline keeps the *canaries* of every distinct raw Personal Data value it
saw: the forms each value may take in an output, as keyed hashes (``anonymize.canaries``: whole
addresses, phone digits, decoded emails, word sequences, the whole value). ``scan`` reads staged
Parquet files, their key-value metadata and their partition paths, and looks, in each distinct
value, for:

- every canary form, matched the way its kind appears (never as a bare substring);
- detectors, on the value and on it percent-decoded: email addresses, SIP/tel URIs, phone
  numbers (validated with ``phonenumbers``), full IPv4 and IPv6 addresses (a network such as
  ``192.0.2.0/24`` is fine), MAC addresses, payment card numbers with a valid Luhn digit;
- columns that must hold pseudonyms holding anything else.

A run first ``withhold``s: the rows of the restricted datasets that hold a finding go to the
quarantine and the rest is published, unless they are more than ``gate.max_withheld_share`` of
a dataset (systemic). Then ``run_gate`` scans the shareable outputs and re-checks the disclosure
rules (k per cell, record-level k-anonymity, unicity, joinability across recipients): any
finding there refuses the release. Python runs on the unique values of a column only. A finding
names the area, dataset, column, detector and row count, never the value.

Examples
--------
>>> luhn_ok("4111111111111111"), luhn_ok("4111111111111112")
(True, False)
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import phonenumbers
import polars as pl
import pyarrow.parquet as pq

from anonymize import datasheet
from anonymize.canaries import Canaries, canary_key, collect
from anonymize.errors import ContractError, InputError
from anonymize.keys import KeyRing
from anonymize.layout import CANARIES, PARQUET_OPTIONS, discover, scan_partitions
from anonymize.policy import Policy
from anonymize.releases import pseudonym_columns
from anonymize.sources import open_source
from anonymize.stage import canary_columns
from anonymize.web import decode_fully

PSEUDONYM = r"^[a-z]-[a-p]{32}$"

_EMAIL = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}"
_SIP = r"(?i)\b(?:sips?|tel):[^\s]+"
_MAC = r"(?i)\b[0-9a-f]{2}(?:[-:][0-9a-f]{2}){5}\b"
_IPV4 = r"\b\d{1,3}(?:\.\d{1,3}){3}\b(?:/\d{1,2})?"
_IPV6 = r"(?i)(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?:/\d{1,3})?"
# Phone numbers as people write them: international (+...), or US / UK national shapes. Bare
# digit runs and dotted versions (16.0.5215.1000) are not taken for phones.
_PHONE = (
    r"\+\d[\d \-().]{6,20}\d"
    r"|\(?\b\d{3}\)?[ \-.]\d{3}[ \-.]\d{4}\b"
    r"|\b0\d{2,4}[ \-]\d{3,4}[ \-]?\d{3,4}\b"
)


@dataclass(frozen=True)
class Finding:
    """Something the gate found. Never holds the value itself."""

    area: str  # restricted, shareable, metadata, path
    dataset: str
    column: str
    detector: str
    rows: int

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.area}/{self.dataset}.{self.column}: {self.detector} ({self.rows} row(s))"


# --- canaries ---------------------------------------------------------------------------------


def load_canaries(staging: Path, key: bytes) -> Canaries:
    """The canaries the run's files left in its staging area (hashed forms, no raw value)."""
    files = sorted((Path(staging) / CANARIES).rglob("*.parquet"))
    if not files:
        return Canaries(key)
    table = pl.concat([pl.read_parquet(f) for f in files]).unique(subset="h", keep="first")
    return Canaries(key, table.sort("h"))


# --- detectors on unique values ------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    """True when a 13-19 digit number has a valid Luhn check digit."""
    if not 13 <= len(digits) <= 19 or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _has_full_ip(value: str) -> bool:
    for m in re.finditer(_IPV4, value):
        if "/" not in m.group(0):
            try:
                ipaddress.IPv4Address(m.group(0))
                return True
            except ValueError:
                pass
    for m in re.finditer(_IPV6, value):
        token = m.group(0)
        if "/" in token or token.count(":") < 2 or len(token.replace(":", "")) < 2:
            continue
        try:
            ipaddress.IPv6Address(token)
            return True
        except ValueError:
            pass
    return False


def _has_phone(value: str) -> bool:
    text = re.sub(_IPV4, " ", value)  # addresses and networks are not phone numbers
    for m in re.finditer(_PHONE, text):
        cand = m.group(0)
        for region in ("US", "GB"):
            try:
                num = phonenumbers.parse(cand, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(num):
                return True
    return False


def _has_card(value: str) -> bool:
    return any(
        luhn_ok(re.sub(r"\D", "", m.group(0))) for m in re.finditer(r"\d[\d \-]{11,22}\d", value)
    )


DETECTORS = {
    "email": lambda s: bool(re.search(_EMAIL, s)),
    "sip_or_tel_uri": lambda s: bool(re.search(_SIP, s)),
    "ip_address": _has_full_ip,
    "mac_address": lambda s: bool(re.search(_MAC, s)),
    "card_number": _has_card,
    "phone_number": _has_phone,
}
# A cheap vectorised pre-filter: only values that could match go through Python.
_PREFILTER = (
    r"@|%|(?i:sips?:|tel:)|\d{3}|[0-9a-fA-F]{1,4}:[0-9a-fA-F]{0,4}:"
    r"|[0-9a-fA-F]{2}[-:][0-9a-fA-F]{2}[-:]"
)


def detect(value: str) -> list[str]:
    """The detectors that fire on a value, or on the value percent-decoded (an email encoded
    once or twice is still an email)."""
    texts = [value]
    decoded = decode_fully(value)
    if decoded != value:
        texts.append(decoded)
    return [name for name, test in DETECTORS.items() if any(test(t) for t in texts)]


def classify(
    values: list[str], canaries: Canaries | None, free_text: bool = False
) -> list[list[str]]:
    """For each distinct output value, what makes it a finding (``canary:<kind>`` first, then
    the detectors' names); empty when nothing. Python runs once per distinct value.
    ``free_text``: the values of a free-text output of the web (see ``anonymize.canaries``)."""
    hits = canaries.matches(values, free_text) if canaries is not None else [None] * len(values)
    maybe = pl.Series(values, dtype=pl.String).str.contains(_PREFILTER).to_list()
    out: list[list[str]] = []
    for v, hit, m in zip(values, hits, maybe, strict=True):
        out.append(([f"canary:{hit}"] if hit else []) + (detect(v) if m else []))
    return out


def scan_values(
    values: pl.Series,
    canaries: Canaries | None,
    pseudonyms_only: bool = False,
    free_text: bool = False,
) -> dict[str, int]:
    """Detector and canary hits in one column's values: {detector: rows}. Values never leave."""
    s = values.cast(pl.String) if values.dtype != pl.String else values
    s = s.drop_nulls()
    if not s.len():
        return {}
    counts = s.value_counts(name="__n")
    uniq, n = counts[s.name], counts["__n"]
    hits: dict[str, int] = {}
    if pseudonyms_only:
        bad = ~uniq.str.contains(PSEUDONYM)
        if bad.any():
            hits["not_a_pseudonym"] = int(n.filter(bad).sum())
        return hits
    found_all = classify(uniq.to_list(), canaries, free_text)
    for found, c in zip(found_all, n.to_list(), strict=True):
        for what in found:
            hits[what] = hits.get(what, 0) + int(c)
    return hits


# --- the scan -----------------------------------------------------------------------------------


# Metadata the pipeline computes itself as hex digests (canaries still apply to the others).
_OWN_META = {b"ARROW:schema", b"cdranon.policy_hash", b"cdranon.inputs_digest", b"cdranon.key_id"}
Tag = tuple[str, str, str]  # area, dataset, column


def _dataset_of(rel: Path) -> tuple[str, str]:
    """(area, dataset) of a staged file path relative to the staging or output root."""
    parts = rel.parts
    if parts[0] == "shareable":  # <release>/<dataset>, or <release>/<tenant>/<dataset>
        end = next(i for i, p in enumerate(parts) if p.startswith("date="))
        return "shareable", "/".join(parts[1:end])
    return parts[0], parts[1]


def staged_files(root: Path, areas: tuple[str, ...] = ("restricted", "shareable")) -> list[Path]:
    """Every Parquet file of the areas: restricted datasets, releases' datasets and tenant
    releases' (one folder deeper, per tenant)."""
    globs = {"restricted": ["restricted/*/date=*/region=*/*.parquet"],
             "shareable": ["shareable/*/*/date=*/region=*/*.parquet",
                           "shareable/*/*/*/date=*/region=*/*.parquet"]}  # fmt: skip
    return sorted(f for a in areas for g in globs[a] for f in Path(root).glob(g))


def free_text_columns(policy) -> frozenset[str]:
    """The outputs made from web free text (path templates, queries, referer sites, user-agent
    families): where unknown single words are looked for too. Statistics keep their names."""
    ops = ("url_template", "url_host", "user_agent")
    return frozenset(
        r.output for ds in policy.datasets.values() for r in ds.rules if r.spec.name in ops
    )


def _document_lines(root: Path) -> list[str]:
    """The lines of the release datasheets under ``root``, with the pipeline's own hex digests
    (key ids, policy hash, inputs digest, as the JSON states them) taken out."""
    lines: list[str] = []
    for f in datasheet.documents(root):
        text = f.read_text(encoding="utf-8", errors="replace")
        try:
            doc = json.loads((f.parent / f"{datasheet.DATASHEET}.json").read_text())
            own = [doc.get("key_id"), doc.get("inputs_digest"), doc.get("policy", {}).get("sha256")]
        except (OSError, ValueError, AttributeError):
            own = []
        for digest in filter(None, own):
            text = text.replace(str(digest), "<digest>")
        lines += [line.strip() for line in text.splitlines() if line.strip()]
    return lines


def scan(
    root: Path,
    canaries: Canaries | None,
    pseudonym_columns: dict[str, list[str]],
    areas: tuple[str, ...] = ("restricted", "shareable"),
    bad_values: dict[Tag, dict[str, str]] | None = None,
    free_text: frozenset[str] = frozenset(),
) -> list[Finding]:
    """Scan every Parquet file of ``areas`` under ``root``, its metadata and its partition path.

    ``pseudonym_columns`` maps a dataset name to its columns that must hold pseudonyms only
    (for shareable event datasets too). Returns the findings, empty when clean. When
    ``bad_values`` is given, it receives, per (area, dataset, column), the offending values and
    what was found in each (kept in memory only, to withhold the rows that hold them).
    """
    root = Path(root)
    files = staged_files(root, areas)
    by_dataset: dict[tuple[str, str], list[Path]] = {}
    findings: list[Finding] = []
    path_values: list[str] = []
    meta_values: list[str] = []
    for f in files:
        rel = f.relative_to(root)
        by_dataset.setdefault(_dataset_of(rel), []).append(f)
        path_values += list(rel.parts[:-1])
        # The file's key-value metadata (where polars writes it), the Arrow schema's, and each
        # field's (the data dictionary: description, unit, treatment).
        arrow = pq.read_schema(f)
        meta = {**(arrow.metadata or {}), **(pq.read_metadata(f).metadata or {})}
        meta_values += [v.decode("utf-8", "replace") for k, v in meta.items() if k not in _OWN_META]
        meta_values += [
            v.decode("utf-8", "replace") for field in arrow for v in (field.metadata or {}).values()
        ]
    doc_values = _document_lines(root) if "shareable" in areas else []
    # Every (dataset, column)'s distinct values with their row counts, in one frame, so each
    # distinct value meets the canaries and detectors once.
    tags: list[Tag] = []
    queries: list[pl.LazyFrame] = []
    pseudo_queries: list[tuple[str, str, list[str], pl.LazyFrame]] = []
    for (area, dataset), paths in sorted(by_dataset.items()):
        lf = scan_partitions(paths, hive=False)
        schema = lf.collect_schema()
        cols = [c for c, t in schema.items() if t == pl.String or t == pl.List(pl.String)]
        base = dataset.split("/")[-1]
        pcols = [c for c in cols if c in pseudonym_columns.get(base, [])]
        if pcols:  # rows of each pseudonym column that are not pseudonyms, by value
            for col in pcols:
                bad = lf.select(pl.col(col).alias("v")).drop_nulls()
                bad = bad.filter(~pl.col("v").str.contains(PSEUDONYM)).group_by("v").len(name="n")
                pseudo_queries.append((area, dataset, [col], bad))
        for col in cols:
            if col in pcols:
                continue
            expr = pl.col(col).explode() if schema[col] == pl.List(pl.String) else pl.col(col)
            tags.append((area, dataset, col))
            tag = pl.lit(len(tags) - 1, dtype=pl.Int32).alias("t")
            queries.append(
                lf.select(expr.alias("v")).drop_nulls().group_by("v").len(name="n")
                .with_columns(tag)
            )  # fmt: skip
    # Every query at once: polars runs them in parallel, each file read once per query.
    results = pl.collect_all([q for *_, q in pseudo_queries] + queries)
    for (area, dataset, (col,), _), bad in zip(pseudo_queries, results, strict=False):
        if bad.height:
            findings.append(Finding(area, dataset, col, "not_a_pseudonym", int(bad["n"].sum())))
            if bad_values is not None:
                bad_values.setdefault((area, dataset, col), {}).update(
                    dict.fromkeys(bad["v"].to_list(), "not_a_pseudonym")
                )
    pieces = [r for r in results[len(pseudo_queries) :] if r.height]
    for area, values in (("path", path_values), ("metadata", meta_values),
                         ("datasheet", doc_values)):  # fmt: skip
        if values:
            tags.append((area, "*", "*"))
            frame = pl.DataFrame({"v": sorted(set(values))}, schema={"v": pl.String})
            tag = pl.lit(len(tags) - 1, dtype=pl.Int32).alias("t")
            pieces.append(frame.with_columns(pl.lit(1, dtype=pl.UInt32).alias("n"), tag))
    if not pieces:
        return findings
    allv = pl.concat(pieces, how="vertical_relaxed")
    uniq = allv["v"].unique().sort().to_list()
    found = {v: w for v, w in zip(uniq, classify(uniq, canaries), strict=True) if w}
    # Unknown single words, in the free-text outputs only.
    free_tags = [i for i, (_, _, col) in enumerate(tags) if col in free_text]
    free_found: dict[str, list[str]] = {}
    if free_tags and canaries is not None:
        free_v = allv.filter(pl.col("t").is_in(free_tags))["v"].unique().sort().to_list()
        hits_x = canaries.matches(free_v, free_text=True)
        free_found = {v: [f"canary:{h}"] for v, h in zip(free_v, hits_x, strict=True) if h}
    hits: dict[tuple[int, str], int] = {}
    if found or free_found:
        flagged = allv.filter(
            pl.col("v").is_in(pl.Series([*found, *free_found], dtype=pl.String).implode())
        )
        for v, n, t in flagged.iter_rows():
            what_all = found.get(v) or (free_found.get(v) if t in free_tags else None)
            if not what_all:
                continue
            for what in what_all:
                detector = "canary" if what.startswith("canary:") else what
                hits[(t, detector)] = hits.get((t, detector), 0) + int(n)
            if bad_values is not None:
                bad_values.setdefault(tags[t], {})[v] = what_all[0]
    for (t, detector), n in sorted(hits.items()):
        area, dataset, col = tags[t]
        findings.append(Finding(area, dataset, col, detector, n))
    return findings


# --- withholding rows ---------------------------------------------------------------------------


def withhold(
    staging: Path, quarantine: Path, canaries: Canaries, policy, results: list[dict]
) -> dict:
    """Move the rows of the staged restricted datasets that carry a finding to the quarantine.

    Each such row goes to ``quarantine/<dataset>/gate-<part>.parquet`` with the reason
    ``gate:<detector>`` and the column; its input file's counts move from published to
    quarantined (``results`` is updated in place), so every row still ends in one place. A
    dataset with more than ``policy.gate.max_withheld_share`` of its rows withheld has a
    systemic finding: those findings come back under ``"systemic"`` and refuse the release.
    Returns the manifest's ``withheld`` entry: rows by dataset, column and detector; no value.
    """
    staging, quarantine = Path(staging), Path(quarantine)
    pseudo = {name: pseudonym_columns(policy, name) for name in policy.datasets}
    bad: dict[Tag, dict[str, str]] = {}
    findings = scan(staging, canaries, pseudo, areas=("restricted",), bad_values=bad,
                    free_text=free_text_columns(policy))  # fmt: skip
    by_dataset: dict[str, dict[str, dict[str, str]]] = {}
    for (area, dataset, col), values in bad.items():
        if area == "restricted":
            by_dataset.setdefault(dataset, {})[col] = values
    by_tag = {r["sha256"][:16]: r for r in results if r.get("sha256")}
    # A partition path or a file's metadata cannot be withheld row by row: it refuses the run.
    entry: dict = {"rows": {}, "systemic": [
        f.to_dict() for f in findings if f.area in ("path", "metadata")
    ]}  # fmt: skip
    for dataset, columns in sorted(by_dataset.items()):
        total = withheld = 0
        counts: dict[str, dict[str, int]] = {}
        for part in sorted((staging / "restricted" / dataset).glob("date=*/region=*/*.parquet")):
            frame = pl.read_parquet(part)
            total += frame.height
            reason = _withheld_reason(frame, columns)
            mask = reason.is_not_null()
            n = int(mask.sum())
            if not n:
                continue
            withheld += n
            why = reason.filter(mask).str.split_exact("|", 1)
            out = frame.filter(mask).with_columns(
                ("gate:" + why.struct.field("field_1")).alias("_reason"),
                why.struct.field("field_0").alias("_column"),
            )
            tag = part.stem.removeprefix("part-")
            where = f"{part.parent.parent.name}-{part.parent.name}"
            target = quarantine / dataset / f"gate-{tag}-{where}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            out.write_parquet(target, compression="zstd")
            kept = frame.filter(~mask)
            if kept.height:
                meta = pq.read_metadata(part).metadata or {}
                kv = {k.decode(): v.decode() for k, v in meta.items() if k != b"ARROW:schema"}
                fields = pq.read_schema(part).remove_metadata()  # the data dictionary
                kept.write_parquet(part, metadata=kv, arrow_schema=fields, **PARQUET_OPTIONS)
            else:
                part.unlink()
                with contextlib.suppress(OSError):  # a partition left with no rows
                    part.parent.rmdir()
                    part.parent.parent.rmdir()
            result = by_tag.get(tag.split("-", 1)[0])
            for col, det, c in out.group_by("_column", "_reason").len().iter_rows():
                per = counts.setdefault(col, {})
                per[det] = per.get(det, 0) + c
                if result is not None:
                    result["rows_quarantined"][det] = result["rows_quarantined"].get(det, 0) + c
                    result["rows_published"] -= c
        if withheld:
            share = withheld / total if total else 1.0
            entry["rows"][dataset] = {"rows": withheld, "of": total, "share": round(share, 6),
                                      "columns": counts}  # fmt: skip
            if share > policy.gate.max_withheld_share:
                for f in findings:
                    if f.dataset == dataset:
                        entry["systemic"].append(
                            {**f.to_dict(), "detector": f"systemic:{f.detector}"}
                        )
    return entry


def _withheld_reason(frame: pl.DataFrame, columns: dict[str, dict[str, str]]) -> pl.Series:
    """Per row, ``column|detector`` of the first column holding an offending value, or null."""
    exprs = []
    for col, values in sorted(columns.items()):
        if col not in frame.columns:
            continue
        table = pl.DataFrame(
            {"v": list(values), "why": [f"{col}|{w.split(':', 1)[0]}" for w in values.values()]},
            schema={"v": pl.String, "why": pl.String},
        )
        if frame.schema[col] == pl.List(pl.String):
            hit = pl.col(col).list.eval(pl.element().is_in(table["v"].implode())).list.any()
            first_why = table["why"][0]
            exprs.append(pl.when(hit).then(pl.lit(first_why)))
        else:
            mapping = dict(zip(table["v"].to_list(), table["why"].to_list(), strict=True))
            exprs.append(
                pl.col(col).cast(pl.String).replace_strict(mapping, default=None,
                                                           return_dtype=pl.String)
            )  # fmt: skip
    if not exprs:
        return pl.Series("r", [None] * frame.height, dtype=pl.String)
    return frame.select(pl.coalesce(exprs).alias("r")).to_series()


def run_gate(staging: Path, policy, key: bytes, withheld: dict | None = None) -> dict:
    """Scan a run's staging area; the manifest's ``gate`` entry (verdict, findings, counts).

    Runs after ``withhold``, which scanned the restricted datasets (their values, metadata and
    paths) and took out every row that held a finding: this scans the shareable outputs, and any
    finding there, and any systemic or path/metadata finding of ``withheld``, refuses the
    release. Without ``withheld`` (an audit of a staging area) it scans both areas.
    """
    t = time.perf_counter()
    canaries = load_canaries(staging, key)
    pseudo = {name: pseudonym_columns(policy, name) for name in policy.datasets}
    areas = ("shareable",) if withheld is not None else ("restricted", "shareable")
    findings = scan(staging, canaries, pseudo, areas=areas, free_text=free_text_columns(policy))
    findings += [Finding(**f) for f in (withheld or {}).get("systemic", [])]
    # Unicity of the event datasets a release lets out, against the release's threshold.
    checks = []
    released: dict[str, list[tuple[str, pl.DataFrame, list[str]]]] = {}
    for name, spec in policy.releases.items():
        for dataset in spec.events:
            files = sorted((Path(staging) / "shareable" / name / dataset).rglob("*.parquet"))
            if not files:
                continue
            frame = pl.read_parquet(files, hive_partitioning=True)
            cols = [
                c
                for c in pseudonym_columns(policy, dataset)
                if frame[c].null_count() < frame.height
            ]
            released.setdefault(dataset, []).append((name, frame, cols))
            check, found = _record_level_checks(name, dataset, spec, frame, cols)
            checks.append(check)
            findings += found
        # Every published statistic cell has at least k people (re-checked on the files).
        # (In a tenant release, the statistics of every tenant's folder.)
        folders = (
            sorted(p for p in (Path(staging) / "shareable" / name).glob("*") if p.is_dir())
            if spec.kind == "tenant"
            else [Path(staging) / "shareable" / name]
        )
        for folder, stat in ((f, s) for f in folders for s in spec.statistics):
            files = sorted((folder / stat).rglob("*.parquet"))
            if files:
                small = pl.scan_parquet(files).filter(pl.col("people") < spec.k).select(pl.len())
                n = small.collect().item()
                if n:
                    where = folder.relative_to(Path(staging) / "shareable").as_posix()
                    findings.append(Finding("shareable", f"{where}/{stat}", "people", "below_k", n))
    findings += _cross_recipient_joins(released, policy)
    # For the report: why restricted events are not shareable as they are (on the latest day
    # of sessions, which bounds the cost whatever the size of the run).
    days = sorted((Path(staging) / "restricted" / "lync_sessions").glob("date=*"))
    sessions = sorted(days[-1].rglob("*.parquet")) if days else []
    curve: dict[int, float] = {}
    if sessions:
        frame = (
            pl.scan_parquet(sessions, hive_partitioning=True)
            .select("from_user", "session_hour", "region")
            .collect()
        )
        curve = unicity(frame, "from_user", ["session_hour", "region"])
    return {
        "verdict": "refused" if findings else "pass",
        "findings": [f.to_dict() for f in findings],
        "canaries": canaries.height,
        "withheld": (withheld or {}).get("rows", {}),
        "unicity_checks": checks,
        "seconds": round(time.perf_counter() - t, 3),
        "volumes": volumes(staging),
        "unicity": curve,
    }


# --- disclosure checks ---------------------------------------------------------------------


def _quasi_identifiers(frame: pl.DataFrame, pseudonyms: list[str]) -> pl.DataFrame:
    """Every released column but the pseudonyms, as released (numbers binned as published,
    lists as text): what a recipient can match records on."""
    qis = [c for c in frame.columns if c not in pseudonyms]
    return frame.select(
        pl.col(c).cast(pl.List(pl.String)).list.join(",") if isinstance(t, pl.List) else pl.col(c)
        for c, t in frame.select(qis).schema.items()
    )


def _record_level_checks(
    name: str, dataset: str, spec, frame: pl.DataFrame, pseudonyms: list[str]
) -> tuple[dict, list[Finding]]:
    """k-anonymity over every released column (numbers too), and, when the release keeps
    pseudonyms, unicity (people singled out by up to 4 of their own hour-and-region points)."""
    findings = []
    qi = _quasi_identifiers(frame, pseudonyms)
    sizes = qi.group_by(qi.columns).len()
    unsafe = int(sizes.filter(pl.col("len") < spec.k)["len"].sum())
    share = round(unsafe / frame.height, 4) if frame.height else 0.0
    curve: dict[int, float] = {}
    if pseudonyms:
        time_col = next((c for c, t in frame.schema.items() if isinstance(t, pl.Datetime)), None)
        person = next((c for c in ("from_user", "user", "organizer") if c in pseudonyms),
                      pseudonyms[0])  # fmt: skip
        curve = unicity(frame, person, [c for c in (time_col, "region") if c])
        if max(curve.values(), default=0.0) > spec.max_unicity:
            findings.append(Finding("shareable", f"{name}/{dataset}", person, "unicity",
                                    frame.height))  # fmt: skip
    if share > spec.max_share_below_k:
        findings.append(Finding("shareable", f"{name}/{dataset}", "*", "k_anonymity", unsafe))
    check = {
        "release": name, "dataset": dataset, "scope": spec.events[dataset], "unicity": curve,
        "max_unicity": spec.max_unicity, "quasi_identifiers": qi.columns,
        "share_below_k": share, "max_share_below_k": spec.max_share_below_k,
    }  # fmt: skip
    return check, findings


def _cross_recipient_joins(
    released: dict[str, list[tuple[str, pl.DataFrame, list[str]]]], policy
) -> list[Finding]:
    """Two recipients of the same event data, each with pseudonyms of their own: a row unique
    on its other columns is in both releases, so joining them on those columns links the two
    recipients' pseudonyms. Refused unless the linkable share is within every release's
    ``max_linkable_share``."""
    findings = []
    for dataset, got in sorted(released.items()):
        keyed = [(n, f, c) for n, f, c in got if c]
        if len(keyed) < 2:
            continue
        _, frame, cols = keyed[0]
        qi = _quasi_identifiers(frame, cols)
        unique = qi.group_by(qi.columns).len().filter(pl.col("len") == 1).height
        share = unique / frame.height if frame.height else 0.0
        limit = min(policy.releases[n].max_linkable_share for n, _, _ in keyed)
        if share > limit:
            names = "+".join(sorted(n for n, _, _ in keyed))
            findings.append(Finding("shareable", f"{names}/{dataset}", "*", "joinable", unique))
    return findings


def unicity(
    frame: pl.DataFrame, person: str, points: list[str], p_max: int = 4, sample: int = 500,
    seed: int = 0,
) -> dict[int, float]:  # fmt: skip
    """Share of people singled out by ``p`` random points of their own, p = 1..``p_max``.

    As in de Montjoye et al. (2013): for each sampled person with at least ``p`` distinct points
    (here a point is a combination of the ``points`` columns, e.g. hour and region), draw ``p`` of
    their points and check whether anyone else has all of them. Python runs over the sampled
    people's point sets only.

    >>> f = pl.DataFrame({"u": ["a", "b", "c", "c"], "h": [1, 1, 2, 3]})
    >>> unicity(f, "u", ["h"], p_max=2)
    {1: 0.3333, 2: 1.0}
    """
    import random

    keyed = (
        frame.lazy()
        .select(
            pl.col(person),
            pl.struct([pl.col(c) for c in points]).hash(11).alias("__pt"),
        )
        .drop_nulls()
        .unique()
    )
    everyone = keyed.select(pl.col(person).unique().sort()).collect()[person]
    if not everyone.len():
        return {}
    rng = random.Random(seed)
    chosen_list = everyone.to_list()
    if len(chosen_list) > sample:
        chosen_list = sorted(rng.sample(chosen_list, sample))
    # Only the sampled people's points, and everyone who shares one of them, reach Python.
    mine = keyed.filter(pl.col(person).is_in(pl.Series(chosen_list).implode()))
    shared = keyed.join(mine.select("__pt").unique(), on="__pt", how="semi").with_columns(
        pl.col(person).rank("dense").cast(pl.UInt32).alias("__code")  # ints, not strings
    )
    by_point = {
        pt: set(codes)
        for pt, codes in shared.group_by("__pt").agg(pl.col("__code")).collect().iter_rows()
    }
    by_person: dict[int, list[int]] = {}
    chosen_rows = shared.filter(pl.col(person).is_in(pl.Series(chosen_list).implode()))
    for code, pt in (
        chosen_rows.select("__code", "__pt").sort("__code", "__pt").collect().iter_rows()
    ):
        by_person.setdefault(code, []).append(pt)
    chosen = sorted(by_person)
    out = {}
    for p in range(1, p_max + 1):
        eligible = [u for u in chosen if len(by_person[u]) >= p]
        if not eligible:
            break
        unique = 0
        for u in eligible:
            pts = rng.sample(sorted(by_person[u]), p)
            others = set.intersection(*(by_point[pt] for pt in pts))
            unique += others == {u}
        out[p] = round(unique / len(eligible), 4)
    return out


def volumes(root: Path) -> list[dict]:
    """Rows per dataset and date in the staged restricted datasets (from Parquet footers)."""
    counts: dict[tuple[str, str], int] = {}
    for f in Path(root).glob("restricted/*/date=*/region=*/*.parquet"):
        key = (f.parts[-4], f.parts[-3].removeprefix("date="))
        counts[key] = counts.get(key, 0) + pq.ParquetFile(f).metadata.num_rows
    return [{"dataset": d, "date": day, "rows": n} for (d, day), n in sorted(counts.items())]


def canaries_from_landing(
    landing: Path, policy, key: bytes | None = None
) -> tuple[Canaries, list[str]]:
    """Canaries of every readable file of a landing zone (for an audit after the fact).

    Hashed under ``key`` (a fresh random key by default: the audit matches them in the same
    process). Returns the canaries and the relative paths of the files that could not be read.
    """
    canaries = Canaries(key or os.urandom(32))
    vocab = policy.web_vocabulary
    frames, unreadable = [], []
    for path, family in discover(Path(landing)):
        try:
            source = open_source(Path(path), family)
            cols = canary_columns(source.contract, policy.dataset_for(source.contract))
            for batch in source.reader.batches(policy.batch_rows):
                frames.append(collect(batch.frame, cols, canaries, vocab))
        except (OSError, InputError, ContractError):
            unreadable.append(Path(path).relative_to(landing).as_posix())
    if frames:
        canaries.table = pl.concat(frames).unique(subset="h", keep="first").sort("h")
    return canaries, unreadable


def withhold_findings(
    staging: Path, quarantine: Path, policy: Policy, keyring: KeyRing, results: list[dict]
) -> dict:
    """Before the releases: rows of the staged restricted datasets that carry a canary or a
    detector hit go to the quarantine (``results`` updated in place); see ``withhold``."""
    canaries = load_canaries(staging, canary_key(keyring))
    return withhold(staging, quarantine, canaries, policy, results)
