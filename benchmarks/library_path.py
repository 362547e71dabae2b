"""The library path alone: discover, read, anonymise, releases, gate, publish; no Prefect.

Usage: ``python -m benchmarks.library_path LANDING OUT``. Prints rows read and seconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from anonymize.keys import KeyRing
from anonymize.policy import DEFAULT_POLICY, load_policy
from anonymize.run import run_local


def main(landing: Path, out: Path) -> None:
    t0 = time.perf_counter()
    policy = load_policy(DEFAULT_POLICY)
    keyring = KeyRing.development()
    report: dict = {}
    results, _ = run_local(
        landing, out, policy=policy, keyring=keyring, run_id="bench", report=report
    )
    rows = sum(r.rows_read for r in results)
    gate = report["gate"]
    print(
        f"rows={rows} seconds={time.perf_counter() - t0:.3f} gate={gate['verdict']} "
        f"gate_seconds={gate['seconds']:.3f} canaries={gate['canaries']}"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
