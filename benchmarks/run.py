"""Benchmark harness: the library path, the whole ``cdranon run`` and the polars floor.

For each size it generates one SessionDetailsView export (cached under the work folder), then
runs the three approaches one after another in each round, every one in its own process, and
reports the median wall time, rows per second, peak RSS (the process's maximum resident set,
from ``wait4``) and the median of the per-round ratios to the floor.

    ./dev bench                               # 1 and 10 million rows, 2 rounds
    ./dev bench --sizes 1000000 --rounds 3    # quicker

It then checks the targets of issue 14 and says, for each, met or missed and by how much:
the library path at most 2.0x the floor at 1M rows and 1.5x at 10M (goal 1.3x); its peak RSS at
most the floor's + 600 MiB at every size; the whole run at most 10 s over the library path; and
the nightly run of the incremental benchmark (day seven arrives, ``benchmarks.incremental``) at
most 1.5x the floor over that day's file alone. Then issue 21's: the sample run's wall time by
stage, and a run with nothing to do, an empty landing zone and a refused start each answering
in at most 5 s (``./dev bench --sizes --night 0`` runs only these).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
CDRANON = str(Path(PY).with_name("cdranon"))
FLOOR = "floor: scan_csv -> sink_parquet"
LIBRARY = "library path (read, anonymize, releases, gate, publish)"
WHOLE = "whole `cdranon run` (Prefect, temporary server)"
RATIO_TARGET = {1_000_000: 2.0, 10_000_000: 1.5}
RSS_MARGIN_MIB = 600
RUN_OVERHEAD_S = 10.0
NIGHT_RATIO = 1.5
ANSWER_S = 5.0  # a run with nothing to do, an empty landing zone, a refused start (issue 21)


def measure(
    cmd: list[str], env: dict[str, str], output: list[str] | None = None, codes: tuple = (0,)
) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in MiB). Fails loudly on an exit code not
    in ``codes``. Its standard output is appended to ``output`` when given."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) not in codes:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"benchmark command failed: {' '.join(cmd)}\n{tail}")
        if output is not None:
            out.seek(0)
            output.append(out.read().decode(errors="replace"))
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


def verdict(value: float, target: float, unit: str = "") -> str:
    """``met`` or ``MISSED by ...`` (a figure above its target misses it)."""
    if value <= target:
        return "met"
    return f"MISSED by {value - target:,.2f}{unit} ({value / target:.2f}x the target)"


def night(work: Path, sessions: int, env: dict[str, str]) -> list[str]:
    """The incremental benchmark's nightly step against the floor over that night's file."""
    out: list[str] = []
    wall, rss = measure(
        [PY, "-m", "benchmarks.incremental", str(work / "incremental"), str(sessions)], env, out
    )
    steps = dict(re.findall(r"^(\d) [^:]*:.* seconds=([\d.]+)$", out[0], re.MULTILINE))
    day7 = work / "incremental" / "landing" / "lync" / "2026-11-22" / "SessionDetailsView.csv"
    floor_out: list[str] = []
    measure([PY, "-m", "benchmarks.floor", str(day7), str(work / "night-floor.parquet")], env,
            floor_out)  # fmt: skip
    floor_s = float(re.search(r"seconds=([\d.]+)", floor_out[0]).group(1))
    ratio = float(steps["2"]) / floor_s
    return [
        f"incremental benchmark (`python -m benchmarks.incremental WORK {sessions}`, "
        f"wall {wall:.0f} s, peak RSS {rss:,.0f} MiB): "
        + ", ".join(f"step {k} {v} s" for k, v in sorted(steps.items())),
        f"- a night (step 2, day seven arrives): {float(steps['2']):.2f} s = {ratio:.2f}x the "
        f"floor over that day's file ({floor_s:.2f} s, in-process): target <= {NIGHT_RATIO}x: "
        + verdict(ratio, NIGHT_RATIO, "x"),
    ]


def answers(work: Path, env: dict[str, str]) -> list[str]:
    """The sample run's wall time by stage (its ``--json`` ``seconds``), then the runs that must
    answer without Prefect: nothing to do, an empty landing zone, a refused start."""
    sample, out, empty = ROOT / "data" / "sample", work / "answers", work / "empty-landing"
    shutil.rmtree(out, ignore_errors=True)
    (empty / "lync").mkdir(parents=True, exist_ok=True)
    doc: list[str] = []
    run = [CDRANON, "run", "--landing", str(sample), "--out", str(out), "--dev-key", "--json"]
    wall, _ = measure(run, env, doc)
    split = json.loads(doc[0])["seconds"]
    lines = [
        f"- the sample run (`cdranon run --json`, warm Prefect home): {wall:.1f} s; "
        + ", ".join(f"{k} {v:.2f} s" for k, v in split.items())
    ]
    no_key = {k: v for k, v in env.items() if k != "CDRANON_MASTER_KEY"}
    cases = (
        ("nothing to do", run, env, 0),
        ("an empty landing zone", [CDRANON, "run", "--landing", str(empty), "--out",
                                   str(work / "empty-out"), "--dev-key"], env, 1),
        ("a refused start (no key)", run[:-2], no_key, 2),
    )  # fmt: skip
    for label, cmd, cmd_env, code in cases:
        wall, _ = measure(cmd, cmd_env, codes=(code,))
        lines.append(
            f"- {label}: {wall:.2f} s: target <= {ANSWER_S:.0f} s: " + verdict(wall, ANSWER_S, " s")
        )
    shutil.rmtree(out, ignore_errors=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000],
        help="rows per size (none: only the sample run and the fast answers)",
    )  # fmt: skip
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument(
        "--night",
        type=int,
        default=150_000,
        metavar="SESSIONS",
        help="sessions per day of the incremental benchmark (0: skip it)",
    )
    args = ap.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PREFECT_HOME"] = str(work / "prefect-home")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

    lines = [
        f"command: `./dev bench --sizes {' '.join(map(str, args.sizes))} --rounds {args.rounds}"
        f" --night {args.night}`",
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.machine()}",
        "",
        "| rows | approach | median s | rows/s | peak RSS MiB | x floor (median of rounds) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    # The first start of the Prefect server creates its database (about 20 s more): once here,
    # untimed, so that every round measures the runs an operator has every night.
    warm = work / "warm-up"
    shutil.rmtree(warm, ignore_errors=True)
    measure([CDRANON, "run", "--landing", str(ROOT / "data" / "sample"), "--out", str(warm),
             "--dev-key"], env)  # fmt: skip
    shutil.rmtree(warm, ignore_errors=True)
    targets: list[str] = []
    for rows in args.sizes:
        landing = landing_for(work, rows, env)
        csv = landing / "lync" / "SessionDetailsView.csv"
        approaches = {
            FLOOR: [PY, "-m", "benchmarks.floor", str(csv), "{out}/floor.parquet"],
            LIBRARY: [PY, "-m", "benchmarks.library_path", str(landing), "{out}"],
            WHOLE: [CDRANON, "run", "--landing", str(landing), "--out", "{out}", "--dev-key"],
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
        summary: dict[str, tuple[float, float, float]] = {}
        for name, runs in results.items():
            med = statistics.median(w for w, _ in runs)
            ratio = statistics.median(w / f[0] for (w, _), f in zip(runs, floor, strict=True))
            rss = max(r for _, r in runs)
            summary[name] = (med, ratio, rss)
            lines.append(
                f"| {rows:,} | {name} | {med:.2f} | {rows / med:,.0f} | {rss:,.0f} | {ratio:.2f} |"
            )
        lib_s, lib_ratio, lib_rss = summary[LIBRARY]
        floor_rss = summary[FLOOR][2]
        target = RATIO_TARGET.get(rows, min(RATIO_TARGET.values()))
        targets += [
            f"- {rows:,} rows, library path {lib_ratio:.2f}x the floor: target <= {target}x: "
            + verdict(lib_ratio, target, "x"),
            f"- {rows:,} rows, library path peak RSS {lib_rss:,.0f} MiB, the floor's "
            f"{floor_rss:,.0f} MiB + {RSS_MARGIN_MIB}: " + verdict(lib_rss, floor_rss +
                                                                   RSS_MARGIN_MIB, " MiB"),
            f"- {rows:,} rows, whole run {summary[WHOLE][0] - lib_s:.1f} s over the library "
            f"path: target <= {RUN_OVERHEAD_S:.0f} s: "
            + verdict(summary[WHOLE][0] - lib_s, RUN_OVERHEAD_S, " s"),
        ]  # fmt: skip
    shutil.rmtree(work / "out", ignore_errors=True)
    if args.night:
        targets += night(work, args.night, env)
    fast = answers(work, env)
    report = (
        "\n".join(
            [*lines, "", "Targets (issue 14):", *targets, "", "Fast answers (issue 21):", *fast]
        )
        + "\n"
    )
    (work / "last-results.md").write_text(report)
    print("\n" + report)


if __name__ == "__main__":
    main()
