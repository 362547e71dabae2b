"""Incremental batches at scale: a week of daily SessionDetailsView exports, without Prefect.

Usage: ``python -m benchmarks.incremental WORKDIR [SESSIONS_PER_DAY]``. Prints, for each step,
the files read, the partitions rebuilt and the seconds:

1. the first six days at once (the ledger is empty: everything is read);
2. day seven arrives (the nightly case: one new file, one new day);
3. the same landing zone again (nothing new);
4. a late export for day three (that day is rebuilt from its two files);
5. a clean run over all eight files, for comparison.
"""

from __future__ import annotations

import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from anonymize.contracts import load_contract
from anonymize.keys import KeyRing
from anonymize.policy import DEFAULT_POLICY, load_policy
from anonymize.run import run_local
from anonymize.synth import _as_ssms, _sessions, make_world

START = date(2026, 11, 16)


def write_day(landing: Path, day: int, n: int, seed: int, name: str) -> Path:
    world = make_world(42, people=20_000)
    cols = [c.name for c in load_contract("lync_session_details_view").columns]
    frame = _sessions(world, np.random.default_rng(seed), n, 1, START + timedelta(days=day))
    path = landing / "lync" / f"{START + timedelta(days=day)}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    _as_ssms(frame.select(cols)).write_csv(path, null_value="NULL")
    return path


def step(label: str, landing: Path, out: Path, run_id: str) -> None:
    policy, keyring = load_policy(DEFAULT_POLICY), KeyRing.development()
    report: dict = {}
    t0 = time.perf_counter()
    results, published = run_local(
        landing, out, policy=policy, keyring=keyring, run_id=run_id, report=report
    )
    seconds = time.perf_counter() - t0
    rows = sum(r.rows_read for r in results)
    print(
        f"{label}: files_read={len(results)} rows_read={rows} "
        f"partitions_rebuilt={len(report.get('affected', []))} "
        f"partitions_published={len(published)} seconds={seconds:.2f}",
        flush=True,
    )


def main(work: Path, per_day: int) -> None:
    shutil.rmtree(work, ignore_errors=True)
    landing, out = work / "landing", work / "out"
    for day in range(6):
        write_day(landing, day, per_day, 100 + day, "SessionDetailsView.csv")
    step("1 first six days", landing, out, "r1")
    write_day(landing, 6, per_day, 106, "SessionDetailsView.csv")
    step("2 day seven arrives", landing, out, "r2")
    step("3 nothing new", landing, out, "r3")
    write_day(landing, 2, per_day, 200, "SessionDetailsView-late.csv")
    step("4 late export for day three", landing, out, "r4")
    step("5 clean run over everything", landing, work / "clean", "r5")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 150_000)
