"""Releases: what leaves the house, per recipient. Statistics with the person as the protected
unit, suppression of small cells, optional differential privacy, and re-keyed event datasets.

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

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from anonymize.identifiers import pseudonym
from anonymize.keys import KeyRing

SHAREABLE = "shareable"
PARQUET = {"compression": "zstd", "compression_level": 3, "statistics": True}
PERSON = "__person"  # the people a cell counts (distinct)
OWNER = "__owner"  # the one person a fact row is charged to, for DP contribution bounding

Scope = Literal["none", "day", "month", "stable"]


class DpSettings(BaseModel):
    """Differential privacy of a release's statistics (OpenDP's Laplace mechanism)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    epsilon: float = Field(default=1.0, gt=0, le=20)  # per statistic
    max_rows_per_person: int = Field(default=20, ge=1)  # per statistic and day
    max_minutes: float = Field(default=240.0, gt=0)  # per row
    # Which cells exist is private too: cells are selected by OpenDP's Laplace threshold
    # mechanism, whose threshold is set so a cell of a few people shows with probability delta.
    delta: float = Field(default=1e-6, gt=0, le=1e-2)


class DominanceRule(BaseModel):
    """An (n, k) dominance rule on magnitudes (minutes): a cell whose ``n`` largest contributors
    (people) give more than ``max_share`` of its total is suppressed, as tau-Argus does for
    magnitude tables: a published total would tell each dominant person's share."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(ge=1, le=5)
    max_share: float = Field(gt=0, le=1)


class ReleaseSpec(BaseModel):
    """One recipient's release, as the policy declares it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recipient: str = Field(pattern=r"^[a-z0-9][a-z0-9._\-]{0,62}$")
    statistics: tuple[str, ...] = ()
    granularity: Literal["day", "hour"] = "day"
    k: int = Field(ge=2)
    dp: DpSettings = DpSettings()
    # Event-level datasets this recipient may receive, with the scope of its pseudonyms.
    events: dict[str, Scope] = Field(default_factory=dict)
    # The gate refuses the release when more than this share of the people of an event dataset
    # are singled out by up to 4 of their own points (hour and region).
    max_unicity: float = Field(default=0.5, ge=0, le=1)
    # ... and when more than this share of its records sit in groups of fewer than k records
    # with the same quasi-identifiers (time, region, the categorical columns).
    max_share_below_k: float = Field(default=0.05, ge=0, le=1)
    # Event datasets released to several recipients with pseudonyms of their own: the share of
    # rows unique on their other columns (joining the releases links those pseudonyms).
    max_linkable_share: float = Field(default=0.0, ge=0, le=1)
    # Event datasets: durations and other decimals are published rounded to this many seconds.
    event_precision_s: float = Field(default=60.0, gt=0)
    # Magnitudes (minutes): cells where a few people give most of the total are suppressed.
    dominance: tuple[DominanceRule, ...] = (
        DominanceRule(n=1, max_share=0.7),
        DominanceRule(n=2, max_share=0.85),
    )


# --- statistics -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statistic:
    """A statistic: dimensions, counted measures, and who the people of a row are."""

    name: str
    sources: tuple[str, ...]
    dims: tuple[str, ...]  # besides date, hour (when the release has it) and region
    measures: tuple[str, ...]  # summed; "minutes" is clipped under DP
    build: Callable[[Callable[[str], pl.LazyFrame], bool], tuple[pl.LazyFrame, pl.LazyFrame]]
    description: str


def _outcome(code: pl.Expr) -> pl.Expr:
    return (
        pl.when(code.is_between(200, 299))
        .then(pl.lit("success"))
        .when(code.is_in([408, 480, 486, 487, 603]))
        .then(pl.lit("not_answered"))
        .when(code.is_null())
        .then(pl.lit("unknown"))
        .otherwise(pl.lit("failure"))
    )


def _time_dims(frame: pl.LazyFrame, ts: str, hourly: bool) -> pl.LazyFrame:
    return frame.with_columns(pl.col(ts).dt.hour().cast(pl.Int8).alias("hour")) if hourly else frame


def _sessions(scan: Callable[[str], pl.LazyFrame], hourly: bool):
    """Peer-to-peer sessions, one row per modality, plus conference sessions ("conference")."""
    s = _time_dims(scan("lync_sessions"), "session_hour", hourly)
    pstn = pl.any_horizontal(
        pl.col("from_phone").is_not_null(),
        pl.col("to_phone").is_not_null(),
        pl.col("from_domain_class") == "phone",
        pl.col("to_domain_class") == "phone",
    ).fill_null(False)
    federated = pl.any_horizontal(
        pl.col("from_domain_class") == "federated", pl.col("to_domain_class") == "federated"
    ).fill_null(False)
    time = ["date", *(["hour"] if hourly else []), "region"]
    p2p = s.select(
        *time,
        pl.when(pl.col("modalities").list.len() > 0)
        .then(pl.col("modalities"))
        .otherwise(pl.lit(["unknown"]))
        .alias("modality"),
        pl.col("from_client").fill_null("unknown").alias("client"),
        _outcome(pl.col("response_code")).alias("outcome"),
        pl.when(pstn)
        .then(pl.lit("pstn"))
        .when(federated)
        .then(pl.lit("federated"))
        .otherwise(pl.lit("internal"))
        .alias("route"),
        (pl.col("duration_s").fill_null(0) / 60).alias("minutes"),
        # The client, outcome and route describe the caller's side: the caller is the person
        # a cell counts (a callee would let a cell reach k with people it says nothing of).
        pl.concat_list(pl.coalesce(pl.col("from_user"), pl.col("to_user"))).alias("__people"),
        pl.coalesce(pl.col("from_user"), pl.col("to_user")).alias(OWNER),
    ).explode("modality")
    c = _time_dims(scan("lync_conference_sessions"), "session_hour", hourly)
    conf = c.select(
        *time,
        pl.lit("conference").alias("modality"),
        pl.col("client").fill_null("unknown").alias("client"),
        _outcome(pl.col("response_code")).alias("outcome"),
        pl.when(pl.col("via_pstn_gateway").fill_null(False))
        .then(pl.lit("pstn"))
        .otherwise(pl.lit("internal"))
        .alias("route"),
        (pl.col("duration_s").fill_null(0) / 60).alias("minutes"),
        pl.concat_list(pl.col("user")).alias("__people"),
        pl.col("user").alias(OWNER),
    )
    base = pl.concat([p2p, conf], how="vertical_relaxed").with_columns(
        pl.lit(1, dtype=pl.Int64).alias("sessions")
    )
    facts = base.drop("__people")
    people = base.explode("__people").rename({"__people": PERSON}).drop_nulls(PERSON)
    return facts, people


def _bucket(value: pl.Expr, edges: list[tuple[float, str]], last: str) -> pl.Expr:
    expr = pl.when(value.is_null()).then(pl.lit("unknown"))
    for edge, label in edges:
        expr = expr.when(value < edge).then(pl.lit(label))
    return expr.otherwise(pl.lit(last))


_PARTICIPANTS = [(3, "2"), (6, "3-5"), (11, "6-10"), (26, "11-25")]
_DURATION = [(900, "<15m"), (1800, "15-30m"), (3600, "30-60m")]


def _meetings(scan: Callable[[str], pl.LazyFrame], hourly: bool):
    lync = scan("lync_conferences").select(
        "date", "region", pl.col("conference_hour").alias("ts"), pl.col("conference").alias("m"),
        "duration_s", pl.lit("lync").alias("service"),
    )  # fmt: skip
    lync_people = scan("lync_conference_sessions").select(
        pl.col("conference").alias("m"), pl.col("user").alias(PERSON)
    )
    connect = scan("connect_meeting_sessions").select(
        "date", "region", pl.col("session_hour").alias("ts"),
        pl.col("meeting_session").alias("m"), "duration_s", pl.lit("connect").alias("service"),
    )  # fmt: skip
    connect_people = scan("connect_attendance").select(
        pl.col("meeting_session").alias("m"), pl.col("user").alias(PERSON)
    )
    meetings = pl.concat([lync, connect], how="vertical_relaxed")
    people = pl.concat([lync_people, connect_people]).drop_nulls().unique()
    sizes = people.group_by("m").agg(
        pl.len().alias("participants"), pl.col(PERSON).min().alias(OWNER)
    )
    base = _time_dims(meetings.rename({"ts": "meeting_hour"}), "meeting_hour", hourly)
    base = base.join(sizes, on="m", how="left").with_columns(
        pl.col("participants").fill_null(0),
        _bucket(pl.col("participants").fill_null(0), _PARTICIPANTS, "26+").alias(
            "participants_bucket"
        ),
        _bucket(pl.col("duration_s"), _DURATION, "60m+").alias("duration_bucket"),
        pl.lit(1, dtype=pl.Int64).alias("meetings"),
        (pl.col("duration_s").fill_null(0) / 60).alias("minutes"),
    )
    facts = base.drop("m")
    return facts, base.join(people, on="m", how="inner").drop("m")


def _joins(scan: Callable[[str], pl.LazyFrame], hourly: bool):
    j = _time_dims(scan("lync_conference_joins"), "join_hour", hourly).with_columns(
        pl.when(pl.col("is_from_pstn").fill_null(False))
        .then(pl.lit("pstn_dial_in"))
        .otherwise(pl.lit("voip"))
        .alias("via"),
        pl.lit(1, dtype=pl.Int64).alias("joins"),
        (pl.col("duration_s").fill_null(0) / 60).alias("minutes"),
    )
    j = j.with_columns(pl.col("user").alias(OWNER))
    return j, j.select(pl.all().exclude("user"), pl.col("user").alias(PERSON)).drop_nulls(PERSON)


def _first_public(chain: pl.Expr) -> pl.Expr:
    """The client's network: the first public network of a generalised chain (proxies append
    theirs), over the unique chains only."""
    from anonymize.web import first_public_network

    def one(s: pl.Series) -> pl.Series:
        uniq = s.unique().drop_nulls()
        mapping = {v: first_public_network(v) for v in uniq.to_list()}
        return s.replace_strict(mapping, default=None, return_dtype=pl.String)

    return chain.map_batches(one, return_dtype=pl.String)


def _web(scan: Callable[[str], pl.LazyFrame], hourly: bool):
    """Page views; the person is the signed-in user, else a visitor fingerprint.

    A fingerprint never splits one person: it has no site (an IIS log that changes its layout
    mid-file names the site or not), its network is the client's first public one (direct or
    through a proxy chain), a phone or tablet has none (it roams between carriers' networks),
    and the anonymous requests of a fingerprint that a signed-in user had that day are that
    user's. Fingerprints merge people rather than split them: the count errs low.
    """
    w = _time_dims(scan("web_requests"), "request_hour", hourly).with_columns(
        (pl.col("status") // 100)
        .cast(pl.String)
        .add("xx")
        .fill_null("unknown")
        .alias("status_class"),
        pl.col("path_template").fill_null("unknown"),
        pl.col("browser").fill_null("unknown"),
        pl.col("device_class").fill_null("unknown"),
        pl.lit(1, dtype=pl.Int64).alias("page_views"),
        _first_public(
            pl.concat_str(
                [pl.col("forwarded_networks"), pl.col("client_network")],
                separator=", ",
                ignore_nulls=True,
            )
        ).alias("__network"),
    )
    parts = [pl.col(c).fill_null("-") for c in ("browser", "os", "device_class")]
    mobile = pl.col("device_class").is_in(["mobile", "tablet"])
    network = pl.when(mobile).then(pl.lit("roaming")).otherwise(pl.col("__network"))
    w = w.with_columns(
        pl.concat_str([network.fill_null("-"), *parts], separator="|").alias("__visitor")
    )
    signed_in = (
        w.filter(pl.col("user").is_not_null())
        .group_by("date", "__visitor")
        .agg(pl.col("user").min().alias("__visitor_user"))
    )
    w = (
        w.join(signed_in, on=["date", "__visitor"], how="left")
        .with_columns(
            pl.coalesce(pl.col("user"), pl.col("__visitor_user"), pl.col("__visitor")).alias(PERSON)
        )
        .drop("__network", "__visitor", "__visitor_user")
    )
    return w.with_columns(pl.col(PERSON).alias(OWNER)), w


STATISTICS: dict[str, Statistic] = {
    s.name: s
    for s in (
        Statistic(
            "usage_sessions", ("lync_sessions", "lync_conference_sessions"),
            ("modality", "client", "outcome", "route"), ("sessions", "minutes"), _sessions,
            "Lync/SfB sessions per modality (conference sessions as 'conference'), client "
            "category, outcome and route",
        ),
        Statistic(
            "usage_meetings",
            ("lync_conferences", "lync_conference_sessions", "connect_meeting_sessions",
             "connect_attendance"),
            ("service", "participants_bucket", "duration_bucket"),
            ("meetings", "minutes", "participants"), _meetings,
            "Lync conferences and Connect meeting sessions per size and duration bucket",
        ),
        Statistic(
            "usage_conference_joins", ("lync_conference_joins",), ("via",),
            ("joins", "minutes"), _joins,
            "conference joins, VoIP or PSTN dial-in (the dial-in share)",
        ),
        Statistic(
            "usage_web", ("web_requests",),
            ("path_template", "status_class", "browser", "device_class"), ("page_views",), _web,
            "page views per path template, status class, browser and device class",
        ),
    )
}  # fmt: skip


# --- computing a release ------------------------------------------------------------------------


@dataclass
class StatReport:
    cells: int = 0
    published: int = 0
    suppressed: int = 0
    suppressed_rows: int = 0
    dominated: int = 0
    dp: dict | None = None

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


def _bound(frame: pl.DataFrame, who: str, keys: list[str], limit: int) -> pl.DataFrame:
    """Keep at most ``limit`` rows per person and day (deterministic: by a hash of the row)."""
    h = pl.concat_str([pl.col(c).cast(pl.String).fill_null("") for c in keys]).hash(7)
    return (
        frame.with_columns(h.alias("__h"))
        .sort(["date", who, "__h"], nulls_last=True)
        .with_columns(pl.int_range(pl.len()).over(["date", who]).alias("__n"))
        .filter(pl.col("__n") < limit)
        .drop("__h", "__n")
    )


def _laplace(values: list, scale: float, integer: bool) -> list:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    t = int if integer else float
    domain = dp.vector_domain(dp.atom_domain(T=t) if integer else dp.atom_domain(T=t, nan=False))
    mech = dp.m.make_laplace(domain, dp.l1_distance(T=t), scale)
    return mech([t(v) for v in values]) if values else []


def dp_select(
    counts: list[int], scale: float, bound: int, k: int, delta: float
) -> tuple[list[int | None], int]:
    """Noisy people counts of the cells that pass OpenDP's Laplace threshold mechanism (None
    for the others), and its threshold: the smallest one, at least ``k``, such that the
    mechanism's privacy map at one below it gives at most ``delta`` for a person counted once in
    up to ``bound`` cells.

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

    def mech(threshold: int):
        return dp.m.make_laplace_threshold(domain, metric, scale=scale, threshold=threshold)

    def within(threshold: int) -> bool:
        return mech(threshold - 1).map((bound, bound, 1))[1] <= delta

    lo, hi = max(k, 2), max(k, 2) * 2
    while not within(hi):
        lo, hi = hi, hi * 2
    while lo < hi:  # the smallest threshold within delta
        mid = (lo + hi) // 2
        if within(mid):
            hi = mid
        else:
            lo = mid + 1
    released = mech(hi)({str(i): int(c) for i, c in enumerate(counts)}) if counts else {}
    return [released.get(str(i)) for i in range(len(counts))], hi


def _accuracy(scale: float, integer: bool) -> float:
    import opendp.prelude as dp

    if integer:
        return float(dp.discrete_laplacian_scale_to_accuracy(scale, 0.05))
    return float(dp.laplacian_scale_to_accuracy(scale, 0.05))


def _dominated(
    facts: pl.LazyFrame, keys: list[str], rules: tuple[DominanceRule, ...]
) -> pl.DataFrame:
    """The cells (``keys``) where a dominance rule holds: the ``n`` people who give the most
    minutes give more than ``max_share`` of the cell's minutes."""
    per_person = (
        facts.group_by([*keys, OWNER])
        .agg(pl.col("minutes").sum().alias("__m"))
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


def compute_statistic(
    stat: Statistic, scan: Callable[[str], pl.LazyFrame], release: ReleaseSpec, keyring: KeyRing
) -> tuple[pl.DataFrame, pl.DataFrame, StatReport]:
    """Cells and margins of one statistic, suppressed (and noised, with DP on)."""
    hourly = release.granularity == "hour"
    keys = ["date", *(["hour"] if hourly else []), "region", *stat.dims]
    margin_keys = keys[: len(keys) - len(stat.dims)]
    facts_lf, people_lf = stat.build(scan, hourly)
    # Lazy until aggregated (the streaming engine keeps memory bounded on large datasets).
    people: pl.LazyFrame = people_lf.select([*keys, PERSON])
    facts: pl.LazyFrame = facts_lf.select([*keys, *stat.measures, OWNER])
    if stat.name == "usage_web":  # visitors: a daily keyed hash, never a lasting identifier
        people = _visitor_ids(people.collect(), PERSON, keyring).lazy()
        facts = _visitor_ids(facts.collect(), OWNER, keyring).lazy()
    report = StatReport()
    dp_on = release.dp.enabled
    if dp_on:
        # Contribution bounding: the rows charged to a person, the cells a person is counted in,
        # and the minutes of each row.
        bound = release.dp.max_rows_per_person
        facts = _bound(facts.collect(), OWNER, keys, bound).lazy()
        people = _bound(people.unique().collect(), PERSON, keys, bound).lazy()
        if "minutes" in stat.measures:
            facts = facts.with_columns(pl.col("minutes").clip(0, release.dp.max_minutes))
    cells = (
        facts.drop(OWNER)
        .group_by(keys)
        .agg([pl.col(m).sum() for m in stat.measures])
        .join(
            people.group_by(keys).agg(pl.col(PERSON).n_unique().alias("people")),
            on=keys, how="left", nulls_equal=True,
        )
        .with_columns(pl.col("people").fill_null(0))
        .sort(keys)
        .collect(engine="streaming")
    )  # fmt: skip
    report.cells = cells.height
    if dp_on:
        n_measures = len(stat.measures) + 1
        eps = release.dp.epsilon / n_measures
        bound = release.dp.max_rows_per_person
        accuracy = {}
        noisy = {}
        # Which cells exist: the people counts through the threshold mechanism.
        selected, threshold = dp_select(
            cells["people"].to_list(), bound / eps, bound, release.k, release.dp.delta
        )
        cells = cells.with_columns(pl.Series("people", selected, dtype=pl.Int64)).filter(
            pl.col("people").is_not_null()
        )
        accuracy["people"] = round(_accuracy(bound / eps, True), 3)
        for m in stat.measures:
            sens = bound * (release.dp.max_minutes if m == "minutes" else 1)
            integer = m != "minutes"
            scale = sens / eps
            noisy[m] = _laplace(cells[m].to_list(), scale, integer)
            accuracy[m] = round(_accuracy(scale, integer), 3)
        # Post-processing (free under DP): counts are integers, never below zero.
        cells = cells.with_columns(
            pl.Series(m, v, dtype=pl.Float64 if m == "minutes" else pl.Int64).clip(0)
            for m, v in noisy.items()
        )
        report.dp = {
            "epsilon": release.dp.epsilon,
            "epsilon_per_measure": round(eps, 6),
            "delta": release.dp.delta,
            "threshold": threshold,
            "max_rows_per_person": bound,
            "max_minutes": release.dp.max_minutes,
            "accuracy_95": accuracy,
            "mechanism": "OpenDP Laplace threshold on the people count (cells below the "
            "threshold are not published), Laplace noise on the other measures",
        }
    keep = pl.col("people") >= release.k
    if "minutes" in stat.measures and release.dominance and not dp_on:
        dominated = _dominated(facts, keys, release.dominance)
        cells = cells.join(dominated, on=keys, how="left", nulls_equal=True)
        report.dominated = cells.filter(keep & pl.col("__dominated").is_not_null()).height
        keep = keep & pl.col("__dominated").is_null()
        cells = cells.with_columns(keep.alias("__keep")).drop("__dominated")
        keep = pl.col("__keep")
    published = cells.filter(keep).drop("__keep", strict=False)
    suppressed = cells.filter(~keep).drop("__keep", strict=False)
    report.published, report.suppressed = published.height, suppressed.height
    first = stat.measures[0]
    report.suppressed_rows = int(suppressed[first].sum() or 0) if not dp_on else 0
    # Margins from the published cells only (see the module docstring).
    if dp_on:  # sums of noisy cells; a sum of people counts is no count of distinct people
        margins = published.group_by(margin_keys).agg(
            *[pl.col(m).sum() for m in stat.measures], pl.len().alias("covers")
        )
    else:
        published_people = (
            people.join(published.select(keys).lazy(), on=keys, how="semi", nulls_equal=True)
            .group_by(margin_keys)
            .agg(pl.col(PERSON).n_unique().alias("people"))
            .collect(engine="streaming")
        )
        margins = (
            published.group_by(margin_keys)
            .agg(*[pl.col(m).sum() for m in stat.measures], pl.len().alias("covers"))
            .join(published_people, on=margin_keys, how="left")
        )
    margins = margins.sort(margin_keys)
    if "minutes" in stat.measures:
        published = published.with_columns(pl.col("minutes").round(1))
        margins = margins.with_columns(pl.col("minutes").round(1))
    return published, margins, report


def pseudonym_columns(policy, dataset: str) -> list[str]:
    """The outputs of a dataset that hold pseudonyms (made by pseudonymize operators)."""
    ds = policy.datasets[dataset]
    return sorted(
        {r.output for r in ds.rules if r.spec.name in ("pseudonymize", "pseudonymize_lookup")}
    )


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


def partition_digests(restricted: Path) -> dict[tuple[str, str], str]:
    """(date, region) -> digest of the inputs behind that partition of the staged datasets.

    Taken over the staged files' own input digests, so a partition rebuilt by an incremental run
    (from every file with rows in it) carries the same digest as one from a clean run.
    """
    found: dict[tuple[str, str], set[str]] = {}
    for f in Path(restricted).glob("*/date=*/region=*/*.parquet"):
        digest = (pq.read_metadata(f).metadata or {}).get(b"cdranon.inputs_digest")
        if digest:
            key = (
                f.parent.parent.name.removeprefix("date="),
                f.parent.name.removeprefix("region="),
            )
            found.setdefault(key, set()).add(digest.decode())
    return {k: hashlib.sha256("\n".join(sorted(v)).encode()).hexdigest() for k, v in found.items()}


def _with_digest(meta: dict[str, str], digests: dict, day: str, region: str) -> dict[str, str]:
    digest = digests.get((day, region))
    return {**meta, "cdranon.inputs_digest": digest} if digest else meta


def _write_partitioned(
    frame: pl.DataFrame, root: Path, meta: dict[str, str], digests: dict | None = None
) -> list[str]:
    written = []
    if not frame.height:
        return written
    for (day, reg), part in frame.partition_by(
        ["date", "region"], as_dict=True, maintain_order=True
    ).items():
        folder = root / f"date={day.isoformat()}" / f"region={reg}"
        folder.mkdir(parents=True, exist_ok=True)
        part.drop("date", "region").write_parquet(
            folder / "part-0.parquet",
            metadata=_with_digest(meta, digests or {}, day.isoformat(), reg),
            **PARQUET,
        )
        written.append(folder.as_posix())
    return written


def stage_release(
    name: str, release: ReleaseSpec, policy, keyring: KeyRing, staging: Path, meta: dict[str, str]
) -> dict:
    """Compute one release from ``staging/restricted`` into ``staging/shareable/<name>/``.

    Returns the release's manifest entry (counts, suppression, DP budget; never a value).
    """
    staging = Path(staging)
    restricted = staging / "restricted"
    out_root = staging / SHAREABLE / name
    rkeys = keyring.for_release(release.recipient)

    def scan(dataset: str) -> pl.LazyFrame:
        from anonymize.contracts import load_output_schema

        files = sorted((restricted / dataset).glob("date=*/region=*/*.parquet"))
        schema = dict(load_output_schema(dataset).polars_schema)
        if not files:
            schema.update({"date": pl.Date, "region": pl.String})
            return pl.LazyFrame(schema=schema)
        return pl.scan_parquet(
            files, hive_partitioning=True,
            hive_schema={"date": pl.Date, "region": pl.String}, schema=None,
        )  # fmt: skip

    entry: dict = {
        "recipient": release.recipient,
        "key_id": rkeys.key_id,
        "granularity": release.granularity,
        "k": release.k,
        "statistics": {},
        "events": {},
    }
    release_meta = {**meta, "cdranon.release": name, "cdranon.key_id": rkeys.key_id}
    digests = partition_digests(restricted)
    total_eps = 0.0
    for stat_name in release.statistics:
        stat = STATISTICS[stat_name]
        published, margins, report = compute_statistic(stat, scan, release, rkeys)
        m = {**release_meta, "cdranon.dataset": stat_name, "cdranon.k": str(release.k)}
        _write_partitioned(published, out_root / stat_name, m, digests)
        _write_partitioned(margins, out_root / f"{stat_name}_totals", m, digests)
        entry["statistics"][stat_name] = report.to_dict()
        if report.dp:
            total_eps += release.dp.epsilon
    if release.dp.enabled:
        entry["dp"] = {
            "epsilon_total": total_eps,
            "composition": "sequential over statistics; parallel over cells",
        }
    for dataset, scope in release.events.items():
        cols = pseudonym_columns(policy, dataset)
        files = sorted((restricted / dataset).glob("date=*/region=*/*.parquet"))
        rows = 0
        for f in files:
            day = f.parent.parent.name.removeprefix("date=")
            period = {"day": day, "month": day[:7], "stable": "stable", "none": ""}[scope]
            frame = pl.read_parquet(f)
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
                    {**release_meta, "cdranon.pseudonym_scope": scope}, digests, day, region
                ),
                **PARQUET,
            )
            rows += frame.height
        entry["events"][dataset] = {"scope": scope, "rows": rows, "pseudonym_columns": cols}
    return entry
