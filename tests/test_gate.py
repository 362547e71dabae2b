"""The privacy gate: detectors, canaries of every kind in every column of every dataset, the
metadata and paths, unicity, the refusal, the standalone scan, and the HTML report."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from anonymize.cli import app
from anonymize.gate import canaries_from_landing, classify, luhn_ok, scan, scan_values
from anonymize.policy import DEFAULT_POLICY, load_policy
from anonymize.releases import pseudonym_columns
from anonymize.report import render_html
from anonymize.run import run_local
from anonymize.synth_sources import generate_all
from tests.conftest import SAMPLE

runner = CliRunner()
NO_CANARIES = None


def _raw_values(landing: Path, column: str) -> list[str]:
    """Distinct raw values of one input column anywhere in a landing zone (test material)."""
    from anonymize.layout import discover
    from anonymize.sources import open_source

    out: set[str] = set()
    for path, family in discover(landing):
        try:
            source = open_source(Path(path), family)
        except Exception:
            continue
        for batch in source.reader.batches(100_000):
            if column in batch.frame.columns:
                out |= set(batch.frame[column].drop_nulls().to_list())
    return sorted(out)


@pytest.mark.parametrize(
    ("value", "detector"),
    [
        ("write to jane.doe@contoso.com", "email"),
        ("sip:jane.doe@contoso.com;gruu", "sip_or_tel_uri"),
        ("tel:+14255550100", "sip_or_tel_uri"),
        ("from 192.0.2.77 via proxy", "ip_address"),
        ("2001:db8:abcd:12::7", "ip_address"),
        ("00-04-F2-AA-BB-CC", "mac_address"),
        ("card=4111 1111 1111 1111", "card_number"),
        ("call +44 20 7946 0000", "phone_number"),
        ("call (425) 555-0100 now", "phone_number"),
    ],
)
def test_detectors_find_what_they_are_for(value, detector):
    assert detector in scan_values(pl.Series("c", [value, "ordinary"]), NO_CANARIES)


@pytest.mark.parametrize(
    "value",
    [
        "192.0.2.0/24", "2001:db8:abcd::/48", "192.0.2.0/24, -", "/support/kb/{number}",
        "UCCAPI/16.0.5215.1000", "ver=16.0.5215.1000", "Chrome", "120", "u-" + "a" * 32,
        "4111111111111112", "lang=en-US", "2026-11-23",
    ],
)  # fmt: skip
def test_generalised_values_are_not_findings(value):
    assert scan_values(pl.Series("c", [value]), NO_CANARIES) == {}


def test_luhn():
    assert luhn_ok("4111111111111111")
    assert luhn_ok("340000000000009")
    assert not luhn_ok("4111111111111112")
    assert not luhn_ok("1234")


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, policy, dev_keyring):
    root = tmp_path_factory.mktemp("gate")
    shutil.copytree(SAMPLE, root / "landing")
    report: dict = {}
    _, published = run_local(root / "landing", root / "out", policy=policy, keyring=dev_keyring,
                             run_id="r", report=report)  # fmt: skip
    assert report["gate"]["verdict"] == "pass", report["gate"]["findings"]
    assert published
    canaries, unreadable = canaries_from_landing(root / "landing", policy)
    assert unreadable == []
    return root, canaries, report


def _datasets(out: Path) -> list[Path]:
    return sorted({p.parents[2] for p in out.glob("*/**/date=*/region=*/*.parquet")})


def test_one_canary_of_each_kind_in_every_column_of_every_dataset_is_caught(clean_run, policy):
    root, canaries, _ = clean_run
    world = generate_all(root / "again", seed=42, rows=600, days=2, people=120)
    ids = world.identifiers()
    kinds = ["sip", "local_part", "email", "phone", "account", "ip", "mac", "guid", "title",
             "name", "cookie", "card"]  # fmt: skip
    samples = {}
    for kind in kinds:
        values = sorted(v for v in ids[kind] if len(v) >= 6)
        assert values, kind
        samples[kind] = values[len(values) // 2]
    samples["phone_e164_digits"] = sorted(ids["phone"])[0].lstrip("+")
    # Per-record tokens (correlation ids) are not canaries; device ids are.
    samples["guid"] = sorted(p.endpoint for p in world.people)[0]
    checked = 0
    for dataset in _datasets(root / "out"):
        frame = pl.read_parquet(dataset / "**" / "*.parquet")
        base = dataset.name
        pseudo = pseudonym_columns(policy, base) if base in policy.datasets else []
        for col, dtype in frame.schema.items():
            if dtype not in (pl.String, pl.List(pl.String)):
                continue
            values = frame[col].explode() if dtype == pl.List(pl.String) else frame[col]
            assert scan_values(values, canaries, col in pseudo) == {}, (dataset, col)
            for kind, value in samples.items():
                injected = pl.concat([values, pl.Series([value])])
                hits = scan_values(injected, canaries, col in pseudo)
                assert hits, (dataset.relative_to(root), col, kind)
                checked += 1
    assert checked > 300


def test_metadata_and_partition_paths_are_scanned(clean_run, policy, tmp_path):
    root, canaries, _ = clean_run
    out = tmp_path / "out"
    shutil.copytree(root / "out" / "restricted", out / "restricted")
    victim = next((out / "restricted" / "lync_sessions").rglob("*.parquet"))
    table = pq.read_table(victim)
    email = next(v for v in _raw_values(root / "landing", "FromUri") if "@" in v)
    meta = {**(table.schema.metadata or {}), b"cdranon.note": email.encode()}
    pq.write_table(table.replace_schema_metadata(meta), victim)
    odd = out / "restricted" / "web_requests" / "date=2026-11-23" / f"region={email}"
    odd.mkdir(parents=True)
    shutil.copy(next((out / "restricted" / "web_requests").rglob("*.parquet")), odd / "p.parquet")
    pseudo = {n: pseudonym_columns(policy, n) for n in policy.datasets}
    found = {(f.area, f.detector) for f in scan(out, canaries, pseudo)}
    assert ("metadata", "canary") in found
    assert ("metadata", "email") in found
    assert ("path", "email") in found


def test_key_value_metadata_written_by_polars_is_scanned(clean_run, policy, tmp_path):
    # polars writes key-value metadata into the file footer, not into the Arrow schema.
    root, canaries, _ = clean_run
    out = tmp_path / "out"
    shutil.copytree(root / "out" / "restricted", out / "restricted")
    victim = next((out / "restricted" / "web_requests").rglob("*.parquet"))
    uri = next(v for v in _raw_values(root / "landing", "ToUri") if "user=phone" in v)
    phone = uri.split("@", 1)[0]  # +14255550100
    pl.read_parquet(victim).write_parquet(victim, metadata={"cdranon.note": f"call {phone}"})
    assert pq.read_schema(victim).metadata is None  # invisible to a schema-only reader
    pseudo = {n: pseudonym_columns(policy, n) for n in policy.datasets}
    found = {(f.area, f.detector) for f in scan(out, canaries, pseudo)}
    assert ("metadata", "canary") in found


def test_a_release_whose_events_single_people_out_is_refused(tmp_path, dev_keyring):
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    doc["releases"]["partner"]["events"] = {"lync_sessions": "stable"}
    doc["releases"]["partner"]["max_unicity"] = 0.05
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    shutil.copytree(SAMPLE, tmp_path / "landing")
    report: dict = {}
    _, published = run_local(tmp_path / "landing", tmp_path / "out", policy=load_policy(path),
                             keyring=dev_keyring, run_id="r", report=report)  # fmt: skip
    assert published == []
    gate = report["gate"]
    assert gate["verdict"] == "refused"
    assert sorted(f["detector"] for f in gate["findings"]) == ["k_anonymity", "unicity"]
    check = gate["unicity_checks"][0]
    assert max(check["unicity"].values()) > 0.05
    assert check["share_below_k"] > 0.05  # hour x region x client ... is too fine for k=10
    assert "session_hour" in check["quasi_identifiers"]


def _staged_sessions_release(clean_run, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the clean run's releases as a staging area, and one usage_sessions file."""
    root, _, _ = clean_run
    staging = tmp_path / "staging"
    shutil.copytree(root / "out" / "shareable", staging / "shareable")
    return staging, next((staging / "shareable" / "partner" / "usage_sessions").rglob("*.parquet"))


def test_a_statistic_cell_below_k_is_a_finding(clean_run, policy, tmp_path):
    from anonymize.gate import run_gate

    staging, victim = _staged_sessions_release(clean_run, tmp_path)
    frame = pl.read_parquet(victim)
    frame.with_columns(pl.lit(3, dtype=frame.schema["people"]).alias("people")).write_parquet(
        victim
    )
    gate = run_gate(staging, policy, b"k" * 32)
    assert gate["verdict"] == "refused"
    assert {(f["dataset"], f["detector"]) for f in gate["findings"]} == {
        ("partner/usage_sessions", "below_k")
    }


def test_cdranon_scan_audits_an_output_after_the_fact(clean_run, tmp_path):
    root, _, _ = clean_run
    ok = runner.invoke(
        app, ["scan", "--out", str(root / "out"), "--landing", str(root / "landing")]
    )
    assert ok.exit_code == 0, ok.output
    assert "clean" in ok.output
    out = tmp_path / "out"
    shutil.copytree(root / "out" / "restricted", out / "restricted")
    victim = next((out / "restricted" / "web_requests").rglob("*.parquet"))
    frame = pl.read_parquet(victim)
    email = next(v for v in _raw_values(root / "landing", "FromUri") if "@" in v)
    frame.with_columns(pl.lit(email).alias("query")).write_parquet(victim)
    bad = runner.invoke(app, ["scan", "--out", str(out), "--landing", str(root / "landing")])
    assert bad.exit_code == 1
    assert "web_requests.query: email" in bad.output
    assert email not in bad.output


def test_the_html_report_renders_in_a_headless_browser(clean_run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium here (.ci/run installs it)")
    _, _, report = clean_run
    manifest = {
        "run_id": "r", "status": "published", "not_for_sharing": True,
        "policy": {"version": "v"}, "key": {"key_id": "k-0"},
        "totals": {"files": 1, "files_refused": 0, "rows_read": 1, "rows_published": 1,
                   "rows_quarantined": 0, "rows_filtered": 0},
        "partitions_published": [], "inputs": [],
        "quarantine": {"rows_by_reason": {"unparseable_line": 6}},
        "releases": report["releases"], "gate": report["gate"],
        "volumes": report["gate"]["volumes"], "unicity": report["gate"]["unicity"],
    }  # fmt: skip
    page = tmp_path / "report.html"
    page.write_text(render_html(manifest))
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*args, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout  # fmt: skip
    assert "Privacy gate: <b>pass</b>" in dom
    for title in ("Volumes per source and day", "Quarantined rows by reason",
                  "Published and suppressed cells",
                  "Unicity curve (restricted sessions, latest day)"):  # fmt: skip
        assert f"<h2>{title}</h2>" in dom
    assert dom.count("<svg") >= 4
    shot = tmp_path / "shot.png"
    subprocess.run([*args, "--window-size=1000,1600", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    assert shot.stat().st_size > 20_000  # charts drawn, not a blank page


def test_any_shareable_finding_refuses_the_release(clean_run, policy, tmp_path):
    from anonymize.gate import run_gate

    staging, victim = _staged_sessions_release(clean_run, tmp_path)
    frame = pl.read_parquet(victim)
    leak = "/u/jane.doe%2540contoso.com"  # an email encoded twice
    frame.with_columns(pl.lit(leak).alias("client")).write_parquet(victim)
    gate = run_gate(staging, policy, b"k" * 32)
    assert gate["verdict"] == "refused"
    assert {(f["area"], f["dataset"], f["detector"]) for f in gate["findings"]} == {
        ("shareable", "partner/usage_sessions", "email")
    }


def test_a_restricted_metadata_finding_cannot_be_withheld_and_refuses(clean_run, policy, tmp_path):
    from anonymize.gate import run_gate, withhold

    root, canaries, _ = clean_run
    staging = tmp_path / "staging"
    shutil.copytree(root / "out" / "restricted", staging / "restricted")
    victim = next((staging / "restricted" / "web_requests").rglob("*.parquet"))
    email = next(v for v in _raw_values(root / "landing", "FromUri") if "@" in v)
    pl.read_parquet(victim).write_parquet(victim, metadata={"cdranon.note": email})
    entry = withhold(staging, tmp_path / "q", canaries, policy, [])
    assert entry["rows"] == {}  # no row holds it: nothing to withhold ...
    assert {(f["area"], f["detector"]) for f in entry["systemic"]} >= {("metadata", "canary")}
    gate = run_gate(staging, policy, canaries.key, entry)  # ... so the release is refused
    assert gate["verdict"] == "refused"


def test_canaries_collected_batch_by_batch_are_those_of_the_whole_file():
    """The reader's collector turns each value and hashes each form once per file: the union of
    its batches must be exactly what one pass over the whole file gives."""
    from anonymize.canaries import Canaries, Collector, collect
    from anonymize.web import DEFAULT_WEB

    path = sorted(SAMPLE.glob("lync/**/SessionDetailsView*.csv"))[0]
    frame = pl.read_csv(path, infer_schema=False, null_values="NULL")
    columns = {"FromUri": "plain", "ToUri": "plain", "ReferredByUri": "plain"}
    canaries = Canaries(b"k" * 32)
    whole = collect(frame, columns, canaries, DEFAULT_WEB)
    collector = Collector(columns, canaries, DEFAULT_WEB)
    size = max(1, frame.height // 7)
    batches = [collector(frame.slice(i, size)) for i in range(0, frame.height, size)]
    assert whole.height > 100
    assert sum(b.height for b in batches) == whole.height  # no form hashed twice
    assert pl.concat(batches).sort("h", "kind").equals(whole)


def test_a_date_is_no_phone_number_but_the_number_written_as_people_do_is():
    """A datasheet's coverage ("last_day": "2026-11-30") has the digits of a Hong Kong number
    (2026 1130): a date is not how a phone number is written, so it is no finding; the number
    written with a space, a dash or in E.164 still is."""
    from anonymize.canaries import Canaries, collect
    from anonymize.web import DEFAULT_WEB

    canaries = Canaries(b"k" * 32)
    phones = pl.DataFrame({"FromPhone": ["+852 2026 1130"]})
    canaries.table = collect(phones, {"FromPhone": "phone"}, canaries, DEFAULT_WEB)
    lines = ['"last_day": "2026-11-30",', "| period covered | 2026-11-23 to 2026-11-30 |",
             "2026-11-30T09:00:00"]  # fmt: skip
    assert classify(lines, canaries) == [[], [], []]
    for written in ("call 2026 1130", "2026-1130", "+85220261130", "(852) 2026-1130"):
        assert classify([written], canaries)[0][:1] == ["canary:tel"], written


def test_a_short_number_is_no_identifier_whatever_surrogate_key_has_its_digits():
    """A Connect principal-id 5 is a canary of its own value; the metadata "cdranon.k": "5" of a
    release with k = 5 is no leak of it. A longer number still is."""
    from anonymize.canaries import Canaries, collect
    from anonymize.web import DEFAULT_WEB

    canaries = Canaries(b"k" * 32)
    ids = pl.DataFrame({"principal-id": ["5", "1276863885"]})
    canaries.table = collect(ids, {"principal-id": "plain"}, canaries, DEFAULT_WEB)
    assert classify(["5", "05", "10"], canaries) == [[], [], []]
    assert classify(["1276863885"], canaries)[0]  # a finding (as a number or a phone run)


def test_every_column_of_keyed_pseudonyms_is_declared_one(published_sample, policy):
    """A column whose values are all keyed pseudonyms must be one of its dataset's pseudonym
    columns: the gate then checks it holds nothing else (instead of turning each of its
    distinct values into canary forms: a dialog per call, a million at 1M sessions), releases
    re-key it for each recipient, and erasure looks in it. The sample's `dialog` was not."""
    from anonymize.gate import PSEUDONYM

    undeclared = []
    for name, ds in policy.datasets.items():
        files = sorted((published_sample / "restricted" / name).rglob("*.parquet"))
        if not files:
            continue
        frame = pl.read_parquet(files)
        for column, dtype in frame.schema.items():
            values = frame[column].drop_nulls() if dtype == pl.String else None
            if values is None or values.is_empty() or not values.str.contains(PSEUDONYM).all():
                continue
            if column not in ds.pseudonym_columns:
                undeclared.append((name, column))
    assert undeclared == []
    declared = {(n, c) for n, ds in policy.datasets.items() for c in ds.pseudonym_columns}
    assert {("lync_sessions", "dialog"), ("qoe_sessions", "dialog")} <= declared
