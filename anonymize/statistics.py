"""The statistics a release may hold: their dimensions, measures and who the people of a row are.

Each ``Statistic`` builds, from the staged restricted datasets, two lazy frames: the facts
(measures, charged to one owner each, for differential privacy's contribution bounds) and the
people of each cell (distinct, for the k rule). ``anonymize.releases`` suppresses and publishes
them. The definitions are pure polars expressions over the datasets' output schemas.

Examples
--------
>>> {"active_users", "call_minutes", "failures", "im_sessions"} <= set(STATISTICS)
True
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


# --- what UC administrators read (SfB Monitoring Reports, CQD, usage reports) -----------------

# SIP responses that say the callee did not take the call (not found, busy, declined, cancelled,
# away, timed out): expected failures. The monitoring server classes each (response code,
# diagnostic id) pair in its ErrorDef table, which no export read here carries: this is the
# response-code part of that rule.
EXPECTED_FAILURES = (404, 408, 480, 486, 487, 603)


def _category(code: pl.Expr) -> pl.Expr:
    """success (2xx), expected_failure (the callee did not take it), unexpected_failure
    (anything else the server or network answered), unknown (no response recorded)."""
    return (
        pl.when(code.is_null())
        .then(pl.lit("unknown"))
        .when(code.is_between(200, 299))
        .then(pl.lit("success"))
        .when(code.is_in(EXPECTED_FAILURES))
        .then(pl.lit("expected_failure"))
        .otherwise(pl.lit("unexpected_failure"))
    )


def _response_class(code: pl.Expr) -> pl.Expr:
    """``4xx``: the SIP response class."""
    return (code // 100).cast(pl.String).add("xx").fill_null("unknown")


def _diagnostic_range(diag: pl.Expr) -> pl.Expr:
    """The block of a diagnostic id (ms-diagnostics ids come in blocks of a thousand per
    component: ``10000-10999``), never the id itself."""
    low = (diag // 1000) * 1000
    return (
        pl.when(diag.is_null() | (diag < 0))
        .then(pl.lit("none"))
        .otherwise(pl.concat_str([low.cast(pl.String), (low + 999).cast(pl.String)], separator="-"))
    )


def _pstn() -> pl.Expr:
    return pl.any_horizontal(
        pl.col("from_phone").is_not_null(),
        pl.col("to_phone").is_not_null(),
        pl.col("from_domain_class") == "phone",
        pl.col("to_domain_class") == "phone",
        pl.col("from_pstn_gateway").fill_null(False),
        pl.col("to_pstn_gateway").fill_null(False),
    ).fill_null(False)


def _route() -> pl.Expr:
    federated = pl.any_horizontal(
        pl.col("from_domain_class") == "federated", pl.col("to_domain_class") == "federated"
    ).fill_null(False)
    # other_tenant: a side that is another account holder's user, in a tenant's view only
    # (anonymize.tenants); a third party's statistics never have it.
    other = pl.any_horizontal(
        pl.col("from_domain_class") == "other_tenant", pl.col("to_domain_class") == "other_tenant"
    ).fill_null(False)
    return (
        pl.when(_pstn())
        .then(pl.lit("pstn"))
        .when(federated)
        .then(pl.lit("federated"))
        .when(other)
        .then(pl.lit("other_tenant"))
        .otherwise(pl.lit("internal"))
    )


def _caller() -> pl.Expr:
    return pl.coalesce(pl.col("from_user"), pl.col("to_user"))


def _time(hourly: bool) -> list[str]:
    return ["date", *(["hour"] if hourly else []), "region"]


def _one_person(base: pl.LazyFrame, who: str) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Facts and people of a statistic whose rows each belong to one person (``who``)."""
    base = base.filter(pl.col(who).is_not_null())
    return base.with_columns(pl.col(who).alias(OWNER)).drop(who), base.rename({who: PERSON})


def _active_users(scan: Callable[[str], pl.LazyFrame], hourly: bool):
    """Distinct people active in each service: a caller, a callee who answered, a conference
    participant, a registered client, a Connect attendee, a signed-in web user. Over a week or a
    month (releases of that granularity) a person counts once, whatever the days."""
    time = _time(hourly)
    s = _time_dims(scan("lync_sessions"), "session_hour", hourly)
    answered = pl.col("response_code").is_between(200, 299).fill_null(False)
    parts = [
        s.filter(pl.col("from_domain_class").fill_null("internal") == "internal")
        .select(*time, pl.col("from_user").alias("who")),
        s.filter(answered & (pl.col("to_domain_class").fill_null("internal") == "internal"))
        .select(*time, pl.col("to_user").alias("who")),
        _time_dims(scan("lync_conference_sessions"), "session_hour", hourly)
        .select(*time, pl.col("user").alias("who")),
        _time_dims(scan("lync_registrations"), "register_hour", hourly)
        .select(*time, pl.col("user").alias("who")),
    ]  # fmt: skip
    lync = pl.concat(parts, how="vertical_relaxed").with_columns(pl.lit("lync").alias("service"))
    connect = (
        _time_dims(scan("connect_attendance"), "visit_hour", hourly)
        .select(*time, pl.col("user").alias("who"))
        .with_columns(pl.lit("connect").alias("service"))
    )
    web = (
        _time_dims(scan("web_requests"), "request_hour", hourly)
        .select(*time, pl.col("user").alias("who"))
        .with_columns(pl.lit("web").alias("service"))
    )
    base = pl.concat([lync, connect, web], how="vertical_relaxed").with_columns(
        pl.lit(1, dtype=pl.Int64).alias("activities")
    )
    return _one_person(base, "who")


def _call_minutes(scan: Callable[[str], pl.LazyFrame], hourly: bool):
    """Peer-to-peer sessions (each once, whatever its modalities) and conference sessions."""
    time = _time(hourly)
    p2p = _time_dims(scan("lync_sessions"), "session_hour", hourly).select(
        *time,
        pl.lit("peer_to_peer").alias("kind"),
        _route().alias("route"),
        (pl.col("duration_s").fill_null(0) / 60).alias("minutes"),
        _caller().alias("who"),
    )
    conf = _time_dims(scan("lync_conference_sessions"), "session_hour", hourly).select(
        *time,
        pl.lit("conference").alias("kind"),
        pl.when(pl.col("via_pstn_gateway").fill_null(False))
        .then(pl.lit("pstn"))
        .otherwise(pl.lit("internal"))
        .alias("route"),
        (pl.col("duration_s").fill_null(0) / 60).alias("minutes"),
        pl.col("user").alias("who"),
    )
    base = pl.concat([p2p, conf], how="vertical_relaxed").with_columns(
        pl.lit(1, dtype=pl.Int64).alias("sessions")
    )
    return _one_person(base, "who")


def _pstn_minutes(scan: Callable[[str], pl.LazyFrame], hourly: bool):
    """Calls to and from the phone network by the phone number's country (the other side's;
    a number's country only, never the number), and conference dial-ins. The person is the
    user on our side."""
    time = _time(hourly)
    s = _time_dims(scan("lync_sessions"), "session_hour", hourly).filter(_pstn())
    outbound = pl.col("to_phone").is_not_null() | (pl.col("to_domain_class") == "phone")
    calls = s.select(
        *time,
        pl.when(outbound).then(pl.lit("outbound")).otherwise(pl.lit("inbound")).alias("direction"),
        pl.when(outbound)
        .then(pl.col("to_phone_country"))
        .otherwise(pl.col("from_phone_country"))
        .fill_null("unknown")
        .alias("country"),
        (pl.col("duration_s").fill_null(0) / 60).alias("minutes"),
        pl.when(outbound)
        .then(pl.coalesce(pl.col("from_user"), pl.col("to_user")))
        .otherwise(pl.coalesce(pl.col("to_user"), pl.col("from_user")))
        .alias("who"),
    )
    dial_in = (
        _time_dims(scan("lync_conference_joins"), "join_hour", hourly)
        .filter(pl.col("is_from_pstn").fill_null(False))
        .select(
            *time,
            pl.lit("conference_dial_in").alias("direction"),
            pl.lit("unknown").alias("country"),
            (pl.col("duration_s").fill_null(0) / 60).alias("minutes"),
            pl.col("user").alias("who"),
        )
    )
    base = pl.concat([calls, dial_in], how="vertical_relaxed").with_columns(
        pl.lit(1, dtype=pl.Int64).alias("calls")
    )
    return _one_person(base, "who")


def _im_sessions(scan: Callable[[str], pl.LazyFrame], hourly: bool):
    """Instant-message sessions: peer-to-peer ones with the im modality (their messages, both
    sides), and conference chat sessions (the MCU's chat)."""
    time = _time(hourly)
    p2p = (
        _time_dims(scan("lync_sessions"), "session_hour", hourly)
        .filter(pl.col("modalities").list.contains("im").fill_null(False))
        .select(
            *time,
            pl.lit("peer_to_peer").alias("kind"),
            _route().alias("route"),
            (
                pl.col("from_message_count").fill_null(0) + pl.col("to_message_count").fill_null(0)
            ).cast(pl.Int64).alias("messages"),
            _caller().alias("who"),
        )
    )  # fmt: skip
    conf = (
        _time_dims(scan("lync_conference_sessions"), "session_hour", hourly)
        .filter(pl.col("mcu_type") == "chat")
        .select(
            *time,
            pl.lit("conference").alias("kind"),
            pl.lit("internal").alias("route"),
            pl.lit(0, dtype=pl.Int64).alias("messages"),
            pl.col("user").alias("who"),
        )
    )
    base = pl.concat([p2p, conf], how="vertical_relaxed").with_columns(
        pl.lit(1, dtype=pl.Int64).alias("sessions")
    )
    return _one_person(base, "who")


def _failures(scan: Callable[[str], pl.LazyFrame], hourly: bool):
    """Sessions, conference sessions and registrations by outcome category, SIP response class
    and diagnostic id block (the Call Diagnostic reports); successes included, so rates
    can be taken."""
    time = _time(hourly)

    def classed(frame: pl.LazyFrame, kind: str, who: pl.Expr) -> pl.LazyFrame:
        return frame.select(
            *time,
            pl.lit(kind).alias("kind"),
            _category(pl.col("response_code")).alias("category"),
            _response_class(pl.col("response_code")).alias("response_class"),
            _diagnostic_range(pl.col("diagnostic_id")).alias("diagnostic_range"),
            who.alias("who"),
        )

    base = pl.concat(
        [
            classed(_time_dims(scan("lync_sessions"), "session_hour", hourly), "peer_to_peer",
                    _caller()),
            classed(_time_dims(scan("lync_conference_sessions"), "session_hour", hourly),
                    "conference", pl.col("user")),
            classed(_time_dims(scan("lync_registrations"), "register_hour", hourly),
                    "registration", pl.col("user")),
        ],
        how="vertical_relaxed",
    ).with_columns(pl.lit(1, dtype=pl.Int64).alias("attempts"))  # fmt: skip
    return _one_person(base, "who")


def _registrations(scan: Callable[[str], pl.LazyFrame], hourly: bool):
    """Client registrations by client category and product version (major.minor)."""
    time = _time(hourly)
    base = (
        _time_dims(scan("lync_registrations"), "register_hour", hourly)
        .select(
            *time,
            pl.col("client").fill_null("unknown"),
            pl.col("client_version").fill_null("unknown"),
            pl.col("user").alias("who"),
        )
        .with_columns(pl.lit(1, dtype=pl.Int64).alias("registrations"))
    )
    return _one_person(base, "who")


# --- call quality (the data the Call Quality Dashboard is built on) ---------------------------

# A stream is poor when one of these holds (CQD's audio stream classification).
POOR_STREAM = {
    "degradation_avg": 1.0,  # network MOS degradation, above
    "round_trip_ms": 500,  # ms, above
    "packet_loss_rate": 0.1,  # above
    "jitter_ms": 30,  # ms, above
    "concealed_ratio": 0.07,  # ratio of concealed samples, above
}


def poor_stream() -> pl.Expr:
    """Whether an audio stream is poor (``POOR_STREAM``); a stream with none of the metrics
    reported is not."""
    return pl.any_horizontal(pl.col(c) > limit for c, limit in POOR_STREAM.items()).fill_null(False)


def _streams(scan: Callable[[str], pl.LazyFrame], hourly: bool):
    """Audio streams with their media line and session, from the receiving side: the person,
    client, site and network of the endpoint that heard the stream."""
    time = _time(hourly)
    sessions = _time_dims(scan("qoe_sessions"), "session_hour", hourly).select(
        *time, "session_key", "caller", "callee", "caller_client", "callee_client"
    )
    lines = scan("qoe_media_lines").select(
        "session_key", "media_line",
        *[f"{side}_{c}" for side in ("caller", "callee")
          for c in ("site", "connection", "vpn", "inside")],
    )  # fmt: skip
    streams = scan("qoe_audio_streams").select(
        "session_key", "media_line", "sender_is_caller", poor_stream().alias("poor")
    )
    both = streams.join(lines, on=["session_key", "media_line"], how="inner").join(
        sessions, on="session_key", how="inner"
    )
    to_caller = ~pl.col("sender_is_caller").fill_null(True)

    def receiver(c: str) -> pl.Expr:
        return pl.when(to_caller).then(pl.col(f"caller_{c}")).otherwise(pl.col(f"callee_{c}"))

    network = (
        pl.when(receiver("vpn").fill_null(False))
        .then(pl.lit("vpn"))
        .when(~receiver("inside").fill_null(True))
        .then(pl.lit("outside"))
        .otherwise(receiver("connection").fill_null("unknown"))
    )
    base = both.select(
        *time,
        pl.when(to_caller).then(pl.col("caller")).otherwise(pl.col("callee")).alias("who"),
        pl.when(to_caller).then(pl.col("caller_client")).otherwise(pl.col("callee_client"))
        .fill_null("unknown").alias("client"),
        network.alias("network"),
        receiver("site").fill_null("unknown").alias("site"),
        pl.lit(1, dtype=pl.Int64).alias("streams"),
        pl.col("poor").cast(pl.Int64).alias("poor_streams"),
    )  # fmt: skip
    return base


def _call_quality(scan: Callable[[str], pl.LazyFrame], hourly: bool):
    """Audio streams and the poor ones, per client category and network class of the receiver."""
    return _one_person(_streams(scan, hourly).drop("site"), "who")


def _call_quality_sites(scan: Callable[[str], pl.LazyFrame], hourly: bool):
    """Audio streams and the poor ones, per network site of the receiver."""
    return _one_person(_streams(scan, hourly).drop("client", "network"), "who")


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
        Statistic(
            "active_users",
            ("lync_sessions", "lync_conference_sessions", "lync_registrations",
             "connect_attendance", "web_requests"),
            ("service",), ("activities",), _active_users,
            "distinct active people per service (lync, connect, web); per week or month in "
            "releases of that granularity (distinct over the period, not a sum of days)",
        ),
        Statistic(
            "call_minutes", ("lync_sessions", "lync_conference_sessions"), ("kind", "route"),
            ("sessions", "minutes"), _call_minutes,
            "peer-to-peer and conference sessions and minutes per route (each session once)",
        ),
        Statistic(
            "pstn_minutes", ("lync_sessions", "lync_conference_joins"),
            ("direction", "country"), ("calls", "minutes"), _pstn_minutes,
            "phone-network calls and minutes by direction and the number's country",
        ),
        Statistic(
            "im_sessions", ("lync_sessions", "lync_conference_sessions"), ("kind", "route"),
            ("sessions", "messages"), _im_sessions,
            "instant-message sessions (peer-to-peer and conference chat) and messages",
        ),
        Statistic(
            "failures", ("lync_sessions", "lync_conference_sessions", "lync_registrations"),
            ("kind", "category", "response_class", "diagnostic_range"), ("attempts",), _failures,
            "sessions and registrations by outcome (success, expected or unexpected failure), "
            "SIP response class and diagnostic id block",
        ),
        Statistic(
            "call_quality", ("qoe_sessions", "qoe_media_lines", "qoe_audio_streams"),
            ("client", "network"), ("streams", "poor_streams"), _call_quality,
            "audio streams and poor streams (CQD's classification) per client category and "
            "network class of the receiving endpoint",
        ),
        Statistic(
            "call_quality_sites", ("qoe_sessions", "qoe_media_lines", "qoe_audio_streams"),
            ("site",), ("streams", "poor_streams"), _call_quality_sites,
            "audio streams and poor streams per network site of the receiving endpoint",
        ),
        Statistic(
            "registrations", ("lync_registrations",), ("client", "client_version"),
            ("registrations",), _registrations,
            "client registrations per client category and product version",
        ),
    )
}  # fmt: skip
