"""Landing zone and output root on an S3-compatible server (moto's, over HTTP on 127.0.0.1).

The store gets the bytes a run on disk writes; a reader reads ``CURRENT`` once and sees one
whole version, whenever a run dies; reruns, late files and a push that dies are tested.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from anonymize import remote
from anonymize.errors import RunRefused, StorageError
from anonymize.run import run_local
from tests.conftest import SAMPLE
from tests.test_incremental import LATE, SOURCES

s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "uc-test"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A moto S3 server on a free loopback port, for this module; the environment points at it."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        remote.CACHE_ENV: str(tmp_path_factory.mktemp("cache")),
    }  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir(BUCKET)
    yield fs, env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def _upload_landing(fs, prefix: str, without: tuple[str, ...] = ()) -> str:
    for rel in SOURCES:
        for f in sorted((SAMPLE / rel).rglob("*")):
            key = f.relative_to(SAMPLE).as_posix()
            if f.is_file() and key not in without:
                fs.put_file(str(f), f"{BUCKET}/{prefix}/{key}")
    return f"s3://{BUCKET}/{prefix}"


def _local_landing(root: Path, without: tuple[str, ...] = ()) -> Path:
    from tests.test_incremental import landing_from_sample

    return landing_from_sample(root, without=without)


def _run(landing, out, policy, keyring, run_id: str) -> dict:
    report: dict = {}
    with remote.session(landing, out) as (here_landing, here_out):
        run_local(here_landing, here_out, policy=policy, keyring=keyring, run_id=run_id,
                  report=report)  # fmt: skip
    return report


def _published_on_disk(out: Path) -> dict[str, bytes]:
    root = Path(os.path.realpath(out / "current"))
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".complete"
    }


def _published_in_store(fs, url: str, version: str | None = None) -> dict[str, bytes]:
    store = remote.RemoteOut(url)
    folder = f"{store.root}/_versions/{version or store.published()}"
    return {
        p[len(folder) + 1 :]: fs.cat_file(p)
        for p in sorted(fs.find(folder))
        if not p.endswith("/.complete")
    }


def test_the_sample_run_on_the_store_writes_the_bytes_of_a_run_on_disk(
    store, tmp_path, policy, dev_keyring
):
    fs, _ = store
    landing = _upload_landing(fs, "a/landing")
    report = _run(landing, f"s3://{BUCKET}/a/out", policy, dev_keyring, "r1")
    assert report["status"] == "published"
    disk = tmp_path / "disk"
    run_local(_local_landing(tmp_path), disk, policy=policy, keyring=dev_keyring, run_id="d1")
    on_disk = _published_on_disk(disk)
    in_store = _published_in_store(fs, f"s3://{BUCKET}/a/out")
    assert any(k.startswith("restricted/lync_sessions/") for k in in_store)
    assert "shareable/partner/DATASHEET.json" in in_store
    assert in_store.keys() == on_disk.keys()
    assert [k for k in in_store if in_store[k] != on_disk[k]] == []
    # The state of the run is in the store too; the pointer names the version.
    assert fs.cat_file(f"{BUCKET}/a/out/CURRENT") == b"r1"
    assert fs.exists(f"{BUCKET}/a/out/_ledger.json")
    assert fs.exists(f"{BUCKET}/a/out/_manifests/r1.json")
    assert not fs.exists(f"{BUCKET}/a/out/_lock")

    # A rerun finds nothing new: the store is left as it was.
    before = sorted(fs.find(f"{BUCKET}/a/out/_versions"))
    report = _run(landing, f"s3://{BUCKET}/a/out", policy, dev_keyring, "r2")
    assert report["status"] == "up_to_date"
    assert fs.cat_file(f"{BUCKET}/a/out/CURRENT") == b"r1"
    assert sorted(fs.find(f"{BUCKET}/a/out/_versions")) == before


def test_a_late_file_and_a_push_that_dies_on_the_store(
    store, tmp_path, policy, dev_keyring, monkeypatch
):
    """A late file republishes its day. A push that dies half-way leaves the store's pointer on
    the previous version (a reader pinned then reads it whole, before and after); the next run
    publishes; the end state is a clean run's over the same files."""
    fs, _ = store
    url = f"s3://{BUCKET}/b/out"
    landing = _upload_landing(fs, "b/landing", without=(LATE,))
    _run(landing, url, policy, dev_keyring, "r1")
    first = _published_in_store(fs, url)
    pinned = remote.RemoteOut(url).published()
    fs.put_file(str(SAMPLE / LATE), f"{BUCKET}/b/landing/{LATE}")

    uploads = []
    real_filesystem = remote.filesystem

    class DiesAfterThree:
        """The store, whose connection dies on the fourth upload of a version's file."""

        def __init__(self, fs):
            self.fs = fs

        def __getattr__(self, name):
            return getattr(self.fs, name)

        def put_file(self, lpath, rpath, *a, **kw):
            if "/_versions/" in rpath:
                uploads.append(rpath)
                if len(uploads) > 3:
                    raise OSError("connection reset (the push dies here)")
            return self.fs.put_file(lpath, rpath, *a, **kw)

    def dying(url):
        fs_, root = real_filesystem(url)
        return DiesAfterThree(fs_), root

    monkeypatch.setattr(remote, "filesystem", dying)
    with pytest.raises(StorageError, match=r"failed \(OSError\)"):
        _run(landing, url, policy, dev_keyring, "r2")
    monkeypatch.undo()
    assert len(uploads) == 4
    assert remote.RemoteOut(url).published() == pinned == "r1"
    assert _published_in_store(fs, url) == first  # readers still get r1, whole
    assert not fs.exists(f"{BUCKET}/b/out/_lock")  # released on the way out

    report = _run(landing, url, policy, dev_keyring, "r3")
    assert report["status"] == "published"
    assert report["affected"] == ["2026-11-23/EMEA"]
    assert remote.RemoteOut(url).published() == "r3"
    assert _published_in_store(fs, url, pinned) == first  # the pinned reader's version stays
    clean = tmp_path / "clean"
    run_local(_local_landing(tmp_path), clean, policy=policy, keyring=dev_keyring, run_id="c")
    on_disk = {
        k: v
        for k, v in _published_on_disk(clean).items()
        if "/DATASHEET." not in k  # its counts are of the partitions a run computed
    }
    in_store = {
        k: v
        for k, v in _published_in_store(fs, url).items()
        if "/DATASHEET." not in k  # its counts are of the partitions a run computed
    }
    assert in_store == on_disk
    # The half-pushed r2 is gone; the store keeps the published version and the one before.
    versions = {p.rsplit("/", 1)[-1] for p in fs.ls(f"{BUCKET}/b/out/_versions", detail=False)}
    assert versions == {"r1", "r3"}


def test_a_run_holding_the_lock_refuses_another(store, policy, dev_keyring):
    fs, _ = store
    url = f"s3://{BUCKET}/c/out"
    fs.pipe_file(f"{BUCKET}/c/out/_lock", b"{}")
    with pytest.raises(RunRefused, match="holds the lock"), remote.session("/nonexistent", url):
        pass
    fs.rm_file(f"{BUCKET}/c/out/_lock")


def test_duckdb_reads_a_release_from_the_store_with_the_readme_query(
    store, tmp_path, policy, dev_keyring
):
    import duckdb

    fs, _ = store
    landing = _upload_landing(fs, "d/landing")
    url = f"s3://{BUCKET}/d/out"
    _run(landing, url, policy, dev_keyring, "r1")
    disk = tmp_path / "disk"
    run_local(_local_landing(tmp_path), disk, policy=policy, keyring=dev_keyring, run_id="d1")
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = re.search(r"<!-- object-store-query -->\n```python\n(.*?)```", readme, re.S).group(1)
    code = block.replace("uc-anon/out", f"{BUCKET}/d/out")
    code = code.replace('con.sql(f"""', 'result = con.sql(f"""').replace(".show()", "")
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)  # the README's block, as written
    assert ns["version"] == "r1" == remote.RemoteOut(url).published()
    assert remote.RemoteOut(url).pinned() == f"{url}/_versions/r1"
    from_store = ns["result"].fetchall()
    sql = re.search(r'f"""(.*?)"""', block, re.S).group(1)
    sql = sql.replace("s3://uc-anon/out/_versions/{version}", str(disk / "current"))
    from_disk = duckdb.sql(sql).fetchall()
    assert from_store
    assert from_store == from_disk


def test_cdranon_run_takes_urls(store, tmp_path):
    """The command line, with the embedded Prefect server: landing zone and output root in the
    store, credentials and endpoint from the environment only."""
    fs, env = store
    landing = _upload_landing(fs, "e/landing")
    url = f"s3://{BUCKET}/e/out"
    run_env = {**os.environ, **env, "PREFECT_HOME": str(tmp_path / "prefect"),
               remote.CACHE_ENV: str(tmp_path / "cache")}  # fmt: skip
    cmd = [sys.executable, "-m", "anonymize", "run", "--landing", landing, "--out", url,
           "--dev-key", "--json"]  # fmt: skip
    done = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(done.stdout)
    assert doc["status"] == "published"
    assert fs.cat_file(f"{BUCKET}/e/out/CURRENT").decode() == doc["run_id"]
    assert "testing" not in done.stderr  # no credential in what the run prints
    again = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["status"] == "up_to_date"


def test_an_erasure_recorded_and_applied_on_the_store(store, policy, dev_keyring):
    """``forget`` and ``subjects`` take the URL: the request goes into the store's state, the
    next run applies it, and the published version holds none of the person's pseudonyms."""
    import csv

    import polars as pl
    from typer.testing import CliRunner

    from anonymize.cli import app
    from anonymize.subjects import pseudonyms_of

    fs, _ = store
    url = f"s3://{BUCKET}/f/out"
    landing = _upload_landing(fs, "f/landing")
    _run(landing, url, policy, dev_keyring, "r1")
    with (SAMPLE / "lync" / "2026-11-23" / "SessionDetailsView.csv").open(newline="") as f:
        ident = next(r["FromUri"] for r in csv.DictReader(f) if "@" in (r["FromUri"] or ""))
    mine = set(pseudonyms_of(ident, dev_keyring, policy))

    def holding(version: str) -> int:
        folder = f"{BUCKET}/f/out/_versions/{version}/restricted"
        n = 0
        for key in fs.find(folder):
            frame = pl.read_parquet(fs.cat_file(key))
            n += sum(frame[c].is_in(list(mine)).sum() for c, t in frame.schema.items()
                     if t == pl.String)  # fmt: skip
        return n

    assert holding("r1") > 0
    runner = CliRunner()
    done = runner.invoke(app, ["forget", "--out", url, "--id", ident, "--dev-key"])
    assert done.exit_code == 0, done.output
    listed = json.loads(runner.invoke(app, ["subjects", "--out", url, "--json"]).stdout)
    assert [r["state"] for r in listed["requests"]] == ["pending"]
    assert fs.exists(f"{BUCKET}/f/out/_subjects/requests.json")
    report = _run(landing, url, policy, dev_keyring, "r2")
    assert report["status"] == "published"
    assert remote.RemoteOut(url).published() == "r2"
    assert holding("r2") == 0
    listed = json.loads(runner.invoke(app, ["subjects", "--out", url, "--json"]).stdout)
    assert [r["state"] for r in listed["requests"]] == ["applied"]


@pytest.mark.slow
def test_the_flow_on_a_dask_cluster_whose_workers_share_only_the_store(
    store, prefect_harness, tmp_path, policy, dev_keyring
):
    """Worker processes get object keys, never the driver's paths: each fetches its file and
    what it needs from the store and stages back into it. Same bytes as a run on disk."""
    from distributed import LocalCluster

    from anonymize.flows.nightly import flow_for

    fs, _ = store
    landing = _upload_landing(fs, "g/landing")
    url = f"s3://{BUCKET}/g/out"
    with LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
        processes=True,
    ) as cluster:  # fmt: skip
        summary = flow_for(cluster.scheduler_address)(landing=landing, out=url, dev_key=True)
        tasks_done = cluster.scheduler.transition_counter
    assert tasks_done > 0
    assert summary["status"] == "published"
    assert not fs.exists(f"{BUCKET}/g/out/_staging")  # the workers' staging is cleared
    disk = tmp_path / "disk"
    run_local(_local_landing(tmp_path), disk, policy=policy, keyring=dev_keyring, run_id="d1")
    in_store, on_disk = _published_in_store(fs, url), _published_on_disk(disk)
    assert in_store.keys() == on_disk.keys()
    assert [k for k in in_store if in_store[k] != on_disk[k]] == []


def test_status_and_scan_take_urls(store, policy, dev_keyring):
    from typer.testing import CliRunner

    from anonymize.cli import app

    fs, _ = store
    url = f"s3://{BUCKET}/h/out"
    landing = _upload_landing(fs, "h/landing", without=(LATE,))
    _run(landing, url, policy, dev_keyring, "r1")
    fs.put_file(str(SAMPLE / LATE), f"{BUCKET}/h/landing/{LATE}")
    runner = CliRunner()
    status = runner.invoke(app, ["status", "--landing", landing, "--out", url, "--json"])
    assert status.exit_code == 0, status.output
    doc = json.loads(status.stdout)
    assert doc["out"] == url
    assert doc["to_read"] == [LATE]
    scan = runner.invoke(app, ["scan", "--landing", landing, "--out", url, "--json"])
    assert scan.exit_code == 0, scan.output
    assert json.loads(scan.stdout)["clean"] is True
    assert remote.RemoteOut(url).published() == "r1"  # read-only: nothing changed in the store


def test_a_landing_key_that_leaves_the_cache_is_refused(store, tmp_path):
    """A key with '..' would be copied outside the landing cache: the run refuses it."""
    fs, _ = store
    fs.pipe_file(f"{BUCKET}/i/landing/lync/../../escape.csv", b"x")
    assert any(".." in k for k in fs.find(f"{BUCKET}/i/landing"))
    with pytest.raises(StorageError, match=r"'\.\.'"):
        remote.sync_landing(f"s3://{BUCKET}/i/landing", tmp_path / "cache")
    assert not (tmp_path / "escape.csv").exists()


def test_local_copies_of_the_store_are_readable_by_their_owner_only(store, tmp_path):
    """The landing cache holds raw exports, the mirror pseudonymised events: no other user of
    the machine may read them."""
    fs, _ = store
    _upload_landing(fs, "j/landing")
    old = os.umask(0o022)  # a permissive default, as a shell may have
    try:
        cache = remote.sync_landing(f"s3://{BUCKET}/j/landing", tmp_path / "cache")
    finally:
        os.umask(old)
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert files
    assert all(p.stat().st_mode & 0o077 == 0 for p in files)
