"""The deployments of the cdranon flow: ``nightly`` (a cron schedule) and ``adhoc``.

Both run ``anonymize.flows.nightly.cdranon_run``, whose flat, typed parameters (landing, out,
policy, dev_key, release, sources, regions, date_from, date_to, reprocess, rekey) carry their
descriptions into Prefect's run form, and whose schema Prefect enforces before a run starts.
The deployment sets landing, out and policy once; a run passes only what differs. Each allows
one flow run at a time (more are queued); across the two, the run lock of the output root keeps
a second run from publishing while the first one is. ``cdranon serve`` serves them::

    PREFECT_API_URL=http://127.0.0.1:4200/api cdranon serve --landing /data/landing --out /data/out

and an ad-hoc run of one day and one region is::

    prefect deployment run cdranon-run/adhoc --watch --param reprocess=true \\
        --param date_from=2026-11-23 --param date_to=2026-11-23 --param 'regions=["EMEA"]'

``anonymize/flows/prefect.yaml`` declares the same two for a work pool, named
``nightly-pool`` and ``adhoc-pool`` so that they never replace these.
"""

from __future__ import annotations

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import EntrypointType, RunnerDeployment

from anonymize.flows.nightly import cdranon_run
from anonymize.run import RunParams

DEFAULT_CRON = "30 2 * * *"  # 02:30 UTC, after the exports of the day have landed
TAGS = ["cdranon"]


def deployments(
    params: RunParams, *, cron: str = DEFAULT_CRON, timezone: str = "UTC"
) -> list[RunnerDeployment]:
    """The nightly and ad-hoc deployments, with the set parameters of ``params`` as their
    defaults (landing, out, and policy and dev_key when given).

    >>> from pathlib import Path
    >>> nightly, adhoc = deployments(RunParams(landing=Path("/l"), out=Path("/o")))
    >>> nightly.name, nightly.schedules[0].schedule.cron, nightly.concurrency_limit
    ('nightly', '30 2 * * *', 1)
    >>> adhoc.name, adhoc.schedules
    ('adhoc', [])
    """
    one_at_a_time = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
    )
    defaults = params.model_dump(mode="json", exclude_defaults=True)
    common = {
        "parameters": defaults,
        "concurrency_limit": one_at_a_time,
        "tags": TAGS,
        "entrypoint_type": EntrypointType.MODULE_PATH,  # works wherever the package is installed
    }
    nightly = cdranon_run.to_deployment(
        name="nightly",
        schedules=[CronSchedule(cron=cron, timezone=timezone)],
        description="Every night: the new files of the landing zone, published if the gate passes.",
        **common,
    )
    adhoc = cdranon_run.to_deployment(
        name="adhoc",
        description="On demand: pass what differs from the deployment's parameters with "
        "prefect deployment run --param, e.g. reprocess=true date_from=2026-11-23.",
        **common,
    )
    return [nightly, adhoc]
