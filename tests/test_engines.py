"""One engine, two entry points: the flow and ``run_local`` give the same bytes and statuses.

Each case is a sequence of runs over a landing zone (with changes between runs); both entry
points run it on their own output root, and everything they leave is compared: every published
file byte for byte, the quarantine, the ledger, and each run's manifest (status, reason, counts,
releases, gate, incremental). The statuses are also checked against what the case expects, so
two wrong answers cannot agree.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest

import anonymize.run as engine
from anonymize.errors import CdranonError
from anonymize.flows.nightly import cdranon_run
from anonymize.keys import KeyRing
from anonymize.layout import MANIFESTS, QUARANTINE, VERSIONS
from anonymize.policy import DEFAULT_POLICY, load_policy
from anonymize.run import RunParams, run_local
from anonymize.subjects import SUBJECTS, Subjects
from tests.conftest import SAMPLE

LATE = Path("weblogs/EMEA/www/access-2026-11-23.log")


@dataclass
class Case:
    statuses: list[str]
    runs: list[dict] = field(default_factory=lambda: [{}])
    before: Callable[[int, Path], None] | None = None  # (run index, landing) before each run
    policy: Callable[[Path], Path] | None = None
    landing: Callable[[Path], None] | None = None  # builds the landing zone (default: sample)
    fails_on: str | None = None  # a file whose processing raises (a bug, not bad input)


def _without_late(landing: Path) -> None:
    shutil.copytree(SAMPLE, landing)
    (landing / LATE).unlink()


def _late_arrives(i: int, landing: Path) -> None:
    if i == 1:
        shutil.copy(SAMPLE / LATE, landing / LATE)


def _empty(landing: Path) -> None:
    (landing / "lync").mkdir(parents=True)


def _unreadable(landing: Path) -> None:
    (landing / "lync" / "EMEA").mkdir(parents=True)
    (landing / "lync" / "EMEA" / "export.csv").write_text("Nothing,Known\n1,2\n")


def _erase_someone(i: int, landing: Path) -> None:
    """Before the second run: an erasure request for the first caller published."""
    if i == 1:
        out = landing.parent / "out"
        frame = pl.read_parquet(out / "restricted" / "lync_sessions", hive_partitioning=True)
        who = sorted(frame["from_user"].drop_nulls().unique())[0]
        subjects = Subjects.load(out)
        subjects.add([who], "erasure", KeyRing.development().key_id)
        subjects.save(out)


def _leaky(folder: Path) -> Path:
    text = DEFAULT_POLICY.read_text()
    rule = "- {op: user_agent, part: browser, plus_is_space: true, as: browser}"
    assert rule in text
    path = folder / "leaky.yaml"
    path.write_text(text.replace(rule, "- {op: keep, as: browser}"))
    return path


CASES = {
    "second_run_is_up_to_date": Case(["published", "up_to_date"], runs=[{}, {}]),
    "late_file_rebuilds_its_day": Case(
        ["published", "published"], runs=[{}, {}], landing=_without_late, before=_late_arrives
    ),
    "reprocess_one_region": Case(
        ["published", "published"], runs=[{}, {"reprocess": True, "regions": ["EMEA"]}]
    ),
    "one_source_then_the_rest": Case(
        ["published", "published"], runs=[{"sources": ["weblogs"]}, {}]
    ),
    "empty_landing_zone": Case(["nothing_published"], landing=_empty),
    "no_readable_file": Case(["nothing_published"], landing=_unreadable),
    "nothing_in_scope": Case(["nothing_published"], runs=[{"date_from": "2030-01-01"}]),
    "gate_refuses": Case(["refused_by_gate"], policy=_leaky),
    "a_file_fails": Case(["failed"], fails_on="SessionDetailsView.csv"),
    "an_erasure_is_applied": Case(["published", "published"], runs=[{}, {}], before=_erase_someone),
}


def _run_flow(landing: Path, out: Path, policy: Path, extra: dict) -> None:
    params = RunParams(landing=landing, out=out, policy=policy, dev_key=True, **extra)
    cdranon_run(
        **params.flow_parameters(), return_state=True
    )  # a failed run is read from its manifest


def _run_local(landing: Path, out: Path, policy: Path, extra: dict, i: int) -> None:
    params = RunParams(landing=landing, out=out, policy=policy, dev_key=True, **extra)
    with contextlib.suppress(CdranonError):  # a failed run is read from its manifest
        run_local(
            landing, out, policy=load_policy(policy), keyring=KeyRing.development(),
            run_id=f"r{i}", releases=[params.release] if params.release else None,
            scope=params.scope(), reprocess=params.reprocess,
            sources=frozenset(params.sources) if params.sources else None,
        )  # fmt: skip


def _snapshot(out: Path) -> dict:
    """Everything a run sequence left, with run ids and clock times taken out."""
    manifests = sorted(
        (json.loads(p.read_text()) for p in (out / MANIFESTS).glob("*.json")),
        key=lambda m: m["started_at"],
    )
    order = {m["run_id"]: f"run{i}" for i, m in enumerate(manifests)}
    files = {}
    # The published version through its links (the version folders are named by run id).
    every = [*out.rglob("*"), *(out / "restricted").rglob("*"), *(out / "shareable").rglob("*")]
    for path in sorted(p for p in every if p.is_file()):
        rel = path.relative_to(out).parts
        if rel[0] in (MANIFESTS, "_ledger.json", VERSIONS, SUBJECTS):  # ids, run ids
            continue
        if rel[0] == QUARANTINE:
            rel = (rel[0], order[rel[1]], *rel[2:])
        files["/".join(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    ledger = (
        json.loads((out / "_ledger.json").read_text()) if (out / "_ledger.json").exists() else {}
    )
    ledger_files = {
        sha: {k: v for k, v in e.items() if k not in ("run_id", "mtime_ns")}
        for sha, e in ledger.get("files", {}).items()
    }
    kept = ("status", "reason", "totals", "quarantine", "filtered_by_reason", "incremental",
            "partitions_published", "releases", "volumes", "unicity", "purged")  # fmt: skip
    runs = []
    for m in manifests:
        entry = {k: m[k] for k in kept}
        entry["quarantine"] = m["quarantine"]["rows_by_reason"]
        entry["gate"] = {k: v for k, v in m["gate"].items() if k != "seconds"}
        entry["inputs"] = [{k: v for k, v in i.items() if k != "mtime_ns"} for i in m["inputs"]]
        entry["subject_requests"] = {
            k: v for k, v in m["subject_requests"].items() if k != "applied"
        }  # request ids are random
        runs.append(entry)
    return {"files": files, "ledger": ledger_files, "runs": runs}


# The incremental cases read the sample several times: run by .ci/run, skipped by -m 'not slow'.
SLOW = {"late_file_rebuilds_its_day", "reprocess_one_region", "one_source_then_the_rest",
        "nothing_in_scope", "an_erasure_is_applied"}  # fmt: skip


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(CASES)]
)
def test_the_flow_and_run_local_leave_the_same_bytes_and_statuses(
    name, prefect_harness, tmp_path, monkeypatch
):
    case = CASES[name]
    if case.fails_on:
        real = engine.process_file

        def failing(path, **kw):
            if Path(path).name == case.fails_on:
                raise RuntimeError("a bug")
            return real(path, **kw)

        monkeypatch.setattr(engine, "process_file", failing)
    policy = case.policy(tmp_path) if case.policy else Path(DEFAULT_POLICY)
    snapshots = {}
    for entry in ("flow", "local"):
        landing, out = tmp_path / entry / "landing", tmp_path / entry / "out"
        (case.landing or (lambda p: shutil.copytree(SAMPLE, p)))(landing)
        for i, extra in enumerate(case.runs):
            if case.before:
                case.before(i, landing)
            if entry == "flow":
                _run_flow(landing, out, policy, extra)
            else:
                _run_local(landing, out, policy, extra, i)
        snapshots[entry] = _snapshot(out)
    flow, local = snapshots["flow"], snapshots["local"]
    assert [r["status"] for r in flow["runs"]] == case.statuses
    assert [r["status"] for r in local["runs"]] == case.statuses
    assert flow["files"] == local["files"]
    assert flow["ledger"] == local["ledger"]
    assert flow["runs"] == local["runs"]
    if "published" in case.statuses:
        assert any(f.startswith("restricted/") for f in flow["files"])
