"""The deployments against a real ``prefect server`` (SQLite, loopback), as operations run them.

``cdranon serve`` registers the nightly deployment with a schedule a minute ahead and the
ad-hoc one; the scheduled run must complete and publish, an ad-hoc run triggered with
``prefect deployment run ... --param`` must complete, and a bad parameter must be refused
before any run starts. About 3 minutes: marked slow (CI runs it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from anonymize.flows import PREFECT_YAML
from tests.conftest import SAMPLE

pytestmark = [pytest.mark.slow, pytest.mark.flow]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with {proc.returncode}")
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") or k == "PREFECT_HOME"
    }
    env |= {
        "PREFECT_HOME": str(home),  # the SQLite database lives here
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait(healthy, 180, "the Prefect server", proc)
        yield url, env | {"PREFECT_API_URL": url}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()


def _flow_runs(url: str, deployment: str) -> list[dict]:
    dep = httpx.get(f"{url}/deployments/name/cdranon-run/{deployment}", timeout=10).json()
    body = {"deployments": {"id": {"any_": [dep["id"]]}}, "sort": "EXPECTED_START_TIME_ASC"}
    return httpx.post(f"{url}/flow_runs/filter", json=body, timeout=10).json()


def _manifests(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "_manifests").glob("*.json"))]


def test_scheduled_and_adhoc_runs_on_a_real_server(server, tmp_path):
    url, env = server
    landing = tmp_path / "landing"
    for rel in ("lync/2026-11-23", "weblogs/EMEA"):
        shutil.copytree(SAMPLE / rel, landing / rel)
    out = tmp_path / "out"
    # The next minute that leaves the server time to schedule it.
    at = (datetime.now(UTC) + timedelta(seconds=75)).replace(second=0, microsecond=0)
    cron = f"{at.minute} {at.hour} * * *"
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(
        [str(BIN / "cdranon"), "serve", "--landing", str(landing), "--out", str(out),
         "--dev-key", "--cron", cron],
        env=env,
        cwd=tmp_path,  # the deployments load the flow by module path, not from the checkout
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        # The scheduled run: created by the server's scheduler, started by the serve process.
        def scheduled_done() -> dict | None:
            try:
                runs = _flow_runs(url, "nightly")
            except (httpx.HTTPError, KeyError, ValueError):
                return None
            for run in runs:
                if run["state_type"] in ("FAILED", "CRASHED"):
                    pytest.fail(f"the scheduled run ended {run['state_type']}")
                if run["state_type"] == "COMPLETED":
                    return run
            return None

        run = _wait(scheduled_done, 240, "the scheduled run to complete", serve)
        assert run["auto_scheduled"]
        assert datetime.fromisoformat(run["expected_start_time"]) == at
        [manifest] = _manifests(out)
        assert manifest["status"] == "published"
        assert manifest["partitions_published"]
        assert (out / "restricted" / "lync_sessions").is_dir()

        # An ad-hoc run as Prefect users pass it: only what differs from the deployment's
        # parameters (landing, out and the key are set once), each a flat, typed parameter.
        flags = ["reprocess=true", 'regions=["EMEA"]', "date_from=2026-11-23",
                 "date_to=2026-11-23"]  # fmt: skip
        trigger = subprocess.run(
            [str(BIN / "prefect"), "deployment", "run", "cdranon-run/adhoc", "--watch",
             "--watch-timeout", "240", *(a for f in flags for a in ("--param", f))],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert trigger.returncode == 0, trigger.stdout[-2000:] + trigger.stderr[-2000:]
        [adhoc] = [r for r in _flow_runs(url, "adhoc") if r["state_type"] == "COMPLETED"]
        assert adhoc["parameters"]["regions"] == ["EMEA"]
        assert adhoc["parameters"]["reprocess"] is True
        latest = _manifests(out)[-1]
        # The flow run is named from its scope and its run id, the manifest's.
        assert adhoc["name"] == f"reprocess EMEA 2026-11-23 {latest['run_id']}"
        assert latest["status"] == "published"
        assert latest["incremental"]["reprocess"] is True
        assert set(latest["incremental"]["partitions_rebuilt"]) == {"2026-11-23/EMEA"}
        # Tasks are named by the file they read.
        tasks = httpx.post(
            f"{url}/task_runs/filter",
            json={"flow_runs": {"id": {"any_": [adhoc["id"]]}}, "limit": 200},
            timeout=10,
        ).json()
        names = {t["name"] for t in tasks}
        assert "read lync/2026-11-23/SessionDetailsView.csv" in names, sorted(names)

        # A bad parameter is refused before any run starts (a region is an upper-case word; which
        # ones exist is the policy's to say, checked when the run starts).
        refused = subprocess.run(
            [str(BIN / "prefect"), "deployment", "run", "cdranon-run/adhoc",
             "--param", 'regions=["mars-1"]'],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert refused.returncode != 0
        assert "mars-1" in refused.stdout + refused.stderr
        assert len(_flow_runs(url, "adhoc")) == 1
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
        log.close()


def test_the_prefect_yaml_deploys_to_a_work_pool_and_a_worker_runs_it(server, tmp_path):
    url, env = server
    landing = tmp_path / "landing"
    shutil.copytree(SAMPLE / "weblogs" / "EMEA", landing / "weblogs" / "EMEA")
    out = tmp_path / "out"
    env = env | {"CDRANON_LANDING": str(landing), "CDRANON_OUT": str(out),
                 "CDRANON_CRON": "15 3 * * *"}  # fmt: skip

    def prefect(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(BIN / "prefect"), *args], env=env, cwd=tmp_path, capture_output=True,
            text=True, timeout=timeout,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done

    prefect("work-pool", "create", "cdranon", "--type", "process")
    # The installed package's prefect.yaml, from a folder that is not a checkout.
    prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_YAML))
    nightly = httpx.get(f"{url}/deployments/name/cdranon-run/nightly-pool", timeout=10).json()
    assert nightly["work_pool_name"] == "cdranon"
    assert nightly["entrypoint"] == "anonymize.flows.nightly.cdranon_run"
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["15 3 * * *"]
    assert nightly["schedules"][0]["schedule"]["timezone"] == "UTC"
    assert nightly["global_concurrency_limit"]["limit"] == 1
    assert nightly["parameters"] == {"landing": str(landing), "out": str(out)}
    # Its form shows what each parameter does.
    described = nightly["parameter_openapi_schema"]["properties"]
    assert all(described[name].get("description") for name in ("landing", "reprocess"))

    # An ad-hoc run, picked up by a process worker (the development key as a parameter).
    prefect("deployment", "run", "cdranon-run/adhoc-pool", "--param", "dev_key=true")
    prefect("worker", "start", "--pool", "cdranon", "--run-once", timeout=300)
    [manifest] = _manifests(out)
    assert manifest["status"] == "published"
