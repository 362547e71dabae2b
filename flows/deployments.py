"""The deployments of the cdranon flow: ``nightly`` (a cron schedule in UTC) and ``adhoc``.

Both run ``flows.nightly.cdranon_run`` with one parameter, ``params`` (``RunParams``), whose
schema Prefect enforces before a run starts. Each allows one flow run at a time (more are
queued); across the two, the run lock of the output root keeps a second run from publishing
while the first one is. ``cdranon serve`` serves them from the command line::

    PREFECT_API_URL=http://127.0.0.1:4200/api cdranon serve --landing /data/landing --out /data/out

and an ad-hoc run is triggered with::

    prefect deployment run cdranon-run/adhoc --watch \\
        --param 'params={"landing": "/data/landing", "out": "/data/out", "reprocess": true,
                         "date_from": "2026-11-23", "date_to": "2026-11-23"}'
"""

from __future__ import annotations

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import EntrypointType, RunnerDeployment

from anonymize.run import RunParams
from flows.nightly import cdranon_run

DEFAULT_CRON = "30 2 * * *"  # 02:30 UTC, after the exports of the day have landed
TAGS = ["cdranon"]


def deployments(
    params: RunParams, *, cron: str = DEFAULT_CRON, timezone: str = "UTC"
) -> list[RunnerDeployment]:
    """The nightly and ad-hoc deployments, with ``params`` as their default parameters.

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
    defaults = {"params": params.model_dump(mode="json", exclude_defaults=True)}
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
        description="On demand: pass params (landing, out, reprocess, rekey, date_from/date_to, "
        "regions, sources, release) with prefect deployment run --param.",
        **common,
    )
    return [nightly, adhoc]
