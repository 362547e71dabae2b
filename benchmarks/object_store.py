"""The sample run on an S3-compatible server (moto's, on 127.0.0.1) against the same on a folder.

    .venv/bin/python benchmarks/object_store.py

Prints the wall time of ``cdranon run`` (embedded Prefect, development key, a fresh Prefect home
and cache) over the committed sample, first on local folders then with both the landing zone
and the output root in the store, each run twice (the second has nothing to do), and the number
of objects the store holds afterwards. Needs the dev extras (s3fs, moto).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from moto.server import ThreadedMotoServer

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def main() -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    tmp = Path(tempfile.mkdtemp(prefix="cdranon-s3-bench-"))
    env = {
        **os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "CDRANON_CACHE": str(tmp / "cache"), "PREFECT_HOME": str(tmp / "prefect"),
    }  # fmt: skip
    os.environ.update(env)
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.mkdir("bench")
    for f in sorted(SAMPLE.rglob("*")):
        if f.is_file():
            fs.put_file(str(f), f"bench/landing/{f.relative_to(SAMPLE).as_posix()}")

    def run(landing: str, out: str) -> tuple[float, str]:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "anonymize", "run", "--landing", landing, "--out", out,
             "--dev-key", "--json"],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        status = json.loads(done.stdout)["status"] if done.stdout else "failed"
        return round(time.perf_counter() - started, 1), status

    try:
        for name, landing, out in (
            ("folder", str(SAMPLE), str(tmp / "out")),
            ("s3", "s3://bench/landing", "s3://bench/out"),
        ):
            first, second = run(landing, out), run(landing, out)
            print(f"{name}: first {first[0]} s ({first[1]}), again {second[0]} s ({second[1]})")
        print(f"objects in the store's output root: {len(fs.find('bench/out'))}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
