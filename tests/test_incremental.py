"""Incremental batches: the ledger, late files, reprocessing, scopes (without Prefect).

Each test builds a landing zone from the committed sample, runs ``run_local`` over it more than
once, and compares the outputs with those of one clean run over the final landing zone: a
partition is always rebuilt from all its inputs, so the restricted and shareable files must
be byte-identical.
"""

from __future__ import annotations

import gzip
import shutil
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from anonymize.errors import InputError
from anonymize.gate import scan
from anonymize.layout import partition_key
from anonymize.ledger import LEDGER, Ledger, Scope
from anonymize.releases import restricted_scanner
from anonymize.run import run_local
from tests.conftest import SAMPLE

LATE = "weblogs/EMEA/www/access-2026-11-23.log"
SOURCES = [
    "lync/2026-11-23",
    "lync/2026-11-24",
    "weblogs/EMEA",
    "weblogs/AMER/www",
    "connect/EMEA",
]


def landing_from_sample(root: Path, *, without: tuple[str, ...] = ()) -> Path:
    landing = root / "landing"
    for rel in SOURCES:
        shutil.copytree(SAMPLE / rel, landing / rel)
    for rel in without:
        (landing / rel).unlink()
    return landing


def snapshot(out: Path, area: str = "restricted") -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted((out / area).rglob("*.parquet"))
    }


def assert_same_as_clean_run(out: Path, landing: Path, tmp_path: Path, policy, keyring) -> None:
    clean = tmp_path / "clean"
    run_local(landing, clean, policy=policy, keyring=keyring, run_id="clean")
    assert snapshot(out) == snapshot(clean)
    assert snapshot(out, "shareable") == snapshot(clean, "shareable")


def run(landing: Path, out: Path, policy, keyring, run_id: str, **kw):
    report: dict = {}
    results, published = run_local(
        landing, out, policy=policy, keyring=keyring, run_id=run_id, report=report, **kw
    )
    return results, published, report


# Releases of weeks or months: their partitions are dated by the period's first day.
PERIOD_RELEASES = ("shareable/partner_weekly/", "shareable/partner_monthly/")


def keys_of(published: list[str]) -> set[str]:
    """The ``date/region`` keys of the published partitions, but those of weekly and monthly
    releases (see ``period_keys_of``)."""
    return {partition_key(p) for p in published if not p.startswith(PERIOD_RELEASES)}


def period_keys_of(published: list[str]) -> set[str]:
    return {partition_key(p) for p in published if p.startswith(PERIOD_RELEASES)}


def test_a_second_run_over_the_same_files_reads_and_changes_nothing(
    tmp_path, policy, dev_keyring, monkeypatch
):
    landing, out = landing_from_sample(tmp_path), tmp_path / "out"
    results, published, _ = run(landing, out, policy, dev_keyring, "r1")
    assert published
    assert all(r.status == "processed" for r in results)
    side = {"lync_users", "lync_phones", "connect_users"}  # join sources are not recorded
    assert set(Ledger.load(out).entries) == {r.sha256 for r in results if r.contract not in side}
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*.parquet")}

    import anonymize.plan as plan

    hashed = []
    real_sha256 = plan.file_sha256
    monkeypatch.setattr(plan, "file_sha256", lambda p: hashed.append(p) or real_sha256(p))
    results, published, report = run(landing, out, policy, dev_keyring, "r2")
    assert (results, published, report["affected"]) == ([], [], [])
    # Recorded files with their size and time unchanged are not hashed again (join sources,
    # which the ledger does not record, are).
    assert {p.name for p in hashed} <= {"Users.csv", "users.csv", "Phones.csv"}
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*.parquet")} == before


def test_a_late_file_republishes_only_its_day_and_region(tmp_path, policy, dev_keyring):
    landing = landing_from_sample(tmp_path, without=(LATE,))
    out = tmp_path / "out"
    run(landing, out, policy, dev_keyring, "r1")
    shutil.copy(SAMPLE / LATE, landing / LATE)

    results, published, report = run(landing, out, policy, dev_keyring, "r2")
    assert report["affected"] == ["2026-11-23/EMEA"]
    assert keys_of(published) == {"2026-11-23/EMEA"}
    # Its week (from Monday the 23rd) and month, in its region only.
    assert period_keys_of(published) == {"2026-11-23/EMEA", "2026-11-01/EMEA"}
    assert any(p.startswith("restricted/web_requests/") for p in published)
    # The late file and the earlier files of its day were read; nothing of the other day.
    read = {r.path for r in results}
    assert LATE in read
    assert not any("2026-11-24" in p or "261124" in p for p in read)
    assert_same_as_clean_run(out, landing, tmp_path, policy, dev_keyring)
    # And the run after that has nothing to do.
    assert run(landing, out, policy, dev_keyring, "r3")[:2] == ([], [])


def test_an_earlier_file_that_outranks_the_late_one_makes_the_run_start_over(
    tmp_path, policy, dev_keyring
):
    # SessionDetailsView arrives late; the VoIPDetailsView of its day, read before it, beats
    # it on duplicate sessions: the run reads both again in order.
    late = "lync/2026-11-23/SessionDetailsView.csv"
    landing = landing_from_sample(tmp_path, without=(late,))
    out = tmp_path / "out"
    run(landing, out, policy, dev_keyring, "r1")
    shutil.copy(SAMPLE / late, landing / late)
    results, published, _ = run(landing, out, policy, dev_keyring, "r2")
    assert published
    filtered = sum(r.rows_filtered.get("duplicate_session", 0) for r in results)
    assert filtered > 0  # the VoIP rows' sessions were filtered out of the late file
    assert_same_as_clean_run(out, landing, tmp_path, policy, dev_keyring)


def test_a_late_2010_companion_completes_the_sessions_published_without_it(
    tmp_path, policy, dev_keyring
):
    legacy = "lync/legacy2010/2026-11-23/EMEA"
    late = f"{legacy}/VoipDetails.csv"
    landing = landing_from_sample(tmp_path)
    shutil.copytree(SAMPLE / legacy, landing / legacy)
    (landing / late).unlink()
    out = tmp_path / "out"
    run(landing, out, policy, dev_keyring, "r1")
    shutil.copy(SAMPLE / late, landing / late)

    results, published, report = run(landing, out, policy, dev_keyring, "r2")
    read = {r.path: r for r in results}
    assert read[late].rows_filtered == {
        "merged_into:lync2010_session_details": read[late].rows_read
    }
    assert f"{legacy}/SessionDetails.csv" in read
    assert "2026-11-23/EMEA" in report["affected"]
    assert published
    assert_same_as_clean_run(out, landing, tmp_path, policy, dev_keyring)
    assert run(landing, out, policy, dev_keyring, "r3")[:2] == ([], [])


def test_a_corrected_export_replaces_the_rows_of_the_one_it_supersedes(
    tmp_path, policy, dev_keyring
):
    landing, out = landing_from_sample(tmp_path), tmp_path / "out"
    run(landing, out, policy, dev_keyring, "r1")
    rows_before = pl.read_parquet(out / "restricted/web_requests/**/*.parquet").height
    # The same path, now with only the first half of its lines.
    path = landing / LATE
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]))

    _, published, report = run(landing, out, policy, dev_keyring, "r2")
    assert "2026-11-23/EMEA" in report["affected"]
    assert published
    ledger = Ledger.load(out)
    assert [e["path"] for e in ledger.entries.values()].count(LATE) == 1
    rows_after = pl.read_parquet(out / "restricted/web_requests/**/*.parquet").height
    assert rows_after < rows_before
    assert_same_as_clean_run(out, landing, tmp_path, policy, dev_keyring)


def test_a_late_file_whose_day_lost_its_earlier_inputs_is_refused_with_the_way_out(
    tmp_path, policy, dev_keyring
):
    landing = landing_from_sample(tmp_path, without=(LATE,))
    out = tmp_path / "out"
    run(landing, out, policy, dev_keyring, "r1")
    before = snapshot(out)
    (landing / "lync/2026-11-23/SessionDetailsView.csv").unlink()  # retention took it
    shutil.copy(SAMPLE / LATE, landing / LATE)
    with pytest.raises(InputError, match=r"no longer in the landing zone.*--reprocess"):
        run(landing, out, policy, dev_keyring, "r2")
    assert snapshot(out) == before
    # Rebuilding the day from what is there is the operator's explicit choice.
    _, published, report = run(
        landing,
        out,
        policy,
        dev_keyring,
        "r3",
        reprocess=True,
        scope=Scope(date_from=date(2026, 11, 23), date_to=date(2026, 11, 23)),
    )
    assert {k.split("/")[0] for k in report["affected"]} == {"2026-11-23"}
    assert published
    assert_same_as_clean_run(out, landing, tmp_path, policy, dev_keyring)


def test_reprocess_rebuilds_the_date_range_only_and_gives_the_same_bytes(
    tmp_path, policy, dev_keyring
):
    landing, out = landing_from_sample(tmp_path), tmp_path / "out"
    run(landing, out, policy, dev_keyring, "r1")
    before = snapshot(out)
    day = date(2026, 11, 24)
    _, published, _ = run(
        landing, out, policy, dev_keyring, "r2", reprocess=True, scope=Scope(None, day, day)
    )
    assert published
    assert {k.split("/")[0] for k in keys_of(published)} == {"2026-11-24"}
    assert snapshot(out) == before


def test_a_run_limited_to_one_region_leaves_the_others_for_a_later_run(
    tmp_path, policy, dev_keyring
):
    landing, out = landing_from_sample(tmp_path), tmp_path / "out"
    _, published, _ = run(landing, out, policy, dev_keyring, "r1", scope=Scope(frozenset({"AMER"})))
    assert published
    assert {k.split("/")[1] for k in keys_of(published)} == {"AMER"}
    amer = snapshot(out)

    _, published, report = run(landing, out, policy, dev_keyring, "r2")
    assert published
    assert "AMER" not in {k.split("/")[1] for k in report["affected"]}
    assert {k: v for k, v in snapshot(out).items() if "region=AMER" in k} == amer
    assert_same_as_clean_run(out, landing, tmp_path, policy, dev_keyring)
    assert run(landing, out, policy, dev_keyring, "r3")[:2] == ([], [])


def test_new_files_of_other_sources_wait_for_a_run_that_takes_them(tmp_path, policy, dev_keyring):
    landing, out = landing_from_sample(tmp_path), tmp_path / "out"
    _, published, _ = run(landing, out, policy, dev_keyring, "r1", sources=frozenset({"weblogs"}))
    assert published
    releases = ("partner", "partner_weekly", "partner_monthly", "tenant")
    assert all(p.split("/")[1] in ("web_requests", *releases) for p in published)
    _, published, _ = run(landing, out, policy, dev_keyring, "r2")
    assert any(p.startswith("restricted/lync_sessions/") for p in published)
    assert_same_as_clean_run(out, landing, tmp_path, policy, dev_keyring)


def test_a_refused_file_is_recorded_once_and_retried_on_reprocess(tmp_path, policy, dev_keyring):
    landing, out = landing_from_sample(tmp_path), tmp_path / "out"
    bad = landing / "weblogs/EMEA/www/access-2026-11-25.log.gz"
    bad.write_bytes(gzip.compress(b"x" * 100)[:-8])  # truncated: not a readable gzip file
    results, published, _ = run(landing, out, policy, dev_keyring, "r1")
    assert published
    [refused] = [r for r in results if r.status == "refused"]
    assert refused.path == bad.relative_to(landing).as_posix()
    assert Ledger.load(out).entries[refused.sha256]["status"] == "refused"
    assert run(landing, out, policy, dev_keyring, "r2")[:2] == ([], [])
    results, _, _ = run(landing, out, policy, dev_keyring, "r3", reprocess=True)
    assert refused.path in {r.path for r in results if r.status == "refused"}


def test_a_damaged_ledger_stops_the_run_with_what_to_do(tmp_path, policy, dev_keyring):
    landing, out = landing_from_sample(tmp_path), tmp_path / "out"
    out.mkdir()
    (out / LEDGER).write_text("{not json")
    with pytest.raises(InputError, match=r"ledger .* cannot be read; restore it"):
        run(landing, out, policy, dev_keyring, "r1")


def test_a_dataset_that_gained_a_column_reads_its_older_partitions_as_null(
    tmp_path, policy, dev_keyring
):
    """An upgrade adds a column to a dataset (client_version to lync_registrations): the
    partitions published before it lack it. A later run that reads them (its weekly and monthly
    cells) and the gate's scan of the output read them with the column null, and publish."""
    landing = landing_from_sample(tmp_path, without=(LATE,))
    out = tmp_path / "out"
    run(landing, out, policy, dev_keyring, "r1")
    for f in (out / "current" / "restricted" / "lync_registrations").rglob("*.parquet"):
        meta = pq.read_metadata(f).metadata
        old = pq.read_table(f).drop_columns(["client_version"])
        pq.write_table(old.replace_schema_metadata(meta), f)  # as an older version wrote it
    shutil.copy(SAMPLE / LATE, landing / LATE)
    _, published, report = run(landing, out, policy, dev_keyring, "r2")
    assert report["status"] == "published"
    assert report["gate"]["verdict"] == "pass"
    assert period_keys_of(published) == {"2026-11-23/EMEA", "2026-11-01/EMEA"}
    registrations = restricted_scanner(out / "current" / "restricted")("lync_registrations")
    frame = registrations.collect()
    rebuilt = (pl.col("date") == date(2026, 11, 23)) & (pl.col("region") == "EMEA")
    older = frame.filter(~rebuilt)  # carried over as written
    assert older.height > 0
    assert older["client_version"].null_count() == older.height
    assert frame.filter(rebuilt)["client_version"].null_count() == 0
    assert scan(out / "current", None, {}, areas=("restricted",)) == []
