"""The ``cdranon`` command line: run, synth, keygen.

``cdranon run`` exits 0 only when the release was published; any other outcome exits non-zero
with a one-line reason on stderr. Prefect is imported only by ``run``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from anonymize import __version__
from anonymize.errors import (
    CdranonError,
    NotPublished,
    RunRefused,
    describe_validation,
    safe_text,
)
from anonymize.flows.server import ServerStartError

if TYPE_CHECKING:
    from anonymize.run import Run, RunParams, Work

app = typer.Typer(
    name="cdranon",
    help="Turn unified-communications usage records into data that can be shared.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out_console = Console()
err_console = Console(stderr=True)

# The options several commands share; landing, out and policy may come from the environment.
LandingOption = Annotated[
    Path,
    typer.Option(envvar="CDRANON_LANDING", help="The landing zone (lync/, connect/, weblogs/)."),
]
OutOption = Annotated[Path, typer.Option(envvar="CDRANON_OUT", help="The output root.")]
# A run's places may be object-store URLs too (anonymize.remote): strings, not paths.
PlaceLanding = Annotated[
    str,
    typer.Option(
        envvar="CDRANON_LANDING",
        help="The landing zone (lync/, connect/, weblogs/): a folder or an s3://, gs://, az:// "
        "URL.",
    ),
]
PlaceOut = Annotated[
    str,
    typer.Option(
        envvar="CDRANON_OUT", help="The output root: a folder or an s3://, gs://, az:// URL."
    ),
]
PolicyOption = Annotated[
    Path | None,
    typer.Option(
        envvar="CDRANON_POLICY", help="Policy YAML (default: the shipped default policy)."
    ),
]


def flag(*names: str, help: str) -> Any:
    """A boolean switch, shown without a value in the help."""
    return typer.Option(*names, help=help, metavar="")


DevKeyOption = Annotated[
    bool, flag("--dev-key", help="Use the public development key: its outputs are not for sharing.")
]
JsonOption = Annotated[
    bool, flag("--json", help="One JSON document on stdout, for scripts (schema: README, --json).")
]

EXIT_NOT_PUBLISHED = 1
EXIT_REFUSED_TO_START = 2
EXIT_STRICT = 3

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"cdranon {__version__}\n")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", metavar="", is_eager=True, callback=_version,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:  # fmt: skip
    """Turn unified-communications usage records into data that can be shared.

    Landing zone, output root and policy may be set once in the environment: CDRANON_LANDING,
    CDRANON_OUT, CDRANON_POLICY. The key comes from CDRANON_MASTER_KEY (see `cdranon keygen`).
    """


def _fail(code: int, message: str) -> None:
    err_console.print(f"[bold red]cdranon:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _prepare(**kwargs: object) -> tuple[RunParams, Run]:
    """Build and check the run parameters and the run they describe; refuse (exit 2) before
    anything starts: a bad parameter or policy, no usable key, a key other than the one the
    output root was published with, an output root inside the landing zone."""
    from pydantic import ValidationError

    from anonymize.policy import DEFAULT_POLICY, load_policy

    try:
        loaded = load_policy(kwargs.get("policy") or DEFAULT_POLICY)
        from anonymize.run import Run, RunParams, load_keyring

        try:
            params = RunParams(**kwargs)
        except ValidationError as exc:
            raise CdranonError(f"bad parameter: {describe_validation(exc)}") from None
        params.check(loaded)
        engine = Run.from_params(params, loaded, load_keyring(params, loaded))
        engine.check_places()
        engine.check_key()
    except CdranonError as exc:
        _fail(EXIT_REFUSED_TO_START, str(exc))
    return params, engine


def _params(**kwargs: object) -> RunParams:
    """``_prepare``'s parameters alone."""
    return _prepare(**kwargs)[0]


STARTUP_TIMEOUT = "120"  # seconds for the temporary Prefect server of a run


@app.command()
def run(
    landing: PlaceLanding,
    out: PlaceOut,
    policy: PolicyOption = None,
    dev_key: DevKeyOption = False,
    strict: Annotated[
        bool, flag("--strict", help=f"Exit {EXIT_STRICT} when any input file is refused.")
    ] = False,
    release: Annotated[
        str | None,
        typer.Option(help="Publish only this release of the policy (default: all of them)."),
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(help="Take new files of this family only (lync, connect, weblogs); repeat."),
    ] = None,
    region: Annotated[
        list[str] | None,
        typer.Option(
            help="Publish partitions of this region of the policy only (AMER ...); repeat."
        ),
    ] = None,
    date_from: Annotated[
        str | None, typer.Option("--from", help="First day (YYYY-MM-DD) the run may publish.")
    ] = None,
    date_to: Annotated[
        str | None, typer.Option("--to", help="Last day (YYYY-MM-DD) the run may publish.")
    ] = None,
    reprocess: Annotated[
        bool,
        flag(
            "--reprocess",
            help="Rebuild every partition in the scope (--from/--to, --region) from the files in "
            "the landing zone, not only what is new.",
        ),
    ] = False,
    rekey: Annotated[
        bool,
        flag(
            "--rekey",
            help="Rotate the master key: rebuild every partition and release from the landing "
            "zone under this run's key (a run with another key than the published one is "
            "refused without it).",
        ),
    ] = False,
    dask_address: Annotated[
        str | None,
        typer.Option(
            envvar="CDRANON_DASK_ADDRESS",
            help="Run the tasks on this Dask scheduler (tcp://host:8786; needs the \\[dask] "
            "extra); default: local threads.",
        ),
    ] = None,
    as_json: JsonOption = False,
    quiet: Annotated[
        bool,
        flag("--quiet", "-q", help="No progress, no summary: errors only (the exit code says)."),
    ] = False,
    log_level: Annotated[
        str | None,
        typer.Option(
            help="Level of Prefect's console lines: DEBUG, INFO, WARNING, ERROR (default: "
            "WARNING under a progress bar, INFO otherwise). The Prefect API gets every line."
        ),
    ] = None,
) -> None:
    """Run the flow over a landing zone and publish what is new and passes the privacy gate.

    What the run has to do is decided first, without Prefect: a run with nothing to do
    answers at once and writes nothing. Exit 0: published, or nothing new since the last run;
    1: nothing published (the reason is printed); 2: refused to start (bad parameter, policy
    or key); 3: --strict and a file was refused.
    """
    started = time.monotonic()
    if log_level is not None and log_level.upper() not in LOG_LEVELS:
        _fail(EXIT_REFUSED_TO_START, f"--log-level is one of {', '.join(LOG_LEVELS)}")
    from anonymize import remote

    # Object-store URLs: the checks and the answer when there is nothing to do use read-only
    # local copies; the flow gets the URLs and works on the store itself (its lock, its mirror,
    # Dask workers that share only the store).
    urls = (landing, out) if remote.is_remote(landing) or remote.is_remote(out) else None
    with _local_places(landing, out) as here:
        _run_here(
            *here, urls=urls, started=started, policy=policy, dev_key=dev_key, strict=strict,
            release=release, source=source, region=region, date_from=date_from,
            date_to=date_to, reprocess=reprocess, rekey=rekey, dask_address=dask_address,
            as_json=as_json, quiet=quiet, log_level=log_level,
        )  # fmt: skip


def _run_here(
    landing: Path,
    out: Path,
    *,
    urls: tuple[str, str] | None,
    started: float,
    policy: Path | None,
    dev_key: bool,
    strict: bool,
    release: str | None,
    source: list[str] | None,
    region: list[str] | None,
    date_from: str | None,
    date_to: str | None,
    reprocess: bool,
    rekey: bool,
    dask_address: str | None,
    as_json: bool,
    quiet: bool,
    log_level: str | None,
) -> None:
    """``run`` over local folders (the landing zone and output root, or their local copies)."""
    params, engine = _prepare(
        landing=landing.resolve(),
        out=out.resolve(),
        policy=policy,
        dev_key=dev_key,
        release=release,
        sources=source or None,
        regions=[r.upper() for r in region] if region else None,
        date_from=date_from,
        date_to=date_to,
        reprocess=reprocess,
        rekey=rekey,
    )
    try:
        work = engine.work()
    except CdranonError as exc:
        _fail(EXIT_REFUSED_TO_START, str(exc).splitlines()[0])
    if work.reason is not None:  # nothing to do: no server, no manifest
        _nothing_to_do(work, params, as_json=as_json, quiet=quiet)
        return
    bar = err_console.is_terminal and not quiet and not as_json
    _prefect_settings(log_level, quiet=quiet or as_json, bar=bar)
    timer = _StageTimer(started)
    wait_for_server = _start_embedded_server()
    try:
        with _spinner("starting the embedded Prefect server ...", bar):
            wait_for_server()
            from anonymize.flows.nightly import flow_for
        timer.mark("server")
        with _progress_bar(bar), timer:
            parameters = params.flow_parameters()
            if urls is not None:  # the flow works on the store (see run)
                parameters.update(landing=urls[0], out=urls[1])
            summary = flow_for(dask_address)(**parameters)
    except ServerStartError as exc:
        home = os.environ.get("PREFECT_HOME", "~/.prefect")
        _fail(
            EXIT_NOT_PUBLISHED,
            f"nothing was published: {exc}; check that PREFECT_HOME ({home}) can be written, "
            "raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or set PREFECT_API_URL to "
            "use a running server",
        )
    except NotPublished as exc:  # the run's summary says why: printed below, then exit 1
        summary = exc.summary
    except RunRefused as exc:
        _fail(EXIT_REFUSED_TO_START, f"the run refused to start: {str(exc).splitlines()[0]}")
    except CdranonError as exc:
        _fail(EXIT_NOT_PUBLISHED, f"nothing was published: {str(exc).splitlines()[0]}")
    except ImportError as exc:
        _fail(EXIT_REFUSED_TO_START, f"{exc}")
    except Exception as exc:
        if isinstance(exc, RuntimeError) and not os.environ.get("PREFECT_API_URL"):
            _fail(EXIT_NOT_PUBLISHED, f"nothing was published: {_server_failure(str(exc))}")
        _fail(EXIT_NOT_PUBLISHED, f"nothing was published: the run failed ({type(exc).__name__})")

    summary = dict(summary, seconds=timer.seconds())
    if as_json:
        sys.stdout.write(json.dumps(run_document(summary), indent=1) + "\n")
    elif not quiet:
        _print_summary(summary)
    if summary["status"] not in ("published", "up_to_date"):
        _fail(EXIT_NOT_PUBLISHED, f"nothing was published: {summary['reason']}")
    if strict and summary["refused"]:
        _fail(EXIT_STRICT, f"{len(summary['refused'])} input file(s) were refused (--strict)")


def _nothing_to_do(work: Work, params: RunParams, *, as_json: bool, quiet: bool) -> None:
    """Answer a run with nothing to do, without Prefect and without a manifest."""
    summary = {
        "run_id": None, "status": work.status, "reason": work.reason, "manifest": None,
        "report": None, "totals": None, "refused": [], "ignored": [], "partitions": [],
        "releases": {}, "gate": None, "incremental": None, "seconds": None,
        "not_for_sharing": params.dev_key, "work": dataclasses.asdict(work),
    }  # fmt: skip
    if as_json:
        sys.stdout.write(json.dumps(run_document(summary), indent=1) + "\n")
    elif not quiet and work.status == "up_to_date":
        out_console.print(f"nothing to do: {work.reason}", highlight=False)
    if work.status != "up_to_date":
        _fail(EXIT_NOT_PUBLISHED, f"nothing was published: {work.reason}")


RUN_DOCUMENT_KEYS = (
    "run_id", "status", "reason", "manifest", "report", "totals", "refused", "ignored",
    "partitions", "releases", "gate", "incremental", "seconds", "not_for_sharing",
)  # fmt: skip


def run_document(summary: dict) -> dict:
    """The ``run --json`` document (``anonymize/schemas/json/run.schema.json``): the run's
    summary without its per-file results, refusals and ignored files as objects."""
    doc = {k: summary.get(k) for k in RUN_DOCUMENT_KEYS}
    doc["refused"] = [{"path": p, "reason": r} for p, r in summary.get("refused") or []]
    doc["ignored"] = [{"path": p, "reason": r} for p, r in summary.get("ignored") or []]
    doc["releases"] = {
        name: {
            "recipient": e.get("recipient"), "k": e.get("k"),
            "published": sum(s["published"] for s in e.get("statistics", {}).values()),
            "suppressed": sum(s["suppressed"] for s in e.get("statistics", {}).values()),
            "refused": e.get("refused"),
        }
        for name, e in (summary.get("releases") or {}).items()
    }  # fmt: skip
    gate = summary.get("gate")
    doc["gate"] = None if gate is None else {
        "verdict": gate.get("verdict"), "findings": gate.get("findings", []),
    }  # fmt: skip
    doc["work"] = summary.get("work")
    return doc


def _prefect_settings(log_level: str | None, *, quiet: bool, bar: bool) -> None:
    """Prefect's settings for a run from the command line, set before Prefect is imported."""
    # The embedded server has no network to report telemetry to; say so instead of failing at it.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Its first start (database migrations) takes longer than Prefect's default 20 s on a small
    # machine; a user's own setting wins.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", STARTUP_TIMEOUT)
    if os.environ.get("PREFECT_HOME"):  # Prefect makes its home, but not the folders above it
        with contextlib.suppress(OSError):
            Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    # Prefect's console lines: under a progress bar only warnings, with --quiet or --json only
    # errors, unless --log-level says; every line still goes to the Prefect API (its handler).
    level = log_level.upper() if log_level else ("WARNING" if bar or quiet else None)
    if quiet and not log_level:
        level = "ERROR"
    if level:
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = level
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL"] = level
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL"] = level


class _StageTimer:
    """Wall time of a run's stages from the command line: server (from the command's start
    until the server answers: imports, deciding the work, the server's start), read (the flow
    run's start, discovery, the files), release, gate, publish, finish (manifest, report,
    Prefect's end of the flow run); fed by the run's progress reports
    (``anonymize.run.Progress``)."""

    ORDER = ("server", "read", "release", "gate", "publish", "finish")

    def __init__(self, started: float) -> None:
        self.started = self.last = started
        self.stage = "server"
        self.spent: dict[str, float] = {}

    def mark(self, stage: str) -> None:
        now = time.monotonic()
        self.spent[self.stage] = self.spent.get(self.stage, 0.0) + now - self.last
        self.stage, self.last = stage, now

    def __call__(self, stage: str, done: int, total: int) -> None:
        stage = "finish" if stage == "done" else stage
        if stage != self.stage:
            self.mark(stage)

    def __enter__(self) -> _StageTimer:
        from anonymize.run import Progress as RunProgress

        self.stage = "read" if self.stage == "server" else self.stage
        RunProgress.listeners.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        from anonymize.run import Progress as RunProgress

        self.mark("end")
        RunProgress.listeners.remove(self)

    def seconds(self) -> dict[str, float]:
        spent = {k: round(self.spent.get(k, 0.0), 2) for k in self.ORDER}
        spent["total"] = round(time.monotonic() - self.started, 2)
        return spent


@contextlib.contextmanager
def _spinner(text: str, shown: bool) -> Iterator[None]:
    """A spinner on stderr while something slow runs (only on a terminal)."""
    if not shown:
        yield
        return
    with err_console.status(text):
        yield


def _start_embedded_server() -> Callable[[], None]:
    """Start the run's temporary Prefect server now, before Prefect is imported (see
    ``anonymize.flows.server``); return the function that waits until it answers. It stops when
    the process exits, after Prefect has sent its last logs. Nothing to do when a server is
    configured, or when Prefect is already imported (it then starts its own, as it always did).
    """
    from anonymize.flows.server import TemporaryServer, configured_api_url

    if "prefect" in sys.modules or configured_api_url():
        return lambda: None
    server = TemporaryServer(float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
    server.start()
    return server.wait


def _server_failure(message: str) -> str:
    """What failed when the temporary Prefect server did not come up, and what to do about it.

    Prefect's own message ends with the server's output, which is not repeated.
    """
    timeout = os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]
    home = os.environ.get("PREFECT_HOME", "~/.prefect")
    code = re.search(r"exited with code (-?\d+)", message)
    if "ephemeral Prefect API server" in message and code:
        return (
            f"the embedded Prefect server stopped while starting (exit code {code.group(1)}): "
            f"check that PREFECT_HOME ({home}) can be written, or set PREFECT_API_URL to use a "
            "running server"
        )
    if "ephemeral Prefect API server" in message:
        return (
            f"the embedded Prefect server did not start in {timeout} s; raise "
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or set PREFECT_API_URL to use a "
            "running server"
        )
    return (
        "the run failed (RuntimeError), most likely in the embedded Prefect server (its start "
        f"is given {timeout} s): check that PREFECT_HOME ({home}) can be written, or set "
        "PREFECT_API_URL to use a running server"
    )


@app.command()
def serve(
    landing: LandingOption,
    out: OutOption,
    policy: PolicyOption = None,
    cron: Annotated[
        str, typer.Option(help="When the nightly deployment runs (cron, in --timezone).")
    ] = "30 2 * * *",
    timezone: Annotated[str, typer.Option(help="IANA time zone of --cron.")] = "UTC",
    dev_key: DevKeyOption = False,
    dask_address: Annotated[
        str | None,
        typer.Option(help="Run the tasks of every flow run on this Dask scheduler."),
    ] = None,
) -> None:
    """Serve the nightly (scheduled) and ad-hoc deployments until interrupted.

    Needs a Prefect server (``prefect server start``) named by PREFECT_API_URL: schedules do
    not fire on a temporary one. The key comes from CDRANON_MASTER_KEY in this process's
    environment or the policy's Prefect Secret block, never from a parameter.
    """
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        _fail(
            EXIT_REFUSED_TO_START,
            "cdranon serve needs a Prefect server: start one with `prefect server start` and "
            "set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api); schedules do not fire on a "
            "temporary server",
        )
    if dask_address:
        # Flow runs start in new processes that read it when they define the flow.
        os.environ["CDRANON_DASK_ADDRESS"] = dask_address
    params = _params(
        landing=landing.resolve(),
        out=out.resolve(),
        policy=policy.resolve() if policy else None,
        dev_key=dev_key,
    )
    from prefect import serve as prefect_serve

    from anonymize.flows.deployments import deployments

    try:
        deps = deployments(params, cron=cron, timezone=timezone)
    except ValueError as exc:
        _fail(EXIT_REFUSED_TO_START, f"bad schedule: {str(exc).splitlines()[0]}")
    prefect_serve(*deps, limit=1)


@contextlib.contextmanager
def _progress_bar(shown: bool = True) -> Iterator[None]:
    """A rich progress bar on a terminal, fed by the flow's progress reports (counts only)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from anonymize.run import Progress as RunProgress

    if not shown or not err_console.is_terminal:
        yield
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        transient=True,
    )
    task = bar.add_task("reading input files", total=None)
    labels = {
        "release": "computing releases",
        "gate": "privacy gate",
        "publish": "publishing",
        "done": "done",
    }

    def listener(stage: str, done: int, total: int) -> None:
        if stage == "read":
            bar.update(task, completed=done, total=total)
        else:
            bar.update(task, description=labels[stage])

    RunProgress.listeners.append(listener)
    try:
        with bar:
            yield
    finally:
        RunProgress.listeners.remove(listener)


def _print_summary(summary: dict) -> None:
    t = summary["totals"]
    table = Table(title=f"cdranon run {summary['run_id']}: {summary['status']}", show_edge=False)
    for col in ("files", "refused", "rows read", "published", "quarantined", "filtered"):
        table.add_column(col, justify="right")
    table.add_row(
        *(
            str(t[k])
            for k in (
                "files",
                "files_refused",
                "rows_read",
                "rows_published",
                "rows_quarantined",
                "rows_filtered",
            )
        )
    )
    out_console.print(table)
    for path, reason in summary.get("ignored", []):
        err_console.print(
            f"[yellow]ignored[/] {escape(safe_text(path))}: {escape(reason)}",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    for path, reason in summary["refused"]:
        err_console.print(
            f"[yellow]refused[/] {escape(safe_text(path))}: {escape(safe_text(reason or ''))}",
            highlight=False, soft_wrap=True, markup=True,
        )  # fmt: skip
    for name, entry in summary.get("releases", {}).items():
        stats = entry["statistics"]
        published = sum(s["published"] for s in stats.values())
        suppressed = sum(s["suppressed"] for s in stats.values())
        out_console.print(
            f"release {name} (for {entry['recipient']}, k={entry['k']}): {published} cell(s) "
            f"published, {suppressed} suppressed",
            highlight=False,
        )
    gate = summary.get("gate", {})
    if gate.get("findings"):
        err_console.print(f"[red]privacy gate: refused[/], {len(gate['findings'])} finding(s):")
        for f in gate["findings"]:
            err_console.print(
                f"  {f['area']}/{f['dataset']}.{f['column']}: {f['detector']} ({f['rows']} rows)",
                highlight=False, soft_wrap=True,
            )  # fmt: skip
    elif gate:
        out_console.print(f"privacy gate: {gate.get('verdict')}", highlight=False)
    inc = summary.get("incremental", {})
    if inc:
        out_console.print(
            f"{inc['files_unchanged']} file(s) unchanged since the last run, "
            f"{len(inc['partitions_rebuilt'])} day/region partition(s) rebuilt",
            highlight=False,
        )
    if summary["status"] == "up_to_date":
        out_console.print(f"nothing to do: {summary['reason']}", highlight=False)
    if summary["manifest"]:
        out_console.print(f"manifest: {summary['manifest']}", highlight=False, soft_wrap=True)
    if summary.get("report"):
        out_console.print(f"report:   {summary['report']}", highlight=False, soft_wrap=True)
    if summary["partitions"] and summary["manifest"]:
        out_root = Path(summary["manifest"]).parent.parent
        out_console.print(f"outputs:  {out_root / 'restricted'}", highlight=False, soft_wrap=True)
    if summary["not_for_sharing"]:
        out_console.print("[bold yellow]development key: these outputs are NOT for sharing[/]")


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Where to write the landing zone.")],
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same files.")] = 1,
    rows: Annotated[int, typer.Option(min=1, help="Number of sessions.")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="Number of days, one folder each.")] = 2,
    people: Annotated[int, typer.Option(min=10, help="Number of people.")] = 600,
    hostile: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0,
            help="Share of hostile web requests: people's names, phones, emails (encoded once "
            "and twice), ids, meet-host URLs, bots, referers and query values in the traffic "
            "of weblogs/<REGION>/hostile/. 0: none.",
        ),
    ] = 0.0,
    noise: Annotated[
        int,
        typer.Option(min=0, help="Lines of a noisy public-site log per day (scanners, spam, "
                     "network-address clients, long and non-ASCII URLs). 0: none."),
    ] = 0,
) -> None:  # fmt: skip
    """Write a synthetic landing zone of every source kind under OUT.

    lync/ (SessionDetailsView, VoIPDetailsView), weblogs/ (Apache and IIS logs per region) and
    connect/ (report responses and the Users download per region), for the same people.
    """
    from datetime import date, timedelta

    from anonymize.synth_sources import generate_all
    from anonymize.synth_web import generate_hostile_weblogs, noisy_access_log

    world = generate_all(out, seed=seed, rows=rows, days=days, people=people)
    if hostile:
        generate_hostile_weblogs(out, world, seed=seed, requests=max(rows // 2, 12), days=days,
                                 share=hostile)  # fmt: skip
    for d in range(days if noise else 0):
        day = date(2026, 11, 23) + timedelta(days=d)
        path = out / "weblogs" / "EMEA" / "public" / f"access-{day}.log"
        noisy_access_log(path, lines=noise, seed=seed + d, day=day)
    out_console.print(
        f"wrote {rows} synthetic sessions, web logs and Connect reports over {days} day(s) "
        f"under {out}"
    )


@app.command()
def status(
    landing: PlaceLanding,
    out: PlaceOut,
    policy: PolicyOption = None,
    reprocess: Annotated[
        bool, flag("--reprocess", help="As the next run would with --reprocess.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """What the next run would take: the ledger against the landing zone, reading no data.

    Uses the run's own discovery and refusal rules: lists the files to read, those the run will
    refuse (empty, no contract, unreadable, copies) with the reason, the superseded, refused and
    ignored files and the recorded files no longer in the landing zone. A file's content is never
    opened beyond its header (and its hash when the ledger does not know its size and time).
    Exit 0, or 2 when it cannot run. With URLs, the landing cache is brought up to date first.
    """
    with _local_places(landing, out) as (here_landing, here_out):
        _status(here_landing, here_out, policy, reprocess, as_json, shown=out)


@contextlib.contextmanager
def _local_places(landing: str, out: str) -> Iterator[tuple[Path, Path]]:
    """Read-only local copies of URL places (the landing cache, a view of the output root);
    folders as they are. Refuses (exit 2) when the store cannot be read."""
    from anonymize import remote

    try:
        with remote.view(out) as here_out:
            here = Path(landing)
            if remote.is_remote(landing):
                with remote.storage_errors(landing):
                    here = remote.sync_landing(landing)
            yield here, here_out
    except CdranonError as exc:
        _fail(EXIT_REFUSED_TO_START, str(exc).splitlines()[0])


def _status(
    landing: Path, out: Path, policy: Path | None, reprocess: bool, as_json: bool, shown: str
) -> None:
    from anonymize.layout import PlannedFile, survey
    from anonymize.ledger import IncrementalBatch, Ledger
    from anonymize.plan import plan_inputs
    from anonymize.policy import DEFAULT_POLICY, load_policy

    try:
        loaded = load_policy(policy or DEFAULT_POLICY)
        ledger = Ledger.load(out)
        landing = landing.resolve()
        inputs, ignored = survey(landing)  # the run's own discovery
        planned = plan_inputs(inputs, loaded, None if reprocess else ledger.known_files(landing))
    except CdranonError as exc:
        _fail(EXIT_REFUSED_TO_START, str(exc))
    batch = IncrementalBatch(planned, ledger, landing, reprocess=reprocess)
    pending = [p for p in batch.first_files() if not p.side or p.merge_into]  # no join sources
    present = {p.sha256 for p in planned}
    gone = sorted(
        e["path"]
        for sha, e in ledger.entries.items()
        if sha not in present and sha not in batch.superseded
    )
    refused = sorted(e["path"] for e in ledger.entries.values() if e.get("status") == "refused")
    days = sorted({k.split("/")[0] for e in ledger.entries.values() for k in e["published"]})

    def rel(p: PlannedFile) -> str:
        return Path(p.path).relative_to(landing).as_posix()

    report = {
        "out": shown,
        "files": sum(1 for p in planned if not p.side or p.merge_into),
        "recorded": len(ledger.entries),
        "to_read": sorted(rel(p) for p in pending if p.problem is None),
        "to_refuse": sorted(
            ({"path": rel(p), "reason": p.problem} for p in pending if p.problem is not None),
            key=lambda e: e["path"],
        ),
        "superseded": len(batch.superseded),
        "gone": gone,
        "refused": refused,
        "ignored": [{"path": p, "reason": r} for p, r in ignored],
        "published_days": {"first": days[0], "last": days[-1], "count": len(days)}
        if days
        else None,
        "has_work": batch.has_work,
        "key_id": ledger.key_id,
    }
    try:
        from anonymize.deliveries import Deliveries
        from anonymize.subjects import Subjects

        requests = Subjects.load(out).requests
        budgets = {
            recipient: {period: b["spent"] for period, b in held.get("budget", {}).items()}
            for recipient, held in Deliveries.load(out).recipients.items()
            if held.get("budget")
        }
    except CdranonError as exc:
        _fail(EXIT_REFUSED_TO_START, str(exc))
    report["pending_requests"] = [r["id"] for r in requests if r["state"] == "pending"]
    report["dp_spent"] = budgets  # epsilon per recipient and period
    # Work besides new files, as the run decides it (``Run.work``): retention, days to settle.
    from anonymize.keys import KeyRing
    from anonymize.publish import new_run_id
    from anonymize.run import Run

    probe = Run(landing, out, loaded, KeyRing.development(), new_run_id())  # no key is used
    report["retention_due"] = sum(len(v) for v in probe.to_purge().values())
    report["settle_due"] = len(probe.due_to_settle(set()))
    report["has_work"] = batch.has_work or bool(
        report["pending_requests"] or report["retention_due"] or report["settle_due"]
    )
    if as_json:
        sys.stdout.write(json.dumps(report, indent=1) + "\n")
        return
    table = Table(title=f"cdranon status of {out}", show_edge=False)
    counts = {
        "files": report["files"], "recorded": report["recorded"],
        "to read": len(report["to_read"]), "to refuse": len(report["to_refuse"]),
        "superseded": report["superseded"], "recorded, gone": len(gone),
        "refused": len(refused), "ignored": len(ignored),
    }  # fmt: skip
    for col in counts:
        table.add_column(col, justify="right")
    table.add_row(*(str(v) for v in counts.values()))
    out_console.print(table)
    if days:
        out_console.print(f"published days: {days[0]} .. {days[-1]} ({len(days)})")
    for label, lines in (
        ("to read", report["to_read"]),
        ("to refuse", [f"{e['path']}: {e['reason']}" for e in report["to_refuse"]]),
        ("gone", gone),
        ("refused", refused),
        ("ignored", [f"{e['path']}: {e['reason']}" for e in report["ignored"]]),
    ):
        for line in lines:
            out_console.print(f"{label}: {safe_text(line)}", highlight=False, soft_wrap=True)
    if report["pending_requests"]:
        out_console.print(
            f"data-subject requests pending: {', '.join(report['pending_requests'])} (the next "
            "run applies them)"
        )
    for recipient, periods in budgets.items():
        spent = ", ".join(f"{p}: {e}" for p, e in sorted(periods.items())[-3:])
        out_console.print(f"DP epsilon given to {recipient}: {spent}")
    if report["retention_due"] or report["settle_due"]:
        out_console.print(
            f"the next run also purges {report['retention_due']} item(s) past retention and "
            f"gives {report['settle_due']} settled day/region partition(s) to their recipients"
        )
    if not report["has_work"]:
        out_console.print("nothing new: the next run has nothing to do")


@app.command()
def scan(
    out: Annotated[
        str,
        typer.Option(
            envvar="CDRANON_OUT", help="The output root of earlier runs (a folder or a URL)."
        ),
    ],
    landing: Annotated[
        str,
        typer.Option(
            envvar="CDRANON_LANDING", help="The landing zone those runs read (a folder or a URL)."
        ),
    ],
    policy: PolicyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Audit published outputs against the raw inputs: the gate's scan, after the fact.

    Exit 0 when clean, 1 when anything is found (the findings name dataset, column and detector,
    never the value), 2 when it cannot run.
    """
    with _local_places(landing, out) as (here_landing, here_out):
        _scan(here_out, here_landing, policy, as_json, shown=out)


def _scan(out: Path, landing: Path, policy: Path | None, as_json: bool, shown: str) -> None:
    from anonymize.gate import canaries_from_landing, free_text_columns
    from anonymize.gate import scan as run_scan
    from anonymize.policy import DEFAULT_POLICY, load_policy
    from anonymize.releases import pseudonym_columns

    try:
        loaded = load_policy(policy or DEFAULT_POLICY)
    except CdranonError as exc:
        _fail(EXIT_REFUSED_TO_START, str(exc))
    if not landing.is_dir() or not out.is_dir():
        _fail(EXIT_REFUSED_TO_START, "both --out and --landing must be folders")
    canaries, unreadable = canaries_from_landing(landing, loaded)
    pseudo = {name: pseudonym_columns(loaded, name) for name in loaded.datasets}
    findings = run_scan(out, canaries, pseudo, free_text=free_text_columns(loaded))
    if as_json:
        doc = {
            "out": shown, "clean": not findings, "canaries": canaries.height,
            "findings": [str(f) for f in findings], "not_read": [str(p) for p in unreadable],
        }  # fmt: skip
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
        if findings:
            raise typer.Exit(EXIT_NOT_PUBLISHED)
        return
    for path in unreadable:
        err_console.print(f"[yellow]not read[/] {path}", highlight=False, soft_wrap=True)
    if findings:
        for f in findings:
            err_console.print(f"[red]finding[/] {f}", highlight=False, soft_wrap=True)
        _fail(EXIT_NOT_PUBLISHED, f"{len(findings)} finding(s) in {shown}")
    out_console.print(
        f"clean: no canary ({canaries.height} from the landing zone) and no detector hit in "
        f"{shown}",
        highlight=False,
    )


@app.command("check-policy")
def check_policy(
    policy: Annotated[
        Path | None,
        typer.Argument(envvar="CDRANON_POLICY", help="Policy YAML (default: the shipped one)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check a policy against the contracts without running anything; list every problem."""
    from anonymize.policy import DEFAULT_POLICY, load_policy

    try:
        loaded = load_policy(policy or DEFAULT_POLICY)
    except CdranonError as exc:
        if as_json:
            problems = [line.strip(" -") for line in str(exc).splitlines()[1:] if line.strip()]
            doc = {"ok": False, "version": None, "sha256": None, "datasets": [],
                   "problems": problems or [str(exc)]}  # fmt: skip
            sys.stdout.write(json.dumps(doc, indent=1) + "\n")
            raise typer.Exit(EXIT_REFUSED_TO_START) from None
        _fail(EXIT_REFUSED_TO_START, str(exc))
    datasets = [
        {"name": ds.name, "contracts": [c.name for c in ds.contracts],
         "outputs": len(ds.rules), "dropped": len(ds.dropped)}
        for ds in loaded.datasets.values()
    ]  # fmt: skip
    if as_json:
        doc = {"ok": True, "version": loaded.version, "sha256": loaded.hash,
               "datasets": datasets, "problems": []}  # fmt: skip
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
        return
    table = Table(title=f"policy {loaded.version} (sha256 {loaded.hash[:12]}): ok", show_edge=False)
    for col in ("dataset", "contracts", "outputs", "dropped"):
        table.add_column(col)
    for d in datasets:
        table.add_row(d["name"], ", ".join(d["contracts"]), str(d["outputs"]), str(d["dropped"]))
    out_console.print(table)


policy_app = typer.Typer(help="The policy: show the effective one.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("show")
def policy_show(policy: PolicyOption = None, as_json: JsonOption = False) -> None:
    """Print the effective policy: the file with every default filled in, as runs apply it."""
    import yaml

    from anonymize.policy import DEFAULT_POLICY, effective_policy, load_policy

    try:
        source = policy or DEFAULT_POLICY
        loaded, doc = load_policy(source), effective_policy(source)
    except CdranonError as exc:
        _fail(EXIT_REFUSED_TO_START, str(exc))
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
        return
    sys.stdout.write(
        f"# effective policy {loaded.version} (sha256 {loaded.hash[:12]}) from {source}\n"
        + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
    )


@app.command()
def describe(
    name: Annotated[
        str | None,
        typer.Argument(
            help="A dataset (restricted or statistic) or a release of the policy; none: list them.",
            show_default=False,
        ),
    ] = None,
    policy: PolicyOption = None,
    as_json: JsonOption = False,
    markdown: Annotated[
        bool, flag("--markdown", help="Print the README's dataset reference (every dataset).")
    ] = False,
) -> None:
    """Print the data dictionary: each column's description, unit and privacy treatment."""
    from anonymize import dictionary as dd
    from anonymize.policy import DEFAULT_POLICY, load_policy
    from anonymize.statistics import STATISTICS

    try:
        loaded = load_policy(policy or DEFAULT_POLICY)
    except CdranonError as exc:
        _fail(EXIT_REFUSED_TO_START, str(exc))
    if markdown:
        sys.stdout.write(dd.render_markdown(loaded))
        return
    restricted = dd.restricted_datasets()
    if name is None:
        doc = {
            "restricted": restricted,
            "statistics": {s: STATISTICS[s].description for s in sorted(STATISTICS)},
            "releases": {r: spec.recipient for r, spec in loaded.releases.items()},
        }
        if as_json:
            sys.stdout.write(json.dumps(doc, indent=1) + "\n")
            return
        lines = ["restricted datasets:", *(f"  {d}" for d in restricted), "statistics:"]
        lines += [f"  {s}: {d}" for s, d in doc["statistics"].items()]
        lines += ["releases (of the policy):"]
        lines += [f"  {r} (recipient {who})" for r, who in doc["releases"].items()]
        lines += ["`cdranon describe NAME` prints one of them."]
        sys.stdout.write("\n".join(lines) + "\n")
        return
    if name in loaded.releases:
        doc = dd.describe_release(name, loaded)
    elif name in restricted or name in STATISTICS:
        doc = dd.describe_dataset(name, loaded)
    else:
        known = ", ".join([*restricted, *sorted(STATISTICS), *loaded.releases])
        _fail(EXIT_REFUSED_TO_START, f"no dataset or release is called {name!r}; known: {known}")
    sys.stdout.write(json.dumps(doc, indent=1) + "\n" if as_json else dd.render_text(doc))


INIT_README = """# cdranon

Drop the exports into `landing/`, one folder per source family, then one per hosting region
of the policy (or per server FQDN that a region pattern of the policy matches):

- `lync/<REGION>/`: Lync / Skype for Business monitoring-database (LcsCDR) exports: views
  such as SessionDetailsView and the Users / Phones tables, CSV, plain or gzip.
- `connect/<REGION>/`: Adobe Connect report responses (XML) and the users download.
- `weblogs/<REGION>/`: web and IIS access logs.

Deeper folders (one per day or server) are fine. cdranon only reads that folder. Then:

    export CDRANON_MASTER_KEY=$(cdranon keygen)   # once; keep it in your secret store
    cdranon run --landing {landing} --out {out} --policy {policy}

`cdranon status` says what the next run would read; `cdranon policy show --policy {policy}`
prints the policy as runs apply it.
"""


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="The folder to set up (created).")],
) -> None:
    """Start a landing zone and a policy to edit.

    FOLDER/landing/<family>/<region>/ for each source family and region of the default policy,
    FOLDER/README.md (what goes where, the next commands) and FOLDER/policy.yaml, a copy of the
    default policy. Nothing that exists is overwritten.
    """
    from anonymize.policy import DEFAULT_POLICY, load_policy

    landing, policy, out = folder / "landing", folder / "policy.yaml", folder / "out"
    if policy.exists() or (folder / "README.md").exists():
        _fail(EXIT_REFUSED_TO_START, f"{safe_text(str(folder))} is set up already")
    regions = sorted(load_policy(DEFAULT_POLICY).regions)
    try:
        for family in ("lync", "connect", "weblogs"):
            for region in regions:
                (landing / family / region).mkdir(parents=True, exist_ok=True)
        policy.write_bytes(DEFAULT_POLICY.read_bytes())
        (folder / "README.md").write_text(
            INIT_README.format(landing=landing, out=out, policy=policy)
        )
    except OSError as exc:
        _fail(EXIT_REFUSED_TO_START, f"cannot set up {safe_text(str(folder))}: {exc.strerror}")
    out_console.print(
        f"landing zone: {landing} (lync, connect, weblogs x {', '.join(regions)})\n"
        f"policy to edit: {policy}\n"
        f"next: cdranon run --landing {landing} --out {out} --policy {policy}",
        highlight=False, soft_wrap=True,
    )  # fmt: skip


@app.command()
def keygen() -> None:
    """Print a new random master key with its random key id.

    Keep it secret; set it as CDRANON_MASTER_KEY (or in the Secret block the policy names).
    """
    from anonymize.keys import generate_key

    sys.stdout.write(generate_key() + "\n")


@app.command("account-key")
def account_key(
    tenant: Annotated[str, typer.Argument(help="The tenant's id (the policy's tenants:).")],
    policy: PolicyOption = None,
    dev_key: DevKeyOption = False,
) -> None:
    """Print a tenant's account key (64 hex digits), if the policy hands it (hand_key: true).

    With it, and nothing else, the tenant maps the pseudonyms of its reports
    (shareable/<tenant release>/<tenant>/) back to its own directory: `cdranon
    account-pseudonyms`. It tells nothing of another tenant's pseudonyms or of the provider's.
    """
    loaded, keyring = _subject_context(policy, dev_key)
    spec = loaded.tenants.get(tenant)
    if spec is None:
        _fail(EXIT_REFUSED_TO_START, f"the policy has no tenant {tenant!r} (see its tenants:)")
    if not spec.hand_key:
        _fail(
            EXIT_REFUSED_TO_START,
            f"the policy does not hand {tenant!r} its key (set tenants.{tenant}.hand_key: true)",
        )
    sys.stdout.write(keyring.for_account(tenant).export() + "\n")


@app.command("account-pseudonyms")
def account_pseudonyms(
    key_file: Annotated[
        Path, typer.Option("--key-file", help="The file holding the account key (64 hex digits).")
    ],
    region: Annotated[
        str, typer.Option(help="Region of phone numbers written without a country code.")
    ] = "US",
) -> None:
    """Read addresses (SIP URIs, emails, phone numbers), one per line on standard input, and
    print `address,pseudonym` for each: the pseudonyms a tenant's reports carry, computed with
    its account key only (no master key, no provider data)."""
    from anonymize.keys import KeyRing
    from anonymize.operators import account_pseudonym

    try:
        raw = bytes.fromhex(key_file.read_text().strip())
    except (OSError, ValueError):
        _fail(EXIT_REFUSED_TO_START, f"{key_file}: not readable as an account key (64 hex digits)")
    if len(raw) != 32:
        _fail(EXIT_REFUSED_TO_START, f"{key_file}: an account key is 64 hex digits")
    ring = KeyRing(raw)
    for line in sys.stdin:
        address = line.strip()
        if address:
            sys.stdout.write(f"{address},{account_pseudonym(ring, address, region)}\n")


@app.command()
def version() -> None:
    """Print the software version (as --version)."""
    sys.stdout.write(__version__ + "\n")


def main() -> None:
    app()


if __name__ == "__main__":
    main()


# --- data-subject requests --------------------------------------------------------------------

subject_app = typer.Typer(help="Answer a data-subject access request.", no_args_is_help=True)
app.add_typer(subject_app, name="subject")


def _subject_context(policy: Path | None, dev_key: bool):
    """The policy and the key of an output root's requests (exit 2 when there is none)."""
    from anonymize.keys import KeyRing
    from anonymize.policy import DEFAULT_POLICY, load_policy

    try:
        loaded = load_policy(policy or DEFAULT_POLICY)
        keyring = KeyRing.load(dev_key=dev_key, secret_name=loaded.key.prefect_secret)
    except CdranonError as exc:
        _fail(EXIT_REFUSED_TO_START, str(exc))
    return loaded, keyring


IdOption = Annotated[
    list[str],
    typer.Option(
        "--id",
        help="An identifier of the person as they give it: SIP address, email, phone number in "
        "any form, Connect login. Repeat for each one.",
    ),
]


@app.command()
def forget(
    out: PlaceOut,
    ident: Annotated[
        list[str] | None,
        typer.Option(
            "--id",
            help="An identifier of the person as they give it: SIP address, email, phone "
            "number in any form, Connect login. Repeat for each one.",
        ),
    ] = None,
    id_file: Annotated[
        Path | None,
        typer.Option(
            help="A file with one identifier per line ('-': standard input), so that they "
            "stay out of the shell history and the process list."
        ),
    ] = None,
    reason: Annotated[
        str,
        typer.Option(
            help="erasure: out of restricted and shareable data; opt-out: out of what "
            "recipients receive only."
        ),
    ] = "erasure",
    apply: Annotated[
        bool,
        typer.Option("--apply", help="Apply it now (a run without Prefect over --landing)."),
    ] = False,
    landing: Annotated[str | None, typer.Option(help="The landing zone, for --apply.")] = None,
    policy: PolicyOption = None,
    dev_key: DevKeyOption = False,
) -> None:
    """Record an erasure or opt-out request: only the person's pseudonyms are kept.

    The next run (or --apply) rebuilds every published partition that holds them, and every
    later run drops their rows as it reads its inputs. Prints the request id.
    """
    from anonymize import remote

    try:
        with remote.session(landing if apply else None, out) as (here_landing, here_out):
            _forget(here_out, ident, id_file, reason, apply, here_landing, policy, dev_key)
    except CdranonError as exc:
        _fail(EXIT_REFUSED_TO_START, str(exc).splitlines()[0])


def _forget(
    out: Path,
    ident: list[str] | None,
    id_file: Path | None,
    reason: str,
    apply: bool,
    landing: Path | None,
    policy: Path | None,
    dev_key: bool,
) -> None:
    from anonymize.ledger import Ledger
    from anonymize.subjects import Subjects, pseudonyms_of

    if reason not in ("erasure", "opt-out"):
        _fail(EXIT_REFUSED_TO_START, f"--reason is erasure or opt-out, not {safe_text(reason)}")
    ident = list(ident or [])
    if id_file is not None:
        text = sys.stdin.read() if str(id_file) == "-" else id_file.read_text(encoding="utf-8")
        ident += [line.strip() for line in text.splitlines() if line.strip()]
    if not ident:
        _fail(EXIT_REFUSED_TO_START, "name the person: --id IDENT (repeat) or --id-file FILE")
    if apply and landing is None:
        _fail(EXIT_REFUSED_TO_START, "--apply needs --landing (the run reads the landing zone)")
    loaded, keyring = _subject_context(policy, dev_key)
    try:
        published_key = Ledger.load(out).key_id
        subjects = Subjects.load(out)
    except CdranonError as exc:
        _fail(EXIT_REFUSED_TO_START, str(exc))
    if published_key and published_key != keyring.key_id:
        _fail(
            EXIT_REFUSED_TO_START,
            f"the output root is published with the key {published_key}, not "
            f"{keyring.key_id}: pseudonyms under another key would find no one",
        )
    pseudonyms = [p for i in ident for p in pseudonyms_of(i, keyring, loaded)]
    request = subjects.add(pseudonyms, reason, keyring.key_id)  # type: ignore[arg-type]
    subjects.save(out)
    out_console.print(
        f"request {request['id']} ({reason}): {len(ident)} identifier(s), "
        f"{len(request['pseudonyms'])} pseudonym(s) recorded; the next run applies it"
    )
    if apply:
        from anonymize.run import run_local

        report: dict = {}
        run_local(landing, out, policy=loaded, keyring=keyring,  # type: ignore[arg-type]
                  run_id=_new_run_id(), report=report)  # fmt: skip
        out_console.print(f"run: {report['status']}" + (
            f" ({report['reason']})" if report["reason"] else ""))  # fmt: skip
        if report["status"] != "published":
            _fail(EXIT_NOT_PUBLISHED, "the request is recorded but not applied yet")


def _new_run_id() -> str:
    from anonymize.publish import new_run_id

    return new_run_id()


@app.command()
def subjects(
    out: PlaceOut,
    as_json: JsonOption = False,
) -> None:
    """List the data-subject requests of an output root and their state (no identifier)."""
    import json

    from rich.table import Table

    from anonymize import remote
    from anonymize.subjects import Subjects

    try:
        with remote.view(out) as here:
            requests = Subjects.load(here).requests
    except CdranonError as exc:
        _fail(EXIT_REFUSED_TO_START, str(exc))
    rows = [
        {k: r[k] for k in ("id", "reason", "received", "state", "applied_by", "key_id")}
        | {"pseudonyms": len(r["pseudonyms"]), "partitions": len(r["partitions"])}
        for r in requests
    ]
    if as_json:
        typer.echo(json.dumps({"requests": rows}, indent=1))
        return
    table = Table("request", "reason", "received", "state", "applied by", "partitions")
    for r in rows:
        table.add_row(r["id"], r["reason"], r["received"], r["state"], r["applied_by"] or "-",
                      str(r["partitions"]))  # fmt: skip
    out_console.print(table)


@subject_app.command("export")
def subject_export(
    out: PlaceOut,
    ident: IdOption,
    dest: Annotated[Path, typer.Option(help="The folder to write the person's rows to.")],
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    include_quarantine: Annotated[
        bool,
        typer.Option(
            "--include-quarantine", help="Also the person's raw rows held in the quarantine."
        ),
    ] = False,
    policy: PolicyOption = None,
    dev_key: DevKeyOption = False,
) -> None:
    """Write every row of a person in restricted/ (by pseudonym) to DEST, one file per
    dataset, for the provider to answer an access request. DEST holds personal data."""
    from anonymize import remote

    if fmt not in ("parquet", "csv"):
        _fail(EXIT_REFUSED_TO_START, f"--format is parquet or csv, not {safe_text(fmt)}")
    try:
        with remote.view(out) as here:
            _export(here, ident, dest, fmt, include_quarantine, policy, dev_key)
    except CdranonError as exc:
        _fail(EXIT_REFUSED_TO_START, str(exc).splitlines()[0])


def _export(
    out: Path,
    ident: list[str],
    dest: Path,
    fmt: str,
    include_quarantine: bool,
    policy: Path | None,
    dev_key: bool,
) -> None:
    from anonymize.publish import current_version
    from anonymize.subjects import export, pseudonyms_of

    loaded, keyring = _subject_context(policy, dev_key)
    published = current_version(out)
    if published is None:
        _fail(EXIT_REFUSED_TO_START, f"nothing is published under {safe_text(str(out))}")
    pseudonyms = frozenset(p for i in ident for p in pseudonyms_of(i, keyring, loaded))
    counts = export(out, published / "restricted", loaded, keyring, pseudonyms, dest,
                    fmt, include_quarantine)  # type: ignore[arg-type]  # fmt: skip
    for name, n in sorted(counts.items()):
        out_console.print(f"{dest / name}: {n} row(s)")
    if not counts:
        out_console.print("no row of this person is published")
