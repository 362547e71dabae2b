"""The statistics UC administrators read (active users, call and PSTN minutes, IM, failures,
client versions), per day, week and month.

Golden tests: each statistic, computed on the sample's restricted data, equals an independent
DuckDB query over the same files; weekly and monthly active users equal an exact count of
distinct people; a week published day by day equals the week published at once."""

from __future__ import annotations

import shutil
from datetime import date, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest

from anonymize.contracts import load_output_schema
from anonymize.deliveries import content_digest
from anonymize.keys import KeyRing
from anonymize.operators import client_version_of
from anonymize.policy import Perturbation, ReleaseSpec
from anonymize.releases import compute_statistic, restricted_scanner
from anonymize.run import run_local
from anonymize.statistics import STATISTICS
from tests.conftest import SAMPLE
from tests.test_releases import _scan

ADMIN = ("active_users", "call_minutes", "pstn_minutes", "im_sessions", "failures",
         "registrations", "call_quality", "call_quality_sites")  # fmt: skip
TRUNC = {"day": "day", "week": "week", "month": "month"}


@pytest.fixture
def sample_out(published_sample) -> Path:
    return published_sample


def _exact(granularity: str, k: int = 2) -> ReleaseSpec:
    """Exact counts, every cell of k people, no dominance rule: the statistic as computed."""
    return ReleaseSpec(
        recipient="r", k=k, granularity=granularity, perturbation=Perturbation(method="none"),
        freeze=True, dominance=(),
    )  # fmt: skip


def _computed(restricted: Path, stat: str, granularity: str) -> pl.DataFrame:
    cells, _, _ = compute_statistic(
        STATISTICS[stat], restricted_scanner(restricted), _exact(granularity),
        KeyRing.development(),
    )  # fmt: skip
    return cells.with_columns(pl.col("people").cast(pl.Int64))


# --- the oracle: the same definitions, written again in SQL -------------------------------------

ROUTE = """CASE WHEN from_phone IS NOT NULL OR to_phone IS NOT NULL OR from_domain_class = 'phone'
    OR to_domain_class = 'phone' OR coalesce(from_pstn_gateway, false)
    OR coalesce(to_pstn_gateway, false) THEN 'pstn'
  WHEN from_domain_class = 'federated' OR to_domain_class = 'federated' THEN 'federated'
  ELSE 'internal' END"""

CATEGORY = """CASE WHEN response_code IS NULL THEN 'unknown'
  WHEN response_code BETWEEN 200 AND 299 THEN 'success'
  WHEN response_code IN (404, 408, 480, 486, 487, 603) THEN 'expected_failure'
  ELSE 'unexpected_failure' END AS category,
  coalesce(CAST(response_code // 100 AS VARCHAR) || 'xx', 'unknown') AS response_class,
  CASE WHEN diagnostic_id IS NULL OR diagnostic_id < 0 THEN 'none'
  ELSE CAST(diagnostic_id // 1000 * 1000 AS VARCHAR) || '-'
       || CAST(diagnostic_id // 1000 * 1000 + 999 AS VARCHAR) END AS diagnostic_range"""

ROWS = {
    "active_users": ("service", "count(*) AS activities", """
        SELECT date, region, 'lync' AS service, from_user AS who FROM lync_sessions
          WHERE coalesce(from_domain_class, 'internal') = 'internal'
        UNION ALL SELECT date, region, 'lync', to_user FROM lync_sessions
          WHERE response_code BETWEEN 200 AND 299
            AND coalesce(to_domain_class, 'internal') = 'internal'
        UNION ALL SELECT date, region, 'lync', "user" FROM lync_conference_sessions
        UNION ALL SELECT date, region, 'lync', "user" FROM lync_registrations
        UNION ALL SELECT date, region, 'connect', "user" FROM connect_attendance
        UNION ALL SELECT date, region, 'web', "user" FROM web_requests"""),
    "call_minutes": ("kind, route", "count(*) AS sessions, sum(minutes) AS minutes", f"""
        SELECT date, region, 'peer_to_peer' AS kind, {ROUTE} AS route,
          coalesce(duration_s, 0) / 60 AS minutes, coalesce(from_user, to_user) AS who
        FROM lync_sessions
        UNION ALL SELECT date, region, 'conference',
          CASE WHEN coalesce(via_pstn_gateway, false) THEN 'pstn' ELSE 'internal' END,
          coalesce(duration_s, 0) / 60, "user" FROM lync_conference_sessions"""),
    "pstn_minutes": ("direction, country", "count(*) AS calls, sum(minutes) AS minutes", f"""
        SELECT date, region,
          CASE WHEN outbound THEN 'outbound' ELSE 'inbound' END AS direction,
          coalesce(CASE WHEN outbound THEN to_phone_country ELSE from_phone_country END,
                   'unknown') AS country,
          coalesce(duration_s, 0) / 60 AS minutes,
          CASE WHEN outbound THEN coalesce(from_user, to_user)
               ELSE coalesce(to_user, from_user) END AS who
        FROM (SELECT *, coalesce(to_phone IS NOT NULL OR to_domain_class = 'phone', false)
                          AS outbound, {ROUTE} AS route FROM lync_sessions)
        WHERE route = 'pstn'
        UNION ALL SELECT date, region, 'conference_dial_in', 'unknown',
          coalesce(duration_s, 0) / 60, "user"
        FROM lync_conference_joins WHERE coalesce(is_from_pstn, false)"""),
    "im_sessions": ("kind, route", "count(*) AS sessions, sum(messages) AS messages", f"""
        SELECT date, region, 'peer_to_peer' AS kind, {ROUTE} AS route,
          coalesce(from_message_count, 0) + coalesce(to_message_count, 0) AS messages,
          coalesce(from_user, to_user) AS who
        FROM lync_sessions WHERE list_contains(modalities, 'im')
        UNION ALL SELECT date, region, 'conference', 'internal', 0, "user"
        FROM lync_conference_sessions WHERE mcu_type = 'chat'"""),
    "failures": ("kind, category, response_class, diagnostic_range",
                 "count(*) AS attempts", f"""
        SELECT date, region, 'peer_to_peer' AS kind, {CATEGORY},
          coalesce(from_user, to_user) AS who FROM lync_sessions
        UNION ALL SELECT date, region, 'conference', {CATEGORY}, "user"
        FROM lync_conference_sessions
        UNION ALL SELECT date, region, 'registration', {CATEGORY}, "user"
        FROM lync_registrations"""),
    "registrations": ("client, client_version", "count(*) AS registrations", """
        SELECT date, region, coalesce(client, 'unknown') AS client,
          coalesce(client_version, 'unknown') AS client_version, "user" AS who
        FROM lync_registrations"""),
}  # fmt: skip

RECEIVED = """
    SELECT s.date, s.region, CASE WHEN sic THEN callee ELSE caller END AS who,
      coalesce(CASE WHEN sic THEN callee_client ELSE caller_client END, 'unknown') AS client,
      CASE WHEN coalesce(CASE WHEN sic THEN callee_vpn ELSE caller_vpn END, false) THEN 'vpn'
           WHEN NOT coalesce(CASE WHEN sic THEN callee_inside ELSE caller_inside END, true)
             THEN 'outside'
           ELSE coalesce(CASE WHEN sic THEN callee_connection ELSE caller_connection END,
                         'unknown') END AS network,
      coalesce(CASE WHEN sic THEN callee_site ELSE caller_site END, 'unknown') AS site,
      CAST(poor AS INTEGER) AS poor
    FROM (SELECT session_key, media_line, coalesce(sender_is_caller, true) AS sic,
            coalesce(degradation_avg > 1.0 OR round_trip_ms > 500 OR packet_loss_rate > 0.1
                     OR jitter_ms > 30 OR concealed_ratio > 0.07, false) AS poor
          FROM qoe_audio_streams) a
    JOIN qoe_media_lines m USING (session_key, media_line)
    JOIN qoe_sessions s USING (session_key)"""
ROWS["call_quality"] = ("client, network", "count(*) AS streams, sum(poor) AS poor_streams",
                        RECEIVED)  # fmt: skip
ROWS["call_quality_sites"] = ("site", "count(*) AS streams, sum(poor) AS poor_streams", RECEIVED)


def _oracle(restricted: Path, stat: str, granularity: str, k: int = 2) -> pl.DataFrame:
    con = duckdb.connect()
    for dataset in {*STATISTICS[stat].sources}:
        files = sorted((restricted / dataset).glob("date=*/region=*/*.parquet"))
        assert files, dataset
        listing = ", ".join(f"'{f}'" for f in files)
        con.sql(
            f"CREATE VIEW {dataset} AS SELECT * FROM read_parquet([{listing}], "
            "hive_partitioning = true, union_by_name = true)"
        )
    dims, measures, rows = ROWS[stat]
    query = f"""
        SELECT CAST(date_trunc('{TRUNC[granularity]}', date) AS DATE) AS date, region, {dims},
               {measures}, count(DISTINCT who) AS people
        FROM ({rows}) WHERE who IS NOT NULL
        GROUP BY ALL HAVING count(DISTINCT who) >= {k} ORDER BY ALL"""
    return con.sql(query).pl()


def _same(computed: pl.DataFrame, oracle: pl.DataFrame) -> None:
    order = list(oracle.columns)
    computed = computed.select(order)
    if "minutes" in order:
        computed = computed.with_columns(pl.col("minutes").round(1))
        oracle = oracle.with_columns(pl.col("minutes").round(1))
    cast = {c: pl.Int64 for c, t in oracle.schema.items() if t.is_integer()}
    keys = [c for c in order if not oracle.schema[c].is_numeric()]
    assert computed.cast(cast).sort(keys).rows() == oracle.cast(cast).sort(keys).rows()


@pytest.mark.parametrize("granularity", ["day", "week", "month"])
@pytest.mark.parametrize("stat", ADMIN)
def test_each_statistic_equals_an_independent_query_of_the_restricted_data(
    sample_out, stat, granularity
):
    restricted = sample_out / "restricted"
    oracle = _oracle(restricted, stat, granularity)
    assert oracle.height > 0
    _same(_computed(restricted, stat, granularity), oracle)


def test_weekly_and_monthly_active_users_are_distinct_people_not_sums_of_days(sample_out):
    restricted = sample_out / "restricted"
    daily = _computed(restricted, "active_users", "day")
    for granularity in ("week", "month"):
        period = _computed(restricted, "active_users", granularity)
        # Exact: the distinct pseudonyms of the service's people over the whole period.
        oracle = _oracle(restricted, "active_users", granularity, k=1)
        _same(period.filter(pl.col("people") >= 2), oracle.filter(pl.col("people") >= 2))
        both = period.join(
            daily.group_by("region", "service").agg(pl.col("people").sum().alias("sum_days")),
            on=["region", "service"],
        )
        assert (both["people"] <= both["sum_days"]).all()
        assert (both["people"] < both["sum_days"]).any()  # people active on both days


def test_published_weekly_and_monthly_active_users_are_the_exact_count_perturbed(
    sample_out, policy
):
    restricted = sample_out / "restricted"
    for name, granularity in (("partner_weekly", "week"), ("partner_monthly", "month")):
        spec = policy.releases[name]
        published = pl.read_parquet(
            sample_out / "shareable" / name / "active_users" / "**" / "*.parquet",
            hive_partitioning=True,
        )
        exact = _oracle(restricted, "active_users", granularity, k=1)
        both = published.join(exact, on=["date", "region", "service"], suffix="_exact")
        assert both.height == published.height > 0
        off = (both["people"] - both["people_exact"]).abs()
        assert off.max() <= spec.perturbation.max_perturbation
        assert (both["people_exact"] >= spec.k).all()
        # A period's cell is dated by the first day of the period.
        first = {"week": date(2026, 11, 23), "month": date(2026, 11, 1)}[granularity]
        assert set(published["date"].to_list()) == {first}


def test_a_week_published_day_by_day_equals_the_week_published_at_once(
    tmp_path, policy, dev_keyring
):
    """The second day's run reads the first day's published data: each person counts once in
    the week, and the files are byte for byte those of one run over both days."""
    once = tmp_path / "once"
    shutil.copytree(SAMPLE, once / "landing")
    run_local(once / "landing", once / "out", policy=policy, keyring=dev_keyring, run_id="r1")
    split = tmp_path / "split"
    shutil.copytree(SAMPLE, split / "landing")
    later = split / "later"
    for f in sorted((split / "landing").rglob("*")):
        if f.is_file() and "2026-11-24" in f.relative_to(split / "landing").as_posix():
            target = later / f.relative_to(split / "landing")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(f, target)
    run_local(split / "landing", split / "out", policy=policy, keyring=dev_keyring, run_id="r1")
    first = pl.read_parquet(
        split / "out/current/shareable/partner_weekly/active_users/**/*.parquet"
    )
    shutil.copytree(later, split / "landing", dirs_exist_ok=True)
    run_local(split / "landing", split / "out", policy=policy, keyring=dev_keyring, run_id="r2")
    for name in ("partner_weekly", "partner_monthly"):
        a = sorted((once / "out/current/shareable" / name).rglob("*.parquet"))
        b = sorted((split / "out/current/shareable" / name).rglob("*.parquet"))
        rel = [p.relative_to(once / "out/current").as_posix() for p in a]
        assert rel == [p.relative_to(split / "out/current").as_posix() for p in b]
        assert [content_digest(p) for p in a] == [content_digest(p) for p in b], name
    second = pl.read_parquet(
        split / "out/current/shareable/partner_weekly/active_users/**/*.parquet"
    )
    assert second["people"].sum() > first["people"].sum()


def _registration(user: str, day: int, version: str, month: int = 11) -> dict:
    return {
        "date": date(2026, month, day), "region": "EMEA", "user": user,
        "register_hour": datetime(2026, month, day, 9), "client": "desktop_windows",
        "client_version": version, "response_code": 200,
    }  # fmt: skip


def _registrations(rows: list[dict]) -> pl.DataFrame:
    schema = dict(load_output_schema("lync_registrations").polars_schema)
    schema.update({"date": pl.Date, "region": pl.String})
    return pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema)


def test_weeks_start_on_monday_and_months_on_the_first():
    """Sunday 29 November and Monday 30 November are two weeks and one month; Tuesday
    1 December is another month. Five people each day, and one of Monday's again on Tuesday:
    the week of Monday and Tuesday has ten people, December six."""
    rows = [_registration(f"u-{d}-{i}", d, "16.0") for d in (29, 30) for i in range(5)]
    rows += [_registration(f"u-1-{i}", 1, "16.0", month=12) for i in range(5)]
    rows += [_registration("u-30-0", 1, "16.0", month=12)]  # active in both months
    scan = _scan({"lync_registrations": _registrations(rows)})
    got = {}
    for granularity in ("week", "month"):
        cells, _, _ = compute_statistic(
            STATISTICS["registrations"], scan, _exact(granularity, k=2), KeyRing.development()
        )
        got[granularity] = dict(
            zip(cells["date"].to_list(), cells["people"].to_list(), strict=True)
        )
    assert got["week"] == {date(2026, 11, 23): 5, date(2026, 11, 30): 10}
    assert got["month"] == {date(2026, 11, 1): 10, date(2026, 12, 1): 6}


def test_a_frozen_weekly_release_gets_whole_weeks_only():
    from anonymize.releases import settled_before

    spec = ReleaseSpec(recipient="r", k=5, granularity="week", freeze=True,
                       statistics=("active_users",))  # fmt: skip
    # On Thursday 26 November, the week of the 23rd is not over: only the weeks before it.
    assert settled_before(spec, date(2026, 11, 26)) == date(2026, 11, 23)
    monthly = spec.model_copy(update={"granularity": "month", "settle_days": 3})
    assert settled_before(monthly, date(2026, 12, 2)) == date(2026, 11, 1)
    assert settled_before(monthly, date(2026, 12, 4)) == date(2026, 12, 1)


def test_failures_split_expected_from_unexpected_and_name_only_a_diagnostic_block():
    schema = dict(load_output_schema("lync_sessions").polars_schema)
    schema.update({"date": pl.Date, "region": pl.String})
    codes = [(486, 10007), (487, 10009), (500, 52001), (503, None), (200, 51004)]
    rows = [
        {"date": date(2026, 11, 23), "region": "EMEA", "session_hour": datetime(2026, 11, 23, 9),
         "from_user": f"u-{c}-{i}", "response_code": c, "diagnostic_id": d, "duration_s": 60.0}
        for c, d in codes for i in range(3)
    ]  # fmt: skip
    frame = pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema)
    cells, _, _ = compute_statistic(
        STATISTICS["failures"], _scan({"lync_sessions": frame}), _exact("day"),
        KeyRing.development(),
    )  # fmt: skip
    got = sorted(cells.select("category", "response_class", "diagnostic_range", "attempts").rows())
    assert got == [
        ("expected_failure", "4xx", "10000-10999", 6),
        ("success", "2xx", "51000-51999", 3),
        ("unexpected_failure", "5xx", "52000-52999", 3),
        ("unexpected_failure", "5xx", "none", 3),
    ]
    assert not any(str(d) in cells.write_csv() for _, d in codes if d)  # never the id itself


@pytest.mark.parametrize(
    ("agent", "version"),
    [
        ("UCCAPI/16.0.4266.1003 OC/16.0.4266.1003 (Skype for Business)", "16.0"),
        ("UCCAPI/15.0.5023.1000 OC/15.0.5023.1000 (Microsoft Lync)", "15.0"),
        ("OC/4.0.7577.4445 (Microsoft Lync 2010)", "4.0"),
        ("iPhoneLync/6.19.0.9 (iOS 12.1)", "6.19"),
        ("CPE/4.0.7577.4445 (Microsoft Lync Phone Edition)", "4.0"),
        ("jsmith-laptop/1.2.3", "other"),
        ("", "other"),
    ],
)
def test_client_versions_keep_a_known_products_major_and_minor_only(agent, version):
    assert client_version_of(agent) == version


def test_every_readme_question_on_the_new_statistics_runs(sample_out, monkeypatch, tmp_path):
    """The README's DuckDB block (one question per statistic, and an account holder's) runs as
    written on what a run over the sample publishes, and every query answers."""
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"<!-- admin-queries -->\n```python\n(.*?)```", readme, re.S).group(1)
    queries = re.findall(r'q\("""(.*?)"""\)', block, re.S)
    assert len(queries) == 13
    here = tmp_path / "reader"
    here.mkdir()
    (here / "out").symlink_to(sample_out, target_is_directory=True)
    monkeypatch.chdir(here)
    for query in queries:
        assert duckdb.sql(query).fetchall(), query
    exec(compile(block, "README.md", "exec"), {})  # the block itself, as a reader runs it
