"""Account-holder reports: each tenant's own usage, under pseudonyms keyed for that tenant.

The privacy statement lets the provider give account holders (its business customers, the
policy's ``tenants``) usage reports about their own users. A release of ``kind: tenant`` writes,
for each tenant, ``shareable/<release>/<tenant>/``:

- ``user_activity``: one row per user, day and region (sessions, minutes by medium, IM, PSTN
  minutes, conferences organised and joined, registrations, Connect visits, page views, last
  activity), the user under the tenant's pseudonym (``per_account`` pseudonyms, made as the
  data is staged from the raw address with the tenant's account key: a tenant handed its key
  maps them back to its own directory, nobody else can);
- the release's statistics, computed by the same code as a third party's, with the same k and
  perturbation, over the tenant's **view** of the restricted data (``tenant_view``).

The view of a tenant keeps the rows that name one of its people, with every person column
replaced by the tenant's pseudonym of that person, or null for anyone else: a call between two
tenants is in both views, each side seeing only its own user and the other as ``other_tenant``
(its domain class), never an identity. A row that names nobody (a Connect meeting session) is
the tenant's when one of its rows names the same meeting (a QoE report's lines and streams,
its session's). A conference is the tenant's when its organiser is one of its people; its
participants from other tenants are not in the view. Phone numbers are only "a phone".
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from anonymize.policy import Policy

Scan = Callable[[str], pl.LazyFrame]

# Datasets with no person of their own, and the dataset and column that say whose a row is.
_BY_MEETING = {
    "connect_meeting_sessions": ("connect_attendance", "meeting_session"),
    "qoe_media_lines": ("qoe_sessions", "session_key"),
    "qoe_audio_streams": ("qoe_sessions", "session_key"),
}


def _phone_columns(policy: Policy, dataset: str) -> set[str]:
    out = set()
    for r in policy.datasets[dataset].rules:
        kind = getattr(r.options, "kind", None)
        lookup = getattr(r.options, "lookup", None)
        if (r.spec.name == "pseudonymize" and kind == "phone") or lookup == "lync_phones":
            out.add(r.output)
    return out


def tenant_people(scan: Scan, policy: Policy, tenant: str) -> pl.DataFrame:
    """The tenant's people: the provider's pseudonym -> the tenant's, from every dataset that
    names a person's account. One row per person (sorted: the same inputs, the same frame)."""
    parts = [
        scan(name).filter(pl.col(account) == tenant).select(
            pl.col(person).alias("person"), pl.col(mine).alias("tenant_person")
        )
        for name, ds in policy.datasets.items()
        for person, account, mine in ds.account_columns
    ]  # fmt: skip
    if not parts:
        return pl.DataFrame(schema={"person": pl.String, "tenant_person": pl.String})
    return (
        pl.concat(parts)
        .drop_nulls()
        .unique()
        .sort("person", "tenant_person")
        .unique("person", keep="first", maintain_order=True)
        .collect()
    )


def tenant_view(scan: Scan, policy: Policy, people: pl.DataFrame) -> Scan:
    """``scan`` as the tenant sees it (see the module docstring). Each dataset's view is
    computed once, the first time it is asked for, and kept in memory: every statistic and
    table of the tenant's folder reads it (without this, each re-read and re-mapped every row
    of the release's partitions; kept, it holds the tenant's rows only)."""
    seen: dict[str, pl.DataFrame] = {}
    view = _tenant_view(scan, policy, people)

    def once(dataset: str) -> pl.LazyFrame:
        if dataset not in seen:
            seen[dataset] = view(dataset).collect()
        return seen[dataset].lazy()

    return once


def _tenant_view(scan: Scan, policy: Policy, people: pl.DataFrame) -> Scan:
    old, new = people["person"], people["tenant_person"]

    def view(dataset: str) -> pl.LazyFrame:
        frame = scan(dataset)
        if dataset not in policy.datasets:
            return frame
        ds = policy.datasets[dataset]
        if dataset in _BY_MEETING:
            source, key = _BY_MEETING[dataset]
            return frame.join(view(source).select(key).unique(), on=key, how="semi")
        phones = _phone_columns(policy, dataset)
        persons = [c for c in ds.person_columns if c not in phones]
        mine = [m for _, _, m in ds.account_columns]
        frame = frame.with_columns(
            *[pl.col(c).replace_strict(old, new, default=None, return_dtype=pl.String)
              for c in persons],
            # A phone number is only "a phone": never the provider's pseudonym of it.
            *[pl.when(pl.col(c).is_not_null()).then(pl.lit("phone")).alias(c) for c in phones],
            # Every tenant's per-account pseudonyms: gone (the person columns above now hold
            # this tenant's, of its own people only).
            *[pl.lit(None, dtype=pl.String).alias(c) for c in mine],
        )  # fmt: skip
        if dataset == "lync_sessions":  # the other side, when it is someone else of ours
            frame = frame.with_columns(_other_tenant(side) for side in ("from", "to"))
        if not persons:
            return frame.filter(pl.lit(False))
        return frame.filter(pl.any_horizontal(pl.col(c).is_not_null() for c in persons))

    return view


def _other_tenant(side: str) -> pl.Expr:
    """A session side's domain class in a tenant's view: ``other_tenant`` for one of the
    provider's own domains that is not one of the tenant's people."""
    domain = pl.col(f"{side}_domain_class")
    theirs = pl.col(f"{side}_user").is_null() & (domain == "internal")
    return (
        pl.when(theirs)
        .then(pl.lit("other_tenant"))
        .otherwise(domain)
        .alias(domain.meta.output_name())
    )


def _minutes() -> pl.Expr:
    return pl.col("duration_s").fill_null(0) / 60


def user_activity(view: Scan) -> pl.LazyFrame:
    """One row per user of the tenant, day and region: what its administrators read of each
    user (the SfB User Activity report, the usage reports' per-user details)."""
    time = ["date", "region"]
    s = view("lync_sessions")
    sides = []
    for me, other in (("from", "to"), ("to", "from")):
        sides.append(
            s.filter(pl.col(f"{me}_user").is_not_null()).select(
                *time,
                pl.col(f"{me}_user").alias("user"),
                pl.col("session_hour").alias("hour"),
                pl.col("modalities").fill_null([]),
                _minutes().alias("minutes"),
                pl.any_horizontal(
                    pl.col(f"{other}_domain_class") == "phone",
                    pl.col(f"{other}_phone").is_not_null(),
                ).fill_null(False).alias("pstn"),
                (pl.col(f"{other}_domain_class") == "other_tenant").fill_null(False)
                .alias("other_tenant"),
                (pl.col(f"{other}_domain_class") == "federated").fill_null(False)
                .alias("federated"),
            )
        )  # fmt: skip
    p2p = (
        pl.concat(sides)
        .group_by(*time, "user")
        .agg(
            pl.len().alias("sessions"),
            *[
                pl.col("minutes").filter(pl.col("modalities").list.contains(m)).sum()
                .alias(f"{m}_minutes")
                for m in ("audio", "video", "app_sharing")
            ],
            pl.col("modalities").list.contains("im").sum().alias("im_sessions"),
            pl.col("minutes").filter(pl.col("pstn")).sum().alias("pstn_minutes"),
            pl.col("other_tenant").sum().alias("other_tenant_sessions"),
            pl.col("federated").sum().alias("federated_sessions"),
            pl.col("hour").max().alias("last_activity"),
        )
    )  # fmt: skip

    def per_user(dataset: str, who: str, hour: str, **measures: pl.Expr) -> pl.LazyFrame:
        return (
            view(dataset)
            .filter(pl.col(who).is_not_null())
            .group_by(*time, pl.col(who).alias("user"))
            .agg(
                *[e.alias(n) for n, e in measures.items()],
                pl.col(hour).max().alias("last_activity"),
            )
        )

    parts = [
        p2p,
        per_user("lync_conference_sessions", "user", "session_hour",
                 conferences_joined=pl.col("conference").n_unique(),
                 conference_minutes=_minutes().sum()),
        per_user("lync_conferences", "organizer", "conference_hour",
                 conferences_organised=pl.len()),
        per_user("lync_registrations", "user", "register_hour", registrations=pl.len()),
        per_user("connect_attendance", "user", "visit_hour", connect_visits=pl.len(),
                 connect_minutes=_minutes().sum()),
        per_user("web_requests", "user", "request_hour", page_views=pl.len()),
    ]  # fmt: skip
    counts = ("sessions", "im_sessions", "other_tenant_sessions", "federated_sessions",
              "conferences_joined", "conferences_organised", "registrations", "connect_visits",
              "page_views")  # fmt: skip
    minutes = ("audio_minutes", "video_minutes", "app_sharing_minutes", "pstn_minutes",
               "conference_minutes", "connect_minutes")  # fmt: skip
    out = pl.concat(parts, how="diagonal_relaxed")
    return (
        out.group_by(*time, "user")
        .agg(
            *[pl.col(c).sum().cast(pl.Int64) for c in counts],
            *[(pl.col(c).sum() * 10).round() / 10 for c in minutes],
            pl.col("last_activity").max(),
        )
        .sort(*time, "user")
    )


def connect_rooms(view: Scan) -> pl.LazyFrame:
    """One row per Connect room (its sco-id, as the provider's pseudonym: re-keyed for the
    tenant when written), day and region: the meeting sessions its users were in, their
    minutes, and the users' attendances (Connect's usage by room; the reports carry no cost
    centre)."""
    time = ["date", "region"]
    attendance = view("connect_attendance").filter(pl.col("user").is_not_null())
    sessions = (
        view("connect_meeting_sessions")
        .group_by(*time, pl.col("meeting").alias("room"))
        .agg(pl.col("meeting_session").n_unique().alias("sessions"),
             (_minutes().sum() * 10).round().truediv(10).alias("minutes"))
    )  # fmt: skip
    people = attendance.group_by(*time, pl.col("meeting").alias("room")).agg(
        pl.len().cast(pl.Int64).alias("attendances"),
        ((_minutes().sum() * 10).round() / 10).alias("attendance_minutes"),
        pl.col("user").n_unique().cast(pl.Int64).alias("people"),
    )
    return (
        people.join(sessions, on=[*time, "room"], how="left")
        .with_columns(
            pl.col("sessions").fill_null(0).cast(pl.Int64), pl.col("minutes").fill_null(0.0)
        )
        .select(*time, "room", "sessions", "minutes", "attendances", "attendance_minutes", "people")
        .filter(pl.col("room").is_not_null())
        .sort(*time, "room")
    )


USER_ACTIVITY = "user_activity"
CONNECT_ROOMS = "connect_rooms"
