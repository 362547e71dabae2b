"""The Prefect flow under a temporary server: refusals by name, manifest, no data in logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from anonymize.cli import EXIT_NOT_PUBLISHED, app
from anonymize.contracts import load_contract
from anonymize.flows.nightly import cdranon_run
from anonymize.policy import DEFAULT_POLICY, load_policy
from anonymize.run import RunParams
from anonymize.synth_sources import generate_all
from tests.conftest import SAMPLE

pytestmark = pytest.mark.flow
runner = CliRunner()


def _add_bad_file(landing: Path) -> None:
    """A copy of a sample export with one extra column, which no contract knows."""
    src = next(landing.rglob("SessionDetailsView.csv"))
    lines = src.read_text().splitlines()
    bad = landing / "lync" / "extra" / "export-with-notes.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("\n".join([lines[0] + ",Notes"] + [ln + ",x" for ln in lines[1:]]) + "\n")


def test_flow_refuses_the_odd_file_by_name_and_publishes_the_others(
    prefect_harness, sample_landing, tmp_path, capfd, caplog
):
    _add_bad_file(sample_landing)
    out = tmp_path / "out"
    summary = cdranon_run(
        **RunParams(landing=sample_landing, out=out, dev_key=True).flow_parameters()
    )
    assert summary["status"] == "published"
    assert summary["refused"] == [("lync/extra/export-with-notes.csv", summary["refused"][0][1])]
    assert "1 unknown column(s) <column" in summary["refused"][0][1]  # Notes: no contract has it

    manifest = json.loads(Path(summary["manifest"]).read_text())
    assert manifest["not_for_sharing"] is True
    assert manifest["policy"]["sha256"]
    assert manifest["key"]["key_id"].startswith("k-")
    processed = [i for i in manifest["inputs"] if i["status"] == "processed"]
    sample_files = [p for p in SAMPLE.rglob("*") if p.is_file()]
    assert len(processed) == len(sample_files)
    for entry in processed:
        assert len(entry["sha256"]) == 64
        assert entry["rows_read"] == (
            entry["rows_published"]
            + sum(entry["rows_quarantined"].values())
            + sum(entry["rows_filtered"].values())
        )
    views = [i for i in processed if i["contract"] in ("lync_session_details_view",
                                                        "lync_voip_details_view")]  # fmt: skip
    assert sum(i["rows_published"] for i in views) == 600  # every sampled session, once
    filtered = manifest["filtered_by_reason"]
    assert set(filtered) == {
        "duplicate_session",
        "join_source",
        "synthetic_transaction",
        "merged_into:lync2010_session_details",
    }
    assert filtered["duplicate_session"] > 0  # the VoIP rows replaced their session rows
    join_sources = ("connect_users", "lync_users", "lync_phones")
    assert filtered["join_source"] == sum(
        i["rows_read"] for i in processed if i["contract"] in join_sources
    )
    assert filtered["synthetic_transaction"] == 3 * 2  # one probe per region and day
    assert manifest["quarantine"]["rows_by_reason"] == {"unparseable_line": 6}  # per Apache log
    assert not (out / "_staging").exists()

    # Nothing identifying in anything the run printed or logged.
    captured = capfd.readouterr()
    text = (captured.out + captured.err + caplog.text).lower()
    assert f"discovered {len(sample_files) + 1} input file(s)" in text  # logs were captured
    world = generate_all(tmp_path / "again", seed=42, rows=600, days=2, people=120)
    ids = world.identifiers()
    assert {"sip", "phone", "ip", "email", "account", "card", "title", "mac", "cookie"} <= set(ids)
    from prefect.artifacts import Artifact

    artifact = Artifact.get("cdranon-run-summary")
    assert artifact is not None
    assert "rows read" in artifact.data.lower()
    manifest_text = json.dumps(manifest).lower()
    for kind, values in ids.items():
        for where, haystack in (
            ("logs", text), ("artifact", artifact.data.lower()), ("manifest", manifest_text)
        ):  # fmt: skip
            assert sum(v.lower() in haystack for v in values) == 0, (kind, where)


def test_parameters_are_validated_before_any_task(prefect_harness, tmp_path):
    from prefect.exceptions import ParameterBindError, ParameterTypeError

    with pytest.raises((ParameterTypeError, ParameterBindError, ValueError)):
        cdranon_run(landing=str(tmp_path), out=str(tmp_path), colour="blue")
    assert not list(tmp_path.iterdir())


def test_contract_of_sample_files(sample_landing):
    """The committed sample holds every kind of Lync view export, QoE reports included."""
    heads = {p.name: p for p in sample_landing.rglob("*View.csv*")}
    assert set(heads) == {
        "SessionDetailsView.csv",
        "VoIPDetailsView.csv.gz",
        "ConferencesView.csv",
        "ConferenceSessionDetailsView.csv",
        "RegistrationView.csv",
        "QoESessionView.csv",
        "QoEMediaLineView.csv",
    }
    assert load_contract("lync_voip_details_view").priority == 2


def test_the_committed_sample_is_what_synth_writes(tmp_path):
    """data/sample is `cdranon synth --seed 42 --rows 600 --days 2 --people 120`, byte for byte
    (so the canaries of the world that made it are known to the tests)."""
    generate_all(tmp_path, seed=42, rows=600, days=2, people=120)
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(SAMPLE) for p in SAMPLE.rglob("*") if p.is_file())
    assert made == committed
    for rel in made:
        assert (tmp_path / rel).read_bytes() == (SAMPLE / rel).read_bytes(), rel


def test_master_key_from_a_prefect_secret_block(
    prefect_harness, sample_landing, tmp_path, monkeypatch
):
    """key.prefect_secret in the policy: the flow reads the key from that Secret block."""
    import yaml
    from prefect.blocks.system import Secret

    from anonymize.keys import ENV_VAR, KeyRing, generate_key
    from anonymize.policy import DEFAULT_POLICY

    monkeypatch.delenv(ENV_VAR, raising=False)
    key = generate_key()
    Secret(value=key).save("cdranon-test-master-key", overwrite=True)
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    doc["key"]["prefect_secret"] = "cdranon-test-master-key"
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(doc))
    summary = cdranon_run(
        **RunParams(landing=sample_landing, out=tmp_path / "out", policy=policy).flow_parameters()
    )
    assert summary["status"] == "published"
    assert summary["not_for_sharing"] is False
    manifest = json.loads(Path(summary["manifest"]).read_text())
    assert manifest["key"]["key_id"] == KeyRing.from_text(key).key_id == "k-" + key.split(":")[1]
    assert key not in Path(summary["manifest"]).read_text()


def test_full_run_publishes_and_an_empty_landing_publishes_nothing(
    prefect_harness, sample_landing, tmp_path
):
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["run", "--landing", str(sample_landing), "--out", str(out), "--dev-key"]
    )
    assert result.exit_code == 0, result.output
    assert "NOT for sharing" in result.output
    assert "release partner (for partner, k=10):" in result.output
    assert list((out / "restricted" / "lync_sessions").rglob("*.parquet"))
    assert list((out / "shareable" / "partner" / "usage_sessions").rglob("*.parquet"))
    assert not (out / "_staging").exists()
    manifest = json.loads(next((out / "_manifests").glob("*.json")).read_text())
    entry = manifest["releases"]["partner"]
    assert entry["k"] == 10
    assert set(entry["statistics"]) == set(
        load_policy(DEFAULT_POLICY).releases["partner"].statistics
    )
    assert all("lookup_path" not in i for i in manifest["inputs"])  # no staging paths
    assert manifest["gate"]["verdict"] == "pass"
    assert manifest["gate"]["canaries"] > 1000
    assert "privacy gate: pass" in result.output
    run_id = manifest["run_id"]
    assert (out / "_manifests" / f"{run_id}.html").read_text().count("<svg") >= 3
    assert "Privacy gate: **pass**" in (out / "_manifests" / f"{run_id}.md").read_text()

    empty = tmp_path / "empty"
    (empty / "lync").mkdir(parents=True)
    result = runner.invoke(
        app, ["run", "--landing", str(empty), "--out", str(tmp_path / "o2"), "--dev-key"]
    )
    assert result.exit_code == EXIT_NOT_PUBLISHED
    assert "nothing was published" in result.output
    assert "the landing zone has no input file" in result.output
    assert not (tmp_path / "o2").exists()  # answered before anything started: no manifest


def test_a_leaky_policy_is_refused_by_the_gate_and_the_cli_says_why(
    prefect_harness, sample_landing, tmp_path
):
    # A user agent is a quasi-identifier, so a policy may keep it: whole user agents are
    # canaries (a bot or an app can be named after a person), found in most rows: systemic.
    text = DEFAULT_POLICY.read_text()
    rule = "- {op: user_agent, part: browser, plus_is_space: true, as: browser}"
    leaky = tmp_path / "leaky.yaml"
    leaky.write_text(text.replace(rule, "- {op: keep, as: browser}"))
    out = tmp_path / "out"
    args = ["run", "--landing", str(sample_landing), "--out", str(out), "--dev-key"]
    result = runner.invoke(app, [*args, "--policy", str(leaky)])
    assert result.exit_code == EXIT_NOT_PUBLISHED
    assert "privacy gate" in result.output
    assert "web_requests.browser: systemic:canary" in result.output
    assert not (out / "restricted").exists()
    assert not (out / "shareable").exists()
    manifest = json.loads(next((out / "_manifests").glob("*.json")).read_text())
    assert manifest["status"] == "refused_by_gate"
    assert manifest["gate"]["verdict"] == "refused"
    page = next((out / "_manifests").glob("*.html")).read_text()
    assert "<table id='findings'>" in page
    # The rows withheld before the refusal, by dataset, column and detector (no value).
    assert "<table id='withheld'>" in page
    held = manifest["gate"]["withheld"]["web_requests"]
    assert held["columns"]["browser"]["gate:canary"] == held["rows"] > 0
    assert manifest["quarantine"]["rows_by_reason"]["gate:canary"] == held["rows"]
    assert not (out / "_staging").exists()  # canaries went with the staging area
