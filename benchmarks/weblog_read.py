"""Cost of parsing access logs: lines per second of the Apache/nginx and IIS readers.

Usage: ``python -m benchmarks.weblog_read [LINES]`` (default one million). It writes one combined
log and one IIS W3C log of LINES lines each under benchmarks/work/ and times reading them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from anonymize.sources.weblog import AccessLog

WORK = Path(__file__).resolve().parent / "work"
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"


def write_logs(n: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    ips = [f"198.51.{a}.{b}" for a, b in rng.integers(0, 255, (n, 2))]
    paths = rng.choice(["/", "/meet/jane.doe/K7Q2XZ9B", "/newsletter?email=x%40y.com", "/a.css"], n)
    apache, iis = WORK / f"access-{n}.log", WORK / f"iis-{n}.log"
    WORK.mkdir(parents=True, exist_ok=True)
    with apache.open("w") as fh:
        for ip, p in zip(ips, paths, strict=True):
            fh.write(
                f'{ip} - - [01/Jan/2024:10:00:00 +0000] "GET {p} HTTP/1.1" 200 512 "-" "{UA}"\n'
            )
    with iis.open("w") as fh:
        fh.write(
            "#Software: Microsoft Internet Information Services 10.0\n#Fields: date time "
            "s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) "
            "sc-status sc-substatus sc-win32-status time-taken\n"
        )
        ua = UA.replace(" ", "+")
        for ip, p in zip(ips, paths, strict=True):
            fh.write(
                f"2024-01-01 10:00:00 10.0.0.1 GET {p.split('?')[0]} - 443 - {ip} {ua} 200 0 0 15\n"
            )
    return apache, iis


def main(n: int) -> None:
    for path in write_logs(n):
        t = time.perf_counter()
        rows = sum(c.good.height for c in AccessLog.open(path).chunks())
        s = time.perf_counter() - t
        print(f"{path.name}: {rows:,} rows in {s:.2f} s = {s / rows * 1e6:.2f} s per million lines")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
