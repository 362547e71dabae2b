"""The command line as its users expect it: fast answers without Prefect, --json documents that
follow their schemas, flags, environment defaults, init, policy show, the wheel's import names
and a scoped reprocess that reads only its files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from datetime import date
from pathlib import Path

import jsonschema
import yaml
from typer.testing import CliRunner

from anonymize.cli import EXIT_NOT_PUBLISHED, EXIT_REFUSED_TO_START, app
from anonymize.keys import ENV_VAR
from anonymize.ledger import Scope
from anonymize.policy import DEFAULT_POLICY
from anonymize.run import run_local
from tests.conftest import SAMPLE

runner = CliRunner()
SCHEMAS = Path(__file__).resolve().parents[1] / "anonymize" / "schemas" / "json"
SCRIPT = Path(sys.executable).parent / "cdranon"


def _valid(document: dict, name: str) -> dict:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.validate(document, schema)
    return document


def _cdranon(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    """The console script in a process of its own, with a Prefect home of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CDRANON_"))}
    env["PREFECT_HOME"] = str(home)
    return subprocess.run(
        [str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300, cwd=cwd,
        check=False,
    )  # fmt: skip


def _web_landing(tmp_path: Path) -> Path:
    landing = tmp_path / "landing"
    shutil.copytree(SAMPLE / "weblogs" / "EMEA", landing / "weblogs" / "EMEA")
    return landing


def test_runs_with_nothing_to_do_answer_without_prefect_and_write_nothing(
    tmp_path, policy, dev_keyring
):
    landing, out = _web_landing(tmp_path), tmp_path / "out"
    run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r1")
    manifests = sorted((out / "_manifests").iterdir())
    home = tmp_path / "prefect-home"  # a server would create it (its database)

    # Nothing new since the last run: exit 0, the --json document, no manifest.
    done = _cdranon("run", "--landing", str(landing), "--out", str(out), "--dev-key", "--json",
                    home=home, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    doc = _valid(json.loads(done.stdout), "run")
    assert (doc["status"], doc["run_id"], doc["manifest"]) == ("up_to_date", None, None)
    assert doc["work"]["to_read"] == 0
    assert doc["work"]["files"] == len(list((landing / "weblogs" / "EMEA").rglob("*.log*")))
    assert sorted((out / "_manifests").iterdir()) == manifests

    # An empty landing zone: exit 1 with the reason, nothing written anywhere.
    empty = tmp_path / "empty"
    (empty / "lync").mkdir(parents=True)
    done = _cdranon("run", "--landing", str(empty), "--out", str(tmp_path / "o2"), "--dev-key",
                    home=home, cwd=tmp_path)  # fmt: skip
    assert done.returncode == EXIT_NOT_PUBLISHED
    assert "the landing zone has no input file" in done.stderr
    assert not (tmp_path / "o2").exists()

    # A refused start (no key): exit 2, nothing written.
    done = _cdranon("run", "--landing", str(landing), "--out", str(tmp_path / "o3"),
                    home=home, cwd=tmp_path)  # fmt: skip
    assert done.returncode == EXIT_REFUSED_TO_START
    assert ENV_VAR in done.stderr
    assert not (tmp_path / "o3").exists()
    assert not home.exists()  # no Prefect server was started by any of them


def test_quiet_and_log_level(tmp_path, policy, dev_keyring):
    landing, out = _web_landing(tmp_path), tmp_path / "out"
    run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r1")
    args = ["run", "--landing", str(landing), "--out", str(out), "--dev-key"]
    quiet = runner.invoke(app, [*args, "--quiet"])
    assert quiet.exit_code == 0
    assert quiet.output == ""
    said = runner.invoke(app, args)
    assert "nothing to do: no new input file since the last run" in said.output
    bad = runner.invoke(app, [*args, "--log-level", "LOUD"])
    assert bad.exit_code == EXIT_REFUSED_TO_START
    assert "--log-level is one of DEBUG, INFO, WARNING, ERROR" in bad.output


def test_work_counts_what_makes_a_run(tmp_path, policy, dev_keyring):
    from anonymize.run import Run, Work

    landing, out = _web_landing(tmp_path), tmp_path / "out"
    before = Run(landing, out, policy, dev_keyring, "r0").work()
    assert before.reason is None
    assert before.to_read == before.files > 0
    run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r1")
    after = Run(landing, out, policy, dev_keyring, "r2").work()
    assert (after.reason, after.status) == ("no new input file since the last run", "up_to_date")
    assert Run(landing, out, policy, dev_keyring, "r3", reprocess=True).work().reason is None
    # A new file makes work again; so does a pending request, without any new file.
    assert Work(files=3, ignored=0, to_read=0, requests=1).reason is None
    assert Work(files=0, ignored=2, to_read=0).reason == (
        "the landing zone has no input file (2 other file(s) ignored)"
    )
    (landing / "weblogs" / "EMEA" / "late.log").write_bytes(
        (SAMPLE / "weblogs" / "EMEA" / "www" / "access-2026-11-23.log").read_bytes()[:400]
    )
    assert Run(landing, out, policy, dev_keyring, "r4").work().to_read == 1


def test_deciding_the_work_and_running_it_hash_each_new_file_once(
    tmp_path, policy, dev_keyring, monkeypatch
):
    import anonymize.plan as plan
    from anonymize.run import Run

    landing, out = _web_landing(tmp_path), tmp_path / "out"
    hashed = []
    real = plan.file_sha256
    monkeypatch.setattr(plan, "file_sha256", lambda p: hashed.append(p) or real(p))
    work = Run(landing, out, policy, dev_keyring, "r0").work()
    run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r1")
    assert len(hashed) == len(set(hashed)) == work.files
    # An unscoped reprocess trusts no earlier record: every file is hashed anew.
    hashed.clear()
    run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r2", reprocess=True)
    assert len(hashed) == work.files


def test_json_documents_follow_their_schemas(tmp_path, policy, dev_keyring):
    landing, out = _web_landing(tmp_path), tmp_path / "out"
    result = runner.invoke(app, ["check-policy", "--json"])
    assert result.exit_code == 0, result.output
    assert _valid(json.loads(result.stdout), "check-policy")["ok"] is True
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: '1'\nsurprise: 1\n")
    result = runner.invoke(app, ["check-policy", str(bad), "--json"])
    assert result.exit_code == EXIT_REFUSED_TO_START
    doc = _valid(json.loads(result.stdout), "check-policy")
    assert not doc["ok"]
    assert any("surprise" in p for p in doc["problems"])

    result = runner.invoke(app, ["status", "--landing", str(landing), "--out", str(out), "--json"])
    assert _valid(json.loads(result.stdout), "status")["has_work"] is True
    run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r1")
    result = runner.invoke(app, ["scan", "--landing", str(landing), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    scanned = _valid(json.loads(result.stdout), "scan")
    assert scanned["clean"] is True
    assert scanned["canaries"] > 0


def test_environment_defaults_flags_version_and_short_help(tmp_path, monkeypatch):
    landing, out = _web_landing(tmp_path), tmp_path / "out"
    monkeypatch.setenv("CDRANON_LANDING", str(landing))
    monkeypatch.setenv("CDRANON_OUT", str(out))
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["out"] == str(out)
    result = runner.invoke(app, ["run", "-h"], terminal_width=200)
    assert result.exit_code == 0
    assert "env var: CDRANON_LANDING" in result.output
    assert "--dev-key" in result.output
    for line in result.output.splitlines():
        if "--dev-key" in line or "--reprocess" in line or "--json" in line:
            assert "<bool>" not in line, line
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("cdranon ")


def test_init_sets_up_a_landing_zone_and_a_policy_to_edit(tmp_path):
    result = runner.invoke(app, ["init", str(tmp_path / "uc")])
    assert result.exit_code == 0, result.output
    landing = tmp_path / "uc" / "landing"
    assert {p.relative_to(landing).as_posix() for p in landing.glob("*/*")} == {
        f"{family}/{region}"
        for family in ("lync", "connect", "weblogs")
        for region in ("AMER", "APAC", "EMEA")
    }
    policy = tmp_path / "uc" / "policy.yaml"
    assert policy.read_bytes() == DEFAULT_POLICY.read_bytes()
    assert "cdranon keygen" in (tmp_path / "uc" / "README.md").read_text()
    again = runner.invoke(app, ["init", str(tmp_path / "uc")])
    assert again.exit_code == EXIT_REFUSED_TO_START  # nothing is overwritten
    # The shown policy is the effective one: the file with its defaults filled in.
    shown = runner.invoke(app, ["policy", "show", "--policy", str(policy)])
    assert shown.exit_code == 0, shown.output
    effective = yaml.safe_load(shown.stdout)
    assert effective["version"] == yaml.safe_load(policy.read_text())["version"]
    assert "retention" in effective
    assert "gate" in effective


def test_the_wheel_installs_one_import_name_with_its_data(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path),
         str(repo)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    [wheel] = tmp_path.glob("cdranon-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.startswith("cdranon-")} == {"anonymize"}
    for shipped in ("anonymize/policies/default.yaml", "anonymize/flows/prefect.yaml",
                    "anonymize/schemas/output/lync_sessions.yaml",
                    "anonymize/schemas/json/run.schema.json", "anonymize/__main__.py"):  # fmt: skip
        assert shipped in names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Project-URL: Source" in text
    assert "Provides-Extra: dask" in text
    assert "Requires-Dist: ua-parser[regex]" in text
    assert not any(line.startswith("Requires-Dist: pandas") and "extra" not in line
                   for line in text.splitlines())  # fmt: skip


def test_a_scoped_reprocess_reads_and_hashes_only_the_files_of_its_scope(
    tmp_path, policy, dev_keyring, monkeypatch
):
    import anonymize.plan as plan
    from anonymize.synth_sources import generate_all

    landing, out = tmp_path / "landing", tmp_path / "out"
    generate_all(landing, seed=3, rows=600, days=4, people=40)
    hashed = []
    real = plan.file_sha256
    monkeypatch.setattr(plan, "file_sha256", lambda p: hashed.append(p) or real(p))
    first, _ = run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r1")
    assert len(hashed) >= len(first)  # the first run hashes every file
    hashed.clear()
    day = date(2026, 11, 24)
    results, _ = run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r2",
                           reprocess=True, scope=Scope(frozenset({"EMEA"}), day, day))  # fmt: skip
    ledger = json.loads((out / "_ledger.json").read_text())["files"]
    in_scope = {
        e["path"] for e in ledger.values() if any(k == f"{day}/EMEA" for k in e["partitions"])
    }
    read = {r.path for r in results}
    assert in_scope <= read
    # Besides them, only the side files they need: join sources and companions (rows of their
    # own, no partition) of their folders.
    folders = {str(Path(p).parent) for p in in_scope}
    partitions = {e["path"]: e["partitions"] for e in ledger.values()}
    for extra in read - in_scope:
        assert not partitions.get(extra), extra
        assert any(str(Path(extra).parent).startswith(f) or f.startswith(str(Path(extra).parent))
                   for f in folders), extra  # fmt: skip
    assert 0 < len(results) < len(first) / 3
    # No recorded file was hashed again (the ledger knows their size, time and hash); the join
    # sources, which the ledger does not record, only when this process has not hashed them.
    rehashed = {Path(h).relative_to(landing).as_posix() for h in hashed}
    assert not rehashed & set(partitions)


def test_the_flow_parameters_are_flat_and_described_as_run_params():
    """Prefect's run form: one typed parameter per RunParams field, with its description,
    whether the deployment is built from the flow object (serve) or its source (prefect.yaml)."""
    from prefect.utilities.callables import parameter_schema, parameter_schema_from_entrypoint

    from anonymize.flows.nightly import cdranon_run
    from anonymize.run import RunParams

    want = {name: field.description for name, field in RunParams.model_fields.items()}
    for schema in (
        parameter_schema(cdranon_run),
        parameter_schema_from_entrypoint("anonymize.flows.nightly.cdranon_run"),
    ):
        properties = schema.model_dump()["properties"]
        got = {k: " ".join((v.get("description") or "").split()) for k, v in properties.items()}
        assert got == want
        assert set(schema.model_dump()["required"]) == {"landing", "out"}
