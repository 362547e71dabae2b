"""The cdranon flow: discover -> read -> anonymize -> publish, with a manifest for every run.

Tasks pass paths and counts, never data; no task caches or persists a result (raw data never
reaches ``PREFECT_HOME``); logs carry counts, file names and column names, never values. The key
is loaded inside the tasks that need it, from the environment, a Prefect Secret block named in
the policy, or the development key; it is never a parameter.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import traceback
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict

from anonymize import __version__
from anonymize.errors import CdranonError
from anonymize.gate import run_gate
from anonymize.keys import KeyRing
from anonymize.pipeline import (
    PlannedFile,
    plan_inputs,
    priority_groups,
    process_file,
    stage_releases,
)
from anonymize.policy import DEFAULT_POLICY, Policy, load_policy
from anonymize.publish import (
    QUARANTINE,
    STAGING,
    RunLock,
    build_manifest,
    discover,
    new_run_id,
    publish_partitions,
    write_manifest,
)
from anonymize.report import render_markdown, write_report

DEBUG_ENV = "CDRANON_DEBUG"


class RunParams(BaseModel):
    """Parameters of a run. Validated by Prefect before any task starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    landing: Path
    out: Path
    policy: Path | None = None
    dev_key: bool = False
    # One of the policy's releases to publish; None publishes all of them.
    release: str | None = None


def _load_secret(name: str) -> str:
    from prefect.blocks.system import Secret

    return Secret.load(name).get()


def load_keyring(params: RunParams, policy: Policy) -> KeyRing:
    """The run's keys: --dev-key, CDRANON_MASTER_KEY, or the policy's Prefect Secret block."""
    return KeyRing.load(
        dev_key=params.dev_key,
        secret_name=policy.key.prefect_secret,
        secret_loader=_load_secret,
    )


def _policy(params: RunParams) -> Policy:
    return load_policy(params.policy or DEFAULT_POLICY)


@task(name="discover", cache_policy=NO_CACHE, persist_result=False)
def discover_task(params: RunParams) -> list[PlannedFile]:
    files = discover(params.landing)
    planned = plan_inputs(files, _policy(params))
    get_run_logger().info("discovered %d input file(s) under %s", len(planned), params.landing)
    return planned


@task(name="anonymize-file", cache_policy=NO_CACHE, persist_result=False)
def process_task(
    planned: PlannedFile,
    params: RunParams,
    run_id: str,
    skip_keys: list[str],
    lookups: dict[str, list[str]],
) -> dict:
    """Anonymise one file into the run's staging area; return its counts.

    ``skip_keys`` and ``lookups`` are paths of files that earlier priority groups staged
    (session keys; key -> pseudonym tables of join sources): paths, never data.
    """
    log = get_run_logger()
    policy = _policy(params)
    try:
        result = process_file(
            Path(planned.path),
            family=planned.family,
            policy=policy,
            keyring=load_keyring(params, policy),
            staging=params.out / STAGING / run_id,
            quarantine=params.out / QUARANTINE / run_id,
            landing=params.landing,
            skip_keys=skip_keys or None,
            lookups=lookups,
            sha256=planned.sha256,
            duplicate_of=planned.duplicate_of,
        )
    except CdranonError:
        raise
    except Exception as exc:
        # Library errors can quote data values: keep only the type unless debugging locally.
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        raise CdranonError(
            f"processing {Path(planned.path).name} failed with {type(exc).__name__}; "
            f"set {DEBUG_ENV}=1 and rerun on a private machine to see the traceback"
        ) from None
    if result.status == "refused":
        log.warning("%s: refused: %s", result.path, result.reason)
    else:
        log.info(
            "%s: %s, %d read, %d published, %d quarantined, %d filtered",
            result.path,
            result.contract,
            result.rows_read,
            result.rows_published,
            sum(result.rows_quarantined.values()),
            sum(result.rows_filtered.values()),
        )
        if not result.balanced:
            raise CdranonError(f"{result.path}: rows read do not add up; nothing is published")
    return result.to_dict()


@task(name="release", cache_policy=NO_CACHE, persist_result=False)
def release_task(params: RunParams, run_id: str, input_sha256s: list[str]) -> dict[str, dict]:
    """Compute the releases (statistics, re-keyed events) from the staged datasets."""
    policy = _policy(params)
    names = None if params.release is None else [params.release]
    entries = stage_releases(
        names, policy, load_keyring(params, policy), params.out / STAGING / run_id, input_sha256s
    )
    for name, entry in entries.items():
        for stat, rep in entry["statistics"].items():
            get_run_logger().info(
                "release %s, %s: %d cell(s) published, %d suppressed (k=%d)",
                name, stat, rep["published"], rep["suppressed"], entry["k"],
            )  # fmt: skip
    return entries


@task(name="privacy-gate", cache_policy=NO_CACHE, persist_result=False)
def gate_task(params: RunParams, run_id: str) -> dict:
    """Scan everything staged for canaries and detectors; findings never carry a value."""
    gate = run_gate(params.out / STAGING / run_id, _policy(params))
    log = get_run_logger()
    for f in gate["findings"]:
        log.error(
            "gate: %s/%s.%s: %s (%d row(s))",
            f["area"], f["dataset"], f["column"], f["detector"], f["rows"],
        )  # fmt: skip
    log.info("gate: %s (%d canaries, %.2f s)", gate["verdict"], gate["canaries"], gate["seconds"])
    return gate


@task(name="publish", cache_policy=NO_CACHE, persist_result=False)
def publish_task(params: RunParams, run_id: str) -> list[str]:
    published = publish_partitions(params.out / STAGING / run_id, params.out, run_id)
    get_run_logger().info("published %d partition(s)", len(published))
    return published


@flow(
    name="cdranon-run",
    task_runner=ThreadPoolTaskRunner(max_workers=2),
    persist_result=False,
    validate_parameters=True,
)
def cdranon_run(params: RunParams) -> dict:
    """Run cdranon over a landing zone and publish what passes; return the run's summary."""
    log = get_run_logger()
    started = datetime.now(UTC)
    run_id = new_run_id(started)
    policy = _policy(params)
    if params.release is not None and params.release not in policy.releases:
        known = ", ".join(sorted(policy.releases)) or "none"
        raise CdranonError(f"the policy has no release {params.release!r} (it has: {known})")
    keyring = load_keyring(params, policy)
    log.info(
        "run %s: policy %s, key %s%s",
        run_id,
        policy.version,
        keyring.key_id,
        " (development key: outputs are not for sharing)" if keyring.is_development else "",
    )
    results: list[dict] = []
    published: list[str] = []
    releases: dict[str, dict] = {}
    gate: dict = {"verdict": "not_run", "findings": []}
    status, reason = "failed", None
    lock = RunLock(params.out, run_id)
    try:
        # One run at a time per output root; a lock left by a dead run is taken over, and what
        # that run left half-published is put back first.
        lock.acquire()
        if lock.recovered:
            log.warning("restored %d partition(s) left by an interrupted run", len(lock.recovered))
        planned = discover_task(params)
        # Higher-priority kinds first: join sources (Users, Connect users), then exports whose
        # session keys filter duplicates in the next group.
        keys_by_dataset: dict[str, list[str]] = defaultdict(list)
        lookups: dict[str, list[str]] = defaultdict(list)
        for group in priority_groups(planned):
            futures = [
                process_task.submit(
                    p,
                    params,
                    run_id,
                    list(keys_by_dataset.get(p.dataset or "", [])),
                    {k: list(v) for k, v in lookups.items()},
                )
                for p in group
            ]
            group_results = [f.result() for f in futures]  # raises if any task failed
            for r in group_results:
                if r["keys_path"] and r["dataset"]:
                    keys_by_dataset[r["dataset"]].append(r["keys_path"])
                if r["lookup_path"] and r["contract"]:
                    lookups[r["contract"]].append(r["lookup_path"])
            results += group_results
        if not any(r["status"] == "processed" for r in results):
            status = "nothing_published"
            reason = (
                "no input file could be processed"
                if results
                else "the landing zone has no input file"
            )
        else:
            shas = [r["sha256"] for r in results if r["status"] == "processed" and r["sha256"]]
            releases = release_task(params, run_id, shas)
            gate = gate_task(params, run_id)
            if gate["verdict"] == "pass":
                published = publish_task(params, run_id)
                status = "published"
            else:
                status = "refused_by_gate"
                reason = (
                    f"the privacy gate found {len(gate['findings'])} problem(s); nothing is "
                    "published (see the report)"
                )
    except Exception as exc:
        reason = str(exc).splitlines()[0] if isinstance(exc, CdranonError) else type(exc).__name__
        raise
    finally:
        manifest = build_manifest(
            run_id=run_id,
            started_at=started,
            landing=params.landing,
            out=params.out,
            policy=policy,
            key_id=keyring.key_id,
            development=keyring.is_development,
            results=results,
            published=published,
            status=status,
            reason=reason,
            software_version=__version__,
            releases=releases,
            gate=gate,
        )
        manifest_path = write_manifest(params.out, run_id, manifest)
        report_md = render_markdown(manifest)
        try:
            write_report(params.out, manifest)
        except Exception as exc:  # a report is never a reason to lose the manifest
            log.warning("could not write the HTML report (%s)", type(exc).__name__)
        shutil.rmtree(params.out / STAGING / run_id, ignore_errors=True)
        with contextlib.suppress(OSError):
            (params.out / STAGING).rmdir()  # only when no other run is staging
        lock.release()
        try:
            create_markdown_artifact(
                markdown=report_md,
                key="cdranon-run-summary",
                description=f"cdranon run {run_id}",
            )
        except Exception:  # an artifact is a report, never a reason to fail a run
            log.warning("could not create the run summary artifact")
    return {
        "run_id": run_id,
        "status": status,
        "reason": reason,
        "manifest": str(manifest_path),
        "totals": manifest["totals"],
        "refused": [(r["path"], r["reason"]) for r in results if r["status"] == "refused"],
        "partitions": published,
        "releases": releases,
        "gate": manifest["gate"],
        "report": str(manifest_path.with_suffix(".html")),
        "not_for_sharing": keyring.is_development,
    }
