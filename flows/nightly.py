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
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import ClassVar, Literal

from prefect import Flow, State, flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field, model_validator

from anonymize import __version__
from anonymize.errors import CdranonError, TransientReadError, transient_read_failure
from anonymize.gate import canary_key, run_gate
from anonymize.keys import KeyRing
from anonymize.ledger import IncrementalBatch, Ledger, Scope
from anonymize.pipeline import (
    PlannedFile,
    plan_inputs,
    process_file,
    read_batch,
    stage_releases,
    withhold_findings,
)
from anonymize.policy import DEFAULT_POLICY, Policy, load_policy
from anonymize.publish import (
    QUARANTINE,
    STAGING,
    RunLock,
    build_manifest,
    discover,
    new_run_id,
    owner_only,
    publish_partitions,
    write_manifest,
)
from anonymize.report import render_markdown, write_report

DEBUG_ENV = "CDRANON_DEBUG"
DASK_ENV = "CDRANON_DASK_ADDRESS"
# A read that fails in a way a retry may cure is tried three times in all.
READ_RETRIES = 2
READ_RETRY_DELAYS = [2, 10]


Family = Literal["lync", "connect", "weblogs"]
Region = Literal["AMER", "EMEA", "APAC"]


class RunParams(BaseModel):
    """Parameters of a run. Validated by Prefect before any task starts.

    A scheduled run takes every new input file (see ``anonymize.ledger``); ``sources``,
    ``regions`` and ``date_from``/``date_to`` narrow what it takes and publishes; ``reprocess``
    rebuilds every partition of that scope from the files in the landing zone.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    landing: Path
    out: Path
    policy: Path | None = None
    dev_key: bool = False
    # One of the policy's releases to publish; None publishes all of them.
    release: str | None = None
    sources: list[Family] | None = Field(default=None, min_length=1)
    regions: list[Region] | None = Field(default=None, min_length=1)
    date_from: date | None = None
    date_to: date | None = None
    reprocess: bool = False

    @model_validator(mode="after")
    def _dates_in_order(self) -> RunParams:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("date_from is after date_to")
        return self

    def scope(self) -> Scope:
        return Scope(
            regions=frozenset(self.regions) if self.regions else None,
            date_from=self.date_from,
            date_to=self.date_to,
        )

    def check(self, policy: Policy) -> None:
        """The checks that need the policy; raise CdranonError before anything runs."""
        if self.release is not None and self.release not in policy.releases:
            known = ", ".join(sorted(policy.releases)) or "none"
            raise CdranonError(f"the policy has no release {self.release!r} (it has: {known})")
        if not self.landing.is_dir():
            raise CdranonError(f"the landing zone {self.landing} is not a folder")


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
    # Files the ledger knows, with the same size and time, are not hashed again.
    known = None if params.reprocess else Ledger.load(params.out).known_files(params.landing)
    planned = plan_inputs(files, _policy(params), known)
    get_run_logger().info("discovered %d input file(s) under %s", len(planned), params.landing)
    return planned


def _retry_transient(task: object, task_run: object, state: State) -> bool:
    """Retry only reads that failed in a way a retry may cure."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:
        return False
    return isinstance(exc, TransientReadError)


@task(
    name="anonymize-file",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=READ_RETRIES,
    retry_delay_seconds=READ_RETRY_DELAYS,
    retry_condition_fn=_retry_transient,
)
def process_task(
    planned: PlannedFile,
    params: RunParams,
    run_id: str,
    skip_keys: list[str],
    lookups: dict[str, list[str]],
) -> dict:
    """Anonymise one file into the run's staging area; return its counts.

    ``skip_keys`` and ``lookups`` are paths of files that earlier priority groups staged
    (session keys; key -> pseudonym tables of join sources): paths, never data. A read that
    fails in a way a retry may cure (a timeout, a network share) raises TransientReadError and
    is retried; when the retries run out the task, and so the run, fails.
    """
    owner_only()  # a Dask worker is a process of its own
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
    if result.status == "refused" and transient_read_failure(result.reason):
        raise TransientReadError(f"{result.path}: {result.reason}")
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


@task(name="withhold", cache_policy=NO_CACHE, persist_result=False)
def withhold_task(params: RunParams, run_id: str, results: list[dict]) -> tuple[dict, list[dict]]:
    """Move the staged restricted rows that carry a finding to the quarantine (counts only)."""
    policy = _policy(params)
    results = [dict(r, rows_quarantined=dict(r["rows_quarantined"])) for r in results]
    withheld = withhold_findings(
        params.out / STAGING / run_id,
        params.out / QUARANTINE / run_id,
        policy,
        load_keyring(params, policy),
        results,
    )
    log = get_run_logger()
    for dataset, entry in withheld["rows"].items():
        where = ", ".join(f"{c}: {d}" for c, d in sorted(entry["columns"].items()))
        log.warning("gate: %d row(s) of %s withheld (%s)", entry["rows"], dataset, where)
    return withheld, results


@task(name="privacy-gate", cache_policy=NO_CACHE, persist_result=False)
def gate_task(params: RunParams, run_id: str, withheld: dict) -> dict:
    """Scan everything staged for canaries and detectors; findings never carry a value."""
    policy = _policy(params)
    key = canary_key(load_keyring(params, policy))
    gate = run_gate(params.out / STAGING / run_id, policy, key, withheld)
    log = get_run_logger()
    for f in gate["findings"]:
        log.error(
            "gate: %s/%s.%s: %s (%d row(s))",
            f["area"], f["dataset"], f["column"], f["detector"], f["rows"],
        )  # fmt: skip
    log.info("gate: %s (%d canaries, %.2f s)", gate["verdict"], gate["canaries"], gate["seconds"])
    return gate


@task(name="publish", cache_policy=NO_CACHE, persist_result=False)
def publish_task(
    params: RunParams, run_id: str, affected: list[str], releases: list[str]
) -> list[str]:
    published = publish_partitions(
        params.out / STAGING / run_id,
        params.out,
        run_id,
        replace=set(affected),
        releases=releases,
    )
    get_run_logger().info("published %d partition(s)", len(published))
    return published


class Progress:
    """The run's progress: a Prefect progress artifact, and any listener (the CLI's bar).

    ``report(stage, done, total)``: reading counts files; releases, gate and publish are one
    step each. Never a data value.
    """

    listeners: ClassVar[list[Callable[[str, int, int], None]]] = []

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.artifact = None
        try:
            self.artifact = create_progress_artifact(
                progress=0.0, key="cdranon-progress", description=f"cdranon run {run_id}"
            )
        except Exception:  # progress is a report, never a reason to fail a run
            self.artifact = None

    def report(self, stage: str, done: int, total: int) -> None:
        share = {"read": 0.0, "release": 80.0, "gate": 88.0, "publish": 95.0, "done": 100.0}
        pct = share[stage]
        if stage == "read" and total:
            pct = 80.0 * done / total
        if self.artifact is not None:
            with contextlib.suppress(Exception):
                update_progress_artifact(
                    self.artifact, progress=pct, description=f"cdranon run {self.run_id}: {stage}"
                )
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):
                listener(stage, done, total)


def _task_runner() -> TaskRunner:
    """Local threads, or the Dask cluster named by ``CDRANON_DASK_ADDRESS``.

    Read when the flow is defined: a served deployment runs each flow run in a new process that
    imports this module with the environment of ``cdranon serve``.
    """
    address = os.environ.get(DASK_ENV)
    if address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=address)
    return ThreadPoolTaskRunner(max_workers=2)


@flow(
    name="cdranon-run",
    task_runner=_task_runner(),
    persist_result=False,
    validate_parameters=True,
)
def cdranon_run(params: RunParams) -> dict:
    """Run cdranon over a landing zone and publish what passes; return the run's summary.

    Raises (the flow run ends Failed) when a file cannot be processed, when new input cannot be
    merged with the earlier files of its days, or when publishing fails; the manifest and the
    report are written in every case and say why.
    """
    log = get_run_logger()
    started = datetime.now(UTC)
    run_id = new_run_id(started)
    policy = _policy(params)
    params.check(policy)
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
    batch: IncrementalBatch | None = None
    progress = Progress(run_id)
    lock = RunLock(params.out, run_id)
    staging = params.out / STAGING / run_id
    try:
        # One run at a time per output root; a lock left by a dead run is taken over, and what
        # that run left half-published is put back first.
        lock.acquire()
        if lock.recovered:
            log.warning("restored %d partition(s) left by an interrupted run", len(lock.recovered))
        batch = IncrementalBatch(
            discover_task(params),
            Ledger.load(params.out),
            params.landing,
            params.scope(),
            params.reprocess,
            frozenset(params.sources) if params.sources else None,
        )
        counter = {"done": 0}

        def run_group(group: list[PlannedFile], skip: dict, lookups: dict) -> list[dict]:
            futures = [
                process_task.submit(p, params, run_id, skip.get(p.dataset or "", []), lookups)
                for p in group
            ]
            done = [f.result() for f in futures]  # raises if any task failed
            counter["done"] += len(done)
            progress.report("read", counter["done"], max(counter["done"], len(batch.first)))
            return done

        results = read_batch(batch, run_group, staging, params.out / QUARANTINE / run_id)
        if not batch.planned:
            status, reason = "nothing_published", "the landing zone has no input file"
        elif not results:
            status, reason = "up_to_date", "no new input file since the last run"
        elif not any(r["status"] == "processed" for r in results):
            status, reason = "nothing_published", "no input file could be processed"
        elif not batch.affected:
            status, reason = "nothing_published", "the new files have no rows in the run's scope"
            batch.commit(results, run_id)
            batch.ledger.save(params.out)
        else:
            progress.report("release", 0, 1)
            withheld, results = withhold_task(params, run_id, results)
            shas = [r["sha256"] for r in results if r["status"] == "processed" and r["sha256"]]
            releases = release_task(params, run_id, shas)
            progress.report("gate", 0, 1)
            gate = gate_task(params, run_id, withheld)
            if gate["verdict"] == "pass":
                progress.report("publish", 0, 1)
                published = publish_task(params, run_id, sorted(batch.affected), list(releases))
                batch.commit(results, run_id)
                batch.ledger.save(params.out)
                status = "published"
            else:
                status = "refused_by_gate"
                reason = (
                    f"the privacy gate found {len(gate['findings'])} problem(s); nothing is "
                    "published (see the report)"
                )
        progress.report("done", 1, 1)
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
            incremental=_incremental_entry(params, batch),
        )
        manifest_path = write_manifest(params.out, run_id, manifest)
        report_md = render_markdown(manifest)
        try:
            write_report(params.out, manifest)
        except Exception as exc:  # a report is never a reason to lose the manifest
            log.warning("could not write the HTML report (%s)", type(exc).__name__)
        shutil.rmtree(staging, ignore_errors=True)
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
        "incremental": manifest["incremental"],
        "report": str(manifest_path.with_suffix(".html")),
        "not_for_sharing": keyring.is_development,
    }


def _incremental_entry(params: RunParams, batch: IncrementalBatch | None) -> dict:
    """What the ledger made of the landing zone: for the manifest (dates and counts only)."""
    return {
        "reprocess": params.reprocess,
        "scope": {
            "sources": params.sources,
            "regions": params.regions,
            "date_from": params.date_from.isoformat() if params.date_from else None,
            "date_to": params.date_to.isoformat() if params.date_to else None,
        },
        "files_unchanged": batch.unchanged if batch else 0,
        "files_superseded": len(batch.superseded) if batch else 0,
        "partitions_rebuilt": sorted(batch.affected) if batch else [],
    }


def flow_for(dask_address: str | None = None) -> Flow:
    """The flow on local threads, or on the Dask cluster at ``dask_address``.

    Every task reads and writes the landing zone and the output root by path: on a cluster
    they must be the same shared folders on every worker, and the workers need the master key
    (``CDRANON_MASTER_KEY``) or access to the Prefect API for the Secret block.
    """
    if not dask_address:
        return cdranon_run
    from prefect_dask import DaskTaskRunner

    return cdranon_run.with_options(task_runner=DaskTaskRunner(address=dask_address))
