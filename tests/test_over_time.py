"""Safe over time: attacks of a recipient who keeps every version, reruns, and other recipients.

Each test plays the recipient (or two colluding ones) against what cdranon publishes over
several runs: differencing two versions of a day after a late export, averaging republished
DP versions, spending a privacy budget, combining two releases; and the operator's side of a
changed master key.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml

from anonymize.deliveries import DELIVERIES, Deliveries
from anonymize.errors import PolicyError, RunRefused
from anonymize.keys import KeyRing
from anonymize.ledger import Ledger
from anonymize.perturbation import PTable
from anonymize.policy import DEFAULT_POLICY, DpSettings, Perturbation, ReleaseSpec, load_policy
from anonymize.releases import _bound, compute_statistic, restricted_scanner
from anonymize.run import run_local
from anonymize.statistics import STATISTICS
from anonymize.synth import generate_lync
from tests.conftest import TEST_KEY

DAY = "2026-11-23"
KEYS = ["date", "region", "modality", "client", "outcome", "route"]
EXACT = {"perturbation": Perturbation(method="none"), "freeze": True, "dominance": ()}


def _policy(tmp_path: Path, releases: dict, name: str = "policy.yaml"):
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    doc["releases"] = releases
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return load_policy(path)


def _split_late(landing: Path, share: float) -> tuple[Path, str]:
    """Move the last ``share`` of the day's SessionDetailsView rows to a late export; return
    the folder the late file goes to and its text."""
    folder = landing / "lync" / DAY
    lines = (folder / "SessionDetailsView.csv").read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    cut = len(rows) - int(len(rows) * share)
    (folder / "SessionDetailsView.csv").write_text(header + "".join(rows[:cut]))
    return folder, header + "".join(rows[cut:])


def _published(out: Path, run_id: str, release: str, stat: str) -> pl.DataFrame:
    root = out / "_versions" / run_id / "shareable" / release / stat
    return pl.read_parquet(root, hive_partitioning=True)


def _truth(out: Path, run_id: str, stat: str, keyring: KeyRing) -> pl.DataFrame:
    """The exact cells behind a published version, from the restricted data of that version."""
    scan = restricted_scanner(out / "_versions" / run_id / "restricted")
    spec = ReleaseSpec(recipient="truth", statistics=(stat,), k=2, **EXACT)
    cells, _, _ = compute_statistic(STATISTICS[stat], scan, spec, keyring)
    return cells


def _run(landing, out, policy, keyring, run_id, **kw) -> dict:
    report: dict = {}
    run_local(landing, out, policy=policy, keyring=keyring, run_id=run_id, report=report, **kw)
    return report


def _late_republish(root: Path, policy, keyring, *, seed: int, rows: int, people: int,
                    between=None) -> tuple[Path, dict]:  # fmt: skip
    """One day published (v1), then 3 % of its sessions arrive late and the day is republished
    (v2); ``between(out)`` runs between the two. Returns the output root and v2's report."""
    landing, out = root / "landing", root / "out"
    generate_lync(landing, seed=seed, rows=rows, days=1, people=people, voip=False)
    folder, late = _split_late(landing, 0.03)
    _run(landing, out, policy, keyring, "v1")
    if between is not None:
        between(out)
    (folder / "SessionDetailsView-late.csv").write_text(late)
    report = _run(landing, out, policy, keyring, "v2")
    assert report["status"] == "published"
    return out, report


@pytest.fixture(scope="module")
def late_export(tmp_path_factory, policy, dev_keyring):
    """The issue's experiment: a day of 40,000 sessions whose last 3 % arrive late."""
    root = tmp_path_factory.mktemp("late")
    return _late_republish(root, policy, dev_keyring, seed=5, rows=40000, people=2000)[0]


def test_differencing_two_versions_of_a_day_does_not_tell_the_late_rows(late_export, dev_keyring):
    """The attack of the issue: a recipient holding both versions subtracts them. Without
    perturbation the difference of a cell is exactly the late rows' people, often 1 to k-1;
    with the cell key method it is that plus the difference of two perturbations."""
    out, k = late_export, 10
    stat = "usage_sessions"
    v1, v2 = _published(out, "v1", "partner", stat), _published(out, "v2", "partner", stat)
    t1, t2 = _truth(out, "v1", stat, dev_keyring), _truth(out, "v2", stat, dev_keyring)
    seen = v1.join(v2, on=KEYS, suffix="_2").select(
        *KEYS, (pl.col("people_2") - pl.col("people")).alias("seen")
    )
    true = t1.join(t2, on=KEYS, suffix="_2").select(
        *KEYS, (pl.col("people_2") - pl.col("people")).alias("true")
    )
    both = seen.join(true, on=KEYS)
    small = both.filter(pl.col("true").is_between(1, k - 1))
    # The experiment has what the issue measured: many cells changed by fewer than k people.
    assert small.height >= 40, small.height
    exact = small.filter(pl.col("seen") == pl.col("true")).height
    # Two independent perturbations agree with the probability sum(p(v)^2) (0.195 for the
    # default table): the recipient cannot tell which differences, if any, are exact.
    table = PTable(3, 1.5)
    chance = sum(p * p for p in table.probabilities.values())
    assert exact / small.height <= chance + 0.15, (exact, small.height)
    # The recipient's best guess, the published difference, is off by 2 or more in many cells.
    assert small.filter((pl.col("seen") - pl.col("true")).abs() >= 2).height >= small.height // 4


def test_margins_add_up_the_perturbed_cells_of_their_version(late_export):
    """Margins are sums of the published (perturbed) cells: subtracting published numbers
    within a version gives published numbers, never a suppressed cell or a perturbation."""
    out = late_export
    for run_id in ("v1", "v2"):
        cells = _published(out, run_id, "partner", "usage_sessions")
        margins = _published(out, run_id, "partner", "usage_sessions_totals")
        sums = cells.group_by("date", "region").agg(pl.col("sessions").sum(), pl.len())
        joined = margins.join(sums, on=["date", "region"], suffix="_cells")
        assert joined.height == margins.height > 0
        assert (joined["sessions"] == joined["sessions_cells"]).all()
        assert (joined["covers"] == joined["len"]).all()


def test_a_rerun_gives_the_same_bytes_and_the_same_perturbation(tmp_path, policy, dev_keyring):
    landing = tmp_path / "landing"
    generate_lync(landing, seed=6, rows=3000, days=1, people=200, voip=False)
    for run_id in ("a", "b"):
        _run(landing, tmp_path / run_id, policy, dev_keyring, run_id)
    files = sorted((tmp_path / "a" / "shareable").rglob("*.parquet"))
    assert files
    for f in files:
        twin = tmp_path / "b" / f.relative_to(tmp_path / "a")
        assert f.read_bytes() == twin.read_bytes()


def test_exact_counts_without_freeze_are_refused_by_the_policy(tmp_path):
    with pytest.raises(PolicyError, match="freeze: true"):
        _policy(tmp_path, {"p": {"recipient": "p", "k": 10, "statistics": ["usage_sessions"],
                                 "perturbation": {"method": "none"}}})  # fmt: skip


def test_a_frozen_release_never_gives_a_held_partition_again(tmp_path, dev_keyring):
    """Exact counts are safe only when a day, once delivered, is never delivered again."""
    policy = _policy(
        tmp_path,
        {"exact": {"recipient": "exact", "k": 10, "statistics": ["usage_sessions"],
                   "perturbation": {"method": "none"}, "freeze": True}},
    )  # fmt: skip
    # An output root from before the delivery ledger: what it published is what the recipient
    # holds, and that is recorded by the next run.
    out, report = _late_republish(tmp_path, policy, dev_keyring, seed=7, rows=6000, people=300,
                                  between=lambda o: (o / DELIVERIES).unlink())  # fmt: skip
    held = Deliveries.load(out).recipients["exact"]["files"]
    assert held
    assert all(len(versions) == 1 for versions in held.values())
    delivery = report["releases"]["exact"]["delivery"]
    assert delivery["frozen"], delivery
    for partition in delivery["frozen"]:  # held since before the ledger, and recorded now
        assert any(rel.startswith(partition + "/") for rel in held), partition
    stat = out / "_versions" / "{}" / "shareable" / "exact" / "usage_sessions"
    v1 = sorted(Path(str(stat).format("v1")).rglob("*.parquet"))
    v2 = sorted(Path(str(stat).format("v2")).rglob("*.parquet"))
    assert [f.read_bytes() for f in v1] == [f.read_bytes() for f in v2]
    # The restricted data has the late rows.
    rows = [
        pl.scan_parquet(out / "_versions" / v / "restricted" / "lync_sessions" / "**" / "*.parquet")
        .select(pl.len()).collect().item()
        for v in ("v1", "v2")
    ]  # fmt: skip
    assert rows[1] > rows[0]


# --- differential privacy over time ------------------------------------------------------------


def _dp_release(**dp) -> dict:
    """A DP release that publishes something from a small synthetic week (a large epsilon and
    one row per person and period: DP needs many people per cell)."""
    return {
        "recipient": "dp",
        "k": 5,
        "statistics": ["usage_sessions"],
        "dp": {"enabled": True, "epsilon": 4.0, "max_rows_per_person": 1, **dp},
    }


def test_twenty_republished_dp_versions_average_to_one(tmp_path):
    """Noise is keyed by the cell and its data: republishing gives the same values, so the
    mean of 20 versions is one version (with fresh noise it would be 4.5 times as accurate)."""
    from tests.test_releases import _scan, _session, _sessions_frame

    rows = [_session(f"u-{c}-{p}", "u-x", modalities=[m]) for c, m in enumerate(["audio", "im"])
            for p in range(60)]  # fmt: skip
    frame = _sessions_frame(rows)
    spec = ReleaseSpec(recipient="r", statistics=("usage_sessions",), k=2,
                       dp=DpSettings(enabled=True, epsilon=1.0, max_rows_per_person=1))  # fmt: skip
    keyring = KeyRing.from_text(TEST_KEY)
    versions = [
        compute_statistic(STATISTICS["usage_sessions"], _scan({"lync_sessions": frame}), spec,
                          keyring)[0]
        for _ in range(20)
    ]  # fmt: skip
    assert all(v.equals(versions[0]) for v in versions)
    mean = pl.concat(versions).group_by("modality").agg(pl.col("sessions").mean()).sort("modality")
    assert mean["sessions"].to_list() == versions[0].sort("modality")["sessions"].to_list()
    assert versions[0]["sessions"].to_list() != [60, 60]  # noise there is
    # Another key draws other noise (the key is what the recipient does not have).
    other = compute_statistic(STATISTICS["usage_sessions"], _scan({"lync_sessions": frame}),
                              spec, KeyRing(os.urandom(32)))[0]  # fmt: skip
    assert not other.equals(versions[0])


def test_a_changed_cell_gets_new_noise_and_the_others_keep_theirs():
    from tests.test_releases import _scan, _session, _sessions_frame

    rows = [_session(f"u-{c}-{p}", "u-x", modalities=[m]) for c, m in enumerate(["audio", "im"])
            for p in range(60)]  # fmt: skip
    spec = ReleaseSpec(recipient="r", statistics=("usage_sessions",), k=2,
                       dp=DpSettings(enabled=True, epsilon=1.0, max_rows_per_person=1))  # fmt: skip
    keyring = KeyRing.from_text(TEST_KEY)

    def cells(extra: list[dict]) -> dict:
        frame = _sessions_frame(rows + extra)
        out = compute_statistic(STATISTICS["usage_sessions"], _scan({"lync_sessions": frame}),
                                spec, keyring)[0]  # fmt: skip
        return {r["modality"]: (r["sessions"], r["people"]) for r in out.iter_rows(named=True)}

    before, after = cells([]), cells([_session("u-late", "u-x", modalities=["im"])])
    assert before["audio"] == after["audio"]
    assert before["im"] != after["im"]


def test_bounding_is_per_period_and_a_new_day_keeps_the_earlier_days_rows():
    """A person active on every day of a month is bounded once over the month: their rows in
    all the month's cells together are at most the bound, whatever the number of days; a new
    day never changes which rows of the earlier days count."""
    from datetime import date, timedelta

    rows = [
        {"date": date(2026, 11, 1) + timedelta(days=d), "region": "EMEA", "cell": f"c{d % 3}",
         "who": "busy", "n": i}
        for d in range(30) for i in range(4)
    ]  # fmt: skip
    frame = pl.DataFrame(rows)
    kept = _bound(frame, "who", ["date", "region", "cell", "n"], 20, "month")
    assert kept.height == 20  # not 30 days x the bound
    assert kept["date"].max() < date(2026, 11, 6)  # the earliest rows
    first_days = _bound(frame.filter(pl.col("date") < date(2026, 11, 10)), "who",
                        ["date", "region", "cell", "n"], 20, "month")  # fmt: skip
    assert first_days.sort("date", "n").equals(kept.sort("date", "n"))
    weekly = _bound(frame, "who", ["date", "region", "cell", "n"], 20, "week")
    assert weekly.height > 20  # per week, several weeks


@pytest.fixture(scope="module")
def week_of_days(tmp_path_factory):
    root = tmp_path_factory.mktemp("week")
    source = root / "all"
    generate_lync(source, seed=8, rows=5000, days=7, people=1500, voip=False)
    return source


def _late_export(landing: Path, day: str, seed: int, name: str) -> None:
    """Sessions of other people on ``day``, arriving in a late export."""
    from datetime import date

    late = landing.parent / f"late-{seed}"
    generate_lync(late, seed=seed, rows=400, days=1, start=date.fromisoformat(day), people=400,
                  voip=False)  # fmt: skip
    shutil.copy(late / "lync" / day / "SessionDetailsView.csv", landing / "lync" / day / name)


def _add_day(source: Path, landing: Path, day: str) -> None:
    shutil.copytree(source / "lync" / day, landing / "lync" / day)


def test_a_week_published_day_by_day_is_charged_once_and_a_late_change_again(
    tmp_path, week_of_days, dev_keyring
):
    """The budget: seven nightly runs of one week charge the week once; a late export that
    changes a day the recipient holds charges again; one more change would exceed the budget,
    so that release is not published and keeps the version the recipient has."""
    cost = 4.0  # epsilon 4 x 1 statistic
    policy = _policy(tmp_path, {"dp": _dp_release(period="week", budget=2 * cost)})
    landing, out = tmp_path / "landing", tmp_path / "out"
    days = [f"2026-11-{d}" for d in range(23, 30)]
    for i, day in enumerate(days):
        _add_day(week_of_days, landing, day)
        report = _run(landing, out, policy, dev_keyring, f"n{i}")
        assert report["status"] == "published", report["reason"]
    week = Deliveries.load(out).recipients["dp"]["budget"]["2026-W48"]
    assert week["spent"] == cost
    assert len(week["charges"]) == 1
    # A published partition of each day; every earlier day came out byte for byte the same.
    held = Deliveries.load(out).recipients["dp"]["files"]
    assert {rel.split("/")[1] for rel in held} >= {f"date={d}" for d in days[:3]}
    assert all(len(v) == 1 for v in held.values()), "an unchanged day was redelivered changed"

    # A late export of the second day changes cells the recipient holds: charged again.
    _late_export(landing, days[1], 99, "SessionDetailsView-late.csv")
    report = _run(landing, out, policy, dev_keyring, "late1")
    assert report["status"] == "published"
    budget = report["releases"]["dp"]["budget"]["2026-W48"]
    assert (budget["charged"], budget["spent"], budget["remaining"]) == (cost, 2 * cost, 0.0)

    # Another change of that week: over the budget, the release is not published.
    before = {f.relative_to(out / "current").as_posix(): f.read_bytes()
              for f in (out / "current" / "shareable" / "dp").rglob("*.parquet")}  # fmt: skip
    _late_export(landing, days[1], 100, "SessionDetailsView-late2.csv")
    report = _run(landing, out, policy, dev_keyring, "late2")
    entry = report["releases"]["dp"]
    assert "budget" in entry["refused"]
    assert "2026-W48" in entry["refused"]
    after = {f.relative_to(out / "current").as_posix(): f.read_bytes()
             for f in (out / "current" / "shareable" / "dp").rglob("*.parquet")}  # fmt: skip
    assert after == before
    assert Deliveries.load(out).recipients["dp"]["budget"]["2026-W48"]["spent"] == 2 * cost
    manifest = json.loads((out / "_manifests" / "late2.json").read_text())
    assert manifest["releases"]["dp"]["refused"] == entry["refused"]
    # The restricted data did take the late rows.
    assert report["status"] == "published"


def test_with_dp_two_runs_give_byte_identical_shareable_files(tmp_path, week_of_days, dev_keyring):
    policy = _policy(tmp_path, {"dp": _dp_release(period="month")})
    for name in ("a", "b"):
        _run(week_of_days, tmp_path / name, policy, dev_keyring, name)
    files = sorted((tmp_path / "a" / "shareable" / "dp").rglob("*.parquet"))
    assert files
    for f in files:
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()
    # And a reprocess republishes the same bytes without charging the budget again.
    spent = Deliveries.load(tmp_path / "a").recipients["dp"]["budget"]["2026-11"]["spent"]
    report = _run(week_of_days, tmp_path / "a", policy, dev_keyring, "again", reprocess=True)
    assert report["status"] == "published"
    assert report["releases"]["dp"]["budget"] == {}
    assert Deliveries.load(tmp_path / "a").recipients["dp"]["budget"]["2026-11"]["spent"] == spent


# --- recipients together --------------------------------------------------------------------


def test_two_recipients_of_one_cell_get_the_same_perturbation(tmp_path, dev_keyring):
    """Record keys come from the master key, not the recipient's: two recipients who pool
    their releases hold the same number twice, not two draws to average."""
    stats = ["usage_sessions"]
    policy = _policy(tmp_path, {
        "a": {"recipient": "a", "k": 10, "statistics": stats},
        "b": {"recipient": "b", "k": 5, "statistics": stats},
        "h": {"recipient": "h", "k": 5, "statistics": stats, "granularity": "hour"},
    })  # fmt: skip
    landing, out = tmp_path / "landing", tmp_path / "out"
    generate_lync(landing, seed=9, rows=8000, days=1, people=400, voip=False)
    _run(landing, out, policy, dev_keyring, "r")
    a = pl.read_parquet(out / "shareable" / "a" / "usage_sessions", hive_partitioning=True)
    b = pl.read_parquet(out / "shareable" / "b" / "usage_sessions", hive_partitioning=True)
    both = a.join(b, on=KEYS, suffix="_b")
    assert both.height == a.height  # every cell of a (k=10) is in b (k=5)
    assert both.filter(pl.col("people") != pl.col("people_b")).height == 0
    assert both.filter(pl.col("sessions") != pl.col("sessions_b")).height == 0

    # The daily release minus the published hours of the same cell: the sessions of the
    # suppressed hours, plus perturbation. Exact for few of them.
    h = pl.read_parquet(out / "shareable" / "h" / "usage_sessions", hive_partitioning=True)
    hours = h.group_by(KEYS).agg(pl.col("sessions").sum().alias("hours"))
    truth = _truth(out, "r", "usage_sessions", dev_keyring)
    spec = ReleaseSpec(recipient="t", statistics=("usage_sessions",), k=2, granularity="hour",
                       **EXACT)  # fmt: skip
    hourly_truth, _, _ = compute_statistic(
        STATISTICS["usage_sessions"], restricted_scanner(out / "_versions" / "r" / "restricted"),
        spec, dev_keyring,
    )  # fmt: skip
    published_hours = h.select(*KEYS, "hour")
    true_rest = (
        hourly_truth.join(published_hours, on=[*KEYS, "hour"], how="anti")
        .group_by(KEYS)
        .agg(pl.col("sessions").sum().alias("rest"))
    )
    attack = (
        b.join(hours, on=KEYS)
        .join(true_rest, on=KEYS)
        .with_columns((pl.col("sessions") - pl.col("hours")).alias("guess"))
    )
    assert attack.height >= 10
    exact = attack.filter(pl.col("guess") == pl.col("rest")).height
    assert exact / attack.height < 0.5, (exact, attack.height)
    assert truth.height > 0


# --- the master key -------------------------------------------------------------------------


def _tree(out: Path) -> dict[str, tuple[int, bytes | None]]:
    return {
        p.relative_to(out).as_posix(): (p.lstat().st_mtime_ns, p.read_bytes() if p.is_file()
                                        and not p.is_symlink() else None)
        for p in sorted(out.rglob("*"))
    }  # fmt: skip


def test_a_run_with_another_key_is_refused_before_writing_anything(tmp_path, policy):
    landing, out = tmp_path / "landing", tmp_path / "out"
    generate_lync(landing, seed=10, rows=1500, days=2, people=100, voip=False)
    key_a, key_b = KeyRing.from_text(TEST_KEY), KeyRing(os.urandom(32))
    _run(landing, out, policy, key_a, "a")
    assert Ledger.load(out).key_id == key_a.key_id
    before = _tree(out)
    with pytest.raises(RunRefused) as err:
        _run(landing, out, policy, key_b, "b")
    message = str(err.value)
    assert key_a.key_id in message
    assert key_b.key_id in message
    assert "--rekey" in message
    assert _tree(out) == before


def test_rekey_rebuilds_everything_under_the_new_key_and_says_so(tmp_path, policy):
    landing, out = tmp_path / "landing", tmp_path / "out"
    generate_lync(landing, seed=10, rows=1500, days=2, people=100, voip=False)
    key_a, key_b = KeyRing.from_text(TEST_KEY), KeyRing(os.urandom(32))
    _run(landing, out, policy, key_a, "a")

    def pseudonyms() -> set[str]:
        frame = pl.read_parquet(out / "restricted" / "lync_sessions", hive_partitioning=True)
        return set(frame["from_user"].drop_nulls()) | set(frame["to_user"].drop_nulls())

    old = pseudonyms()
    # The second day's export is gone from the landing zone (retention): its partitions
    # cannot be rebuilt under the new key, so they leave the output.
    shutil.rmtree(landing / "lync" / "2026-11-24")
    with pytest.raises(RunRefused, match="--rekey"):
        run_local(landing, out, policy=policy, keyring=key_b, run_id="x", rekey=True,
                  scope=None, sources=frozenset({"lync"}))  # fmt: skip
    report = _run(landing, out, policy, key_b, "b", rekey=True)
    assert report["status"] == "published"
    assert not old & pseudonyms()
    assert {p.name for p in (out / "restricted" / "lync_sessions").iterdir()} == {"date=2026-11-23"}
    manifest = json.loads((out / "_manifests" / "b.json").read_text())
    assert manifest["key"]["rotation"] == {"from": key_a.key_id, "to": key_b.key_id}
    assert Ledger.load(out).key_id == key_b.key_id
    # The next run with the new key is an ordinary one.
    assert _run(landing, out, policy, key_b, "c")["status"] == "up_to_date"
    assert (out / DELIVERIES).exists()


# --- settling: a day released once it is old enough, then frozen ----------------------------


def test_a_day_is_released_once_settled_and_never_again(tmp_path, dev_keyring):
    """settle_days: 2: a day reaches the recipient only when it is more than two days old (a
    run with nothing new publishes it), and a late export after that changes restricted data
    only."""
    policy = _policy(
        tmp_path, {"s": {"recipient": "s", "k": 10, "statistics": ["usage_sessions"],
                         "settle_days": 2}},
    )  # fmt: skip
    landing, out = tmp_path / "landing", tmp_path / "out"
    generate_lync(landing, seed=12, rows=9000, days=3, people=500, voip=False)
    folder, late = _split_late(landing, 0.03)
    stat = out / "shareable" / "s" / "usage_sessions"

    def days() -> list[str]:
        return sorted(p.name for p in stat.iterdir()) if stat.exists() else []

    def snapshot() -> dict[str, bytes]:
        return {p.relative_to(stat).as_posix(): p.read_bytes() for p in stat.rglob("*.parquet")}

    assert _run(landing, out, policy, dev_keyring, "20261125T010000Z-000001")["status"] == (
        "published"
    )
    assert days() == []  # 23 to 25: none older than two days on the 25th
    report = _run(landing, out, policy, dev_keyring, "20261126T010000Z-000002")
    assert report["status"] == "published"  # nothing new: the 23rd settled
    assert days() == ["date=2026-11-23"]
    first = snapshot()
    assert _run(landing, out, policy, dev_keyring, "20261126T020000Z-000003")["status"] == (
        "up_to_date"
    )
    _run(landing, out, policy, dev_keyring, "20261127T010000Z-000004")
    assert days() == ["date=2026-11-23", "date=2026-11-24"]
    assert {k: v for k, v in snapshot().items() if "11-23" in k} == first

    # The late export of the 23rd: restricted takes it, the recipient keeps its version.
    (folder / "SessionDetailsView-late.csv").write_text(late)
    report = _run(landing, out, policy, dev_keyring, "20261127T020000Z-000005")
    assert report["status"] == "published"
    assert report["releases"]["s"]["delivery"]["frozen"]
    assert {k: v for k, v in snapshot().items() if "11-23" in k} == first
