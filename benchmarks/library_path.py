"""The library path alone: discover, read, anonymise, write, publish; no Prefect.

Usage: ``python -m benchmarks.library_path LANDING OUT``. Prints rows read and seconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from anonymize.keys import KeyRing
from anonymize.pipeline import run_local
from anonymize.policy import DEFAULT_POLICY, load_policy


def main(landing: Path, out: Path) -> None:
    t0 = time.perf_counter()
    policy = load_policy(DEFAULT_POLICY)
    keyring = KeyRing.development()
    results, _ = run_local(landing, out, policy=policy, keyring=keyring, run_id="bench")
    rows = sum(r.rows_read for r in results)
    print(f"rows={rows} seconds={time.perf_counter() - t0:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
