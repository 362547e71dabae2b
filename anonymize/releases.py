"""Releases: what leaves the house, per recipient, computed from the staged datasets.

Statistics with the person as the protected unit, suppression of small cells, optional
differential privacy, and re-keyed event datasets. The statistics themselves are defined in
``anonymize.statistics``.

A release (declared in the policy) names a recipient, the statistics it receives, their time
granularity, ``k``, optional differential privacy, and the event-level datasets it may receive
with their pseudonym scope. ``stage_release`` computes it from the run's staged ``restricted/``
datasets into ``shareable/<release>/...`` in the staging area; the run publishes it with the rest.

Disclosure control
------------------
- **k distinct people.** A cell is published only when at least ``k`` distinct people contribute
  to it: 200 calls by two people is a cell of two, and is suppressed. The people of a session are
  its caller (the client, outcome and route describe the caller's side); of a meeting, its
  participants; of a web request, the signed-in user, else a visitor fingerprint that never
  splits a person (no site, the first public network of a proxy chain, no network for phones,
  the anonymous requests of a signed-in user's fingerprint are theirs), hashed under a key of
  that day alone and never stored.
- **Dominance.** A cell of minutes where the ``n`` people who give the most give more than
  ``max_share`` of the total is suppressed too ((1, 70 %) and (2, 85 %) by default).
- **Differencing.** A suppressed cell is never published, and the only margins published
  (``<statistic>_totals``, per date, hour if any, and region) are computed from the published
  cells alone. Every margin therefore equals the sum of its published cells: subtracting
  published numbers from each other yields published numbers, never a suppressed cell (the
  FlowKit hole, a total of 50 next to published parts of 45, cannot occur). The price: a margin
  undercounts by the suppressed cells, and says so in its column ``covers``.
- **Differential privacy** (optional, OpenDP). Each person's rows are bounded per statistic
  (``max_rows_per_person``, minutes clipped to ``max_minutes``), every measure gets Laplace
  noise calibrated to that bound and its share of epsilon, and the k threshold is applied to the
  noisy people count. The epsilon spent and the expected accuracy (95 % bound on the absolute
  error of each measure) go into the manifest.

Pseudonyms of event-level datasets are re-keyed per recipient and scope (``day``, ``month``,
``stable``; ``none`` removes them), with keys derived for the recipient, so two recipients cannot
join their data on pseudonyms and a monthly scope changes every pseudonym at the month boundary.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from anonymize.contracts import load_output_schema
from anonymize.dictionary import (
    Entry,
    arrow_schema,
    event_entries,
    statistic_entries,
    tenant_table_entries,
)
from anonymize.identifiers import pseudonym
from anonymize.keys import KeyRing
from anonymize.layout import PARQUET_OPTIONS, SHAREABLE, scan_partitions
from anonymize.operators import Memo, map_unique
from anonymize.perturbation import (
    KeyedStream,
    PTable,
    as_unit,
    magnitude_key,
    people_key,
    rational_scale,
    record_key,
)
from anonymize.policy import DominanceRule, Policy, ReleaseSpec
from anonymize.statistics import OWNER, PERSON, STATISTICS, Statistic
from anonymize.tenants import (
    CONNECT_ROOMS,
    USER_ACTIVITY,
    connect_rooms,
    tenant_people,
    tenant_view,
    user_activity,
)


@dataclass
class StatReport:
    cells: int = 0
    published: int = 0
    suppressed: int = 0
    suppressed_rows: int = 0
    dominated: int = 0
    dp: dict | None = None
    perturbation: dict | None = None

    def to_dict(self) -> dict:
        out = {
            "cells": self.cells,
            "published": self.published,
            "suppressed": self.suppressed,
            "suppressed_measure_total": self.suppressed_rows,
            "suppressed_dominance": self.dominated,
        }
        if self.dp:
            out["dp"] = self.dp
        if self.perturbation:
            out["perturbation"] = self.perturbation
        return out


def _visitor_ids(frame: pl.DataFrame, column: str, keyring: KeyRing) -> pl.DataFrame:
    """Replace a visitor fingerprint by a keyed hash under a key of that day alone."""
    out = []
    for (day,), part in frame.partition_by("date", as_dict=True, maintain_order=True).items():
        key = keyring.derive(f"visitors/{day}")
        uniq = part[column].drop_nulls().unique()
        hashed = [hmac.new(key, v.encode(), hashlib.sha256).hexdigest()[:32] for v in uniq]
        mapping = pl.DataFrame(
            {column: uniq, "__v": hashed}, schema={column: pl.String, "__v": pl.String}
        )
        out.append(part.join(mapping, on=column, how="left").drop(column).rename({"__v": column}))
    return pl.concat(out) if out else frame


def _bound(frame: pl.DataFrame, who: str, keys: list[str], limit: int, period: str) -> pl.DataFrame:
    """Keep at most ``limit`` rows per person and accounting period (``week`` or ``month``).

    The rows kept are the person's earliest in the period (by day, then by a hash of the row):
    a new day never changes which rows of the earlier days are kept, so publishing a period
    day by day spends the person's bound once.
    """
    h = pl.concat_str([pl.col(c).cast(pl.String).fill_null("") for c in keys]).hash(7)
    every = "1w" if period == "week" else "1mo"
    return (
        frame.with_columns(h.alias("__h"), pl.col("date").dt.truncate(every).alias("__period"))
        .sort(["__period", who, "date", "__h"], nulls_last=True)
        .with_columns(pl.int_range(pl.len()).over(["__period", who]).alias("__n"))
        .filter(pl.col("__n") < limit)
        .drop("__h", "__n", "__period")
    )


PERIODS = {"week": "1w", "month": "1mo"}  # granularities of more than a day (polars' truncate)


def period_start(day: str, granularity: str) -> str:
    """The ``date`` key of a day's cell: the day itself, or the first day of its week (Monday)
    or month.

    >>> period_start("2026-11-26", "week"), period_start("2026-11-26", "month")
    ('2026-11-23', '2026-11-01')
    """
    d = date.fromisoformat(day)
    if granularity == "week":
        return (d - timedelta(days=d.weekday())).isoformat()
    if granularity == "month":
        return d.replace(day=1).isoformat()
    return day


def period_of(day: str, period: str) -> str:
    """The accounting period of an ISO day: ``2026-W48`` or ``2026-11``.

    >>> period_of("2026-11-30", "week"), period_of("2026-11-30", "month")
    ('2026-W49', '2026-11')
    """
    if period == "month":
        return day[:7]
    year, week, _ = date.fromisoformat(day).isocalendar()
    return f"{year}-W{week:02d}"


def dp_threshold(scale: float, bound: int, k: int, delta: float) -> int:
    """The threshold of the Laplace threshold mechanism on the people counts: the smallest one,
    at least ``k``, such that the mechanism's privacy map at one below it gives at most
    ``delta`` for a person counted once in up to ``bound`` cells.

    The existence of a cell says that someone is in it: only the threshold mechanism, which
    accounts that in delta, makes a published cell of one or two people improbable. The map of
    OpenDP 0.16 gives the probability that noise alone reaches the threshold; a cell that exists
    because of one person starts at 1, so the threshold is taken one higher (measured: a cell of
    one person shows at the rate delta, not above it).
    """
    import opendp.prelude as dp

    dp.enable_features("contrib")
    domain = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T=int))
    metric = dp.l01inf_distance(dp.absolute_distance(T=int))

    def within(threshold: int) -> bool:
        mech = dp.m.make_laplace_threshold(domain, metric, scale=scale, threshold=threshold - 1)
        return mech.map((bound, bound, 1))[1] <= delta

    lo, hi = max(k, 2), max(k, 2) * 2
    while not within(hi):
        lo, hi = hi, hi * 2
    while lo < hi:  # the smallest threshold within delta
        mid = (lo + hi) // 2
        if within(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def keyed_noise(key: bytes, seeds: list[str], scale: float) -> list[int]:
    """One discrete Laplace draw per seed, from a stream keyed by it: the same seed, the same
    noise (``perturbation.KeyedStream``)."""
    exact = rational_scale(scale)
    return [KeyedStream(key, seed).discrete_laplace(exact) for seed in seeds]


def dp_select(
    counts: list[int],
    scale: float,
    bound: int,
    k: int,
    delta: float,
    seeds: list[str],
    key: bytes,
) -> tuple[list[int | None], int]:
    """Noisy people counts of the cells that pass the Laplace threshold mechanism (None for
    the others), and its threshold (``dp_threshold``). The noise of each cell is keyed by its
    seed."""  # fmt: skip
    threshold = dp_threshold(scale, bound, k, delta)
    noise = keyed_noise(key, seeds, scale)
    noisy = [c + n for c, n in zip(counts, noise, strict=True)]
    return [v if v >= threshold else None for v in noisy], threshold


def _accuracy(scale: float, integer: bool) -> float:
    import opendp.prelude as dp

    if integer:
        return float(dp.discrete_laplacian_scale_to_accuracy(scale, 0.05))
    return float(dp.laplacian_scale_to_accuracy(scale, 0.05))


_FIXED = 1_000_000  # millionths: a float measure (minutes) is summed as an integer count of them


def _millionths(column: str) -> pl.Expr:
    """A float measure as an integer number of millionths (sums of these are exact)."""
    return (pl.col(column) * _FIXED).round().cast(pl.Int64)


def _total(column: str, dtype: pl.DataType) -> pl.Expr:
    """The sum of a measure, the same whatever the order of its rows.

    Polars sums in parallel, in any order, and float sums depend on it: a cell's minutes (and
    the perturbation keyed on them) would change from one rerun to the next. A float measure is
    summed as an integer number of millionths, exactly.
    """
    if dtype.is_float():
        return (_millionths(column).sum() / _FIXED).alias(column)
    return pl.col(column).sum()


def _dominated(
    facts: pl.LazyFrame, keys: list[str], rules: tuple[DominanceRule, ...]
) -> pl.DataFrame:
    """The cells (``keys``) where a dominance rule holds: the ``n`` people who give the most
    minutes give more than ``max_share`` of the cell's minutes."""
    per_person = (
        facts.group_by([*keys, OWNER])
        .agg(_millionths("minutes").sum().alias("__m"))  # exact sums, as in _total
        .with_columns(
            pl.col("__m").rank("ordinal", descending=True).over(keys).alias("__rank"),
            pl.col("__m").sum().over(keys).alias("__total"),
        )
    )
    tests = [
        (
            pl.col("__m").filter(pl.col("__rank") <= r.n).sum()
            > r.max_share * pl.col("__total").first()
        )
        for r in rules
    ]
    return (
        per_person.group_by(keys)
        .agg(pl.any_horizontal(tests).alias("__dominated"), pl.col("__total").first())
        .filter(pl.col("__dominated") & (pl.col("__total") > 0))
        .select([*keys, "__dominated"])
        .collect(engine="streaming")
    )


class _RecordKeys:
    """The two record keys of a person column, computed inside the query over the distinct
    values of each batch (``operators.map_unique``), each value hashed once per statistic."""

    def __init__(self, keyring: KeyRing) -> None:
        self._keys = (keyring.derive("cellkey/record/a"), keyring.derive("cellkey/record/b"))
        self._caches = (Memo(), Memo())

    def of(self, column: str) -> list[pl.Expr]:
        return [
            map_unique(pl.col(column), functools.partial(record_key, key), cache=cache,
                       return_dtype=pl.Int64()).alias(name)
            for name, key, cache in zip(("__ra", "__rb"), self._keys, self._caches, strict=True)
        ]  # fmt: skip


def _cells(
    facts: pl.LazyFrame,
    people: pl.LazyFrame,
    keys: list[str],
    measures: tuple[str, ...],
    rk: _RecordKeys,
) -> pl.DataFrame:
    """The true cells: the measures' sums, the people, and what perturbation needs (the
    largest person's contribution, the cell keys of the people and of each measure)."""
    schema = facts.collect_schema()
    per_owner = (
        facts.group_by([*keys, OWNER])
        .agg([_total(m, schema[m]) for m in measures])
        .with_columns(rk.of(OWNER))
    )
    by_measure = per_owner.group_by(keys).agg(
        *[_total(m, schema[m]) for m in measures],
        *[pl.col(m).max().alias(f"__max_{m}") for m in measures],
        *[magnitude_key(m).alias(f"__key_{m}") for m in measures],
    )
    by_people = (
        people.with_columns(rk.of(PERSON))
        .group_by(keys)
        .agg(pl.len().alias("people"), people_key().alias("__key_people"))
    )
    return (
        by_measure.join(by_people, on=keys, how="left", nulls_equal=True)
        .with_columns(pl.col("people").fill_null(0), pl.col("__key_people").fill_null(0))
        .sort(keys)
        .collect(engine="streaming")
    )


def _perturbed(cells: pl.DataFrame, measures: tuple[str, ...], spec, table: PTable) -> pl.DataFrame:
    """Cells with every count perturbed by the cell key method (``anonymize.perturbation``)."""
    out = [(pl.col("people") + table.lookup(as_unit(pl.col("__key_people")))).alias("people")]
    for i, m in enumerate(measures, start=1):
        v = table.lookup(as_unit(pl.col(f"__key_{m}"), i))
        largest = pl.col(f"__max_{m}").cast(pl.Float64).abs() * spec.magnitude_scale
        if m == "minutes":
            out.append((pl.col(m) + v * largest).clip(0).alias(m))
        else:
            unit = pl.max_horizontal(pl.lit(1.0), largest.round()).cast(pl.Int64)
            out.append((pl.col(m) + v * unit).clip(0).alias(m))
    return cells.with_columns(out)


def _noised(
    cells: pl.DataFrame, stat: str, keys: list[str], release: ReleaseSpec, keyring: KeyRing
) -> tuple[pl.DataFrame, dict]:
    """DP cells: the people counts through the keyed threshold mechanism, keyed Laplace noise
    on the other measures; and the manifest's ``dp`` entry."""
    settings = release.dp
    measures = [c for c in cells.columns if not c.startswith("__") and c not in (*keys, "people")]
    eps = settings.epsilon / (len(measures) + 1)
    bound = settings.max_rows_per_person
    noise_key = keyring.derive("dp/noise")
    where = [repr(row) for row in cells.select(keys).rows()]

    def seeds(measure: str) -> list[str]:
        digest = cells[f"__key_{measure}"].to_list()
        return [f"{stat}|{measure}|{w}|{d}" for w, d in zip(where, digest, strict=True)]

    selected, threshold = dp_select(
        cells["people"].to_list(), bound / eps, bound, release.k, settings.delta,
        seeds("people"), noise_key,
    )  # fmt: skip
    accuracy = {"people": round(_accuracy(bound / eps, True), 3)}
    noisy = {}
    for m in measures:
        scale = bound * (settings.max_minutes if m == "minutes" else 1) / eps
        if m == "minutes":  # in tenths of a minute, as published
            drawn = keyed_noise(noise_key, seeds(m), scale * 10)
            noisy[m] = pl.Series(m, drawn, dtype=pl.Float64) / 10 + cells[m]
            accuracy[m] = round(_accuracy(scale * 10, True) / 10, 3)
        else:
            drawn = keyed_noise(noise_key, seeds(m), scale)
            noisy[m] = pl.Series(m, drawn, dtype=pl.Int64) + cells[m]
            accuracy[m] = round(_accuracy(scale, True), 3)
    # Post-processing (free under DP): counts never below zero.
    cells = cells.with_columns(
        pl.Series("people", selected, dtype=pl.Int64), *[v.clip(0) for v in noisy.values()]
    ).filter(pl.col("people").is_not_null())
    entry = {
        "epsilon": settings.epsilon,
        "epsilon_per_measure": round(eps, 6),
        "delta": settings.delta,
        "period": settings.period,
        "threshold": threshold,
        "max_rows_per_person": bound,
        "max_minutes": settings.max_minutes,
        "accuracy_95": accuracy,
        "mechanism": "Laplace threshold on the people count (cells below the threshold are not "
        "published), discrete Laplace noise on the other measures; exact sampler, keyed by the "
        "cell and its contributions (the same data always gets the same noise)",
    }
    return cells, entry


def compute_statistic(
    stat: Statistic, scan: Callable[[str], pl.LazyFrame], release: ReleaseSpec, keyring: KeyRing
) -> tuple[pl.DataFrame, pl.DataFrame, StatReport]:
    """Cells and margins of one statistic, suppressed and perturbed (or noised, with DP on).

    ``keyring`` is the master key ring: record keys and noise do not depend on the recipient,
    so two recipients of one cell get the same perturbation and cannot average theirs.
    """
    hourly = release.granularity == "hour"
    keys = ["date", *(["hour"] if hourly else []), "region", *stat.dims]
    margin_keys = keys[: len(keys) - len(stat.dims)]
    facts_lf, people_lf = stat.build(scan, hourly)
    if release.granularity in PERIODS:  # a cell of a week or a month: the period's first day
        every = PERIODS[release.granularity]
        facts_lf = facts_lf.with_columns(pl.col("date").dt.truncate(every))
        people_lf = people_lf.with_columns(pl.col("date").dt.truncate(every))
    # Lazy until aggregated (the streaming engine keeps memory bounded on large datasets).
    people: pl.LazyFrame = people_lf.select([*keys, PERSON]).filter(pl.col(PERSON).is_not_null())
    facts: pl.LazyFrame = facts_lf.select([*keys, *stat.measures, OWNER])
    if stat.name == "usage_web":  # visitors: a daily keyed hash, never a lasting identifier
        people = _visitor_ids(people.collect(), PERSON, keyring).lazy()
        facts = _visitor_ids(facts.collect(), OWNER, keyring).lazy()
    report = StatReport()
    dp_on = release.dp.enabled
    people = people.unique()
    if dp_on:
        # Contribution bounding over the accounting period: the rows charged to a person, the
        # cells a person is counted in, and the minutes of each row.
        bound, period = release.dp.max_rows_per_person, release.dp.period
        facts = _bound(facts.collect(), OWNER, keys, bound, period).lazy()
        people = _bound(people.collect(), PERSON, keys, bound, period).lazy()
        if "minutes" in stat.measures:
            facts = facts.with_columns(pl.col("minutes").clip(0, release.dp.max_minutes))
    rk = _RecordKeys(keyring)
    cells = _cells(facts, people, keys, stat.measures, rk)
    report.cells = cells.height
    perturb = not dp_on and release.perturbation.method == "cell_key"
    if dp_on:
        cells, report.dp = _noised(cells, stat.name, keys, release, keyring)
    keep = pl.col("people") >= release.k
    if "minutes" in stat.measures and release.dominance and not dp_on:
        dominated = _dominated(facts, keys, release.dominance)
        cells = cells.join(dominated, on=keys, how="left", nulls_equal=True)
        report.dominated = cells.filter(keep & pl.col("__dominated").is_not_null()).height
        keep = keep & pl.col("__dominated").is_null()
    cells = cells.with_columns(keep.alias("__keep"))
    ptable = PTable(release.perturbation.max_perturbation, release.perturbation.sigma)
    if perturb:  # k applies to the true count and to the published one
        cells = _perturbed(cells, stat.measures, release.perturbation, ptable)
        cells = cells.with_columns(pl.col("__keep") & (pl.col("people") >= release.k))
        report.perturbation = ptable.describe() | {
            "magnitude_scale": release.perturbation.magnitude_scale
        }
    internal = [c for c in cells.columns if c.startswith("__")]
    published = cells.filter(pl.col("__keep")).drop(internal)
    suppressed = cells.filter(~pl.col("__keep"))
    report.published, report.suppressed = published.height, suppressed.height
    first = stat.measures[0]
    report.suppressed_rows = int(suppressed[first].sum() or 0) if not dp_on else 0
    # Margins from the published cells only (see the module docstring).
    sums = [*[_total(m, published.schema[m]) for m in stat.measures], pl.len().alias("covers")]
    if dp_on:  # sums of noisy cells; a sum of people counts is no count of distinct people
        margins = published.group_by(margin_keys).agg(*sums)
    else:
        published_people = (
            people.join(published.select(keys).lazy(), on=keys, how="semi", nulls_equal=True)
            .select([*margin_keys, PERSON])
            .unique()
            .with_columns(rk.of(PERSON))
            .group_by(margin_keys)
            .agg(pl.len().alias("people"), people_key().alias("__key_people"))
            .collect(engine="streaming")
        )
        if perturb:
            published_people = published_people.with_columns(
                pl.col("people") + ptable.lookup(as_unit(pl.col("__key_people")))
            )
        margins = (
            published.group_by(margin_keys)
            .agg(*sums)
            .join(published_people.drop("__key_people"), on=margin_keys, how="left")
        )
    margins = margins.sort(margin_keys)
    if "minutes" in stat.measures:
        published = published.with_columns(pl.col("minutes").round(1))
        margins = margins.with_columns(pl.col("minutes").round(1))
    return published, margins, report


def pseudonym_columns(policy, dataset: str) -> list[str]:
    """The outputs of a dataset that hold pseudonyms (made by pseudonymize operators)."""
    return policy.datasets[dataset].pseudonym_columns


def _rekey(values: pl.Series, key: bytes) -> pl.Series:
    uniq = values.drop_nulls().unique()
    mapping = {v: pseudonym(key, "opaque", v).replace("x-", v[:2], 1) for v in uniq.to_list()}
    return values.replace_strict(mapping, default=None, return_dtype=pl.String)


def _coarsened_and_sorted(frame: pl.DataFrame, precision: float) -> pl.DataFrame:
    """Decimals (durations) rounded to ``precision``, rows sorted by every column: a record's
    exact duration or its place in the file would single it out (and let two recipients'
    releases of it be joined)."""
    p = precision
    frame = frame.with_columns(
        ((pl.col(c) / p).round() * p).alias(c)
        for c, t in frame.schema.items()
        if t in (pl.Float32, pl.Float64)
    )
    order = [c for c, t in frame.schema.items() if not isinstance(t, pl.List)]
    return frame.sort(order, nulls_last=True, maintain_order=True)


def partition_digests(restricted: Path, earlier: list[Path] = ()) -> dict[tuple[str, str], str]:
    """(date, region) -> digest of the inputs behind that partition of the staged datasets.

    Taken over the staged files' own input digests (and those of ``earlier``, published files
    a release reads besides), so a partition rebuilt by an incremental run (from every file
    with rows in it) carries the same digest as one from a clean run.
    """
    found: dict[tuple[str, str], set[str]] = {}
    for f in [*Path(restricted).glob("*/date=*/region=*/*.parquet"), *earlier]:
        digest = (pq.read_metadata(f).metadata or {}).get(b"cdranon.inputs_digest")
        if digest:
            key = (
                f.parent.parent.name.removeprefix("date="),
                f.parent.name.removeprefix("region="),
            )
            found.setdefault(key, set()).add(digest.decode())
    return {k: hashlib.sha256("\n".join(sorted(v)).encode()).hexdigest() for k, v in found.items()}


def period_files(
    restricted: Path, earlier: Path | None, rebuilt: set[str], period: str, by_region: bool = False
) -> list[Path]:
    """The published restricted files a release reads besides the staged ones: those of the
    other partitions of every period the run touches, but not of partitions the run rebuilt
    (their staged rows replace them). For DP, of every region (a person's bound is over the
    whole accounting period); for cells of a week or a month (``by_region``), of the regions
    the run touches only (a cell is of one region)."""
    if earlier is None or not earlier.is_dir():
        return []
    staged = {
        f"{d.name.removeprefix('date=')}/{r.name.removeprefix('region=')}"
        for d in Path(restricted).glob("*/date=*")
        for r in d.glob("region=*")
    }

    def touched(key: str) -> tuple[str, str]:
        day, _, region = key.partition("/")
        return period_of(day, period), region if by_region else ""

    periods = {touched(k) for k in staged}
    out = []
    for f in sorted(earlier.glob("*/date=*/region=*/*.parquet")):
        day = f.parent.parent.name.removeprefix("date=")
        key = f"{day}/{f.parent.name.removeprefix('region=')}"
        if key not in rebuilt and key not in staged and touched(key) in periods:
            out.append(f)
    return out


def _period_digests(daily: dict[tuple[str, str], str], granularity: str) -> dict:
    """The input digests of the cells of a week or a month: of their days' digests."""
    if granularity not in PERIODS:
        return daily
    found: dict[tuple[str, str], list[str]] = {}
    for (day, region), digest in daily.items():
        found.setdefault((period_start(day, granularity), region), []).append(digest)
    return {k: hashlib.sha256("\n".join(sorted(v)).encode()).hexdigest() for k, v in found.items()}


def _with_digest(meta: dict[str, str], digests: dict, day: str, region: str) -> dict[str, str]:
    digest = digests.get((day, region))
    return {**meta, "cdranon.inputs_digest": digest} if digest else meta


def _analyst_types(frame: pl.DataFrame) -> pl.DataFrame:
    """Counts as Int64 (not polars' UInt32 of ``len``: Spark and BigQuery loaders handle unsigned
    integers badly)."""
    unsigned = [c for c, t in frame.schema.items() if t.is_unsigned_integer()]
    return frame.with_columns(pl.col(unsigned).cast(pl.Int64)) if unsigned else frame


def _write_partitioned(
    frame: pl.DataFrame,
    root: Path,
    meta: dict[str, str],
    digests: dict | None = None,
    every: set[tuple[str, str]] = frozenset(),
    entries: list[Entry] = (),
) -> list[str]:
    """Write ``frame`` as ``root/date=/region=/part-0.parquet``; a (date, region) of ``every``
    without a row gets an empty file with the schema, so that a statistic whose cells are all
    suppressed still reads (as zero rows) in every reader."""
    written = []
    frame = _analyst_types(frame)
    parts = {
        (day.isoformat(), reg): part.drop("date", "region")
        for (day, reg), part in frame.partition_by(
            ["date", "region"], as_dict=True, maintain_order=True
        ).items()
    } if frame.height else {}  # fmt: skip
    empty = frame.drop("date", "region").clear()
    fields = arrow_schema(empty.schema, list(entries))  # the data dictionary
    for day, reg in sorted(set(parts) | set(every)):
        folder = root / f"date={day}" / f"region={reg}"
        folder.mkdir(parents=True, exist_ok=True)
        parts.get((day, reg), empty).write_parquet(
            folder / "part-0.parquet",
            metadata=_with_digest(meta, digests or {}, day, reg),
            arrow_schema=fields,
            **PARQUET_OPTIONS,
        )
        written.append(folder.as_posix())
    return written


def settled_before(release: ReleaseSpec, today: date | None) -> date | None:
    """The first day a release with ``settle_days`` does not release yet (None: no limit); for
    a frozen release of weeks or months, the first day of the first period not complete then.

    >>> spec = ReleaseSpec(recipient="r", k=5, settle_days=2, statistics=("usage_sessions",))
    >>> settled_before(spec, date(2026, 11, 26))
    datetime.date(2026, 11, 24)
    """
    if today is None:
        return None
    if release.granularity in PERIODS and release.frozen:
        # A frozen release of weeks or months gets whole periods only: a period it holds is
        # never published again, so a part of one would stay a part.
        last = (today - timedelta(days=release.settle_days)).isoformat()
        return date.fromisoformat(period_start(last, release.granularity))
    if not release.settle_days:
        return None
    return today - timedelta(days=release.settle_days)


def restricted_scanner(
    restricted: Path,
    extra: list[Path] = (),
    exclude: frozenset[str] = frozenset(),
    policy: Policy | None = None,
) -> Callable[[str], pl.LazyFrame]:
    """``dataset`` -> a lazy scan of its partitions under ``restricted`` (and of the ``extra``
    files of that dataset), with ``date`` and ``region``; empty, typed, when it has none.
    Rows that hold one of the ``exclude`` pseudonyms (people who opted out or were erased) in a
    pseudonym column of the ``policy`` are left out."""

    def scan(dataset: str) -> pl.LazyFrame:
        return _without(_scan(dataset), dataset)

    def _without(frame: pl.LazyFrame, dataset: str) -> pl.LazyFrame:
        if not exclude or policy is None or dataset not in policy.datasets:
            return frame
        cols = policy.datasets[dataset].pseudonym_columns
        if not cols:
            return frame
        return frame.filter(
            ~pl.any_horizontal(pl.col(c).is_in(list(exclude)).fill_null(False) for c in cols)
        )

    def _scan(dataset: str) -> pl.LazyFrame:
        files = sorted((Path(restricted) / dataset).glob("date=*/region=*/*.parquet"))
        files += [f for f in extra if f.parent.parent.parent.name == dataset]
        schema = dict(load_output_schema(dataset).polars_schema)
        if not files:
            schema.update({"date": pl.Date, "region": pl.String})
            return pl.LazyFrame(schema=schema)
        return scan_partitions(files)

    return scan


def stage_release(
    name: str,
    release: ReleaseSpec,
    policy,
    keyring: KeyRing,
    staging: Path,
    meta: dict[str, str],
    earlier: Path | None = None,
    rebuilt: set[str] | None = None,
    exclude: frozenset[str] = frozenset(),
    today: date | None = None,
) -> dict:
    """Compute one release from ``staging/restricted`` into ``staging/shareable/<name>/``.

    With DP on, the release also reads ``earlier`` (the published ``restricted/``) for the
    other partitions of the accounting periods the run touches, and writes every partition of
    those periods: the cells whose data did not change come out byte for byte as published.
    ``rebuilt`` are the ``date/region`` keys the run rebuilt. With ``settle_days``, days from
    ``today`` minus that many days on are left out (``settled_before``). Returns the release's
    manifest entry (counts, suppression, perturbation or DP; never a value).
    """
    staging = Path(staging)
    restricted = staging / "restricted"
    out_root = staging / SHAREABLE / name
    rkeys = keyring.for_release(release.recipient)
    # The other partitions of every period the run touches: a person is bounded over the DP
    # accounting period, and counted once in a cell of a week or a month.
    periods = {(release.dp.period, False)} if release.dp.enabled else set()
    if release.granularity in PERIODS:
        periods.add((release.granularity, True))
    extra: list[Path] = []
    if release.statistics:
        done = rebuilt or set()
        extra = sorted(
            {f for p, by in periods for f in period_files(restricted, earlier, done, p, by)}
        )

    scan = restricted_scanner(restricted, extra, exclude, policy)
    cutoff = settled_before(release, today)
    if cutoff is not None:  # days not settled yet are not released
        unsettled = scan

        def scan(dataset: str) -> pl.LazyFrame:
            return unsettled(dataset).filter(pl.col("date") < cutoff)

    entry: dict = {
        "recipient": release.recipient,
        "key_id": rkeys.key_id,
        "granularity": release.granularity,
        "k": release.k,
        "statistics": {},
        "events": {},
    }
    release_meta = {**meta, "cdranon.release": name, "cdranon.key_id": rkeys.key_id}
    daily = partition_digests(restricted, extra)
    # Every partition the release covers gets a file of every statistic (empty when all its
    # cells are suppressed): the partitions of the restricted data it was computed from (their
    # weeks or months, for releases of that granularity).
    covered_days = {k for k in daily if cutoff is None or k[0] < cutoff.isoformat()}
    covered = {(period_start(d, release.granularity), r) for d, r in covered_days}
    digests = _period_digests(daily, release.granularity)
    if release.kind == "tenant":
        periods, days = (digests, covered), (daily, covered_days)
        entry.update(
            _stage_tenants(release, policy, keyring, scan, out_root, release_meta, periods, days)
        )
        return entry
    total_eps = 0.0
    for stat_name in release.statistics:
        report = _stage_statistic(stat_name, release, scan, keyring, out_root, release_meta,
                                  digests, covered)  # fmt: skip
        entry["statistics"][stat_name] = report.to_dict()
        if report.dp:
            total_eps += release.dp.epsilon
    if release.dp.enabled:
        entry["dp"] = {
            "epsilon_total": total_eps,
            "period": release.dp.period,
            "composition": "sequential over statistics; each person bounded over the period",
            "partitions_read_besides": len(extra),
        }
    for dataset, scope in release.events.items():
        cols = pseudonym_columns(policy, dataset)
        entries = event_entries(dataset, policy, scope)
        files = sorted((restricted / dataset).glob("date=*/region=*/*.parquet"))
        rows = 0
        for f in files:
            day = f.parent.parent.name.removeprefix("date=")
            if cutoff is not None and day >= cutoff.isoformat():
                continue
            period = {"day": day, "month": day[:7], "stable": "stable", "none": ""}[scope]
            frame = pl.read_parquet(f)
            if exclude and cols:  # people who opted out or were erased
                frame = frame.filter(
                    ~pl.any_horizontal(
                        pl.col(c).is_in(list(exclude)).fill_null(False) for c in cols
                    )
                )
            if scope == "none":
                frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in cols)
            else:
                key = rkeys.derive(f"pseudonym/{scope}/{period}")
                frame = frame.with_columns(_rekey(frame[c], key).alias(c) for c in cols)
            frame = _coarsened_and_sorted(frame, release.event_precision_s)
            target = out_root / dataset / f.parent.relative_to(restricted / dataset) / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            region = f.parent.name.removeprefix("region=")
            frame.write_parquet(
                target,
                metadata=_with_digest(
                    {**release_meta, "cdranon.pseudonym_scope": scope}, daily, day, region
                ),
                arrow_schema=arrow_schema(frame.schema, entries),
                **PARQUET_OPTIONS,
            )
            rows += frame.height
        entry["events"][dataset] = {"scope": scope, "rows": rows, "pseudonym_columns": cols}
    return entry


def _stage_statistic(
    stat_name: str,
    release: ReleaseSpec,
    scan: Callable[[str], pl.LazyFrame],
    keyring: KeyRing,
    root: Path,
    meta: dict[str, str],
    digests: dict,
    covered: set[tuple[str, str]],
) -> StatReport:
    """Compute one statistic and write its cells and margins under ``root``."""
    published, margins, report = compute_statistic(STATISTICS[stat_name], scan, release, keyring)
    m = {**meta, "cdranon.dataset": stat_name, "cdranon.k": str(release.k)}
    cells, sums = (
        statistic_entries(stat_name, release),
        statistic_entries(stat_name, release, totals=True),
    )
    _write_partitioned(published, root / stat_name, m, digests, covered, cells)
    _write_partitioned(margins, root / f"{stat_name}_totals", m, digests, covered, sums)
    return report


def _stage_tenants(
    release: ReleaseSpec,
    policy: Policy,
    keyring: KeyRing,
    scan: Callable[[str], pl.LazyFrame],
    out_root: Path,
    meta: dict[str, str],
    periods: tuple[dict, set[tuple[str, str]]],
    days: tuple[dict, set[tuple[str, str]]],
) -> dict:
    """A tenant release (``anonymize.tenants``): for each tenant, its folder with its users'
    activity and the release's statistics over its own view. Returns the manifest entry's
    ``tenants`` (per tenant: key id, people, rows, statistics) and ``statistics`` (summed).
    ``periods`` and ``days``: the input digests and the partitions covered, of the statistics'
    cells (weeks, months) and of the days (the users' activity)."""
    tenants: dict[str, dict] = {}
    summed: dict[str, dict] = {}
    for tenant in sorted(policy.tenants):
        people = tenant_people(scan, policy, tenant)
        view = tenant_view(scan, policy, people)
        root = out_root / tenant
        key_id = keyring.for_account(tenant).key_id
        tmeta = {**meta, "cdranon.tenant": tenant, "cdranon.key_id": key_id}
        stats = {}
        for stat_name in release.statistics:
            report = _stage_statistic(stat_name, release, view, keyring, root, tmeta, *periods)
            stats[stat_name] = report.to_dict()
            total = summed.setdefault(stat_name, {})
            for k, v in stats[stat_name].items():
                total[k] = total.get(k, 0) + v if isinstance(v, int) else v
        activity = user_activity(view).collect()
        rooms = connect_rooms(view).collect()
        account = keyring.for_account(tenant)
        rooms = rooms.with_columns(_rekey(rooms["room"], account.derive("rooms")))
        for table, frame in ((USER_ACTIVITY, activity), (CONNECT_ROOMS, rooms)):
            _write_partitioned(
                frame, root / table, {**tmeta, "cdranon.dataset": table}, *days,
                tenant_table_entries(table),
            )  # fmt: skip
        tenants[tenant] = {
            "key_id": key_id,
            "hand_key": policy.tenants[tenant].hand_key,
            "people": people.height,
            "user_activity_rows": activity.height,
            "connect_rooms_rows": rooms.height,
            "statistics": stats,
        }
    return {"tenants": tenants, "statistics": summed}


def release_metadata(policy: Policy, keyring: KeyRing, input_sha256s: list[str]) -> dict[str, str]:
    """Key-value metadata of the shareable files of a run (no run id, no clock time)."""
    digest = hashlib.sha256("\n".join(sorted(input_sha256s)).encode()).hexdigest()
    return {
        "cdranon.schema_version": "1",
        "cdranon.policy_version": policy.version,
        "cdranon.policy_hash": policy.hash,
        "cdranon.inputs_digest": digest,
        "cdranon.not_for_sharing": "true" if keyring.is_development else "false",
    }


def stage_releases(
    names: list[str] | None,
    policy: Policy,
    keyring: KeyRing,
    staging: Path,
    input_sha256s: list[str],
    earlier: Path | None = None,
    rebuilt: set[str] | None = None,
    exclude: frozenset[str] = frozenset(),
    today: date | None = None,
) -> dict[str, dict]:
    """Compute the selected releases (all of the policy's when ``names`` is None) into staging.

    ``earlier`` and ``rebuilt``: see ``stage_release``. Returns the manifest entry of each
    release: counts of cells, published and suppressed, perturbation, the DP budget, key ids;
    never a value.
    """
    meta = release_metadata(policy, keyring, input_sha256s)
    chosen = list(policy.releases) if names is None else names
    return {
        name: stage_release(
            name,
            policy.releases[name],
            policy,
            keyring,
            staging,
            meta,
            earlier,
            rebuilt,
            exclude,
            today,
        )
        for name in chosen
    }
