"""The flow as operations run it: nightly twice, a late file, a run killed while publishing,
a failing file, and the same outputs on a Dask cluster as on local threads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from anonymize.errors import read_failure
from anonymize.flows.nightly import cdranon_run, flow_for
from anonymize.layout import LOCK, VERSIONS
from anonymize.run import Progress, RunParams, run_local
from tests.conftest import SAMPLE
from tests.test_incremental import LATE, assert_same_as_clean_run, landing_from_sample, snapshot

pytestmark = pytest.mark.flow


def priority_groups_of(summary: dict) -> set[int]:
    """The priority groups of a run's files (one progress report per group)."""
    from anonymize.contracts import load_contract

    inputs = json.loads(Path(summary["manifest"]).read_text())["inputs"]
    return {load_contract(i["contract"]).priority for i in inputs if i["contract"]}


def _tree(out: Path) -> dict[str, tuple[int, bytes]]:
    """Every published file with its modification time: a rewrite with equal bytes shows too."""
    return {
        p.relative_to(out).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
        for area in ("restricted", "shareable")
        for p in sorted((out / area).rglob("*.parquet"))
    }


def test_nightly_twice_publishes_once_and_a_late_file_republishes_only_its_day(
    prefect_harness, tmp_path, policy, dev_keyring
):
    landing = landing_from_sample(tmp_path, without=(LATE,))
    out = tmp_path / "out"
    params = RunParams(landing=landing, out=out, dev_key=True)

    seen: list[str] = []
    Progress.listeners.append(lambda stage, done, total: seen.append(stage))
    try:
        first = cdranon_run(**params.flow_parameters())
    finally:
        Progress.listeners.clear()
    assert first["status"] == "published"
    # Progress: every file read, then releases, gate, publish; the artifact ends at 100 %.
    assert seen[0] == "read"
    assert seen[-4:] == ["release", "gate", "publish", "done"]
    assert seen.count("read") == len(priority_groups_of(first))
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["cdranon-progress"])),
            limit=1,
        )
    assert artifact.data == 100.0
    published = _tree(out)
    second = cdranon_run(**params.flow_parameters())
    assert (second["status"], second["partitions"]) == ("up_to_date", [])
    assert second["incremental"]["files_unchanged"] == first["totals"]["files"] - sum(
        1 for i in json.loads(Path(first["manifest"]).read_text())["inputs"]
        if i["contract"] in ("lync_users", "connect_users")
    )  # fmt: skip
    assert _tree(out) == published

    shutil.copy(SAMPLE / LATE, landing / LATE)
    third = cdranon_run(**params.flow_parameters())
    assert third["status"] == "published"
    # The day, and its week (from Monday the 23rd) and month in the weekly and monthly releases.
    assert {p.split("/date=")[1] for p in third["partitions"]} == {
        "2026-11-23/region=EMEA", "2026-11-01/region=EMEA"
    }  # fmt: skip
    changed = {k for k, v in _tree(out).items() if published.get(k) != v}
    assert changed
    assert all(
        "date=2026-11-23/region=EMEA" in k or "date=2026-11-01/region=EMEA" in k for k in changed
    )
    assert_same_as_clean_run(out, landing, tmp_path, policy, dev_keyring)
    report = Path(third["manifest"]).with_suffix(".md").read_text()
    assert "1 day/region partition(s) rebuilt (2026-11-23 .. 2026-11-23)" in report


# Runs the CLI in a child process that kills itself (SIGKILL: no cleanup of any kind) at a
# moment of publication: "building" right after the second staged partition went into the new
# version (not yet published), "pointed" right after the ``current`` link was swapped.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    real_replace = os.replace
    moved = []
    at = sys.argv[3]

    def replace(src, dst, *a, **kw):
        real_replace(src, dst, *a, **kw)
        if at == "building" and "/_versions/" in str(dst) and "/restricted/" in str(dst):
            moved.append(dst)
            if len(moved) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        if at == "pointed" and os.path.basename(str(dst)) == "current":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    from anonymize.cli import main
    sys.argv = ["cdranon", "run", "--landing", sys.argv[1], "--out", sys.argv[2], "--dev-key"]
    main()
    """
)


def _killed_run(landing: Path, out: Path, tmp_path: Path, at: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLER, str(landing), str(out), at],
        env=env | {"PREFECT_HOME": str(tmp_path / "child-prefect")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert child.wait(timeout=300) == -signal.SIGKILL
    finally:  # its temporary Prefect server is in the same session
        subprocess.run(["pkill", "-KILL", "-s", str(child.pid)], check=False)
    return child.pid


@pytest.mark.parametrize("at", ["building", "pointed"])
def test_a_run_killed_while_publishing_leaves_one_whole_version_and_the_next_run_completes(
    at, prefect_harness, tmp_path, policy, dev_keyring
):
    landing = landing_from_sample(tmp_path, without=(LATE,))
    out = tmp_path / "out"
    params = RunParams(landing=landing, out=out, dev_key=True)
    assert cdranon_run(**params.flow_parameters())["status"] == "published"
    before = snapshot(out), snapshot(out, "shareable")
    ledger_before = (out / "_ledger.json").read_bytes()

    shutil.copy(SAMPLE / LATE, landing / LATE)
    pid = _killed_run(landing, out, tmp_path, at)

    # What the crash left: its lock file (the kernel freed the lock), the ledger untouched, and
    # one whole published version: the previous one, or the new one, never a mix or a hole.
    assert json.loads((out / LOCK).read_text())["pid"] == pid
    assert (out / "_ledger.json").read_bytes() == ledger_before
    now = snapshot(out), snapshot(out, "shareable")
    if at == "building":
        assert now == before
    else:
        assert now != before
        clean = tmp_path / "clean"
        run_local(landing, clean, policy=policy, keyring=dev_keyring, run_id="clean")
        assert now == (snapshot(clean), snapshot(clean, "shareable"))

    # The next run takes the dead run's lock, removes what it half-built, and republishes.
    summary = cdranon_run(**params.flow_parameters())
    assert summary["status"] == "published"
    assert not (out / LOCK).exists()
    versions = sorted(v.name for v in (out / VERSIONS).iterdir())
    assert len(versions) == 2  # the published one and the one before; nothing half-built
    assert_same_as_clean_run(out, landing, tmp_path, policy, dev_keyring)


def test_a_file_that_fails_fails_the_flow_run_and_the_manifest_says_which(
    prefect_harness, tmp_path, monkeypatch
):
    import anonymize.run as engine

    landing, out = landing_from_sample(tmp_path), tmp_path / "out"
    real = engine.process_file

    def flaky(path, **kw):
        if Path(path).name == "SessionDetailsView.csv":
            raise RuntimeError("disk on fire")  # a bug, not an input problem
        return real(path, **kw)

    monkeypatch.setattr(engine, "process_file", flaky)
    state = cdranon_run(
        **RunParams(landing=landing, out=out, dev_key=True).flow_parameters(), return_state=True
    )
    assert state.is_failed()
    [manifest] = [json.loads(p.read_text()) for p in (out / "_manifests").glob("*.json")]
    assert manifest["status"] == "failed"
    assert "SessionDetailsView.csv failed with RuntimeError" in manifest["reason"]
    assert "disk on fire" not in json.dumps(manifest)
    assert not (out / "restricted").exists()
    assert not (out / "_ledger.json").exists()


def test_a_transient_read_failure_is_retried(prefect_harness, tmp_path, monkeypatch):
    import anonymize.flows.nightly as nightly
    import anonymize.run as engine

    monkeypatch.setattr(nightly.process_task, "retry_delay_seconds", [0, 0])
    landing, out = landing_from_sample(tmp_path), tmp_path / "out"
    real = engine.process_file
    calls = {"n": 0}

    def flaky(path, **kw):
        result = real(path, **kw)
        if Path(path).name == "SessionDetailsView.csv" and "2026-11-23" in str(path):
            calls["n"] += 1
            if calls["n"] == 1:  # the share timed out once
                result.refuse(read_failure(TimeoutError()))
        return result

    monkeypatch.setattr(engine, "process_file", flaky)
    summary = cdranon_run(**RunParams(landing=landing, out=out, dev_key=True).flow_parameters())
    assert calls["n"] == 2
    assert summary["status"] == "published"
    assert summary["refused"] == []


def test_a_bad_parameter_is_refused_before_any_task(prefect_harness, tmp_path):
    params = {"landing": str(tmp_path), "out": str(tmp_path / "out"), "regions": ["MARS"]}
    state = cdranon_run(**params, return_state=True)
    assert state.is_failed()
    assert "regions" in str(state.message)
    assert not (tmp_path / "out").exists()
    reversed_dates = dict(params, regions=None, date_from="2026-11-24", date_to="2026-11-23")
    state = cdranon_run(**reversed_dates, return_state=True)
    assert state.is_failed()
    assert "date_from is after date_to" in str(state.message)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_flow_on_a_local_dask_cluster_gives_the_same_bytes(prefect_harness, tmp_path):
    from distributed import LocalCluster

    landing = tmp_path / "landing"
    shutil.copytree(SAMPLE, landing)
    local = cdranon_run(
        **RunParams(landing=landing, out=tmp_path / "local", dev_key=True).flow_parameters()
    )
    assert local["status"] == "published"
    with LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
        processes=True,
    ) as cluster:  # fmt: skip
        summary = flow_for(cluster.scheduler_address)(
            **RunParams(landing=landing, out=tmp_path / "dask", dev_key=True).flow_parameters()
        )
        tasks_done = cluster.scheduler.transition_counter
    assert tasks_done > 0  # the tasks went through the cluster's scheduler
    assert summary["status"] == "published"
    assert snapshot(tmp_path / "dask") == snapshot(tmp_path / "local")
    assert snapshot(tmp_path / "dask", "shareable") == snapshot(tmp_path / "local", "shareable")
