"""The library path alone: discover, read, anonymise, write, publish; no Prefect.

Usage: ``python -m benchmarks.library_path LANDING OUT``. Prints rows read and seconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from anonymize.keys import KeyRing
from anonymize.pipeline import plan_inputs, process_file
from anonymize.policy import DEFAULT_POLICY, load_policy
from anonymize.publish import discover, publish_partitions


def main(landing: Path, out: Path) -> None:
    t0 = time.perf_counter()
    policy = load_policy(DEFAULT_POLICY)
    keyring = KeyRing.development()
    rows, keys = 0, []
    for p in plan_inputs(discover(landing), policy):
        r = process_file(
            Path(p.path),
            family=p.family,
            policy=policy,
            keyring=keyring,
            staging=out / "_staging" / "bench",
            quarantine=out / "_quarantine" / "bench",
            landing=landing,
            skip_keys=list(keys) if p.priority == 1 else None,
            sha256=p.sha256,
            duplicate_of=p.duplicate_of,
        )
        if r.keys_path and p.priority == 2:
            keys.append(r.keys_path)
        rows += r.rows_read
    publish_partitions(out / "_staging" / "bench", out, "bench")
    print(f"rows={rows} seconds={time.perf_counter() - t0:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
