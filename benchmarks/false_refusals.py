"""False refusals of the privacy gate: nightly runs over synthetic days with realistic noise,
a 100,000-line noisy public access log, and the real logs in shared/.

Usage: ``python -m benchmarks.false_refusals WORKDIR [DAYS] [SESSIONS_PER_DAY]``.

Each night a new landing folder for that day is added (every source kind of one world, plus
hostile web traffic at 5 % of requests and a noisy public-site log), and ``run_local`` runs over
the growing landing zone into one output root (incremental, as the nightly job does). Prints,
per night, the verdict, the rows withheld and the seconds; then the same for the 100k-line log
and for the real logs; then the count of refused runs (the target is 0).
"""

from __future__ import annotations

import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from anonymize.keys import KeyRing
from anonymize.policy import DEFAULT_POLICY, load_policy
from anonymize.run import run_local
from anonymize.synth_sources import generate_all
from anonymize.synth_web import generate_hostile_weblogs, noisy_access_log

REAL_LOGS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-logs"
START = date(2026, 10, 1)


def run(label: str, landing: Path, out: Path, run_id: str) -> bool:
    policy, keyring = load_policy(DEFAULT_POLICY), KeyRing.development()
    report: dict = {}
    t0 = time.perf_counter()
    results, published = run_local(
        landing, out, policy=policy, keyring=keyring, run_id=run_id, report=report
    )
    gate = report.get("gate", {"verdict": "not_run", "withheld": {}})
    withheld = sum(e["rows"] for e in gate.get("withheld", {}).values())
    rows = sum(r.rows_read for r in results)
    print(
        f"{label}: verdict={gate['verdict']} rows_read={rows} withheld={withheld} "
        f"partitions_published={len(published)} seconds={time.perf_counter() - t0:.2f}",
        flush=True,
    )
    return gate["verdict"] == "refused"


def main(work: Path, days: int, sessions: int) -> None:
    shutil.rmtree(work, ignore_errors=True)
    landing, out = work / "landing", work / "out"
    refused = 0
    for d in range(days):
        day = START + timedelta(days=d)
        folder = work / "day" / day.isoformat()
        world = generate_all(folder, seed=1000 + d, rows=sessions, days=1, people=400, start=day)
        generate_hostile_weblogs(folder, world, seed=d, requests=sessions, days=1, start=day)
        noisy_access_log(
            folder / "weblogs" / "EMEA" / "public" / f"access-{day}.log",
            lines=sessions,
            seed=d,
            day=day,
        )
        for f in folder.rglob("*"):  # each night's files in folders of their own day
            if f.is_file():
                rel = f.relative_to(folder)
                target = landing / rel.parts[0] / day.isoformat() / Path(*rel.parts[1:])
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(f, target)
        refused += run(f"night {d + 1:02d} {day}", landing, out, f"n{d:02d}")
    noisy = work / "noisy"
    noisy_access_log(noisy / "weblogs" / "EMEA" / "www" / "access.log", lines=100_000, seed=7)
    refused += run("noisy 100k-line public log", noisy, work / "out-noisy", "noisy")
    real = work / "real" / "weblogs" / "EMEA"
    real.mkdir(parents=True)
    for f in sorted(REAL_LOGS.glob("*.log")):
        shutil.copy(f, real / f.name)
    refused += run("real logs (shared/data/real-logs)", work / "real", work / "out-real", "real")
    print(f"refused runs: {refused} of {days + 2}")


if __name__ == "__main__":
    main(
        Path(sys.argv[1]),
        int(sys.argv[2]) if len(sys.argv) > 2 else 30,
        int(sys.argv[3]) if len(sys.argv) > 3 else 3000,
    )
