"""The run engine: one sequence from a landing zone to a published release, for every entry point.

``Run.execute`` owns the whole run: the output root's lock, planning, reading the files (one
priority group at a time, through an ``Executor``), withholding rows with findings, the
releases, the privacy gate, publication, the ledger, the statuses, the manifest and the report.
Entry points only choose the executor: ``run_local`` runs everything in this process (tests,
tools, benchmarks); the Prefect flow (``flows/nightly.py``) runs each file and each step as a
Prefect task, on threads or a Dask cluster. Both give the same bytes and the same statuses.

Statuses: ``published``; ``up_to_date`` (nothing new since the last run); ``nothing_published``
(no input, nothing readable, nothing in the run's scope); ``refused_by_gate``; ``failed`` (an
exception, raised again after the manifest is written).

Examples
--------
>>> progress_percent("read", 1, 4), progress_percent("gate", 0, 1)
(20.0, 88.0)
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import polars as pl
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from anonymize import __version__, datasheet
from anonymize.canaries import canary_key
from anonymize.deliveries import Deliveries, account
from anonymize.errors import (
    CdranonError,
    RunRefused,
    StorageError,
    TransientReadError,
    describe_os_error,
    safe_text,
)
from anonymize.gate import run_gate, withhold_findings
from anonymize.keys import PREVIOUS_ENV_VAR, KeyRing
from anonymize.layout import (
    MANIFESTS,
    PARQUET_OPTIONS,
    QUARANTINE,
    SHAREABLE,
    STAGING,
    SUBJECTS_FOUND,
    PlannedFile,
    partition_key,
    survey,
)
from anonymize.ledger import IncrementalBatch, Ledger, Scope
from anonymize.operators import REGION_NAME
from anonymize.plan import plan_inputs, priority_groups
from anonymize.policy import DEFAULT_POLICY, Policy, load_policy
from anonymize.publish import (
    RunLock,
    build_manifest,
    carried_over,
    current_version,
    new_run_id,
    owner_only,
    publish_partitions,
    write_manifest,
)
from anonymize.releases import release_metadata, settled_before, stage_releases
from anonymize.report import render_markdown, write_report
from anonymize.stage import FileResult, process_file
from anonymize.subjects import (
    Subjects,
    erase_from_quarantine,
    partitions_holding,
    without,
)

DEBUG_ENV = "CDRANON_DEBUG"
# A read that fails in a way a retry may cure is tried three times in all.
READ_RETRY_DELAYS = (2, 10)

Family = Literal["lync", "connect", "weblogs"]
Region = Annotated[str, StringConstraints(pattern=REGION_NAME)]  # one of the policy's regions
T = TypeVar("T")


class RunParams(BaseModel):
    """Parameters of a run (the flow's parameters; validated before any task starts).

    A scheduled run takes every new input file (see ``anonymize.ledger``); ``sources``,
    ``regions`` and ``date_from``/``date_to`` narrow what it takes and publishes; ``reprocess``
    rebuilds every partition of that scope from the files in the landing zone. Paths and
    switches only: the key is never a parameter.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    landing: Path = Field(description="The landing zone: lync/, connect/, weblogs/ folders.")
    out: Path = Field(description="The output root (restricted/, shareable/, _manifests/ ...).")
    policy: Path | None = Field(
        default=None, description="Policy YAML; empty: the shipped default policy."
    )
    dev_key: bool = Field(
        default=False, description="Use the public development key: outputs not for sharing."
    )
    release: str | None = Field(
        default=None, description="Publish only this release of the policy; empty: all."
    )
    sources: list[Family] | None = Field(
        default=None, min_length=1,
        description="Take new files of these families only (lync, connect, weblogs).",
    )  # fmt: skip
    regions: list[Region] | None = Field(
        default=None, min_length=1,
        description="Publish partitions of these regions of the policy only (AMER, EMEA ...).",
    )  # fmt: skip
    date_from: date | None = Field(default=None, description="First day the run may publish.")
    date_to: date | None = Field(default=None, description="Last day the run may publish.")
    reprocess: bool = Field(
        default=False,
        description="Rebuild every partition in the scope (dates, regions) from the landing "
        "zone, not only what is new; reads only the files with rows in the scope.",
    )
    rekey: bool = Field(
        default=False,
        description="Rotate the master key: rebuild everything under this run's key.",
    )

    def flow_parameters(self) -> dict[str, Any]:
        """The flow's (flat) parameters: every field, as the flow takes them."""
        return {name: getattr(self, name) for name in type(self).model_fields}

    def scope_label(self) -> str:
        """A short label of what the run covers, for names (``new files``, ``reprocess EMEA
        2026-11-24``)."""
        parts = ["rekey"] if self.rekey else ["reprocess"] if self.reprocess else []
        parts += sorted(self.sources or [])
        parts += sorted(self.regions or [])
        if self.date_from or self.date_to:
            first, last = self.date_from or "", self.date_to or ""
            parts.append(str(first) if first == last else f"{first}..{last}")
        if self.release:
            parts.append(self.release)
        return " ".join(map(str, parts)) or "new files"

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

    def load_policy(self) -> Policy:
        return load_policy(self.policy or DEFAULT_POLICY)

    def check(self, policy: Policy) -> None:
        """The checks that need the policy; raise CdranonError before anything runs."""
        unknown = sorted(set(self.regions or ()) - set(policy.regions))
        if unknown:
            known = ", ".join(sorted(policy.regions)) or "none"
            raise CdranonError(
                f"regions: the policy has no region {unknown[0]!r} (it has: {known})"
            )
        if self.release is not None and self.release not in policy.releases:
            known = ", ".join(sorted(policy.releases)) or "none"
            raise CdranonError(f"the policy has no release {self.release!r} (it has: {known})")
        if not self.landing.is_dir():
            raise CdranonError(f"the landing zone {self.landing} is not a folder")


def load_keyring(
    params: RunParams, policy: Policy, secret_loader: Callable[[str], str] | None = None
) -> KeyRing:
    """The run's keys: --dev-key, CDRANON_MASTER_KEY, or the policy's secret (``secret_loader``
    reads a Prefect Secret block by name in the flow)."""
    return KeyRing.load(
        dev_key=params.dev_key,
        secret_name=policy.key.prefect_secret,
        secret_loader=secret_loader,
    )


def progress_percent(stage: str, done: int, total: int) -> float:
    """How far a run is: reading is the first 80 %, releases, gate and publish one step each."""
    if stage == "read":
        return 80.0 * done / total if total else 0.0
    return {"release": 80.0, "gate": 88.0, "publish": 95.0, "done": 100.0}[stage]


class Progress:
    """The run's progress, reported to its sinks and to every listener (the CLI's bar).

    ``report(stage, done, total)``: reading counts files; releases, gate and publish are one
    step each. Never a data value. A sink or listener that fails is ignored.
    """

    listeners: ClassVar[list[Callable[[str, int, int], None]]] = []

    def __init__(self, sinks: tuple[Callable[[str, int, int], None], ...] = ()) -> None:
        self.sinks = sinks

    def report(self, stage: str, done: int, total: int) -> None:
        for listener in [*self.sinks, *self.listeners]:
            with contextlib.suppress(Exception):
                listener(stage, done, total)


def run_day(run_id: str) -> date:
    """The day a run started: from its id (``new_run_id``), else today (UTC).

    >>> run_day("20261202T084828Z-d8cf8f")
    datetime.date(2026, 12, 2)
    """
    try:
        return datetime.strptime(run_id[:8], "%Y%m%d").date()
    except ValueError:
        return datetime.now(UTC).date()


def previous_keyring(subjects: Subjects, keyring: KeyRing) -> KeyRing | None:
    """On a key rotation with data-subject requests under the old key: the old key ring, from
    ``CDRANON_PREVIOUS_MASTER_KEY`` (None when no request is under another key). Raises
    RunRefused when the requests need it and it is missing or another key."""
    old_ids = sorted({r["key_id"] for r in subjects.requests if r["key_id"] != keyring.key_id})
    if not old_ids:
        return None
    text = os.environ.get(PREVIOUS_ENV_VAR)
    previous = KeyRing.from_text(text) if text else None
    if previous is None or [previous.key_id] != old_ids:
        raise RunRefused(
            f"{len(subjects.requests)} data-subject request(s) are under the key "
            f"{', '.join(old_ids)}: set {PREVIOUS_ENV_VAR} to that key so that the run finds "
            "those people again under the new key (their pseudonyms cannot be turned into "
            "the new key's without it)"
        )
    return previous


def previous_subjects(
    subjects: Subjects, keyring: KeyRing
) -> tuple[KeyRing, frozenset[str], frozenset[str]] | None:
    """What ``process_file`` needs on a key rotation (``previous_keyring``), or None."""
    previous = previous_keyring(subjects, keyring)
    if previous is None:
        return None
    everyone = subjects.pseudonyms(previous.key_id, ("erasure", "opt-out"))
    return previous, everyone, subjects.pseudonyms(previous.key_id, ("erasure",))


def retention_horizon(policy: Policy, run_id: str) -> date | None:
    """The first day a run keeps in ``restricted/`` (None: every day)."""
    days = policy.retention.restricted_days
    return None if days is None else run_day(run_id) - timedelta(days=days)


def stage_file(
    planned: PlannedFile,
    *,
    landing: Path,
    out: Path,
    run_id: str,
    policy: Policy,
    keyring: KeyRing,
    skip_keys: list[str],
    lookups: dict[str, list[str]],
    log: logging.Logger | logging.LoggerAdapter,
) -> dict:
    """Anonymise one planned file into the run's staging area; return its counts.

    The unit of work of every executor. ``skip_keys`` and ``lookups`` are paths of files that
    earlier priority groups staged (session keys; key -> pseudonym tables of join sources):
    paths, never data. A read that fails in a way a retry may cure raises TransientReadError;
    an error of a library is reported by its type only (its message can quote a value).
    """
    owner_only()  # a Dask worker is a process of its own
    subjects = Subjects.load(out)
    erased = subjects.pseudonyms(keyring.key_id, ("erasure",))
    previous = previous_subjects(subjects, keyring)
    if previous is not None:  # people the join sources of this run found again
        for f in (out / STAGING / run_id / SUBJECTS_FOUND).glob("*.json"):
            found = json.loads(f.read_text())
            erased |= {new for old, new in found.items() if old in previous[2]}
    try:
        result = process_file(
            Path(planned.path),
            family=planned.family,
            policy=policy,
            keyring=keyring,
            staging=out / STAGING / run_id,
            quarantine=out / QUARANTINE / run_id,
            landing=landing,
            skip_keys=skip_keys or None,
            lookups=lookups,
            sha256=planned.sha256,
            duplicate_of=planned.duplicate_of,
            erased=erased,
            keep_from=retention_horizon(policy, run_id),
            previous=previous,
        )
    except CdranonError:
        raise
    except OSError as exc:  # writing the staging area or the quarantine
        raise StorageError(describe_os_error(exc)) from None
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        raise CdranonError(
            f"processing {safe_text(Path(planned.path).name)} failed with "
            f"{type(exc).__name__}; set {DEBUG_ENV}=1 and rerun on a private machine to see "
            "the traceback"
        ) from None
    if result.status == "refused" and result.transient:
        raise TransientReadError(f"{result.path}: {result.reason}")
    if result.status == "refused":
        log.warning("%s: refused: %s", safe_text(result.path), safe_text(result.reason or ""))
        return result.to_dict()
    log.info(
        "%s: %s, %d read, %d published, %d quarantined, %d filtered",
        safe_text(result.path),
        result.contract,
        result.rows_read,
        result.rows_published,
        sum(result.rows_quarantined.values()),
        sum(result.rows_filtered.values()),
    )
    if not result.balanced:
        raise CdranonError(
            f"{safe_text(result.path)}: rows read do not add up; nothing is published"
        )
    return result.to_dict()


class Executor:
    """Where a run's work happens: here, in this process (the base for other executors).

    ``read_files`` stages the files of one priority group and returns their counts;
    ``step(name, fn, *args)`` runs one step of the sequence (discover, withhold, release,
    privacy-gate, publish); ``finished`` receives the run's report in Markdown.
    """

    retry_delays: tuple[float, ...] = READ_RETRY_DELAYS

    def logger(self) -> logging.Logger | logging.LoggerAdapter:
        return logging.getLogger("cdranon")

    def read_files(
        self, run: Run, group: list[PlannedFile], skip: dict[str, list[str]], lookups: dict
    ) -> list[dict]:
        return [self._with_retries(run, p, skip.get(p.dataset or "", []), lookups) for p in group]

    def _with_retries(self, run: Run, p: PlannedFile, skip: list[str], lookups: dict) -> dict:
        for delay in (*self.retry_delays, None):
            try:
                return stage_file(
                    p, landing=run.landing, out=run.out, run_id=run.run_id, policy=run.policy,
                    keyring=run.keyring, skip_keys=skip, lookups=lookups, log=self.logger(),
                )  # fmt: skip
            except TransientReadError:
                if delay is None:
                    raise
                time.sleep(delay)
        raise AssertionError("unreachable")

    def step(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        return guarded(fn)(*args)

    def finished(self, run_id: str, markdown: str) -> None:
        return None


def as_cdranon_error(exc: BaseException) -> CdranonError:
    """The error a user sees: ours as they are; an OS error named with its path and the fix; any
    other by its type only (a library's message can quote a data value)."""
    if isinstance(exc, CdranonError):
        return exc
    if isinstance(exc, OSError):
        return StorageError(describe_os_error(exc))
    if os.environ.get(DEBUG_ENV):
        traceback.print_exception(exc)
    return CdranonError(
        f"the run failed with {type(exc).__name__}; set {DEBUG_ENV}=1 and rerun on a private "
        "machine to see the traceback"
    )


def guarded(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` raising only CdranonError (see ``as_cdranon_error``)."""

    @functools.wraps(fn)
    def call(*args: Any) -> T:
        try:
            return fn(*args)
        except Exception as exc:
            error = as_cdranon_error(exc)
            if error is exc:
                raise
            raise error from None

    return call


GroupFn = Callable[[list[PlannedFile], dict[str, list[str]], dict[str, list[str]]], list[dict]]


class GroupRunner:
    """Reads planned files one priority group at a time through ``run_group``.

    ``run_group(files, skip_keys, lookups)`` processes the files of one group and returns their
    ``FileResult.to_dict()``; the runner carries, from group to group, the session keys (by
    dataset) and join-source tables (by contract) that the files staged, as paths.
    """

    def __init__(self, run_group: GroupFn) -> None:
        self.run_group = run_group
        self.keys: dict[str, list[str]] = {}
        self.lookups: dict[str, list[str]] = {}

    def run(self, files: list[PlannedFile]) -> list[dict]:
        results: list[dict] = []
        for group in priority_groups(files):
            done = self.run_group(
                group,
                {k: list(v) for k, v in self.keys.items()},
                {k: list(v) for k, v in self.lookups.items()},
            )
            for r in done:
                if r["keys_path"] and r["dataset"]:
                    self.keys.setdefault(r["dataset"], []).append(r["keys_path"])
                if r["lookup_path"] and r["contract"]:
                    self.lookups.setdefault(r["contract"], []).append(r["lookup_path"])
            results += done
        return results


def read_batch(
    batch: IncrementalBatch, run_group: GroupFn, staging: Path, quarantine: Path
) -> list[dict]:
    """Read what ``batch`` says the run needs into ``staging``; return the file results.

    First the side files and the pending files, then the earlier files of the partitions those
    touched (all again from scratch when an earlier file outranks a new one), then staged
    partitions outside the affected set are dropped. No file: the run is up to date.
    """
    first = batch.first_files()
    if not batch.has_work:
        return []
    runner = GroupRunner(run_group)
    results = runner.run(first)
    second, restart = batch.second_files(results)
    if restart:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(quarantine, ignore_errors=True)
        results = GroupRunner(run_group).run(first + second)
    elif second:
        results += runner.run(second)
    batch.prune(staging)
    return results


@dataclass(frozen=True)
class Work:
    """What a run has to do (``Run.work``), counted; nothing when ``reason`` is set."""

    files: int  # input files in the landing zone (join sources not counted)
    ignored: int  # other files of the landing zone
    to_read: int  # new or changed files in the run's scope
    reprocess: bool = False
    requests: int = 0  # data-subject requests to apply
    purge: int = 0  # items past retention
    settle: int = 0  # published days due to settle for a recipient
    superseded: int = 0  # recorded files replaced by another export

    @property
    def reason(self) -> str | None:
        """Why there is nothing to do (None when there is something to do)."""
        if any((self.to_read, self.reprocess, self.requests, self.purge, self.settle,
                self.superseded)):  # fmt: skip
            return None
        if not self.files:
            extra = f" ({self.ignored} other file(s) ignored)" if self.ignored else ""
            return f"the landing zone has no input file{extra}"
        return "no new input file since the last run"

    @property
    def status(self) -> str:
        """The status the run would end with when there is nothing to do."""
        return "nothing_published" if not self.files else "up_to_date"


@dataclass
class _Outcome:
    """What a run has done so far: what the manifest and the summary are made of."""

    results: list[dict] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    releases: dict[str, dict] = field(default_factory=dict)
    gate: dict = field(default_factory=lambda: {"verdict": "not_run", "findings": []})
    status: str = "failed"
    reason: str | None = None
    batch: IncrementalBatch | None = None
    files_read: int = 0
    deliveries: dict[str, dict] = field(default_factory=dict)  # what to record on publication
    key_rotation: dict | None = None
    subjects: dict = field(default_factory=dict)  # requests applied, partitions rebuilt
    purged: dict = field(
        default_factory=lambda: {"partitions": [], "quarantine": [], "manifests": [], "staging": []}
    )
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


@dataclass
class Run:
    """One run over a landing zone into an output root (see the module docstring)."""

    landing: Path
    out: Path
    policy: Policy
    keyring: KeyRing
    run_id: str = field(default_factory=new_run_id)
    releases: list[str] | None = None  # the policy's releases to publish; None: all
    scope: Scope = field(default_factory=Scope)
    reprocess: bool = False
    sources: frozenset[str] | None = None
    executor: Executor = field(default_factory=Executor)
    progress: Progress = field(default_factory=Progress)
    rekey: bool = False

    @classmethod
    def from_params(cls, params: RunParams, policy: Policy, keyring: KeyRing, **kw: Any) -> Run:
        """The run ``params`` describe (``kw``: run_id, executor, progress)."""
        return cls(
            params.landing, params.out, policy, keyring,
            releases=None if params.release is None else [params.release],
            scope=params.scope(), reprocess=params.reprocess,
            sources=frozenset(params.sources) if params.sources else None,
            rekey=params.rekey, **kw,
        )  # fmt: skip

    def __post_init__(self) -> None:
        self.landing, self.out = Path(self.landing), Path(self.out)
        if self.rekey:  # every partition is rebuilt under the new key
            self.reprocess = True
        self.staging = self.out / STAGING / self.run_id
        self.quarantine = self.out / QUARANTINE / self.run_id

    def execute(self) -> dict:
        """Run, write the manifest and the report, and return the run's summary.

        Raises when a file cannot be processed, when new input cannot be merged with the
        earlier files of its days, or when publishing fails; the manifest and the report are
        written in every case and say why.
        """
        started = datetime.now(UTC)
        log = self.executor.logger()
        log.info(
            "run %s: policy %s, key %s%s", self.run_id, self.policy.version, self.keyring.key_id,
            " (development key: outputs are not for sharing)" if self.keyring.is_development
            else "",
        )  # fmt: skip
        # Refusals before anything is read or written (exit 2): an unusable output root, one
        # inside the landing zone, another run holding the root. A lock left by a dead run is
        # taken over, and what that run left half-published is put back first.
        self.check_paths()
        previous_key = self.check_key()
        lock = RunLock(self.out, self.run_id).acquire()
        if lock.recovered:
            log.warning("restored %d partition(s) left by an interrupted run", len(lock.recovered))
        done = _Outcome()
        if previous_key and previous_key != self.keyring.key_id:
            done.key_rotation = {"from": previous_key, "to": self.keyring.key_id}
        try:
            self._sequence(done, log)
            self.progress.report("done", 1, 1)
        except Exception as exc:
            error = as_cdranon_error(exc)
            done.status, done.reason = "failed", str(error).splitlines()[0]
            if error is exc:
                raise
            raise error from None
        finally:
            summary = self._finish(done, started, lock, log)
        return summary

    def work(self) -> Work:
        """What this run would do, decided before anything starts: no Prefect, no write.

        The same decisions as ``execute``: new or changed input files in the scope (the
        ledger against the landing zone), a reprocess or a key rotation, pending data-subject
        requests, retention to apply, days due to settle. Raises RunRefused as ``execute``
        would (places, key).
        """
        self.check_places()
        self.check_key()
        inputs, ignored = survey(self.landing)
        ledger = Ledger.load(self.out)
        planned = plan_inputs(inputs, self.policy, self._known(ledger))
        batch = IncrementalBatch(
            planned, ledger, self.landing, self.scope, self.reprocess, self.sources
        )
        batch.first_files()
        purge = self.to_purge()
        return Work(
            files=sum(1 for p in planned if not p.side or p.merge_into),
            ignored=len(ignored),
            to_read=sum(1 for p in batch.first if not p.side or p.merge_into),
            reprocess=self.reprocess,
            requests=len(Subjects.load(self.out).pending(self.keyring.key_id)),
            purge=sum(len(v) for v in purge.values()),
            settle=len(self.due_to_settle(set())),
            superseded=len(batch.superseded),
        )

    def _known(self, ledger: Ledger) -> dict[str, tuple[int, int, str]] | None:
        """The ledger's sizes, times and hashes, so that unchanged files are not hashed again;
        None (hash everything) for an unscoped reprocess, which trusts no earlier record."""
        unscoped = self.scope == Scope() and self.sources is None
        return None if self.reprocess and unscoped else ledger.known_files(self.landing)

    def check_places(self) -> None:
        """Refuse (RunRefused) an output root inside the landing zone (the next run would read
        the outputs as inputs) or a landing zone that is not a folder; writes nothing."""
        landing, out = self.landing.resolve(), self.out.resolve()
        if out == landing or landing in out.parents:
            raise RunRefused(
                f"the output root {safe_text(str(self.out))} is inside the landing zone: the "
                "next run would read its outputs as inputs; choose an output root outside it"
            )
        if not self.landing.is_dir():
            raise RunRefused(f"the landing zone {safe_text(str(self.landing))} is not a folder")

    def check_paths(self) -> None:
        """``check_places``, and refuse an output root that is a file or cannot be written."""
        self.check_places()
        owner_only()  # the output root itself is made owner-only too
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / f".cdranon-probe-{self.run_id}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise RunRefused(describe_os_error(exc, "write to")) from None

    def check_key(self) -> str | None:
        """Refuse (RunRefused) a key other than the one the output root was published with,
        unless the run rotates keys (``rekey``); return the published key's id."""
        try:
            published = Ledger.load(self.out).key_id
        except CdranonError:
            return None  # a damaged ledger: the run stops on it with its own message
        if self.rekey:
            scoped = self.scope != Scope() or self.sources is not None or self.releases
            if scoped:
                raise RunRefused(
                    "--rekey rebuilds every partition and release under the new key; run it "
                    "without --region, --date-from, --date-to, --source and --release"
                )
            previous_keyring(Subjects.load(self.out), self.keyring)  # refuses without it
            return published
        if published and published != self.keyring.key_id:
            raise RunRefused(
                f"the output root was published with the key {published}, and this run has "
                f"the key {self.keyring.key_id}: pseudonyms of two keys never link, so one "
                f"output cannot mix them. Run with the key {published}, or rotate to the new "
                "key with --rekey (it rebuilds every partition from the landing zone; a "
                "partition whose input files are gone is dropped)"
            )
        return published

    def _sequence(self, done: _Outcome, log: logging.Logger | logging.LoggerAdapter) -> None:
        planned, done.ignored = self.executor.step("discover", self._plan)
        for path, reason in done.ignored:
            log.warning("%s: ignored: %s", safe_text(path), reason)
        batch = done.batch = IncrementalBatch(
            planned,
            Ledger.load(self.out),
            self.landing,
            self.scope,
            self.reprocess,
            self.sources,
        )
        done.results = read_batch(
            batch, functools.partial(self._read_group, done), self.staging, self.quarantine
        )
        done.purged = self.executor.step("retention", self._housekeeping)
        subjects = self._subjects = Subjects.load(self.out)
        if self.rekey:
            done.subjects = self._rederive(subjects)
        pending = subjects.pending(self.keyring.key_id)
        settling = self.executor.step("settle", self._to_settle, set(batch.affected))
        # Work besides new files: requests to apply, partitions past retention, days settled.
        extra = bool(pending or done.purged["partitions"] or settling)
        if not batch.planned and not extra:
            done.status, done.reason = "nothing_published", "the landing zone has no input file"
            if done.ignored:
                done.reason += f" ({len(done.ignored)} other file(s) ignored: see the manifest)"
        elif not done.results and not extra:
            done.status, done.reason = "up_to_date", "no new input file since the last run"
        elif not any(r["status"] == "processed" for r in done.results) and not extra:
            done.status, done.reason = "nothing_published", "no input file could be processed"
        elif not batch.affected and not extra:
            done.status = "nothing_published"
            done.reason = "the new files have no rows in the run's scope"
            self._commit(batch, done.results)
        else:
            forced: list[str] = []
            if pending:
                forced = self.executor.step(
                    "subject-requests", self._stage_requests, pending, sorted(batch.affected)
                )
                done.subjects.update(applied=[r["id"] for r in pending], partitions=forced)
            rebuilt = sorted(batch.affected | set(forced) | set(settling))
            self.progress.report("release", 0, 1)
            withheld, done.results = self.executor.step("withhold", self._withhold, done.results)
            shas = [r["sha256"] for r in done.results if r["status"] == "processed" and r["sha256"]]
            done.releases = self.executor.step("release", self._release, shas, rebuilt)
            done.releases, done.deliveries = self.executor.step(
                "account", self._account, done.releases, forced, rebuilt
            )
            replaceable = [
                name for name, e in done.releases.items()
                if "refused" not in e and not self.policy.releases[name].frozen
            ]  # fmt: skip
            plan = self._version_plan(rebuilt, replaceable, done.purged["partitions"])
            self.executor.step("datasheets", self._datasheets, done.releases, plan, shas)
            self.progress.report("gate", 0, 1)
            done.gate = self.executor.step("privacy-gate", self._gate, withheld)
            if done.gate["verdict"] != "pass":
                done.status = "refused_by_gate"
                done.reason = (
                    f"the privacy gate found {len(done.gate['findings'])} problem(s); nothing "
                    "is published (see the report)"
                )
                return
            self.progress.report("publish", 0, 1)
            done.published = self.executor.step(
                "publish", self._publish, rebuilt, replaceable, done.deliveries,
                done.purged["partitions"],
            )  # fmt: skip
            self._commit(batch, done.results, done.purged["partitions"])
            if pending:
                self._requests_applied(subjects, pending, forced, done)
            elif done.subjects.get("rederived"):
                subjects.save(self.out)
            done.status = "published"

    # --- the steps (each one a task in the flow) ------------------------------------------------

    def _plan(self) -> tuple[list[PlannedFile], list[tuple[str, str]]]:
        """The input files, planned, and the other files of the landing zone with their reason."""
        inputs, ignored = survey(self.landing)
        # Files the ledger knows, with the same size and time, are not hashed again.
        planned = plan_inputs(inputs, self.policy, self._known(Ledger.load(self.out)))
        self.executor.logger().info(
            "discovered %d input file(s) under %s, %d other file(s) ignored",
            len(planned), safe_text(str(self.landing)), len(ignored),
        )  # fmt: skip
        return planned, ignored

    def _read_group(
        self, done: _Outcome, group: list[PlannedFile], skip: dict[str, list[str]], lookups: dict
    ) -> list[dict]:
        results = self.executor.read_files(self, group, skip, lookups)
        done.files_read += len(results)
        first = len(done.batch.first) if done.batch else 0
        self.progress.report("read", done.files_read, max(done.files_read, first))
        return results

    def _withhold(self, results: list[dict]) -> tuple[dict, list[dict]]:
        """Move the staged restricted rows that carry a finding to the quarantine (counts only)."""
        results = [dict(r, rows_quarantined=dict(r["rows_quarantined"])) for r in results]
        withheld = withhold_findings(
            self.staging, self.quarantine, self.policy, self.keyring, results
        )
        log = self.executor.logger()
        for dataset, entry in withheld["rows"].items():
            where = ", ".join(f"{c}: {d}" for c, d in sorted(entry["columns"].items()))
            log.warning("gate: %d row(s) of %s withheld (%s)", entry["rows"], dataset, where)
        return withheld, results

    def _release(self, input_sha256s: list[str], affected: list[str]) -> dict[str, dict]:
        """Compute the releases (statistics, re-keyed events) from the staged datasets."""
        old = current_version(self.out)
        # Neither erased people nor those who opted out are in what recipients receive.
        excluded = self._subjects.pseudonyms(self.keyring.key_id, ("erasure", "opt-out"))
        entries = stage_releases(
            self.releases, self.policy, self.keyring, self.staging, input_sha256s,
            earlier=old / "restricted" if old else None, rebuilt=set(affected),
            exclude=excluded, today=run_day(self.run_id),
        )  # fmt: skip
        log = self.executor.logger()
        for name, entry in entries.items():
            for stat, rep in entry["statistics"].items():
                log.info(
                    "release %s, %s: %d cell(s) published, %d suppressed (k=%d)",
                    name, stat, rep["published"], rep["suppressed"], entry["k"],
                )  # fmt: skip
        return entries

    def _account(
        self, entries: dict[str, dict], forced: list[str], rebuilt: list[str]
    ) -> tuple[dict[str, dict], dict[str, dict]]:
        """Freeze and privacy budget against what each recipient already holds (the partitions
        rebuilt for data-subject requests, ``forced``, are published whatever they say); the
        ``rebuilt`` days a release with ``settle_days`` now gives are recorded as settled."""
        settled = {}
        for name in entries:
            cutoff = settled_before(self.policy.releases[name], run_day(self.run_id))
            if cutoff is not None:
                settled[name] = [k for k in rebuilt if k.partition("/")[0] < cutoff.isoformat()]
        entries, pending = account(
            self.staging, self.policy, entries, self._deliveries(), must=set(forced),
            settled=settled,
        )  # fmt: skip
        log = self.executor.logger()
        for name, entry in entries.items():
            if "refused" in entry:
                log.warning("release %s not published: %s", name, entry["refused"])
            frozen = entry.get("delivery", {}).get("frozen", [])
            if frozen:
                log.warning(
                    "release %s: %d partition(s) the recipient holds changed and stay as "
                    "delivered (freeze)", name, len(frozen),
                )  # fmt: skip
        return entries, pending

    def _gate(self, withheld: dict) -> dict:
        """Scan everything staged for canaries and detectors; findings never carry a value."""
        gate = run_gate(self.staging, self.policy, canary_key(self.keyring), withheld)
        log = self.executor.logger()
        for f in gate["findings"]:
            log.error(
                "gate: %s/%s.%s: %s (%d row(s))",
                f["area"], f["dataset"], f["column"], f["detector"], f["rows"],
            )  # fmt: skip
        log.info(
            "gate: %s (%d canaries, %.2f s)", gate["verdict"], gate["canaries"], gate["seconds"]
        )
        return gate

    def _version_plan(self, affected: list[str], releases: list[str], purge: list[str]) -> dict:
        """How the next version is made from the published one (``publish_partitions``'
        options): the ``date/region`` keys rebuilt, the releases they replace, what expires."""
        replace = set(affected)
        old = current_version(self.out)
        if self.rekey and old is not None:  # nothing of the old key stays
            replace |= {
                partition_key(p.relative_to(old).as_posix())
                for p in old.glob("restricted/*/date=*/region=*")
            }
        return {
            "replace": replace, "releases": releases, "purge": set(purge),
            "purge_shareable": self._event_datasets(),
        }  # fmt: skip

    def _datasheets(self, entries: dict[str, dict], plan: dict, shas: list[str]) -> list[str]:
        """Write each staged release's datasheet (before the gate, which scans it), with the
        coverage of the version the run will publish."""
        partitions = [
            *carried_over(self.staging, self.out, **plan),
            *(
                p.relative_to(self.staging).as_posix()
                for depth in ("*", "*/*")
                for p in self.staging.glob(f"{SHAREABLE}/*/{depth}/date=*/region=*")
            ),
        ]
        meta = release_metadata(self.policy, self.keyring, shas)
        written = []
        for name, entry in entries.items():
            folder = self.staging / SHAREABLE / name
            if "refused" in entry or not folder.is_dir():
                continue
            if "tenants" in entry:  # one datasheet per tenant, in its own folder
                for tenant, own in entry["tenants"].items():
                    mine = [p for p in partitions if p.startswith(f"{SHAREABLE}/{name}/{tenant}/")]
                    doc = datasheet.build(name, self.policy, {**entry, **own}, mine, meta)
                    doc["recipient"] = tenant
                    written += [p.name for p in datasheet.write(folder / tenant, doc)]
                continue
            doc = datasheet.build(name, self.policy, entry, partitions, meta)
            written += [p.name for p in datasheet.write(folder, doc)]
        return written

    def _publish(
        self,
        affected: list[str],
        releases: list[str],
        deliveries: dict[str, dict],
        purge: list[str],
    ) -> list[str]:
        plan = self._version_plan(affected, releases, purge)
        # Charged and recorded before the swap: a crash in between over-charges, never under.
        ledger = self._deliveries()
        ledger.record(deliveries, self.run_id)
        ledger.save(self.out)
        published = publish_partitions(self.staging, self.out, self.run_id, **plan)
        self.executor.logger().info("published %d partition(s)", len(published))
        return published

    def _deliveries(self) -> Deliveries:
        """The delivery ledger, with what an output root from before it had published."""
        return Deliveries.load(self.out, current_version(self.out), self.policy)

    def _event_datasets(self) -> set[str]:
        """``<release>/<dataset>`` of the event datasets of releases (they hold pseudonyms)."""
        return {f"{n}/{d}" for n, spec in self.policy.releases.items() for d in spec.events}

    def to_purge(self) -> dict[str, list[str]]:
        """Retention: what this run would purge (names and ``date/region`` keys), deleting
        nothing. Quarantine folders, manifests and staging folders older than the policy's
        days; restricted partitions older than the horizon (and event releases with them)."""
        keep = self.policy.retention
        now = time.time()
        purged: dict[str, list[str]] = {
            "partitions": [], "quarantine": [], "manifests": [], "staging": [],
        }  # fmt: skip

        def old(path: Path, days: int | None) -> bool:
            return days is not None and now - path.stat().st_mtime > days * 86400

        for kind, folder in (("quarantine", QUARANTINE), ("staging", STAGING)):
            days = getattr(keep, f"{kind}_days")
            purged[kind] = [
                f.name
                for f in sorted((self.out / folder).glob("*"))
                if f.name != self.run_id and old(f, days)
            ]
        purged["manifests"] = [
            f.name
            for f in sorted((self.out / MANIFESTS).glob("*"))
            if f.is_file() and old(f, keep.manifests_days)
        ]
        horizon = retention_horizon(self.policy, self.run_id)
        published = current_version(self.out)
        if horizon is not None and published is not None:
            purged["partitions"] = sorted(
                {
                    partition_key(p.relative_to(published).as_posix())
                    for p in published.glob("restricted/*/date=*/region=*")
                    if p.parent.name.removeprefix("date=") < horizon.isoformat()
                }
            )
        return purged

    def _housekeeping(self) -> dict[str, list[str]]:
        """Retention: purge now the quarantine folders, manifests and staging folders past the
        policy's days; restricted partitions past the horizon leave with this run's
        publication. Return what was (or will be) purged."""
        purged = self.to_purge()
        for name in purged["quarantine"]:
            shutil.rmtree(self.out / QUARANTINE / name, ignore_errors=True)
        for name in purged["manifests"]:
            (self.out / MANIFESTS / name).unlink(missing_ok=True)
        for name in purged["staging"]:
            shutil.rmtree(self.out / STAGING / name, ignore_errors=True)
        log = self.executor.logger()
        for kind, items in purged.items():
            if items:
                log.info("retention: %d %s item(s) purged", len(items), kind)
        return purged

    def _stage_requests(self, pending: list[dict], affected: list[str]) -> list[str]:
        """Stage, from the published version, every partition that holds a person of a pending
        request and that the run did not rebuild from its inputs, without the rows of erased
        people; return the ``date/region`` keys of all partitions that hold them."""
        published = current_version(self.out)
        if published is None:
            return []
        everyone = frozenset(p for r in pending for p in r["pseudonyms"])
        keys = self._within_retention(
            partitions_holding(published / "restricted", self.policy, everyone)
        )
        self._stage_published(keys - set(affected))
        return sorted(keys)

    def _within_retention(self, keys: set[str]) -> set[str]:
        """``keys`` but those past retention (this run purges them, never rebuilds them)."""
        horizon = retention_horizon(self.policy, self.run_id)
        if horizon is None:
            return set(keys)
        return {k for k in keys if k.partition("/")[0] >= horizon.isoformat()}

    def _to_settle(self, affected: set[str]) -> list[str]:
        """Stage the published partitions due to settle (``due_to_settle``); return them."""
        due = self.due_to_settle(affected)
        self._stage_published(due)
        return sorted(due)

    def due_to_settle(self, affected: set[str]) -> set[str]:
        """Published partitions old enough for a release with ``settle_days`` that its
        recipient has not been given yet (nothing new has to arrive for a day to settle)."""
        published = current_version(self.out)
        if published is None:
            return set()
        deliveries = Deliveries.load(self.out)
        keys = {
            partition_key(p.relative_to(published).as_posix())
            for p in published.glob("restricted/*/date=*/region=*")
        }
        due: set[str] = set()
        for name in self.releases or list(self.policy.releases):
            spec = self.policy.releases[name]
            cutoff = settled_before(spec, run_day(self.run_id))
            if cutoff is None:
                continue
            held = set(deliveries.recipients.get(spec.recipient, {}).get("settled", []))
            due |= {k for k in keys - held if k.partition("/")[0] < cutoff.isoformat()}
        return self._within_retention(due) - affected

    def _stage_published(self, keys: set[str]) -> None:
        """Stage the published partitions of ``keys`` (every dataset), without the rows of
        erased people, for the releases to be computed from them."""
        published = current_version(self.out)
        if published is None:
            return
        # The run's own list: on a key rotation it holds the new key's pseudonyms already.
        erased = self._subjects.pseudonyms(self.keyring.key_id, ("erasure",))
        for key in sorted(keys):
            day, _, region = key.partition("/")
            for part in published.glob(f"restricted/*/date={day}/region={region}"):
                columns = self.policy.datasets[part.parent.parent.name].pseudonym_columns
                target = self.staging / part.relative_to(published)
                target.mkdir(parents=True, exist_ok=True)
                for f in sorted(part.glob("*.parquet")):
                    frame = pl.read_parquet(f)
                    kept = without(frame, columns, erased)
                    if kept.height == frame.height:
                        shutil.copyfile(f, target / f.name)
                    elif kept.height:
                        meta = {
                            k.decode(): v.decode()
                            for k, v in (pq.read_metadata(f).metadata or {}).items()
                            if not k.startswith(b"ARROW")
                        }
                        kept.write_parquet(
                            target / f.name,
                            metadata=meta,
                            arrow_schema=pq.read_schema(f).remove_metadata(),  # its dictionary
                            **PARQUET_OPTIONS,
                        )

    def _rederive(self, subjects: Subjects) -> dict:
        """A key rotation: the requests under the previous key, with the new pseudonyms of the
        people the run found (``staging/_subjects_found``); in memory until publication."""
        found: dict[str, str] = {}
        for f in sorted((self.staging / SUBJECTS_FOUND).glob("*.json")):
            found.update(json.loads(f.read_text()))
        shutil.rmtree(self.staging / SUBJECTS_FOUND, ignore_errors=True)
        moved, missing = [], 0
        for r in subjects.requests:
            if r["key_id"] == self.keyring.key_id:
                continue
            new = sorted({found[p] for p in r["pseudonyms"] if p in found})
            missing += sum(p not in found for p in r["pseudonyms"])
            r.update(pseudonyms=new, key_id=self.keyring.key_id, rederived_by=self.run_id)
            moved.append(r["id"])
        return {"rederived": moved, "pseudonyms_not_found": missing}

    def _requests_applied(
        self, subjects: Subjects, pending: list[dict], forced: list[str], done: _Outcome
    ) -> None:
        """After publication: mark the requests applied, take erased people out of the
        quarantine, and say so in the manifest."""
        erased = frozenset(p for r in pending if r["reason"] == "erasure" for p in r["pseudonyms"])
        done.subjects["quarantine_rows_erased"] = (
            erase_from_quarantine(self.out, erased, self.keyring, self.policy) if erased else 0
        )
        subjects.mark_applied([r["id"] for r in pending], self.run_id, forced)
        subjects.save(self.out)

    # --- bookkeeping ----------------------------------------------------------------------------

    def _commit(self, batch: IncrementalBatch, results: list[dict], purged: list[str] = ()) -> None:
        batch.commit(results, self.run_id)
        batch.ledger.forget_partitions(set(purged))
        batch.ledger.key_id = self.keyring.key_id
        batch.ledger.save(self.out)

    def _incremental(self, batch: IncrementalBatch | None) -> dict:
        """What the ledger made of the landing zone: for the manifest (dates and counts only)."""
        return {
            "reprocess": self.reprocess,
            "scope": {
                "sources": sorted(self.sources) if self.sources else None,
                "regions": sorted(self.scope.regions) if self.scope.regions else None,
                "date_from": self.scope.date_from.isoformat() if self.scope.date_from else None,
                "date_to": self.scope.date_to.isoformat() if self.scope.date_to else None,
            },
            "files_unchanged": batch.unchanged if batch else 0,
            "files_superseded": len(batch.superseded) if batch else 0,
            "partitions_rebuilt": sorted(batch.affected) if batch else [],
        }

    def _finish(
        self,
        done: _Outcome,
        started: datetime,
        lock: RunLock,
        log: logging.Logger | logging.LoggerAdapter,
    ) -> dict:
        """Write the manifest and the report, clean the staging area, release the lock."""
        manifest = build_manifest(
            run_id=self.run_id,
            started_at=started,
            landing=self.landing,
            out=self.out,
            policy=self.policy,
            key_id=self.keyring.key_id,
            development=self.keyring.is_development,
            results=done.results,
            published=done.published,
            status=done.status,
            reason=done.reason,
            software_version=__version__,
            releases=done.releases,
            gate=done.gate,
            incremental=self._incremental(done.batch),
            key_rotation=done.key_rotation,
            subjects=done.subjects,
            purged=done.purged,
            ignored=done.ignored,
        )
        manifest_path: Path | None = None
        try:
            manifest_path = write_manifest(self.out, self.run_id, manifest)
            write_report(self.out, manifest)
        except OSError as exc:  # a full disk: the run's own error is the one to raise
            log.error("could not write the manifest or the report: %s", describe_os_error(exc))
        except Exception as exc:  # a report is never a reason to lose the manifest
            log.warning("could not write the HTML report (%s)", type(exc).__name__)
        shutil.rmtree(self.staging, ignore_errors=True)
        if done.status == "failed":
            # Rows no manifest counts: the next run reads their files again.
            shutil.rmtree(self.quarantine, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.out / STAGING).rmdir()  # only when no other run is staging
        lock.release()
        try:
            self.executor.finished(self.run_id, render_markdown(manifest))
        except Exception:  # a report is never a reason to fail a run
            log.warning("could not hand over the run's summary")
        return {
            "run_id": self.run_id,
            "status": done.status,
            "reason": done.reason,
            "manifest": str(manifest_path) if manifest_path else None,
            "totals": manifest["totals"],
            "results": done.results,
            "refused": [(r["path"], r["reason"]) for r in done.results if r["status"] == "refused"],
            "ignored": done.ignored,
            "partitions": done.published,
            "releases": done.releases,
            "gate": done.gate,
            "incremental": manifest["incremental"],
            "report": str(manifest_path.with_suffix(".html")) if manifest_path else None,
            "not_for_sharing": self.keyring.is_development,
        }


def run_local(
    landing: Path,
    out: Path,
    *,
    policy: Policy,
    keyring: KeyRing,
    run_id: str,
    releases: list[str] | None = None,
    report: dict | None = None,
    scope: Scope | None = None,
    reprocess: bool = False,
    sources: frozenset[str] | None = None,
    rekey: bool = False,
) -> tuple[list[FileResult], list[str]]:
    """Run in this process, without Prefect; return the file results and published partitions.

    The same engine as the flow (a manifest and a report included); for tests, tools and
    benchmarks. ``report``, when given, receives the run's ``status`` and ``reason``, the
    releases' manifest entries under ``"releases"``, the gate's verdict and findings under
    ``"gate"`` and the rebuilt ``date/region`` keys under ``"affected"``.
    """
    summary = Run(
        landing, out, policy, keyring, run_id, releases,
        scope or Scope(), reprocess, sources, rekey=rekey,
    ).execute()  # fmt: skip
    if report is not None:
        report.update(
            status=summary["status"],
            reason=summary["reason"],
            releases=summary["releases"],
            gate=summary["gate"],
            affected=summary["incremental"]["partitions_rebuilt"],
        )
    return [FileResult(**r) for r in summary["results"]], summary["partitions"]
