"""Benchmark harness: the library path, the whole ``cdranon run`` and the polars floor.

For each size it generates one SessionDetailsView export (cached under the work folder), then
runs the three approaches one after another in each round, every one in its own process, and
reports the median wall time, rows per second, peak RSS (the process's maximum resident set,
from ``wait4``) and the median of the per-round ratios to the floor.

    ./dev bench                               # 1 and 10 million rows, 2 rounds
    ./dev bench --sizes 1000000 --rounds 3    # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
CDRANON = str(Path(PY).with_name("cdranon"))
FLOOR = "floor: scan_csv -> sink_parquet"


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in MiB). Fails loudly on a non-zero exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}\n{err}")
    return wall, usage.ru_maxrss / 1024


def landing_for(work: Path, rows: int, env: dict[str, str]) -> Path:
    landing = work / f"landing-{rows}"
    csv = landing / "lync" / "SessionDetailsView.csv"
    if not csv.exists():
        print(f"generating {rows:,} rows ...", flush=True)
        shutil.rmtree(landing, ignore_errors=True)
        wall, _ = measure([PY, "-m", "benchmarks.generate", str(landing), str(rows)], env)
        print(f"  {csv.stat().st_size / 1e6:,.0f} MB in {wall:.0f} s", flush=True)
    return landing


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", type=Path, default=HERE / "work")
    args = ap.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PREFECT_HOME"] = str(work / "prefect-home")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

    lines = [
        f"command: `./dev bench --sizes {' '.join(map(str, args.sizes))} --rounds {args.rounds}`",
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.machine()}",
        "",
        "| rows | approach | median s | rows/s | peak RSS MiB | x floor (median of rounds) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for rows in args.sizes:
        landing = landing_for(work, rows, env)
        csv = landing / "lync" / "SessionDetailsView.csv"
        approaches = {
            FLOOR: [PY, "-m", "benchmarks.floor", str(csv), "{out}/floor.parquet"],
            "library path (read, anonymize, write)": [
                PY,
                "-m",
                "benchmarks.library_path",
                str(landing),
                "{out}",
            ],
            "whole `cdranon run` (Prefect, temporary server)": [
                CDRANON,
                "run",
                "--landing",
                str(landing),
                "--out",
                "{out}",
                "--dev-key",
            ],
        }
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in approaches}
        for rnd in range(args.rounds):
            for name, cmd in approaches.items():
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                wall, rss = measure([a.format(out=out) for a in cmd], env)
                results[name].append((wall, rss))
                print(
                    f"{rows:>11,} round {rnd + 1} {name:50s} {wall:8.2f} s {rss:8.0f} MiB",
                    flush=True,
                )
        floor = results[FLOOR]
        for name, runs in results.items():
            med = statistics.median(w for w, _ in runs)
            ratio = statistics.median(w / f[0] for (w, _), f in zip(runs, floor, strict=True))
            rss = max(r for _, r in runs)
            lines.append(
                f"| {rows:,} | {name} | {med:.2f} | {rows / med:,.0f} | {rss:,.0f} | {ratio:.2f} |"
            )
    shutil.rmtree(work / "out", ignore_errors=True)
    report = "\n".join(lines) + "\n"
    (work / "last-results.md").write_text(report)
    print("\n" + report)


if __name__ == "__main__":
    main()
