"""The data dictionary: a description per output column, in the files, the CLI and the README."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from anonymize import dictionary as dd
from anonymize.cli import app
from anonymize.contracts import OutputSchema, load_output_schema
from anonymize.gate import scan
from anonymize.policy import DEFAULT_POLICY, load_policy
from anonymize.statistics import STATISTICS
from tests.test_leak import _run_library

ROOT = Path(__file__).resolve().parent.parent
NUMERIC = {"int", "float", "datetime", "date"}
DEFAULT_RELEASES = load_policy(DEFAULT_POLICY).releases


@pytest.mark.parametrize("dataset", dd.restricted_datasets())
def test_every_restricted_column_has_a_description_and_numbers_a_unit(dataset):
    schema = load_output_schema(dataset)
    assert schema.docs.keys() == schema.columns.keys()
    for column, doc in schema.docs.items():
        assert doc.description.strip().endswith("."), (dataset, column)
        if doc.type in NUMERIC:
            assert doc.unit, f"{dataset}.{column}: a {doc.type} column needs its unit"


def test_a_column_without_a_description_is_refused():
    raw = yaml.safe_load((ROOT / "schemas" / "output" / "lync_sessions.yaml").read_text())
    raw["columns"]["from_user"] = "string"  # the old form: a type and nothing else
    with pytest.raises(ValueError, match="from_user"):
        OutputSchema(**raw)
    raw["columns"]["from_user"] = {"type": "string"}
    with pytest.raises(ValueError, match="description"):
        OutputSchema(**raw)


@pytest.mark.parametrize("stat", sorted(STATISTICS))
def test_every_statistic_column_is_in_the_dictionary_and_nothing_else(stat):
    own = dd.statistics_dictionary()["statistics"][stat]
    definition = STATISTICS[stat]
    expected = {*definition.dims, *definition.measures}
    assert expected <= own.keys(), f"{stat}: no entry for {sorted(expected - own.keys())}"
    assert own.keys() - expected <= {"people"}, f"{stat}: entries for no column"
    for column, doc in own.items():
        assert doc.role is not None, (stat, column)
        if doc.type in NUMERIC:
            assert doc.unit, (stat, column)


def test_treatments_follow_the_policy(policy):
    """A pseudonym column says so; a column the policy makes says how; none claims 'kept' for
    an identifier."""
    for dataset, ds in policy.datasets.items():
        entries = {e.column: e for e in dd.dataset_entries(dataset, policy)}
        for column in ds.pseudonym_columns:
            assert "pseudonym" in entries[column].treatment, (dataset, column)
        produced = {r.output for r in ds.rules}
        for column, e in entries.items():
            if column in produced:
                assert "not produced" not in e.treatment
            else:
                assert e.treatment == "not produced by this policy: always null"
    by_col = {e.column: e for e in dd.dataset_entries("lync_registrations", policy)}
    assert by_col["client_network"].treatment.startswith("generalised: IpAddress to its IPv4 /24")


def test_written_files_carry_the_dictionary_in_their_field_metadata(
    sample_landing, policy, dev_keyring, tmp_path
):
    _run_library(sample_landing, tmp_path / "out", policy, dev_keyring)
    tmp_path = tmp_path / "out"
    files = sorted((tmp_path / "restricted").rglob("*.parquet"))
    files += sorted((tmp_path / "shareable").rglob("*.parquet"))
    datasets = {f.relative_to(tmp_path).parts[1 if "restricted" in f.parts else 2] for f in files}
    assert {"lync_sessions", "connect_attendance", "web_requests", "usage_web_totals"} <= datasets
    for f in files:
        schema = pq.read_schema(f)
        for field in schema:
            meta = field.metadata or {}
            assert meta.get(b"description"), f"{f.relative_to(tmp_path)}: {field.name}"
            assert meta.get(b"treatment"), f"{f.relative_to(tmp_path)}: {field.name}"
    one = next((tmp_path / "shareable" / "partner" / "usage_sessions").rglob("*.parquet"))
    people = pq.read_schema(one).field("people").metadata
    assert b"fewer than 10 people" in people[b"treatment"]
    assert people[b"unit"] == b"people"


def test_an_identifier_in_field_metadata_is_a_finding(tmp_path):
    """The gate reads field metadata too: a description cannot carry a person out."""
    import polars as pl

    from anonymize.dictionary import Entry, arrow_schema

    folder = tmp_path / "shareable" / "r" / "usage_web" / "date=2026-11-23" / "region=EMEA"
    folder.mkdir(parents=True)
    frame = pl.DataFrame({"people": [12]})
    leaky = Entry("people", "int", "people", "ask jane.doe@contoso.com for details.", "none")
    frame.write_parquet(folder / "part-0.parquet", arrow_schema=arrow_schema(frame.schema, [leaky]))
    findings = scan(tmp_path, None, {}, areas=("shareable",))
    assert [(f.area, f.detector) for f in findings] == [("metadata", "email")]


def test_describe_prints_a_dataset_a_statistic_and_a_release():
    runner = CliRunner()
    listing = runner.invoke(app, ["describe"])
    assert listing.exit_code == 0
    assert "lync_sessions" in listing.stdout
    assert "usage_web" in listing.stdout
    assert "partner (recipient partner)" in listing.stdout
    one = runner.invoke(app, ["describe", "lync_registrations"])
    assert one.exit_code == 0
    assert "client_network (string): Network the client registered from" in one.stdout
    assert "treatment: generalised: IpAddress" in one.stdout
    doc = json.loads(runner.invoke(app, ["describe", "partner", "--json"]).stdout)
    assert doc["k"] == 10
    assert set(doc["statistics"]) == set(DEFAULT_RELEASES["partner"].statistics)
    weekly = json.loads(runner.invoke(app, ["describe", "partner_weekly", "--json"]).stdout)
    assert weekly["granularity"] == "week"
    released = {s for r in DEFAULT_RELEASES.values() for s in r.statistics}
    assert released == set(STATISTICS)  # every statistic is in a release of the default policy
    cols = {c["column"]: c for c in doc["statistics"]["usage_meetings"]["columns"]}
    assert cols["minutes"]["unit"] == "minutes"
    bad = runner.invoke(app, ["describe", "no_such_thing"])
    assert bad.exit_code == 2
    assert "no dataset or release is called" in bad.stderr


def test_describe_follows_the_policy_given(tmp_path):
    doc = yaml.safe_load(dd.default_policy_path().read_text())
    doc["releases"]["partner"]["k"] = 25
    doc["releases"]["partner"]["events"] = {"lync_sessions": "month"}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = CliRunner().invoke(app, ["describe", "partner", "--policy", str(path), "--json"])
    assert out.exit_code == 0, out.output
    release = json.loads(out.stdout)
    web = release["statistics"]["usage_web"]["columns"]
    people = next(c for c in web if c["column"] == "people")
    assert "fewer than 25 people" in people["treatment"]
    events = {c["column"]: c for c in release["events"]["lync_sessions"]["columns"]}
    assert events["from_user"]["treatment"].endswith("stable within one month")


def test_readme_dataset_reference_is_the_generated_one():
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- dataset reference -->\n(.*?)<!-- /dataset reference -->", readme, re.S)
    assert found, "README.md has no dataset reference section"
    expected = dd.render_markdown(load_policy(dd.default_policy_path()))
    assert found.group(1) == expected, (
        "README's dataset reference is out of date: run `./dev docs` (it writes "
        "`cdranon describe --markdown` there)"
    )


@pytest.mark.parametrize(
    "variant",
    [
        {"granularity": "hour"},
        {"dp": {"enabled": True, "epsilon": 1.0}, "events": {"lync_sessions": "day"}, "k": 2},
    ],
    ids=["hourly", "dp-and-events"],
)
def test_every_shareable_field_is_described_whatever_the_release(
    variant, sample_landing, dev_keyring, tmp_path
):
    doc = yaml.safe_load(dd.default_policy_path().read_text())
    doc["releases"]["partner"].update(variant)
    doc["releases"]["partner"]["max_unicity"] = 1.0  # events on a small sample: let them out
    doc["releases"]["partner"]["max_share_below_k"] = 1.0
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    _run_library(sample_landing, out, load_policy(path), dev_keyring)
    files = sorted((out / "shareable" / "partner").rglob("*.parquet"))
    names = {f.relative_to(out / "shareable" / "partner").parts[0] for f in files}
    assert "usage_sessions_totals" in names
    if "events" in variant:
        assert "lync_sessions" in names
    for f in files:
        for field in pq.read_schema(f):
            assert (field.metadata or {}).get(b"description"), (f.name, field.name)
    if variant.get("granularity") == "hour":
        one = next((out / "shareable" / "partner" / "usage_web").rglob("*.parquet"))
        assert pq.read_schema(one).field("hour").metadata[b"unit"].startswith(b"hour of the day")
