"""Outputs: byte-identical reruns, metadata, and the README's reader snippets on a real output."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq

from anonymize.keys import KeyRing
from tests.test_leak import _run_library

ROOT = Path(__file__).resolve().parent.parent


def _files(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for area in ("restricted", "shareable")
        for p in sorted((out / area).rglob("*.parquet"))
    }


def test_reruns_are_byte_identical(synth_world, policy, dev_keyring, tmp_path):
    landing, _ = synth_world
    _run_library(landing, tmp_path / "a", policy, dev_keyring)
    _run_library(landing, tmp_path / "b", policy, dev_keyring)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) >= 6
    assert any(k.startswith("shareable") for k in a)  # the release's statistics too
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_another_key_gives_other_pseudonyms_and_says_so(synth_world, policy, tmp_path):
    landing, _ = synth_world
    _run_library(landing, tmp_path / "dev", policy, KeyRing.development())
    _run_library(landing, tmp_path / "real", policy, KeyRing(bytes(range(32))))
    f_dev = next((tmp_path / "dev" / "restricted").rglob("*.parquet"))
    f_real = tmp_path / "real" / f_dev.relative_to(tmp_path / "dev")
    dev, real = pq.read_table(f_dev), pq.read_table(f_real)
    assert dev["from_user"].to_pylist() != real["from_user"].to_pylist()
    assert dev["session_hour"].to_pylist() == real["session_hour"].to_pylist()
    meta_dev = pq.ParquetFile(f_dev).metadata.metadata
    meta_real = pq.ParquetFile(f_real).metadata.metadata
    assert meta_dev[b"cdranon.not_for_sharing"] == b"true"
    assert meta_real[b"cdranon.not_for_sharing"] == b"false"
    assert meta_dev[b"cdranon.key_id"] != meta_real[b"cdranon.key_id"]


def test_metadata_has_provenance_but_no_run_id_or_clock(synth_world, policy, dev_keyring, tmp_path):
    landing, _ = synth_world
    _run_library(landing, tmp_path, policy, dev_keyring)
    f = next((tmp_path / "restricted").rglob("*.parquet"))
    meta = {k.decode(): v.decode() for k, v in pq.ParquetFile(f).metadata.metadata.items()}
    assert meta["cdranon.policy_version"] == policy.version
    assert meta["cdranon.policy_hash"] == policy.hash
    assert meta["cdranon.key_id"] == dev_keyring.key_id
    assert meta["cdranon.schema_version"] == "1"
    assert re.fullmatch(r"[0-9a-f]{64}", meta["cdranon.inputs_digest"])
    assert "date" not in pq.read_schema(f).names  # partition keys only in directory names
    assert "region" not in pq.read_schema(f).names
    assert pq.ParquetFile(f).metadata.row_group(0).column(0).compression == "ZSTD"


def test_readme_reader_snippets_agree_on_row_count(
    synth_world, policy, dev_keyring, tmp_path, monkeypatch
):
    """Runs the README's Python block as written: polars, pyarrow, pandas and DuckDB."""
    landing, _ = synth_world
    _run_library(landing, tmp_path / "out", policy, dev_keyring)
    readme = (ROOT / "README.md").read_text()
    outputs = readme[readme.index("\n## Outputs") :]
    block = re.search(r"```python\n(.*?)```", outputs, re.S).group(1)
    block = block.replace(".show()", "")  # keep the query; do not print it
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    import duckdb

    n_duck = duckdb.sql(
        "SELECT count(*) FROM read_parquet('out/restricted/lync_sessions/**/*.parquet', "
        "hive_partitioning = true)"
    ).fetchall()[0][0]
    assert len(duckdb.sql(block.split('duckdb.sql("""')[1].split('""")')[0]).fetchall()) > 0
    assert ns["t"].num_rows == len(ns["df"]) == n_duck > 0
    assert str(ns["t"].schema.field("date").type) == "date32[day]"


def test_outputs_read_alike_in_every_reader_even_when_fully_suppressed(
    policy, dev_keyring, tmp_path
):
    """What analysts rely on: a statistic whose cells are all suppressed is still there (zero
    rows, its columns) for DuckDB, polars, pandas and pyarrow; counts are Int64; times UTC."""
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow.dataset as ds

    from anonymize.run import run_local
    from tests.conftest import SAMPLE

    out = tmp_path / "out"
    report: dict = {}
    run_local(SAMPLE, out, policy=policy, keyring=dev_keyring, run_id="r1", report=report)
    stats = report["releases"]["partner"]["statistics"]
    empty = [name for name, s in stats.items() if s["published"] == 0]
    assert empty, "the sample should have a fully suppressed statistic"
    for name in stats:
        folder = out / "shareable" / "partner" / name
        glob = f"{folder}/**/*.parquet"
        rows = {
            "duckdb": duckdb.sql(
                f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = true)"
            ).fetchall()[0][0],
            "polars": pl.read_parquet(folder, hive_partitioning=True).height,
            "pandas": len(pd.read_parquet(folder)),
            "pyarrow": ds.dataset(folder, partitioning="hive").count_rows(),
        }
        assert len(set(rows.values())) == 1, (name, rows)
        assert (rows["polars"] == 0) == (name in empty), (name, rows)
        frame = pl.read_parquet(folder, hive_partitioning=True)
        assert "people" in frame.columns
        counts = [c for c, t in frame.schema.items() if t.is_integer()]
        assert all(frame.schema[c] == pl.Int64 for c in counts), (name, frame.schema)
    restricted = pl.read_parquet(out / "restricted" / "lync_sessions", hive_partitioning=True)
    assert restricted.schema["session_hour"] == pl.Datetime("ms", "UTC")
    arrow = pq.read_schema(next((out / "restricted" / "lync_sessions").rglob("*.parquet")))
    assert str(arrow.field("session_hour").type) == "timestamp[ms, tz=UTC]"


def test_conference_joins_join_their_conference(policy, dev_keyring, tmp_path):
    """Per-conference questions: every join of the sample finds its conference through
    ``conference_key``, and the presenter is the organiser the conference names."""
    import polars as pl

    from anonymize.run import run_local
    from tests.conftest import SAMPLE

    out = tmp_path / "out"
    run_local(SAMPLE, out, policy=policy, keyring=dev_keyring, run_id="r1")
    confs = pl.read_parquet(out / "restricted" / "lync_conferences", hive_partitioning=True)
    joins = pl.read_parquet(out / "restricted" / "lync_conference_joins", hive_partitioning=True)
    assert joins.height > 0
    assert joins["conference_key"].null_count() == 0
    assert confs["conference_key"].n_unique() == confs.height
    matched = joins.join(confs.select("conference_key", "organizer"), on="conference_key")
    assert matched.height == joins.height
    presenters = matched.filter(pl.col("role") == "presenter")
    assert presenters.height > 0
    assert (presenters["user"] == presenters["organizer"]).all()
    assert all(k.startswith("m-") for k in confs["conference_key"])
    # The run's HTML report shows its details as HTML tables, not Markdown in a <pre>.
    [page] = (out / "_manifests").glob("*.html")
    details = page.read_text().split("<section id='details'>", 1)[1]
    assert details.count("<table>") >= 3
    assert "<pre>" not in details
    assert "|---|" not in details


def _release_bytes(root: Path) -> dict[str, bytes]:
    """Every file a recipient of ``partner`` holds, read through ``root`` as a reader would."""
    folder = root / "shareable" / "partner"
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


def test_a_reader_during_a_republish_sees_one_whole_version(
    tmp_path, policy, dev_keyring, monkeypatch
):
    """A late file republishes a day. A reader that opens the output while the new version is
    being built (everything written, the pointer not yet moved) reads the previous version
    whole; one that pinned the version before (``realpath`` of ``current``) keeps reading it
    after the switch; the next reader reads the new one, datasheet included."""
    import os

    import anonymize.publish as publish
    from anonymize.run import run_local
    from tests.conftest import SAMPLE
    from tests.test_incremental import LATE, landing_from_sample

    landing, out = landing_from_sample(tmp_path, without=(LATE,)), tmp_path / "out"
    run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r1")
    first = _release_bytes(out)
    pinned = Path(os.path.realpath(out / "current"))
    seen_mid_publish: list[dict[str, bytes]] = []
    real_fsync_tree = publish._fsync_tree

    def reader_during_publish(root: Path) -> None:
        real_fsync_tree(root)  # the new version is complete on disk, not yet published
        seen_mid_publish.append(_release_bytes(out))

    monkeypatch.setattr(publish, "_fsync_tree", reader_during_publish)
    (landing / LATE).parent.mkdir(parents=True, exist_ok=True)
    (landing / LATE).write_bytes((SAMPLE / LATE).read_bytes())
    run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r2")
    assert seen_mid_publish == [first]
    assert _release_bytes(pinned) == first  # the pinned version is still there, unchanged
    second = _release_bytes(out)
    assert second != first
    assert Path(os.path.realpath(out / "current")).name == "r2"
    assert second["DATASHEET.json"] != first["DATASHEET.json"]
