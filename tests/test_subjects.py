"""Data-subject rights and retention: erasure and opt-out that reach everything published,
access exports, a request list with no raw value, key rotation, and purge by age."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from anonymize.cli import app
from anonymize.errors import RunRefused
from anonymize.gate import detect
from anonymize.identifiers import pseudonym
from anonymize.keys import PREVIOUS_ENV_VAR, KeyRing
from anonymize.ledger import Ledger
from anonymize.policy import DEFAULT_POLICY, load_policy
from anonymize.run import run_local
from anonymize.subjects import SUBJECTS, Subjects, export, pseudonyms_of, rows_holding
from anonymize.synth_sources import generate_all
from tests.conftest import TEST_KEY

runner = CliRunner()
LAX = {"max_unicity": 1.0, "max_share_below_k": 1.0, "max_linkable_share": 1.0}


def _policy(tmp_path: Path, **extra) -> object:
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    doc["releases"]["events"] = {
        "recipient": "events", "k": 2, "events": {"lync_sessions": "stable"}, **LAX,
    }  # fmt: skip
    doc.update(extra)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_policy(path)


def _run(landing, out, policy, keyring, run_id, **kw) -> dict:
    report: dict = {}
    run_local(landing, out, policy=policy, keyring=keyring, run_id=run_id, report=report, **kw)
    return report


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three days of every source for one world."""
    root = tmp_path_factory.mktemp("subjects")
    world = generate_all(root / "landing", seed=21, rows=2400, days=3, people=80)
    return root / "landing", world


def _person_everywhere(out: Path, policy, keyring, world) -> tuple[object, frozenset[str]]:
    """A person with rows in Lync, Connect and web datasets."""
    restricted = out / "restricted"
    for person in world.people:
        mine = frozenset(pseudonyms_of(person.sip, keyring, policy))
        found = rows_holding(restricted, policy, mine)
        families = {name.split("_")[0] for name in found}
        if {"lync", "connect", "web"} <= families:
            return person, mine | frozenset(pseudonyms_of(person.phone, keyring, policy))
    raise AssertionError("no person of the world is in every source")


def _shareable(out: Path, release: str) -> dict[str, pl.DataFrame]:
    root = out / "shareable" / release
    return {
        d.name: pl.read_parquet(d, hive_partitioning=True).sort(pl.all())
        for d in sorted(root.iterdir())
        if any(d.rglob("*.parquet"))
    }


def _restricted_rows(out: Path) -> dict[str, pl.DataFrame]:
    root = out / "restricted"
    return {
        d.name: pl.read_parquet(d, hive_partitioning=True)
        .with_columns(pl.col(pl.List(pl.String)).list.join(","))
        .sort(pl.all())
        for d in sorted(root.iterdir())
        if any(d.rglob("*.parquet"))
    }


def test_an_erasure_after_three_published_days_reaches_everything(tmp_path, world, dev_keyring):
    landing, w = world
    policy = _policy(tmp_path)
    out = tmp_path / "out"
    assert _run(landing, out, policy, dev_keyring, "r1")["status"] == "published"
    person, mine = _person_everywhere(out, policy, dev_keyring, w)
    days = {p.name for p in (out / "restricted" / "lync_sessions").iterdir()}
    assert len(days) == 3

    # The access export first: every row of the person, across Lync, Connect and web.
    counts = export(out, out / "current" / "restricted", policy, dev_keyring, mine,
                    tmp_path / "export", "csv")  # fmt: skip
    assert {n.split("_")[0] for n in counts} >= {"lync", "connect", "web"}
    assert all(n > 0 for n in counts.values())

    # The request, as an operator makes it: identifiers as the person gives them.
    result = runner.invoke(app, ["forget", "--out", str(out), "--id", f"SIP:{person.sip.upper()}",
                                 "--id", person.phone, "--dev-key"])  # fmt: skip
    assert result.exit_code == 0, result.output
    (request,) = Subjects.load(out).requests
    assert request["state"] == "pending"
    assert set(request["pseudonyms"]) == mine

    report = _run(landing, out, policy, dev_keyring, "r2")  # nothing new: the request only
    assert report["status"] == "published"
    manifest = json.loads((out / "_manifests" / "r2.json").read_text())
    assert manifest["subject_requests"]["applied"] == [request["id"]]
    assert manifest["subject_requests"]["partitions"]
    (request,) = Subjects.load(out).requests
    assert (request["state"], request["applied_by"]) == ("applied", "r2")

    # No restricted row, no event release pseudonym of the person.
    assert rows_holding(out / "restricted", policy, mine) == {}
    events = pl.read_parquet(out / "shareable" / "events" / "lync_sessions", hive_partitioning=True)
    key = dev_keyring.for_release("events").derive("pseudonym/stable/stable")
    rekeyed = {pseudonym(key, "opaque", p).replace("x-", p[:2], 1) for p in mine}
    for column in ("from_user", "to_user", "target_user"):
        assert not set(events[column].drop_nulls()) & rekeyed

    # Every statistic (and every restricted row) equals a run that never had the person.
    clean = tmp_path / "clean"
    shutil.copytree(out / SUBJECTS, clean / SUBJECTS)
    assert _run(landing, clean, policy, dev_keyring, "c1")["status"] == "published"
    assert _shareable(out, "partner").keys() == _shareable(clean, "partner").keys()
    for name, frame in _shareable(clean, "partner").items():
        assert _shareable(out, "partner")[name].equals(frame), name
    assert _restricted_rows(out).keys() == _restricted_rows(clean).keys()
    for name, frame in _restricted_rows(clean).items():
        assert _restricted_rows(out)[name].equals(frame), name
    # And a later run that rereads the inputs (a reprocess) drops them as it reads.
    _run(landing, out, policy, dev_keyring, "r3", reprocess=True)
    assert rows_holding(out / "restricted", policy, mine) == {}


def test_an_opt_out_keeps_restricted_rows_and_leaves_what_recipients_get(
    tmp_path, world, dev_keyring
):
    landing, w = world
    policy = _policy(tmp_path)
    out = tmp_path / "out"
    _run(landing, out, policy, dev_keyring, "r1")
    _person, mine = _person_everywhere(out, policy, dev_keyring, w)
    before = rows_holding(out / "restricted", policy, mine)
    subjects = Subjects.load(out)
    subjects.add(sorted(mine), "opt-out", dev_keyring.key_id)
    subjects.save(out)
    assert _run(landing, out, policy, dev_keyring, "r2")["status"] == "published"
    after = rows_holding(out / "restricted", policy, mine)
    assert {k: v.height for k, v in after.items()} == {k: v.height for k, v in before.items()}
    events = pl.read_parquet(out / "shareable" / "events" / "lync_sessions", hive_partitioning=True)
    key = dev_keyring.for_release("events").derive("pseudonym/stable/stable")
    rekeyed = {pseudonym(key, "opaque", p).replace("x-", p[:2], 1) for p in mine}
    assert not set(events["from_user"].drop_nulls()) & rekeyed
    # The statistics are those of a run without the person's rows.
    clean = tmp_path / "clean"
    shutil.copytree(out / SUBJECTS, clean / SUBJECTS)
    erased = Subjects.load(clean)
    erased.requests[0]["reason"] = "erasure"
    erased.save(clean)
    _run(landing, clean, policy, dev_keyring, "c1")
    for name, frame in _shareable(clean, "partner").items():
        assert _shareable(out, "partner")[name].equals(frame), name


def test_the_request_list_holds_no_raw_value(tmp_path, world, dev_keyring):
    _landing, w = world
    out = tmp_path / "out"
    person = w.people[3]
    name_parts = person.name.lower().split()
    national = person.phone.removeprefix("+1")
    ids = [person.sip, f"sip:{person.sip}", person.phone, f"tel:{person.phone}",
           f"({national[:3]}) {national[3:6]}-{national[6:]}"]  # fmt: skip
    args = ["forget", "--out", str(out), "--dev-key"]
    for i in ids:
        args += ["--id", i]
    assert runner.invoke(app, args).exit_code == 0
    text = "\n".join(p.read_text() for p in (out / SUBJECTS).rglob("*") if p.is_file()).lower()
    for raw in [*ids, person.sip.split("@")[0], *name_parts, person.phone.lstrip("+")]:
        assert raw.lower() not in text
    assert not detect(text)  # no email, SIP URI, phone number, IP or card number at all
    assert oct((out / SUBJECTS).stat().st_mode & 0o777) == "0o700"
    listed = runner.invoke(app, ["subjects", "--out", str(out), "--json"])
    assert json.loads(listed.output)["requests"][0]["state"] == "pending"


def test_an_access_export_includes_quarantined_rows_only_when_asked(tmp_path, dev_keyring):
    landing = tmp_path / "landing"
    world = generate_all(landing, seed=22, rows=600, days=1, people=30)
    person = world.people[0]
    # One broken row of this person: a session whose time is not a time.
    sessions = landing / "lync" / "2026-11-23" / "SessionDetailsView.csv"
    lines = sessions.read_text().splitlines(keepends=True)
    row = next(line for line in lines[1:] if person.sip in line)
    stamp = row.split(",")[0]
    sessions.write_text("".join(lines) + row.replace(stamp, "not a time", 1))
    policy = load_policy(DEFAULT_POLICY)
    out = tmp_path / "out"
    _run(landing, out, policy, dev_keyring, "r1")
    mine = frozenset(pseudonyms_of(person.sip, dev_keyring, policy))
    plain = export(out, out / "current" / "restricted", policy, dev_keyring, mine,
                   tmp_path / "a", "parquet")  # fmt: skip
    assert not any(n.startswith("quarantine-") for n in plain)
    full = export(out, out / "current" / "restricted", policy, dev_keyring, mine,
                  tmp_path / "b", "parquet", include_quarantine=True)  # fmt: skip
    assert full.get("quarantine-lync_sessions.parquet", 0) >= 1
    # Raw rows are readable by the owner alone.
    quarantined = list((out / "_quarantine").rglob("*.parquet"))
    assert quarantined
    assert all(f.stat().st_mode & 0o077 == 0 for f in quarantined)
    # An erasure takes the raw row out of the quarantine too.
    subjects = Subjects.load(out)
    subjects.add(sorted(mine), "erasure", dev_keyring.key_id)
    subjects.save(out)
    report = _run(landing, out, policy, dev_keyring, "r2")
    assert report["status"] == "published"
    again = export(out, out / "current" / "restricted", policy, dev_keyring, mine,
                   tmp_path / "c", "parquet", include_quarantine=True)  # fmt: skip
    assert again == {}
    manifest = json.loads((out / "_manifests" / "r2.json").read_text())
    assert manifest["subject_requests"]["quarantine_rows_erased"] >= 1


def test_an_erasure_survives_a_key_rotation(tmp_path, world, monkeypatch):
    landing, w = world
    policy = _policy(tmp_path)
    out = tmp_path / "out"
    key_a, key_b = KeyRing.from_text(TEST_KEY), KeyRing(os.urandom(32))
    _run(landing, out, policy, key_a, "a1")
    person, mine_a = _person_everywhere(out, policy, key_a, w)
    subjects = Subjects.load(out)
    subjects.add(sorted(mine_a), "erasure", key_a.key_id)
    subjects.save(out)
    _run(landing, out, policy, key_a, "a2")
    assert rows_holding(out / "restricted", policy, mine_a) == {}

    monkeypatch.delenv(PREVIOUS_ENV_VAR, raising=False)
    with pytest.raises(RunRefused, match=PREVIOUS_ENV_VAR):
        _run(landing, out, policy, key_b, "b1", rekey=True)
    monkeypatch.setenv(PREVIOUS_ENV_VAR, TEST_KEY)
    report = _run(landing, out, policy, key_b, "b1", rekey=True)
    assert report["status"] == "published"
    mine_b = frozenset(pseudonyms_of(person.sip, key_b, policy)) | frozenset(
        pseudonyms_of(person.phone, key_b, policy)
    )
    (request,) = Subjects.load(out).requests
    assert request["key_id"] == key_b.key_id
    assert set(request["pseudonyms"]) <= mine_b
    assert set(request["pseudonyms"])  # found again
    assert rows_holding(out / "restricted", policy, mine_b) == {}
    # A later reprocess under the new key (no previous key needed now) keeps them out.
    monkeypatch.delenv(PREVIOUS_ENV_VAR)
    _run(landing, out, policy, key_b, "b2", reprocess=True)
    assert rows_holding(out / "restricted", policy, mine_b) == {}
    assert Ledger.load(out).key_id == key_b.key_id


def test_retention_purges_exactly_the_old_partitions_and_quarantines(tmp_path, world, dev_keyring):
    landing, _ = world
    policy = _policy(
        tmp_path, retention={"restricted_days": 3, "quarantine_days": 2, "manifests_days": 30}
    )
    out = tmp_path / "out"
    # Runs on 2026-11-25: every day (23 to 25) is within 3 days.
    _run(landing, out, policy, dev_keyring, "20261125T010000Z-aaaaaa")
    days = sorted(p.name for p in (out / "restricted" / "lync_sessions").iterdir())
    assert days == ["date=2026-11-23", "date=2026-11-24", "date=2026-11-25"]
    old_quarantine = out / "_quarantine" / "20261101T000000Z-bbbbbb"
    old_quarantine.mkdir(parents=True)
    (old_quarantine / "x.parquet").write_bytes(b"")
    week_ago = time.time() - 7 * 86400
    os.utime(old_quarantine, (week_ago, week_ago))
    statistics_before = _shareable(out, "partner")

    # On 2026-11-27 the horizon is 2026-11-24: the 23rd goes, nothing else.
    report = _run(landing, out, policy, dev_keyring, "20261127T010000Z-cccccc")
    assert report["status"] == "published"
    manifest = json.loads((out / "_manifests" / "20261127T010000Z-cccccc.json").read_text())
    purged = manifest["purged"]
    assert purged["quarantine"] == ["20261101T000000Z-bbbbbb"]
    assert purged["partitions"]
    assert all(k.startswith("2026-11-23/") for k in purged["partitions"])
    for dataset in (out / "restricted").iterdir():
        assert not (dataset / "date=2026-11-23").exists(), dataset.name
    assert (out / "restricted" / "lync_sessions" / "date=2026-11-24").exists()
    assert not (out / "shareable" / "events" / "lync_sessions" / "date=2026-11-23").exists()
    # The statistics of the purged day are anonymous and stay.
    after = _shareable(out, "partner")
    assert after["usage_sessions"].equals(statistics_before["usage_sessions"])
    # The ledger keeps the files of the purged day (they are not new), without the day.
    assert not any("2026-11-23" in k for e in Ledger.load(out).entries.values()
                   for k in e["partitions"])  # fmt: skip
    # A reprocess does not bring the purged day back: its rows are past retention.
    report = _run(landing, out, policy, dev_keyring, "20261127T020000Z-dddddd", reprocess=True)
    assert not (out / "restricted" / "lync_sessions" / "date=2026-11-23").exists()
    assert report["status"] == "published"


def test_identifiers_from_standard_input_and_the_status_of_pending_requests(
    tmp_path, world, dev_keyring
):
    """Identifiers can stay out of the shell history; `status` says the next run has work."""
    landing, w = world
    out = tmp_path / "out"
    person = w.people[5]
    result = runner.invoke(
        app, ["forget", "--out", str(out), "--id-file", "-", "--dev-key"],
        input=f"{person.sip}\n\n{person.phone}\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (request,) = Subjects.load(out).requests
    policy = load_policy(DEFAULT_POLICY)
    both = set(pseudonyms_of(person.sip, dev_keyring, policy)) | set(
        pseudonyms_of(person.phone, dev_keyring, policy)
    )
    assert set(request["pseudonyms"]) == both
    status = runner.invoke(app, ["status", "--landing", str(landing), "--out", str(out), "--json"])
    body = json.loads(status.output)
    assert body["pending_requests"] == [request["id"]]
    assert body["has_work"] is True
    nobody = runner.invoke(app, ["forget", "--out", str(out), "--dev-key"])
    assert nobody.exit_code == 2
    assert "--id-file" in nobody.output
