"""The statistics a release may hold: their dimensions, measures and who the people of a row are.

Each ``Statistic`` builds, from the staged restricted datasets, two lazy frames: the facts
(measures, charged to one owner each, for differential privacy's contribution bounds) and the
people of each cell (distinct, for the k rule). ``anonymize.releases`` suppresses and publishes
them. The definitions are pure polars expressions over the datasets' output schemas.

Examples
--------
>>> sorted(STATISTICS)
['usage_conference_joins', 'usage_meetings', 'usage_sessions', 'usage_web']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from anonymize.web import first_public_network

PERSON = "__person"  # the people a cell counts (distinct)
OWNER = "__owner"  # the one person a fact row is charged to, for DP contribution bounding


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
