"""Releases: k distinct people per cell, no differencing, DP accuracy, per-recipient pseudonyms,
and every reader on the published statistics."""

from __future__ import annotations

import itertools
import os
import shutil
from datetime import date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from anonymize.contracts import load_output_schema
from anonymize.keys import KeyRing
from anonymize.policy import DEFAULT_POLICY, DpSettings, Perturbation, ReleaseSpec, load_policy
from anonymize.releases import compute_statistic, pseudonym_columns
from anonymize.run import run_local
from anonymize.statistics import STATISTICS
from anonymize.synth import generate_lync
from tests.conftest import SAMPLE

# Exact counts, for the tests of suppression (a release like this must freeze delivered days).
EXACT = {"perturbation": Perturbation(method="none"), "freeze": True}


def _sessions_frame(rows: list[dict]) -> pl.DataFrame:
    """A restricted lync_sessions frame: the given columns, typed nulls elsewhere."""
    schema = dict(load_output_schema("lync_sessions").polars_schema)
    schema.update({"date": pl.Date, "region": pl.String})
    filled = [{c: r.get(c) for c in schema} for r in rows]
    return pl.DataFrame(filled, schema=schema)


def _session(caller: str, callee: str, day: int = 23, minutes: float = 3.0, **kw) -> dict:
    return {
        "date": date(2026, 11, day),
        "region": "EMEA",
        "session_hour": datetime(2026, 11, day, 10),
        "from_user": caller,
        "to_user": callee,
        "modalities": ["audio"],
        "from_client": "desktop_windows",
        "response_code": 200,
        "from_domain_class": "internal",
        "to_domain_class": "internal",
        "duration_s": minutes * 60,
        **kw,
    }


def _scan(frames: dict[str, pl.DataFrame]):
    def scan(dataset: str) -> pl.LazyFrame:
        if dataset in frames:
            return frames[dataset].lazy()
        schema = dict(load_output_schema(dataset).polars_schema)
        schema.update({"date": pl.Date, "region": pl.String})
        return pl.LazyFrame(schema=schema)

    return scan


def test_many_rows_from_few_people_are_suppressed():
    rows = [_session("u-aaa", "u-bbb") for _ in range(200)]  # 200 calls, two people
    rows += [
        _session(f"u-{i:03d}", f"u-{i + 100:03d}", modalities=["im"]) for i in range(12)
    ]  # 12 chats, 12 callers
    release = ReleaseSpec(recipient="r", statistics=("usage_sessions",), k=10, **EXACT)
    cells, margins, report = compute_statistic(
        STATISTICS["usage_sessions"], _scan({"lync_sessions": _sessions_frame(rows)}), release,
        KeyRing.development(),
    )  # fmt: skip
    assert cells.select("modality", "sessions", "people").rows() == [("im", 12, 12)]
    assert (report.cells, report.published, report.suppressed) == (2, 1, 1)
    assert report.suppressed_rows == 200
    assert margins.select("sessions", "people", "covers").rows() == [(12, 12, 1)]


def _usage_sessions(rows: list[dict], **release) -> tuple[pl.DataFrame, object]:
    spec = ReleaseSpec(recipient="r", statistics=("usage_sessions",), k=10, **EXACT, **release)
    cells, _, report = compute_statistic(
        STATISTICS["usage_sessions"], _scan({"lync_sessions": _sessions_frame(rows)}), spec,
        KeyRing.development(),
    )  # fmt: skip
    return cells, report


def test_callees_do_not_make_a_cell_reach_k():
    """The client and outcome columns describe the caller: 6 callers reaching 6 other people
    are a cell of 6, whatever the callees."""
    rows = [_session(f"u-{i:03d}", f"u-{i + 100:03d}") for i in range(6)]
    cells, report = _usage_sessions(rows)
    assert cells.height == 0
    assert report.suppressed == 1
    cells, _ = _usage_sessions(rows + [_session(f"u-{i:03d}", "u-zzz") for i in range(6, 10)])
    assert cells.select("sessions", "people").rows() == [(10, 10)]


def test_a_cell_where_one_person_gives_most_minutes_is_suppressed():
    """12 callers, one of whom talked 300 minutes and the others 3: the cell's minutes would
    tell that person's own minutes almost exactly (dominance rule, not k)."""
    rows = [_session("u-big", "u-x", minutes=300.0)]
    rows += [_session(f"u-{i:03d}", "u-x", minutes=3.0) for i in range(11)]
    rows += [_session(f"u-{i:03d}", "u-x", minutes=3.0, modalities=["video"]) for i in range(12)]
    cells, report = _usage_sessions(rows)
    assert cells["modality"].to_list() == ["video"]  # the balanced cell is published
    assert report.dominated == 1
    # Two people giving most of it are caught by the (2, 85 %) rule.
    rows = [_session(f"u-big{j}", "u-x", minutes=200.0) for j in range(2)]
    rows += [_session(f"u-{i:03d}", "u-x", minutes=3.0) for i in range(10)]
    assert _usage_sessions(rows)[0].height == 0
    assert _usage_sessions(rows, dominance=())[0].height == 1


@pytest.fixture(scope="module")
def sample_release(tmp_path_factory, policy, dev_keyring):
    root = tmp_path_factory.mktemp("release")
    shutil.copytree(SAMPLE, root / "landing")
    report: dict = {}
    run_local(root / "landing", root / "out", policy=policy, keyring=dev_keyring, run_id="r",
              report=report)  # fmt: skip
    return root / "out", report["releases"]["partner"]


def _read(root: Path, name: str = "") -> pl.DataFrame:
    """A published dataset (empty when nothing of it was published)."""
    if not list(root.rglob("*.parquet")):
        return pl.DataFrame()
    return pl.read_parquet(root / "**" / "*.parquet", hive_partitioning=True)


def test_every_published_cell_has_k_people(sample_release):
    out, entry = sample_release
    k = entry["k"]
    published = 0
    for stat in entry["statistics"]:
        cells = _read(out / "shareable" / "partner" / stat, stat)
        if cells.height:
            assert cells["people"].min() >= k, stat
        published += cells.height
        assert cells.height == entry["statistics"][stat]["published"]
    assert published > 0
    assert sum(s["suppressed"] for s in entry["statistics"].values()) > 0


def _remainders(margins: pl.DataFrame, cells: pl.DataFrame, keys: list[str], measure: str):
    """Every margin minus the sum of every subset of its group's published cells.

    A remainder that no subset brings to zero is mass no published cell explains: a suppressed
    cell (or a sum of them) recovered by subtraction.
    """
    for group in margins.iter_rows(named=True):
        mask = pl.all_horizontal(pl.col(c) == group[c] for c in keys)
        values = cells.filter(mask)[measure].to_list()
        best = min(
            abs(group[measure] - sum(subset))
            for n in range(len(values) + 1)
            for subset in itertools.combinations(values, n)
            if n in (0, len(values)) or len(values) <= 10
        )
        yield group, best


def test_no_subtraction_of_published_numbers_recovers_a_suppressed_cell(sample_release, policy):
    out, entry = sample_release
    root = out / "shareable" / "partner"
    checked = 0
    for stat in entry["statistics"]:
        cells, margins = _read(root / stat, stat), _read(root / f"{stat}_totals", stat)
        if not cells.height:
            assert not margins.height  # no published cell, no margin
            continue
        measure = STATISTICS[stat].measures[0]
        for _, remainder in _remainders(margins, cells, ["date", "region"], measure):
            assert remainder == 0, stat
            checked += 1
    assert checked > 0


def test_the_subtraction_test_catches_margins_of_all_cells(sample_release):
    """What margins computed over every cell (the FlowKit hole) would give away."""
    out, _ = sample_release
    sessions = pl.read_parquet(out / "restricted" / "lync_sessions" / "**" / "*.parquet",
                               hive_partitioning=True)  # fmt: skip
    release = ReleaseSpec(recipient="partner", statistics=("usage_sessions",), k=10, **EXACT)
    cells, _, report = compute_statistic(
        STATISTICS["usage_sessions"], _scan({"lync_sessions": sessions}), release,
        KeyRing.development().for_release("partner"),
    )  # fmt: skip
    assert report.suppressed > 0
    naive = (
        sessions.with_columns(pl.lit(1).alias("sessions"))
        .explode("modalities")
        .group_by("date", "region")
        .agg(pl.col("sessions").sum())
    )
    leaks = [r for _, r in _remainders(naive, cells, ["date", "region"], "sessions") if r > 0]
    assert leaks  # a naive total minus the published cells is suppressed mass


def test_dp_counts_are_off_by_about_the_reported_accuracy():
    # 8 cells of 80 people each, one call per person: bounding changes nothing, and every
    # cell is far above the threshold of the partition selection.
    rows = []
    for cell in range(8):
        client = ["desktop_windows", "mobile_ios", "web_app", "desk_phone"][cell % 4]
        mod = ["audio"] if cell < 4 else ["im"]
        for p in range(80):
            rows.append(_session(f"u-{cell}-{p}", f"u-x{cell}-{p}", modalities=mod,
                                 from_client=client, minutes=5.0))  # fmt: skip
    frame = _sessions_frame(rows)
    exact_rel = ReleaseSpec(recipient="r", statistics=("usage_sessions",), k=2, **EXACT)
    exact, _, _ = compute_statistic(STATISTICS["usage_sessions"], _scan({"lync_sessions": frame}),
                                    exact_rel, KeyRing.development())  # fmt: skip
    dp_rel = ReleaseSpec(
        recipient="r", statistics=("usage_sessions",), k=2,
        dp=DpSettings(enabled=True, epsilon=2.0, max_rows_per_person=2, max_minutes=10.0),
    )  # fmt: skip
    keys = ["date", "region", "modality", "client", "outcome", "route"]
    errors = []
    accuracy = None
    for _ in range(40):  # the noise is keyed: another key, another draw
        noisy, _, report = compute_statistic(
            STATISTICS["usage_sessions"], _scan({"lync_sessions": frame}), dp_rel,
            KeyRing(os.urandom(32)),
        )  # fmt: skip
        accuracy = report.dp["accuracy_95"]["sessions"]
        joined = noisy.join(exact, on=keys, suffix="_exact")
        errors += (joined["sessions"] - joined["sessions_exact"]).abs().to_list()
    assert report.dp["epsilon"] == 2.0
    errors_s = pl.Series(errors, dtype=pl.Float64)
    assert len(errors) > 200
    # The reported accuracy is the 95 % bound: about 95 % of errors are within it.
    within = (errors_s <= accuracy).mean()
    assert 0.88 <= within <= 0.995, (within, accuracy)
    assert errors_s.quantile(0.95) == pytest.approx(accuracy, rel=0.35)
    assert errors_s.max() > 0  # noise was added


def test_dp_cells_of_one_person_appear_at_most_at_the_promised_rate():
    """Partition selection: with the threshold OpenDP sets for delta, a cell that exists only
    because one person is in it is published with probability at most delta."""
    from anonymize.releases import dp_select

    delta, trials = 1e-3, 100_000
    seeds = [str(i) for i in range(trials)]
    key = os.urandom(32)
    released, threshold = dp_select([1] * trials, 1.0, 1, 2, delta, seeds, key)
    shown = sum(v is not None for v in released)
    assert threshold > 2
    assert shown / trials <= delta * 1.2  # binomial noise around a rate of at most delta
    # A cell of many people is published, its noisy count near the truth.
    (big,), _ = dp_select([500], 1.0, 1, 2, delta, ["big"], key)
    assert big is not None
    assert abs(big - 500) < 20
    # Through a release: 300 cells of one or two callers, none published.
    rows = [
        _session(f"u-{i}", "u-x", from_client=f"c{i}", modalities=["audio"]) for i in range(300)
    ]
    spec = ReleaseSpec(recipient="r", statistics=("usage_sessions",), k=2,
                       dp=DpSettings(enabled=True, epsilon=1.0))  # fmt: skip
    cells, _, report = compute_statistic(
        STATISTICS["usage_sessions"], _scan({"lync_sessions": _sessions_frame(rows)}), spec,
        KeyRing.development(),
    )  # fmt: skip
    assert cells.height == 0
    assert report.dp["delta"] == 1e-6
    assert report.dp["threshold"] > 10


def _two_recipient_policy(tmp_path: Path, scope: str) -> Path:
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    # Event data this fine would be refused by the gate (unicity, k-anonymity); these tests are
    # about pseudonyms, so their releases accept any unicity.
    lax = {"max_unicity": 1.0, "max_share_below_k": 1.0, "max_linkable_share": 1.0}
    doc["releases"] = {
        "alpha": {"recipient": "alpha", "k": 5, "events": {"lync_sessions": scope}, **lax},
        "beta": {"recipient": "beta", "k": 5, "events": {"lync_sessions": scope}, **lax},
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _people(frame: pl.DataFrame) -> set[str]:
    return set(frame["from_user"].drop_nulls()) | set(frame["to_user"].drop_nulls())


def test_two_recipients_share_no_pseudonym(tmp_path, dev_keyring):
    generate_lync(tmp_path / "landing", seed=3, rows=400, days=1, people=40)
    policy = load_policy(_two_recipient_policy(tmp_path, "stable"))
    run_local(tmp_path / "landing", tmp_path / "out", policy=policy, keyring=dev_keyring,
              run_id="r")  # fmt: skip
    share = tmp_path / "out" / "shareable"
    alpha = _read(share / "alpha" / "lync_sessions", "")
    beta = _read(share / "beta" / "lync_sessions", "")
    restricted = _read(tmp_path / "out" / "restricted" / "lync_sessions", "")
    assert alpha.height == beta.height == restricted.height
    assert _people(alpha).isdisjoint(_people(beta))
    assert _people(alpha).isdisjoint(_people(restricted))
    # Same person, same pseudonym within one recipient's stable scope: the row order agrees.
    assert alpha["from_user"].is_null().sum() == restricted["from_user"].is_null().sum()
    assert alpha["from_user"].n_unique() == restricted["from_user"].n_unique()


def test_a_monthly_scope_changes_every_pseudonym_at_the_month_boundary(tmp_path, dev_keyring):
    generate_lync(tmp_path / "landing", seed=4, rows=600, days=2, people=30,
                  start=date(2026, 11, 30))  # fmt: skip
    policy = load_policy(_two_recipient_policy(tmp_path, "month"))
    run_local(tmp_path / "landing", tmp_path / "out", policy=policy, keyring=dev_keyring,
              run_id="r", releases=["alpha"])  # fmt: skip
    share = tmp_path / "out" / "shareable"
    assert not (share / "beta").exists()  # only the release asked for
    events = _read(share / "alpha" / "lync_sessions", "")
    nov = _people(events.filter(pl.col("date") == date(2026, 11, 30)))
    dec = _people(events.filter(pl.col("date") == date(2026, 12, 1)))
    restricted = _read(tmp_path / "out" / "restricted" / "lync_sessions", "")
    same_people = _people(restricted.filter(pl.col("date") == date(2026, 11, 30))) & _people(
        restricted.filter(pl.col("date") == date(2026, 12, 1))
    )
    assert same_people  # people who call on both days ...
    assert nov
    assert dec
    assert nov.isdisjoint(dec)  # ... get new pseudonyms in December


def test_scope_none_removes_pseudonyms(tmp_path, dev_keyring):
    generate_lync(tmp_path / "landing", seed=5, rows=200, days=1, people=20)
    policy = load_policy(_two_recipient_policy(tmp_path, "none"))
    run_local(tmp_path / "landing", tmp_path / "out", policy=policy, keyring=dev_keyring,
              run_id="r", releases=["beta"])  # fmt: skip
    events = _read(tmp_path / "out" / "shareable" / "beta" / "lync_sessions", "")
    assert events.height > 0
    assert events["from_user"].null_count() == events.height
    assert events["duration_s"].null_count() < events.height


def test_two_recipients_whose_event_rows_can_be_joined_are_refused(tmp_path, dev_keyring):
    """The attack: a day-scoped and a stable recipient join their copies of the same sessions
    on every column but the pseudonyms, and each unique row links one pseudonym to the other.
    The gate counts those rows and refuses the releases."""
    generate_lync(tmp_path / "landing", seed=5, rows=400, days=1, people=30)
    doc = yaml.safe_load(_two_recipient_policy(tmp_path, "day").read_text())
    doc["releases"]["beta"]["events"] = {"lync_sessions": "stable"}
    lax = tmp_path / "lax.yaml"
    lax.write_text(yaml.safe_dump(doc))
    run_local(tmp_path / "landing", tmp_path / "lax", policy=load_policy(lax),
              keyring=dev_keyring, run_id="r")  # fmt: skip
    a = _read(tmp_path / "lax" / "shareable" / "alpha" / "lync_sessions")
    b = _read(tmp_path / "lax" / "shareable" / "beta" / "lync_sessions")
    pseudonyms = pseudonym_columns(load_policy(lax), "lync_sessions")
    qis = [c for c in a.columns if c not in pseudonyms]
    a_s, b_s = (f.with_columns(pl.col("modalities").list.join(",")) for f in (a, b))
    unique = a_s.group_by(qis, maintain_order=True).len().filter(pl.col("len") == 1)
    linked = a_s.join(unique.drop("len"), on=qis, nulls_equal=True).join(
        b_s, on=qis, nulls_equal=True, suffix="_b"
    )
    assert linked.height > 0  # the attack works on these data ...
    assert (linked["from_user"] != linked["from_user_b"]).all()  # ... across two key spaces

    doc["releases"]["alpha"].pop("max_linkable_share")
    strict = tmp_path / "strict.yaml"
    strict.write_text(yaml.safe_dump(doc))
    report: dict = {}
    _, published = run_local(tmp_path / "landing", tmp_path / "strict",
                             policy=load_policy(strict), keyring=dev_keyring, run_id="r",
                             report=report)  # fmt: skip
    assert published == []
    joinable = [f for f in report["gate"]["findings"] if f["detector"] == "joinable"]
    assert joinable == [{"area": "shareable", "dataset": "alpha+beta/lync_sessions",
                         "column": "*", "detector": "joinable", "rows": unique.height}]  # fmt: skip


def test_event_rows_are_coarsened_sorted_and_k_checked_even_without_pseudonyms(
    tmp_path, dev_keyring
):
    generate_lync(tmp_path / "landing", seed=5, rows=300, days=1, people=20)
    path = _two_recipient_policy(tmp_path, "none")
    run_local(tmp_path / "landing", tmp_path / "lax", policy=load_policy(path),
              keyring=dev_keyring, run_id="r", releases=["beta"])  # fmt: skip
    part = next((tmp_path / "lax" / "shareable" / "beta" / "lync_sessions").rglob("*.parquet"))
    events = pl.read_parquet(part)
    durations = events["duration_s"].drop_nulls()
    assert durations.len() > 0
    assert ((durations % 60) == 0).all()  # to the minute, not the millisecond
    order = [c for c, t in events.schema.items() if not isinstance(t, pl.List)]
    assert events.equals(events.sort(order, nulls_last=True, maintain_order=True))
    # Scope none has no pseudonym, yet its records are checked for k like any other.
    doc = yaml.safe_load(path.read_text())
    doc["releases"]["beta"]["max_share_below_k"] = 0.05
    strict = tmp_path / "strict.yaml"
    strict.write_text(yaml.safe_dump(doc))
    report: dict = {}
    _, published = run_local(tmp_path / "landing", tmp_path / "strict",
                             policy=load_policy(strict), keyring=dev_keyring, run_id="r",
                             releases=["beta"], report=report)  # fmt: skip
    assert published == []
    assert [f["detector"] for f in report["gate"]["findings"]] == ["k_anonymity"]
    (check,) = report["gate"]["unicity_checks"]
    assert "duration_s" in check["quasi_identifiers"]


def test_release_statistics_read_in_polars_pandas_pyarrow_and_duckdb(sample_release):
    import duckdb
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as ds

    out, entry = sample_release
    root = out / "shareable" / "partner" / "usage_sessions"
    n = entry["statistics"]["usage_sessions"]["published"]
    assert pl.read_parquet(root, hive_partitioning=True).height == n
    assert len(pd.read_parquet(root)) == n
    part = ds.partitioning(pa.schema([("date", pa.date32()), ("region", pa.string())]),
                           flavor="hive")  # fmt: skip
    assert ds.dataset(root, format="parquet", partitioning=part).to_table().num_rows == n
    rows = duckdb.sql(
        f"""SELECT region, sum(sessions) AS sessions, sum(minutes) AS minutes
            FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true)
            GROUP BY region ORDER BY region"""
    ).fetchall()
    assert sum(r[1] for r in rows) == pl.read_parquet(root)["sessions"].sum()
    meta = pl.read_parquet_metadata(next(root.rglob("*.parquet")))
    assert meta["cdranon.release"] == "partner"
    assert meta["cdranon.k"] == str(entry["k"])
    assert meta["cdranon.key_id"] == entry["key_id"]


def test_release_policy_problems(tmp_path):
    from anonymize.errors import PolicyError

    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    doc["releases"] = {
        "Bad Name": {"recipient": "x", "k": 5, "statistics": ["usage_sessions"]},
        "a": {"recipient": "y", "k": 5, "statistics": ["usage_nothing"]},
        "b": {"recipient": "y", "k": 5, "events": {"no_such_dataset": "day"}},
        "c": {"recipient": "z", "k": 5},
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    text = str(err.value)
    for problem in (
        "releases.Bad Name: a release name",
        "unknown statistic 'usage_nothing'",
        "no dataset 'no_such_dataset'",
        "releases.c: releases nothing",
        "the recipient 'y' has more than one release",
    ):
        assert problem in text


def test_k_below_two_is_refused(tmp_path):
    from anonymize.errors import PolicyError

    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    doc["releases"]["partner"]["k"] = 1
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(PolicyError, match=r"releases\.partner\.k"):
        load_policy(path)


def test_a_release_has_its_own_key(sample_release):
    _, entry = sample_release
    assert entry["recipient"] == "partner"
    assert entry["key_id"] != KeyRing.development().key_id  # the recipient's own key


def test_the_readme_release_query_runs(sample_release, monkeypatch):
    import re

    import duckdb

    out, _ = sample_release
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    block = next(b for b in blocks if "shareable" in b and 'duckdb.sql("""' in b)
    query = block.split('duckdb.sql("""')[1].split('""")')[0]
    monkeypatch.chdir(out.parent)
    rows = duckdb.sql(query).fetchall()
    assert rows
    published = _read(out / "shareable" / "partner" / "usage_sessions")
    assert sum(r[3] for r in rows) == published["sessions"].sum()


def test_an_hourly_release_has_an_hour_dimension_and_conferences_count_as_sessions():
    rows = [_session(f"u-{i}", f"u-{i + 50}", session_hour=datetime(2026, 11, 23, 9 + i % 2))
            for i in range(40)]  # fmt: skip
    conf_schema = dict(load_output_schema("lync_conference_sessions").polars_schema)
    conf_schema.update({"date": pl.Date, "region": pl.String})
    conf = pl.DataFrame(
        [dict.fromkeys(conf_schema) | {
            "date": date(2026, 11, 23), "region": "EMEA", "user": f"u-c{i}",
            "session_hour": datetime(2026, 11, 23, 9), "client": "web_app",
            "response_code": 200, "duration_s": 600.0,
        } for i in range(12)],
        schema=conf_schema,
    )  # fmt: skip
    release = ReleaseSpec(
        recipient="r", statistics=("usage_sessions",), k=5, granularity="hour", **EXACT
    )
    cells, margins, _ = compute_statistic(
        STATISTICS["usage_sessions"],
        _scan({"lync_sessions": _sessions_frame(rows), "lync_conference_sessions": conf}),
        release, KeyRing.development(),
    )  # fmt: skip
    assert sorted(set(cells["hour"].to_list())) == [9, 10]
    assert cells.filter(pl.col("modality") == "conference").select("sessions", "people").rows() == [
        (12, 12)
    ]
    assert margins.columns[:3] == ["date", "hour", "region"]


def test_float_measures_sum_to_the_same_bits_whatever_the_order_of_the_rows():
    """Polars sums groups in parallel, in any order: a float sum of minutes could change in its
    last bits from one rerun to the next, and with it the cell key of the minutes (a new
    perturbation for the same data). ``_total`` sums millionths as integers: one answer."""
    from anonymize.releases import _total

    rng = np.random.default_rng(3)
    n = 200_000
    frame = pl.DataFrame(
        {"cell": rng.integers(0, 5, n), "minutes": rng.integers(1, 90_000, n) / 60}
    )
    answers = set()
    for seed in range(6):
        shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed)
        sums = shuffled.group_by("cell").agg(_total("minutes", pl.Float64)).sort("cell")
        answers.add(tuple(sums["minutes"].to_list()))
    assert len(answers) == 1
    exact = frame.group_by("cell").agg(pl.col("minutes").sum()).sort("cell")["minutes"]
    # Each row rounded to a millionth of a minute: off by at most half of one per row.
    assert np.all(np.abs(exact.to_numpy() - np.array(next(iter(answers)))) <= n * 5e-7)
