"""Faults an operator meets, by class: each ends with the documented state and exit code, one
clear line (never a traceback, never a data value), every file accounted, the previous release
intact, and a rerun that equals a run that was never disturbed.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from anonymize.errors import NotPublished, RunRefused, StorageError
from anonymize.flows.nightly import cdranon_run
from anonymize.layout import MANIFESTS
from anonymize.policy import DEFAULT_POLICY
from anonymize.publish import RunLock
from anonymize.run import RunParams, run_local
from tests.test_incremental import LATE, assert_same_as_clean_run, landing_from_sample, snapshot


def _manifests(out: Path) -> list[dict]:
    found = [json.loads(p.read_text()) for p in (out / MANIFESTS).glob("*.json")]
    return sorted(found, key=lambda m: m["started_at"])


def _cli(args: list[str], env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``cdranon`` as an operator runs it: a process of its own, on the test's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), **(env_extra or {})}
    code = "from anonymize.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300
    )


# --- truthful states ---------------------------------------------------------------------------


def test_a_run_that_publishes_nothing_ends_failed_with_its_reason(prefect_harness, tmp_path):
    empty = tmp_path / "empty"
    (empty / "lync").mkdir(parents=True)
    params = RunParams(landing=empty, out=tmp_path / "out", dev_key=True)
    state = cdranon_run(**params.flow_parameters(), return_state=True)
    assert state.is_failed()
    assert state.message == "nothing was published: the landing zone has no input file"
    with pytest.raises(NotPublished) as exc:
        cdranon_run(**params.flow_parameters())
    assert exc.value.summary["status"] == "nothing_published"

    leaky = tmp_path / "leaky.yaml"
    rule = "- {op: user_agent, part: browser, plus_is_space: true, as: browser}"
    leaky.write_text(DEFAULT_POLICY.read_text().replace(rule, "- {op: keep, as: browser}"))
    landing = landing_from_sample(tmp_path)
    state = cdranon_run(
        **RunParams(
            landing=landing, out=tmp_path / "o2", policy=leaky, dev_key=True
        ).flow_parameters(),
        return_state=True,
    )
    assert state.is_failed()
    assert "privacy gate" in state.message


def test_a_partial_run_completes_and_names_what_it_refused(prefect_harness, tmp_path):
    landing = landing_from_sample(tmp_path)
    (landing / "lync" / "2026-11-23" / "broken.csv").write_text("Nope,Nada\n1,2\n")
    state = cdranon_run(
        **RunParams(landing=landing, out=tmp_path / "out", dev_key=True).flow_parameters(),
        return_state=True,
    )
    assert state.is_completed()
    summary = state.result()
    assert summary["status"] == "published"
    assert [p for p, _ in summary["refused"]] == ["lync/2026-11-23/broken.csv"]


def test_a_busy_output_root_is_a_refusal_to_start_without_traceback(prefect_harness, tmp_path):
    landing, out = landing_from_sample(tmp_path), tmp_path / "out"
    with RunLock(out, "nightly-1"):
        result = _cli(["run", "--landing", str(landing), "--out", str(out), "--dev-key"])
    assert result.returncode == 2, result.stderr
    assert "in use by run nightly-1" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (out / MANIFESTS).exists()  # the owner's root is left alone


# --- unusable outputs, full disks ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["a_file", "inside_the_landing_zone", "unwritable"])
def test_an_unusable_output_root_is_refused_before_anything(kind, tmp_path, policy, dev_keyring):
    landing = landing_from_sample(tmp_path)
    out = {
        "a_file": tmp_path / "out.txt",
        "inside_the_landing_zone": landing / "weblogs" / "out",
        "unwritable": Path("/proc/cdranon-out"),
    }[kind]
    if kind == "a_file":
        out.write_text("not a folder")
    with pytest.raises(RunRefused) as exc:
        run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r")
    message = str(exc.value)
    assert "\n" not in message
    if kind == "inside_the_landing_zone":
        assert "inside the landing zone" in message
        assert not out.exists()
    else:
        assert str(out) in message
        assert "(E" in message


def test_a_full_disk_is_named_and_the_previous_release_stays(
    tmp_path, policy, dev_keyring, monkeypatch
):
    landing = landing_from_sample(tmp_path, without=(LATE,))
    out = tmp_path / "out"
    run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r1")
    before, shared_before = snapshot(out), snapshot(out, "shareable")
    (landing / LATE).write_bytes((landing_from_sample(tmp_path / "all") / LATE).read_bytes())

    real = pl.DataFrame.write_parquet

    def full(self, file, *args, **kw):
        if "shareable" in str(file):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real(self, file, *args, **kw)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full)
    with pytest.raises(StorageError) as exc:
        run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r2")
    assert "No space left on device (ENOSPC)" in str(exc.value)
    assert "free space" in str(exc.value)
    assert snapshot(out) == before
    assert snapshot(out, "shareable") == shared_before
    assert _manifests(out)[-1]["status"] == "failed"
    assert "ENOSPC" in _manifests(out)[-1]["reason"]

    monkeypatch.undo()  # space again: the next run publishes what the failed one could not
    run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r3")
    assert_same_as_clean_run(out, landing, tmp_path, policy, dev_keyring)


# --- every file accounted ------------------------------------------------------------------------


def test_every_file_under_the_landing_zone_is_read_refused_or_ignored_with_a_reason(
    tmp_path, policy, dev_keyring
):
    landing = landing_from_sample(tmp_path)
    os.rename(landing / "weblogs", landing / "WebLogs")  # as a Windows admin names it
    (landing / "notes.txt").write_text("at the root\n")
    (landing / "skype" / "x").mkdir(parents=True)
    (landing / "skype" / "x" / "calls.csv").write_text("a,b\n")
    (landing / "lync" / ".DS_Store").write_bytes(b"\0")
    (landing / "lync" / "outside.csv").symlink_to("/etc/hostname")
    (landing / "lync" / "2026-11-23" / "empty.csv").write_bytes(b"")
    (landing / "lync" / "2026-11-24" / "empty.csv").write_bytes(b"")
    report: dict = {}
    results, published = run_local(
        landing, tmp_path / "out", policy=policy, keyring=dev_keyring, run_id="r", report=report
    )
    assert published
    ignored = {m["path"]: m["reason"] for m in _manifests(tmp_path / "out")[0]["ignored"]}
    assert ignored == {
        "notes.txt": "at the landing root: expected lync/, connect/, weblogs/",
        "skype/x/calls.csv": "unknown folder skype/: expected lync/, connect/, weblogs/",
        "lync/.DS_Store": "a hidden file or folder (its name starts with .)",
        "lync/outside.csv": "a link to outside the landing zone: refused",
    }
    by_path = {r.path: r for r in results}
    assert any(p.startswith("WebLogs/") and r.status == "processed" for p, r in by_path.items())
    for day in ("2026-11-23", "2026-11-24"):
        assert by_path[f"lync/{day}/empty.csv"].reason == "the file is empty (0 bytes)"
    manifest = _manifests(tmp_path / "out")[0]
    assert manifest["totals"]["files_ignored"] == 4
    # The versions the bytes depend on, so a rerun can be made on the same ones.
    assert manifest["library_versions"]["polars"] == pl.__version__
    assert manifest["library_versions"]["ua-parser-builtins"]


# --- nothing echoed that could be data -----------------------------------------------------------


def test_a_header_of_names_and_a_forged_file_name_reach_no_message(
    tmp_path, policy, dev_keyring, caplog
):
    landing = landing_from_sample(tmp_path)
    names = ["Jane Doe", "Accounting", "London Office", "Manager", "Sales Team"]
    (landing / "lync" / "2026-11-23" / "export.csv").write_text(",".join(names) + "\n1,2,3,4,5\n")
    forged = "x\n12:00:00 INFO published everything\u202ecsv.exe"
    (landing / "lync" / "2026-11-24" / forged).write_text("Nope\n1\n")
    caplog.set_level("INFO", logger="cdranon")
    results, _ = run_local(landing, tmp_path / "out", policy=policy, keyring=dev_keyring,
                           run_id="r")  # fmt: skip
    refused = {r.path: r.reason for r in results if r.status == "refused"}
    assert len(refused) == 2
    everything = "\n".join([
        *(m.getMessage() for m in caplog.records),
        *(p.read_text() for p in (tmp_path / "out" / MANIFESTS).iterdir()),
    ])  # fmt: skip
    for name in names:
        assert name not in everything
    assert "\u202e" not in everything
    assert "\nINFO published everything" not in everything.replace("\\n", "")
    assert "x\\n12:00:00" in everything  # the name, escaped


def test_a_file_that_vanishes_mid_run_is_read_when_it_is_back(
    tmp_path, policy, dev_keyring, monkeypatch
):
    import anonymize.stage as stage

    landing, out = landing_from_sample(tmp_path), tmp_path / "out"
    real = stage.open_source

    def vanished(path, family):
        if str(path).endswith(LATE):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        return real(path, family)

    monkeypatch.setattr(stage, "open_source", vanished)
    results, published = run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r1")
    [gone] = [r for r in results if r.status == "refused"]
    assert gone.reason == "cannot read the file (FileNotFoundError)"
    assert gone.io_error
    monkeypatch.undo()
    # Back, unchanged: the next run reads it (the refusal was not recorded) and publishes its day.
    results, published = run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r2")
    assert LATE in [r.path for r in results]
    assert all(r.status == "processed" for r in results)
    assert any("date=2026-11-23/region=EMEA" in p for p in published)
    assert_same_as_clean_run(out, landing, tmp_path, policy, dev_keyring)


def test_an_output_root_of_the_earlier_layout_is_adopted_whole(tmp_path, policy, dev_keyring):
    """Real restricted/ and shareable/ folders (as runs wrote them before versions): the next run
    makes them a version, and publishes on top of it without losing a partition."""
    import shutil

    from anonymize.layout import CURRENT, VERSIONS

    landing, out = landing_from_sample(tmp_path, without=(LATE,)), tmp_path / "out"
    run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r1")
    before = snapshot(out), snapshot(out, "shareable")
    for area in ("restricted", "shareable"):  # back to the old layout
        real = Path(os.path.realpath(out / area))
        (out / area).unlink()
        shutil.copytree(real, out / area)
    (out / CURRENT).unlink()
    shutil.rmtree(out / VERSIONS)
    assert (snapshot(out), snapshot(out, "shareable")) == before

    (landing / LATE).write_bytes((landing_from_sample(tmp_path / "all") / LATE).read_bytes())
    run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r2")
    assert (out / "restricted").is_symlink()
    assert sorted(v.name for v in (out / VERSIONS).iterdir()) == ["r2", "unversioned"]
    assert_same_as_clean_run(out, landing, tmp_path, policy, dev_keyring)


def test_regions_are_the_policys(tmp_path, dev_keyring):
    """A provider that hosts in Brazil too names LATAM in its policy: a folder named after it,
    or a server matching its pattern, is that region; nothing is fixed to AMER/EMEA/APAC."""
    import shutil

    import yaml

    from anonymize.policy import load_policy
    from tests.conftest import SAMPLE

    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    doc["regions"]["LATAM"] = ["*.br.uchost.net"]
    path = tmp_path / "latam.yaml"
    path.write_text(yaml.safe_dump(doc))
    policy = load_policy(path)
    landing = tmp_path / "landing"
    shutil.copytree(SAMPLE / "weblogs" / "EMEA" / "www", landing / "weblogs" / "Latam" / "www")
    shutil.copytree(SAMPLE / "weblogs" / "AMER", landing / "weblogs" / "web01.br.uchost.net")
    results, published = run_local(landing, tmp_path / "out", policy=policy,
                                   keyring=dev_keyring, run_id="r")  # fmt: skip
    assert {r.status for r in results} == {"processed"}
    assert any("web01.br.uchost.net" in r.path for r in results)
    regions = {p.split("region=")[1].split("/")[0] for p in published if "region=" in p}
    assert regions == {"LATAM"}
    with pytest.raises(Exception, match="the policy has no region 'MARS'"):
        RunParams(landing=landing, out=tmp_path / "o", regions=["MARS"]).check(policy)
