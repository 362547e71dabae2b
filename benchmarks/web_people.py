"""Web people against the truth: how many published usage_web cells stand for fewer than k real
people, with the visitor cdranon counts now and with the fingerprint it used before.

Usage: ``python -m benchmarks.web_people WORKDIR [PEOPLE]``. Generates 30 days of every source
in truth mode (the writer of each web request is known), runs the default policy, and prints,
for both visitor definitions, the cells that reach k and how many of those have fewer than k
real people.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import polars as pl

from anonymize.keys import KeyRing
from anonymize.policy import DEFAULT_POLICY, load_policy
from anonymize.run import run_local
from anonymize.statistics import PERSON, STATISTICS
from anonymize.synth_sources import generate_all


def main(work: Path, people: int) -> None:
    shutil.rmtree(work, ignore_errors=True)
    policy = load_policy(DEFAULT_POLICY)
    k = policy.releases["partner"].k
    generate_all(work / "landing", seed=8, rows=24_000, days=30, people=people, truth=True)
    run_local(work / "landing", work / "out", policy=policy, keyring=KeyRing.development(),
              run_id="t")  # fmt: skip
    restricted = work / "out" / "restricted"

    def scan(dataset: str) -> pl.LazyFrame:
        return pl.scan_parquet(restricted / dataset / "**" / "*.parquet", hive_partitioning=True)

    stat = STATISTICS["usage_web"]
    keys = ["date", "region", *stat.dims]
    _, frame = stat.build(scan, False)
    frame = frame.with_columns(
        (pl.coalesce("time_taken_ms", "bytes_sent") // 1000).alias("__real"),
        pl.concat_str(
            [pl.col(c).fill_null("-") for c in
             ("client_network", "browser", "os", "device_class", "site")], separator="|",
        ).alias("__before"),  # the fingerprint of the first releases
    )  # fmt: skip
    cells = (
        frame.group_by(keys)
        .agg(
            pl.col(PERSON).n_unique().alias("now"),
            pl.col("__before").n_unique().alias("before"),
            pl.col("__real").n_unique().alias("real"),
        )
        .collect()
    )
    for name in ("before", "now"):
        shown = cells.filter(pl.col(name) >= k)
        bad = shown.filter(pl.col("real") < k).height
        print(f"{name}: cells reaching k={k}: {shown.height}, of which fewer than k real: {bad}")
    print(f"cells with at least k real people: {cells.filter(pl.col('real') >= k).height}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 90)
