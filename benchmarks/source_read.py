"""Cost of reading each source format, and of anonymising it end to end.

Usage: ``python -m benchmarks.source_read [ROWS]`` (default one million). It writes, under
benchmarks/work/, one Apache combined log, one IIS W3C log and one Adobe Connect
report-bulk-consolidated-transactions response of ROWS records each, then times:

- ``read``: the reader alone (``batches()``, as the pipeline calls it), and
- ``pipeline``: ``process_file`` (read, type, quarantine, operators, Parquet), with the default
  policy and the development key.

The Apache and IIS readers are polars expressions over whole chunks; the Connect reader has to
turn each XML ``row`` element into a record in Python (lxml's ``iterparse``), the one place where
a format leaves no choice.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np

from anonymize.keys import KeyRing
from anonymize.policy import DEFAULT_POLICY, load_policy
from anonymize.sources import open_source
from anonymize.stage import process_file

WORK = Path(__file__).resolve().parent / "work"
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"


def write_inputs(n: int) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    ips = [f"198.51.{a}.{b}" for a, b in rng.integers(0, 255, (n, 2))]
    paths = rng.choice(["/", "/meet/jane.doe/K7Q2XZ9B", "/newsletter?email=x%40y.com", "/a.css"], n)
    root = WORK / f"sources-{n}"
    out = {
        "apache": root / "weblogs" / "EMEA" / "access.log",
        "iis": root / "weblogs" / "EMEA" / "u_ex.log",
        "connect": root / "connect" / "EMEA" / "transactions.xml",
    }
    if all(p.exists() for p in out.values()):
        return out
    for p in out.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    with out["apache"].open("w") as fh:
        for ip, p in zip(ips, paths, strict=True):
            fh.write(
                f'{ip} - - [01/Jan/2024:10:00:00 +0000] "GET {p} HTTP/1.1" 200 512 "-" "{UA}"\n'
            )
    with out["iis"].open("w") as fh:
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
    people = rng.integers(0, 50_000, n)
    with out["connect"].open("w") as fh:
        fh.write('<?xml version="1.0" encoding="utf-8"?>\n<results><status code="ok"/>\n')
        fh.write("<report-bulk-consolidated-transactions>\n")
        for i, who in enumerate(people):
            fh.write(
                f'<row transaction-id="{i}" sco-id="{11000 + who % 700}" type="meeting" '
                f'principal-id="{who}" score="0"><name>Weekly sync</name><url>/weekly/</url>'
                f"<login>user{who}@contoso.com</login><user-name>User {who}</user-name>"
                "<status>completed</status>"
                "<date-created>2026-11-23T10:00:00.000-08:00</date-created>"
                "<date-closed>2026-11-23T10:40:00.000-08:00</date-closed></row>\n"
            )
        fh.write("</report-bulk-consolidated-transactions></results>\n")
    return out


def main(n: int) -> None:
    inputs = write_inputs(n)
    policy = load_policy(DEFAULT_POLICY)
    keyring = KeyRing.development()
    landing = next(iter(inputs.values())).parents[2]
    for kind, path in inputs.items():
        family = path.relative_to(landing).parts[0]
        t = time.perf_counter()
        reader = open_source(path, family).reader
        rows = sum(b.frame.height for b in reader.batches(policy.batch_rows))
        read_s = time.perf_counter() - t
        out = WORK / f"sources-out-{n}"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        result = process_file(
            path, family=family, policy=policy, keyring=keyring, staging=out / "staging",
            quarantine=out / "quarantine", landing=landing,
        )  # fmt: skip
        run_s = time.perf_counter() - t
        assert result.status == "processed", result.reason
        assert result.rows_published == rows == n
        print(
            f"{kind:8} {rows:>10,} rows: read {read_s:6.2f} s ({read_s / rows * 1e6:.2f} s/M), "
            f"pipeline {run_s:6.2f} s ({run_s / rows * 1e6:.2f} s/M)"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
