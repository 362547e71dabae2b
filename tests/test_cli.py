"""The command line: refusals that write nothing, keygen, synth, and one full run."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from anonymize.cli import EXIT_REFUSED_TO_START, app
from anonymize.keys import ENV_VAR, parse_key
from anonymize.policy import DEFAULT_POLICY

runner = CliRunner()


@pytest.fixture
def no_key(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_run_without_key_writes_nothing_and_says_how(no_key, sample_landing, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "--landing", str(sample_landing), "--out", str(out)])
    assert result.exit_code == EXIT_REFUSED_TO_START
    assert ENV_VAR in result.output
    assert "--dev-key" in result.output
    assert not out.exists()


def test_run_with_an_unknown_release_writes_nothing(sample_landing, tmp_path):
    out = tmp_path / "out"
    args = ["run", "--landing", str(sample_landing), "--out", str(out), "--dev-key"]
    result = runner.invoke(app, [*args, "--release", "nobody"])
    assert result.exit_code == EXIT_REFUSED_TO_START
    assert "no release 'nobody' (it has: partner, partner_monthly, partner_weekly" in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--region", "MARS"], "regions: the policy has no region 'MARS' (it has: AMER, APAC"),
        (["--region", "mars-1"], "bad parameter: --region (value 1): a region is an upper-case"),
        (["--source", "fax"], "bad parameter: --source (value 1): input should be 'lync', "),
        (["--from", "2026-11-24", "--to", "2026-11-23"], "bad parameter: --from is after --to"),
        (["--from", "yesterday"], "bad parameter: --from: a day is written YYYY-MM-DD"),
    ],
)
def test_run_with_a_bad_parameter_writes_nothing(sample_landing, tmp_path, extra, message):
    out = tmp_path / "out"
    args = ["run", "--landing", str(sample_landing), "--out", str(out), "--dev-key", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_REFUSED_TO_START
    assert message in result.output
    assert not out.exists()


def test_a_run_with_another_key_than_the_published_one_exits_2_before_starting(
    monkeypatch, sample_landing, tmp_path
):
    from anonymize.keys import KeyRing
    from anonymize.ledger import Ledger
    from tests.conftest import TEST_KEY

    out = tmp_path / "out"
    Ledger(key_id=KeyRing.development().key_id).save(out.mkdir() or out)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir())
    monkeypatch.setenv(ENV_VAR, TEST_KEY)
    result = runner.invoke(app, ["run", "--landing", str(sample_landing), "--out", str(out)])
    assert result.exit_code == EXIT_REFUSED_TO_START
    assert KeyRing.development().key_id in result.output
    assert "--rekey" in result.output
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir()) == before


def test_serve_without_a_server_says_how_to_start_one(monkeypatch, sample_landing, tmp_path):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    args = ["serve", "--landing", str(sample_landing), "--out", str(tmp_path / "o"), "--dev-key"]
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_REFUSED_TO_START
    assert "prefect server start" in result.output
    assert "PREFECT_API_URL" in result.output


def test_run_with_a_bad_policy_lists_the_problems_and_writes_nothing(sample_landing, tmp_path):
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    doc["datasets"]["lync_sessions"]["columns"]["FromUri"] = "keep"
    del doc["datasets"]["lync_sessions"]["columns"]["ToUri"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    args = ["run", "--landing", str(sample_landing), "--out", str(out), "--policy", str(bad)]
    result = runner.invoke(app, [*args, "--dev-key"])
    assert result.exit_code == EXIT_REFUSED_TO_START
    assert "keep is not allowed on FromUri" in result.output
    assert "ToUri: no rule" in result.output
    assert not out.exists()


def test_keygen_prints_a_usable_key():
    result = runner.invoke(app, ["keygen"])
    assert result.exit_code == 0
    assert len(parse_key(result.output.strip())) == 32


def test_synth_writes_hostile_and_noisy_web_traffic_on_request(tmp_path):
    args = ["synth", "--out", str(tmp_path / "l"), "--rows", "300", "--days", "2",
            "--people", "20", "--hostile", "0.5", "--noise", "40"]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    hostile = sorted((tmp_path / "l" / "weblogs").glob("*/hostile/*.log"))
    noisy = sorted((tmp_path / "l" / "weblogs" / "EMEA" / "public").glob("*.log"))
    assert len(hostile) == 6  # three regions, two days
    assert len(noisy) == 2
    assert sum(len(f.read_text().splitlines()) for f in noisy) == 80
    assert any("%2540" in f.read_text() or "/people/" in f.read_text() for f in hostile)


def test_synth_is_reproducible(tmp_path):
    for name in ("a", "b"):
        args = [
            "synth",
            "--out",
            str(tmp_path / name),
            "--seed",
            "3",
            "--rows",
            "300",
            "--days",
            "1",
        ]
        assert runner.invoke(app, args).exit_code == 0
    files_a = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    assert {f.parts[0] for f in files_a} == {"lync", "weblogs", "connect"}
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_check_policy(tmp_path):
    ok = runner.invoke(app, ["check-policy"])
    assert ok.exit_code == 0
    assert "lync_sessions" in ok.output
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    doc["datasets"]["lync_sessions"]["columns"]["ToPhone"] = "keep"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    refused = runner.invoke(app, ["check-policy", str(bad)])
    assert refused.exit_code == EXIT_REFUSED_TO_START
    assert "keep is not allowed on ToPhone" in refused.output


def test_the_progress_bar_follows_the_runs_reports(monkeypatch):
    import io

    from rich.console import Console

    import anonymize.cli as cli
    from anonymize.run import Progress

    screen = io.StringIO()
    monkeypatch.setattr(cli, "err_console", Console(file=screen, force_terminal=True, width=80))
    with cli._progress_bar():
        [listener] = Progress.listeners
        listener("read", 3, 7)
        listener("publish", 0, 1)
        cli.err_console.file.flush()
    assert Progress.listeners == []
    text = screen.getvalue()
    assert "3/7" in text
    assert "publishing" in text


def test_status_says_what_the_next_run_would_read(tmp_path, policy, dev_keyring):
    import shutil

    from anonymize.run import run_local
    from tests.conftest import SAMPLE

    landing, out = tmp_path / "landing", tmp_path / "out"
    late = "weblogs/EMEA/www/access-2026-11-23.log"
    shutil.copytree(SAMPLE / "weblogs" / "EMEA", landing / "weblogs" / "EMEA")
    (landing / late).unlink()
    args = ["status", "--landing", str(landing), "--out", str(out)]

    before = runner.invoke(app, args)
    assert before.exit_code == 0, before.output
    assert "to read: weblogs/EMEA/www/access-2026-11-24.log.gz" in before.output

    run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r1")
    idle = runner.invoke(app, args)
    assert "nothing new" in idle.output
    assert "to read:" not in idle.output

    shutil.copy(SAMPLE / late, landing / late)
    (landing / "weblogs/EMEA/www/access-2026-11-24.log.gz").unlink()
    after = runner.invoke(app, args)
    assert f"to read: {late}" in after.output
    assert "gone: weblogs/EMEA/www/access-2026-11-24.log.gz" in after.output
    assert "nothing new" not in after.output


@pytest.mark.flow
def test_the_console_script_stands_alone(tmp_path):
    """A plain ``cdranon run`` as a new user types it: no ./dev, a fresh PREFECT_HOME whose
    folders do not exist yet, no startup timeout set."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import SAMPLE

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "not" / "yet" / "prefect")
    script = Path(sys.executable).parent / "cdranon"
    done = subprocess.run(
        [str(script), "run", "--landing", str(SAMPLE), "--out", str(tmp_path / "out"),
         "--dev-key"],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "published" in done.stdout
    assert list((tmp_path / "out" / "restricted").rglob("*.parquet"))


def test_status_json_refuses_and_ignores_what_the_run_then_refuses_and_ignores(
    tmp_path, policy, dev_keyring
):
    import json
    import shutil

    from anonymize.run import run_local
    from tests.conftest import SAMPLE

    landing, out = tmp_path / "landing", tmp_path / "out"
    shutil.copytree(SAMPLE / "weblogs" / "EMEA", landing / "weblogs" / "EMEA")
    (landing / "weblogs" / "EMEA" / "empty.log").write_bytes(b"")
    (landing / "weblogs" / "EMEA" / "notes.txt").write_text("not a log at all\n")
    (landing / "readme.txt").write_text("at the root\n")
    args = ["status", "--landing", str(landing), "--out", str(out), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    to_refuse = {e["path"] for e in status["to_refuse"]}
    assert to_refuse == {"weblogs/EMEA/empty.log", "weblogs/EMEA/notes.txt"}
    assert [e["path"] for e in status["ignored"]] == ["readme.txt"]
    assert status["has_work"] is True

    results, _ = run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r1")
    assert {r.path for r in results if r.status == "refused"} == to_refuse
    assert {r.path for r in results if r.status == "processed"} == set(status["to_read"])
