"""Time of computing releases (statistics, suppression, margins) over published datasets.

Usage: ``python -m benchmarks.release_stats OUT [--dp]``, where OUT is the output root of an
earlier run (``restricted/`` inside). Computes the default policy's releases into a temporary
staging folder next to it, prints seconds and cells, and removes what it wrote.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from anonymize.keys import KeyRing
from anonymize.policy import DEFAULT_POLICY, DpSettings, load_policy
from anonymize.releases import stage_releases


def main(out: Path, dp: bool) -> None:
    policy = load_policy(DEFAULT_POLICY)
    if dp:
        for name, spec in policy.releases.items():
            policy.releases[name] = spec.model_copy(update={"dp": DpSettings(enabled=True)})
    rows = sum(
        pl.scan_parquet(p).select(pl.len()).collect().item()
        for p in (out / "restricted").rglob("*.parquet")
    )
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staging = Path(tmp)
        (staging / "restricted").symlink_to((out / "restricted").resolve())
        t = time.perf_counter()
        entries = stage_releases(None, policy, KeyRing.development(), staging, [])
        seconds = time.perf_counter() - t
        shutil.rmtree(staging / "shareable", ignore_errors=True)
    for name, entry in entries.items():
        cells = sum(s["cells"] for s in entry["statistics"].values())
        published = sum(s["published"] for s in entry["statistics"].values())
        print(
            f"release {name}{' (dp)' if dp else ''}: {rows:,} restricted rows, {seconds:.2f} s, "
            f"{cells:,} cells, {published:,} published"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), "--dp" in sys.argv[2:])
