"""The floor: polars scans the CSV and sinks it to Parquet unchanged (zstd, as we write).

Usage: ``python -m benchmarks.floor CSV OUT.parquet``. Prints the in-process seconds.
"""

from __future__ import annotations

import sys
import time

import polars as pl

if __name__ == "__main__":
    t0 = time.perf_counter()
    pl.scan_csv(sys.argv[1]).sink_parquet(sys.argv[2], compression="zstd", compression_level=3)
    print(f"seconds={time.perf_counter() - t0:.3f}")
