"""The cdranon flow: the library's run engine with each file and each step as a Prefect task.

The sequence, the statuses, the manifest and the report are ``anonymize.run``'s; this module only
declares the tasks and hands them to the engine. Tasks pass paths and counts, never data, and
never cache or persist a result; the key is loaded inside the tasks, never a parameter.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from prefect import Flow, State, flow, get_run_logger, task
from prefect import runtime as prefect_runtime
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.states import Failed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import ValidationError

from anonymize import remote
from anonymize.errors import (
    CdranonError,
    NotPublished,
    TransientReadError,
    describe_validation,
    safe_text,
)
from anonymize.layout import PlannedFile
from anonymize.policy import DEFAULT_POLICY, Policy, load_policy
from anonymize.publish import new_run_id
from anonymize.run import (
    READ_RETRY_DELAYS,
    Executor,
    Family,
    Progress,
    Region,
    Run,
    RunParams,
    guarded,
    load_keyring,
    progress_percent,
    stage_file,
)

DASK_ENV = "CDRANON_DASK_ADDRESS"
T = TypeVar("T")


def load_secret(name: str) -> str:
    """A Prefect Secret block's value (the master key, when the policy names a block)."""
    from prefect.blocks.system import Secret

    return Secret.load(name).get()


def _retry_transient(task: object, task_run: object, state: State) -> bool:
    """Retry only reads that failed in a way a retry may cure."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:
        return False
    return isinstance(exc, TransientReadError)


def _file_task_name() -> str:
    """A file's task run name: its path in the landing zone, escaped (``read lync/EMEA/...``)."""
    params = prefect_runtime.task_run.parameters
    planned, landing = params.get("planned"), params.get("landing")
    try:
        path = Path(planned.path)
        rel = path.relative_to(landing).as_posix() if path.is_absolute() else path.as_posix()
    except (AttributeError, TypeError, ValueError):
        return "read file"
    return f"read {safe_text(rel)[:120]}"


@task(
    name="anonymize-file",
    task_run_name=_file_task_name,
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=len(READ_RETRY_DELAYS),
    retry_delay_seconds=list(READ_RETRY_DELAYS),
    retry_condition_fn=_retry_transient,
)
def process_task(
    planned: PlannedFile,
    params: RunParams,
    run_id: str,
    skip_keys: list[str],
    lookups: dict,
    landing: Path | None = None,
    places: remote.StorePlaces | None = None,
    policy_text: str | None = None,
) -> Any:
    """Anonymise one file (``anonymize.run.stage_file``); policy and key loaded in the worker.

    With ``places`` the worker shares only the object store: the file and what it needs come
    from the store, the policy as ``policy_text`` (``remote.stage_on_worker``). A transient read
    error is raised (and retried); any other error fails the task with its one-line message and
    no traceback.
    """
    try:
        if places is None:
            policy = params.load_policy()
            return stage_file(
                planned, landing=params.landing, out=params.out, run_id=run_id, policy=policy,
                keyring=load_keyring(params, policy, load_secret), skip_keys=skip_keys,
                lookups=lookups, log=get_run_logger(),
            )  # fmt: skip
        policy = _policy_of(policy_text)

        def stage(planned_: PlannedFile, landing_: Path, out_: Path, skip_: list, lookups_: dict):
            return stage_file(
                planned_, landing=landing_, out=out_, run_id=run_id, policy=policy,
                keyring=load_keyring(params, policy, load_secret), skip_keys=skip_,
                lookups=lookups_, log=get_run_logger(),
            )  # fmt: skip

        return remote.stage_on_worker(places, run_id, planned, skip_keys, lookups, stage)
    except TransientReadError:
        raise
    except CdranonError as exc:
        return _failed(exc)


def _policy_of(text: str | None) -> Policy:
    """The run's policy on a worker without the driver's files: its text, or the default."""
    if text is None:
        return load_policy(DEFAULT_POLICY)
    with tempfile.TemporaryDirectory(prefix="cdranon-policy-") as folder:
        path = Path(folder) / "policy.yaml"
        path.write_text(text, encoding="utf-8")
        return load_policy(path)


def _failed(exc: CdranonError) -> State:
    """A Failed state that carries the error (raised again by whoever reads it)."""
    return Failed(message=str(exc).splitlines()[0], data=exc)


class PrefectExecutor(Executor):
    """Files as ``anonymize-file`` tasks on the flow's task runner; each step a task of its name."""

    def __init__(self, params: RunParams, places: remote.StorePlaces | None = None) -> None:
        self.params = params
        # Workers that share only the object store: tasks get keys, not the driver's paths.
        self.places = places
        self.policy_text = (
            Path(params.policy).read_text(encoding="utf-8") if places and params.policy else None
        )

    def logger(self) -> Any:
        return get_run_logger()

    def read_files(self, run: Run, group: list[PlannedFile], skip: dict, lookups: dict) -> list:
        if self.places is not None:
            return self._read_from_store(run, group, skip, lookups)
        futures = [
            process_task.submit(
                p, self.params, run.run_id, skip.get(p.dataset or "", []), lookups, run.landing
            )
            for p in group
        ]
        # Every file ends before the run goes on or fails: a failure must not leave tasks
        # writing into a staging area that the run is about to remove.
        wait(futures)
        return [f.result() for f in futures]  # raises the first failure

    def _read_from_store(
        self, run: Run, group: list[PlannedFile], skip: dict, lookups: dict
    ) -> list:
        """Tasks on workers that share only the store: keys in, staged files back through it."""
        out = run.out

        def keys(paths: list[str]) -> list[str]:
            return [remote.relative(p, out) for p in paths]

        futures = []
        for p in group:
            task_args = (
                replace(p, path=remote.relative(p.path, run.landing)), self.params, run.run_id,
                keys(skip.get(p.dataset or "", [])), {k: keys(v) for k, v in lookups.items()},
                None, self.places, self.policy_text,
            )  # fmt: skip
            futures.append(process_task.submit(*task_args))
        wait(futures)
        results = [f.result() for f in futures]
        remote.fetch_staging(self.places, run.run_id, out)
        for r in results:
            for key in ("keys_path", "lookup_path"):
                if r.get(key):
                    r[key] = str(out / r[key])
        return results

    def step(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        def body(*a: Any) -> Any:
            try:
                return guarded(fn)(*a)
            except CdranonError as exc:
                return _failed(exc)

        step = task(name=name, cache_policy=NO_CACHE, persist_result=False)(body)
        return step(*args, return_state=True).result()  # raises the step's error

    def finished(self, run_id: str, markdown: str) -> None:
        create_markdown_artifact(
            markdown=markdown, key="cdranon-run-summary", description=f"cdranon run {run_id}"
        )


def _progress_artifact(run_id: str) -> Callable[[str, int, int], None]:
    """A sink that keeps a Prefect progress artifact up to date (a no-op if it can't be made)."""
    try:
        artifact = create_progress_artifact(
            progress=0.0, key="cdranon-progress", description=f"cdranon run {run_id}"
        )
    except Exception:  # progress is a report, never a reason to fail a run
        return lambda stage, done, total: None

    def sink(stage: str, done: int, total: int) -> None:
        with contextlib.suppress(Exception):
            update_progress_artifact(
                artifact,
                progress=progress_percent(stage, done, total),
                description=f"cdranon run {run_id}: {stage}",
            )

    return sink


def _task_runner(address: str | None = None) -> TaskRunner:
    """Local threads, or the Dask cluster at ``address`` (default: ``CDRANON_DASK_ADDRESS``).

    Read when the flow is defined: a served deployment runs each flow run in a new process that
    imports this module with the environment of ``cdranon serve``.
    """
    address = address or os.environ.get(DASK_ENV)
    if address:
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ImportError(
                "a Dask cluster needs the dask extra: pip install 'cdranon[dask]'"
            ) from None

        return DaskTaskRunner(address=address)
    return ThreadPoolTaskRunner(max_workers=2)


RUN_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")


def _flow_run_name() -> str:
    """A flow run's name: what it covers and its run id (``new files 20261124T023000Z-3fa2c1``),
    the id of its manifest too."""
    try:
        params = RunParams(**prefect_runtime.flow_run.parameters)
        label = params.scope_label()
    except (ValidationError, TypeError):
        label = "refused"
    return f"{label} {new_run_id()}"


def _run_id() -> str:
    """The run id in this flow run's name (``_flow_run_name``), or a new one."""
    found = RUN_ID.findall(str(prefect_runtime.flow_run.name or ""))
    return found[-1] if found else new_run_id()


@flow(
    name="cdranon-run",
    task_runner=_task_runner(),
    persist_result=False,
    flow_run_name=_flow_run_name,
)
def cdranon_run(
    landing: Path,
    out: Path,
    policy: Path | None = None,
    dev_key: bool = False,
    release: str | None = None,
    sources: list[Family] | None = None,
    regions: list[Region] | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    reprocess: bool = False,
    rekey: bool = False,
) -> dict:
    """Run cdranon over a landing zone and publish what passes; return the run's summary.

    Ends Failed, with a one-line reason, whenever nothing was published (refused to start,
    nothing to publish, refused by the gate, failed); calling it then raises that error
    (``NotPublished`` carries the summary). The manifest says why in every case it could start.
    The descriptions below are Prefect's run form's (read from this docstring, also where the
    flow is deployed from its source); a test keeps them equal to ``RunParams``'.

    Args:
        landing: The landing zone: lync/, connect/, weblogs/ folders.
        out: The output root (restricted/, shareable/, _manifests/ ...).
        policy: Policy YAML; empty: the shipped default policy.
        dev_key: Use the public development key: outputs not for sharing.
        release: Publish only this release of the policy; empty: all.
        sources: Take new files of these families only (lync, connect, weblogs).
        regions: Publish partitions of these regions of the policy only (AMER, EMEA ...).
        date_from: First day the run may publish.
        date_to: Last day the run may publish.
        reprocess: Rebuild every partition in the scope (dates, regions) from the landing zone,
            not only what is new; reads only the files with rows in the scope.
        rekey: Rotate the master key: rebuild everything under this run's key.
    """
    try:
        # An object-store landing zone or output root is worked on through local copies.
        urls = remote.place(landing), remote.place(out)
        with remote.session(*urls) as (landing, out):
            try:
                params = RunParams(
                    landing=landing, out=out, policy=policy, dev_key=dev_key, release=release,
                    sources=sources, regions=regions, date_from=date_from, date_to=date_to,
                    reprocess=reprocess, rekey=rekey,
                )  # fmt: skip
            except ValidationError as exc:
                raise CdranonError(f"bad parameter: {describe_validation(exc, {})}") from None
            policy_ = params.load_policy()
            params.check(policy_)
            keyring, run_id = load_keyring(params, policy_, load_secret), _run_id()
            progress = Progress((_progress_artifact(run_id),))
            # On a Dask cluster with both places in the store, workers share only the store.
            places = (
                remote.StorePlaces(*urls)
                if all(map(remote.is_remote, urls)) and _on_dask()
                else None
            )
            summary = Run.from_params(
                params, policy_, keyring, run_id=run_id,
                executor=PrefectExecutor(params, places), progress=progress,
            ).execute()  # fmt: skip
    except CdranonError as exc:  # ends Failed with its one-line reason, and no traceback
        return _failed(exc)
    if summary["status"] not in ("published", "up_to_date"):
        return _failed(NotPublished(f"nothing was published: {summary['reason']}", summary))
    if summary["refused"]:  # published, but not everything: completed, with a warning
        with contextlib.suppress(Exception):
            create_markdown_artifact(
                key="cdranon-warning",
                markdown=f"**{len(summary['refused'])} input file(s) were refused**; the rest "
                "was published. See the run summary and the manifest for the reasons.",
                description=f"cdranon run {summary['run_id']}: partial",
            )
    return summary


def _on_dask() -> bool:
    """Whether this flow run's tasks go to a Dask cluster."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return ctx is not None and type(ctx.task_runner).__name__ == "DaskTaskRunner"


def flow_for(dask_address: str | None = None) -> Flow:
    """The flow on local threads, or on the Dask cluster at ``dask_address``.

    On a cluster the landing zone and the output root must be the same shared folders on every
    worker, and the workers need ``CDRANON_MASTER_KEY`` or the Prefect API (Secret block).
    """
    if not dask_address:
        return cdranon_run
    return cdranon_run.with_options(task_runner=_task_runner(dask_address))
