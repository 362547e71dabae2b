"""process_file end to end on files: golden sample, export variants, quarantine, conservation."""

from __future__ import annotations

import csv
import gzip
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from anonymize.identifiers import normalize_identifier, pseudonym
from anonymize.publish import publish_partitions
from anonymize.run import run_local
from anonymize.stage import process_file
from tests.conftest import SAMPLE

GOLDEN = Path(__file__).parent / "golden"


def run_file(path: Path, landing: Path, out: Path, policy, keyring, **kw):
    result = process_file(
        path,
        family="lync",
        policy=policy,
        keyring=keyring,
        staging=out / "_staging" / "t",
        quarantine=out / "_quarantine" / "t",
        landing=landing,
        **kw,
    )
    return result


def published(out: Path) -> pl.DataFrame:
    publish_partitions(out / "_staging" / "t", out, "t")
    return pl.read_parquet(out / "restricted" / "lync_sessions", hive_partitioning=True)


def test_golden_sample(tmp_path, policy, dev_keyring):
    src = GOLDEN / "lync" / "2026-11-23" / "SessionDetailsView.csv"
    r = run_file(src, GOLDEN, tmp_path, policy, dev_keyring)
    assert r.status == "processed"
    assert r.contract == "lync_session_details_view"
    assert r.rows_read == 6
    assert r.rows_published == 4
    assert r.rows_quarantined == {"bad_value:SessionIdTime": 1, "unmapped_pool": 1}
    assert r.balanced
    df = published(tmp_path).sort("session_hour", "setup_s")
    expected = pl.read_csv(GOLDEN / "expected_lync_sessions.csv", try_parse_dates=True)
    got = df.with_columns(
        pl.col("date").cast(pl.Date),
        pl.col("modalities").list.join("|"),
        pl.col("session_hour").cast(pl.Datetime("us", "UTC")),
    ).select(expected.columns)
    # The expected CSV writes UTC times without an offset, as the CDRs do.
    expected = expected.with_columns(
        pl.col("session_hour").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    )
    assert (
        got.sort("session_hour", "setup_s").to_dicts()
        == expected.sort("session_hour", "setup_s").to_dicts()
    )

    # Pseudonyms: one person in three spellings is one pseudonym; equal to the HMAC oracle.
    def pid(raw: str) -> str:
        kind, norm = normalize_identifier(raw)
        return pseudonym(dev_keyring.derive(f"pseudonym/restricted/{kind}"), kind, norm)

    grace, alan = pid("grace.hopper@contoso.com"), pid("alan.turing@contoso.com")
    rows = df.sort("session_hour", "setup_s").to_dicts()
    assert [r["from_user"] for r in rows] == [pid("ada.lovelace@fabrikam.com"), grace, grace, alan]
    assert rows[3]["to_user"] == grace
    assert rows[1]["to_user"] == alan
    assert rows[2]["to_user"] == pid("tel:+14255550100")
    assert rows[2]["to_user"].startswith("p-")
    # The quarantine keeps the raw rows, with their reasons, for the restricted eyes only.
    q = pl.read_parquet(tmp_path / "_quarantine" / "t" / "lync_sessions")
    assert sorted(q["_reason"].to_list()) == ["bad_value:SessionIdTime", "unmapped_pool"]


def _rewrite(
    src: Path, dst: Path, *, transform=None, header=None, preamble="", encoding="utf-8", gz=False
):
    rows = list(csv.reader(src.open(newline="")))
    head, body = rows[0], rows[1:]
    if transform:
        body = [transform(dict(zip(head, r, strict=True))) for r in body]
        body = [[r[h] for h in head] for r in body]
    if header:
        head = header(head)
    import io

    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    w.writerow(head)
    w.writerows(body)
    data = (preamble + buf.getvalue()).encode(encoding)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(gzip.compress(data) if gz else data)
    return dst


def _export_csv_style(row: dict) -> dict:
    """What Windows PowerShell Export-Csv makes of a row: en-US times, True/False, empty null."""
    from datetime import datetime

    out = {}
    for k, v in row.items():
        if v == "NULL":
            v = ""
        elif k.endswith("Time") and v[:4].isdigit() and "-" in v:
            try:
                d = datetime.strptime(v, "%Y-%m-%d %H:%M:%S.%f")
                v = f"{d.month}/{d.day}/{d.year} {d.strftime('%I').lstrip('0')}:{d:%M:%S %p}"
            except ValueError:
                pass
        elif k.startswith("Is") and v in ("0", "1"):
            v = "True" if v == "1" else "False"
        out[k] = v
    return out


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("utf8-bom.csv", {"preamble": "\ufeff"}),
        (
            "export-csv.csv",
            {"preamble": "#TYPE System.Data.DataRow\r\n", "transform": _export_csv_style},
        ),
        ("utf16.csv", {"encoding": "utf-16", "transform": _export_csv_style}),
        ("plain.csv.gz", {"gz": True}),
        ("no-extension", {}),
    ],
)
def test_export_variants_give_the_same_rows(tmp_path, policy, dev_keyring, name, kwargs):
    src = GOLDEN / "lync" / "2026-11-23" / "SessionDetailsView.csv"
    landing = tmp_path / "landing"
    path = _rewrite(src, landing / "lync" / name, **kwargs)
    r = run_file(path, landing, tmp_path / "out", policy, dev_keyring)
    assert r.status == "processed", r.reason
    assert r.rows_published == 4
    assert r.balanced
    df = published(tmp_path / "out")
    assert df["from_user"].n_unique() == 3
    assert sorted(df["session_hour"].dt.hour().to_list()) == [2, 9, 14, 14]


def test_ragged_rows_and_bad_values_are_quarantined_not_lost(tmp_path, policy, dev_keyring):
    src = GOLDEN / "lync" / "2026-11-23" / "SessionDetailsView.csv"
    lines = src.read_text().splitlines()
    lines.insert(2, lines[1] + ",EXTRA")  # one field too many
    lines.insert(3, ",".join(lines[1].split(",")[:10]))  # far too few
    bad = lines[1].split(",")
    bad[1] = "one"  # SessionIdSeq not an integer
    lines.append(",".join(bad))
    landing = tmp_path / "landing"
    path = landing / "lync" / "x.csv"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")
    r = run_file(path, landing, tmp_path / "out", policy, dev_keyring)
    assert r.rows_read == 9
    assert r.rows_quarantined == {
        "bad_value:SessionIdSeq": 1,
        "bad_value:SessionIdTime": 1,
        "ragged_row": 2,
        "unmapped_pool": 1,
    }
    assert r.rows_published == 4
    assert r.balanced
    q = pl.read_parquet(tmp_path / "out" / "_quarantine" / "t" / "lync_sessions")
    assert q.filter(pl.col("_reason") == "ragged_row")["_raw_line"].null_count() == 0


def test_truncated_gzip_is_refused_whole_and_leaves_nothing(
    tmp_path, policy, dev_keyring, synth_world
):
    landing, _ = synth_world
    src = next(landing.rglob("VoIPDetailsView.csv.gz"))
    data = src.read_bytes()
    broken = tmp_path / "landing" / "lync" / "cut.csv.gz"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(data[: len(data) // 2])
    r = run_file(broken, tmp_path / "landing", tmp_path / "out", policy, dev_keyring)
    assert r.status == "refused"
    assert "could not be read to its end" in r.reason
    assert r.rows_read == 0
    assert r.partitions == []
    assert not list((tmp_path / "out").rglob("*.parquet"))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"\x00\x01\x02binary\x00" * 10, "binary"),
        (b"SessionIdTime,Mood\n2026-11-23 00:00:00.000,happy\n", "missing column"),
        (b"2026-11-23 09:00:00.000,1,alice@contoso.com,bob@contoso.com,x,y,z\n", "looks like data"),
    ],
)
def test_unreadable_or_unknown_files_are_refused_with_a_reason(
    tmp_path, policy, dev_keyring, content, reason
):
    path = tmp_path / "lync" / "f.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    r = run_file(path, tmp_path, tmp_path / "out", policy, dev_keyring)
    assert r.status == "refused"
    assert reason in r.reason
    assert "alice" not in r.reason


def test_voip_rows_beat_session_rows_of_the_same_session(
    tmp_path, policy, dev_keyring, synth_world
):
    landing, _ = synth_world
    day = sorted((landing / "lync").iterdir())[0]
    out = tmp_path / "out"
    voip = run_file(day / "VoIPDetailsView.csv.gz", landing, out, policy, dev_keyring)
    sess = run_file(
        day / "SessionDetailsView.csv",
        landing,
        out,
        policy,
        dev_keyring,
        skip_keys=[voip.keys_path],
    )
    assert voip.rows_published > 0
    assert sess.rows_filtered == {"duplicate_session": voip.rows_published}
    assert sess.balanced
    assert voip.balanced
    df = published(out)
    assert df.height == sess.rows_read  # every session once
    assert df.filter(pl.col("from_phone").is_not_null()).height == voip.rows_published


def test_a_file_copied_twice_is_counted_once(tmp_path, policy, dev_keyring):
    from anonymize.layout import discover
    from anonymize.plan import plan_inputs

    landing = tmp_path / "landing"
    src = GOLDEN / "lync" / "2026-11-23" / "SessionDetailsView.csv"
    for name in ("a/export.csv", "b/export-copy.csv"):
        (landing / "lync" / name).parent.mkdir(parents=True)
        (landing / "lync" / name).write_bytes(src.read_bytes())
    planned = plan_inputs(discover(landing), policy)
    assert [p.duplicate_of for p in planned] == [None, planned[0].path]
    results = [
        run_file(
            Path(p.path),
            landing,
            tmp_path / "out",
            policy,
            dev_keyring,
            sha256=p.sha256,
            duplicate_of=p.duplicate_of,
        )
        for p in planned
    ]
    assert results[0].status == "processed"
    assert results[1].status == "refused"
    assert "same content as lync/a/export.csv" in results[1].reason
    assert published(tmp_path / "out").height == 4


@pytest.mark.parametrize("filler_rows", [0, 400])
def test_ansi_code_page_exports_are_read(tmp_path, policy, dev_keyring, filler_rows):
    """SSMS can save in the ANSI code page: a name with accents is not valid UTF-8."""
    src = GOLDEN / "lync" / "2026-11-23" / "SessionDetailsView.csv"
    lines = src.read_text().splitlines()
    filler = [lines[1]] * filler_rows  # pushes the accented row past the 64 KiB sniff
    accented = lines[1].replace("Grace.Hopper@contoso.com", "José.Núñez@contoso.com")
    text = "\r\n".join([lines[0], *filler, accented, *lines[2:]]) + "\r\n"
    path = tmp_path / "landing" / "lync" / "ansi.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(text.encode("cp1252"))
    r = run_file(path, tmp_path / "landing", tmp_path / "out", policy, dev_keyring)
    assert r.status == "processed", r.reason
    assert r.rows_published == 4 + filler_rows
    df = published(tmp_path / "out")
    kind, norm = normalize_identifier("josé.núñez@contoso.com")
    want = pseudonym(dev_keyring.derive(f"pseudonym/restricted/{kind}"), kind, norm)
    assert want in df["from_user"].to_list()


@given(
    st.lists(
        st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1)).map(
            lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
        ),
        min_size=1,
        max_size=20,
    ),
    st.data(),
)
def test_datetime_forms_parse_to_the_same_instant(values, data):
    """ISO with or without ms or T, and en-US Export-Csv (to the second), mixed in one column."""
    from anonymize.parse import parse_datetime_series

    forms = [
        lambda d: d.strftime("%Y-%m-%d %H:%M:%S.") + f"{d.microsecond // 1000:03d}",
        lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}",
        lambda d: f"{d.month}/{d.day}/{d.year} {d.hour % 12 or 12}:{d:%M:%S} {d:%p}",
    ]
    picks = [data.draw(st.integers(0, 2)) for _ in values]
    raw = pl.Series([forms[i](v) for i, v in zip(picks, values, strict=True)])
    got = parse_datetime_series(raw).to_list()
    for v, i, g in zip(values, picks, got, strict=True):
        assert g == (v.replace(microsecond=0) if i == 2 else v)


def test_quoted_newlines_and_blank_runs_survive_chunking(tmp_path):
    """Chunks are cut only at line ends outside quotes, whatever the chunk size."""
    from anonymize.sources.csvfile import CsvFile

    rows = [f'{i},"multi\nline, with ""quotes"" {i}",x' for i in range(300)]
    text = "A,B,C\n" + "\n".join(rows[:150]) + "\n\n\n" + "\n".join(rows[150:]) + "\n"
    path = tmp_path / "q.csv"
    path.write_text(text)
    for chunk_bytes in (64, 1000, 1 << 20):
        frames = [b.frame for b in CsvFile.open(path).batches(70, chunk_bytes=chunk_bytes)]
        df = pl.concat(frames)
        assert df.height == 300
        assert df["B"][7] == 'multi\nline, with "quotes" 7'
        assert [f.height for f in frames] == [70, 70, 70, 70, 20]


def test_a_quoted_value_longer_than_a_chunk(tmp_path):
    from anonymize.sources.csvfile import CsvFile

    long = "x\n" * 500
    path = tmp_path / "long.csv"
    path.write_text(f'A,B\n1,"{long}"\n2,y\n')
    df = pl.concat(b.frame for b in CsvFile.open(path).batches(10, chunk_bytes=64))
    assert df["A"].to_list() == ["1", "2"]
    assert df["B"][0] == long


def test_one_run_at_a_time_and_a_dead_runs_lock_is_recovered(tmp_path, policy, dev_keyring):
    import json
    import os
    import shutil

    from anonymize.errors import RunRefused
    from anonymize.layout import LOCK, STAGING, TRASH
    from anonymize.publish import RunLock

    landing = tmp_path / "landing"
    shutil.copytree(SAMPLE / "lync", landing / "lync")
    out = tmp_path / "out"
    run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r1")
    part = next((out / "restricted" / "lync_sessions").glob("date=*/region=*"))
    before = sorted(p.read_bytes() for p in part.glob("*.parquet"))

    # A live owner: refused, naming its run.
    with RunLock(out, "other"), pytest.raises(RunRefused, match="in use by run other"):
        run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r2")

    # A run killed between the two renames of a swap: its partition sits in the trash only,
    # its staging and a lock of a process that no longer exists are left behind.
    rel = part.relative_to(out)
    (out / TRASH / "dead" / rel).parent.mkdir(parents=True)
    os.replace(part, out / TRASH / "dead" / rel)
    (out / STAGING / "dead" / "x").mkdir(parents=True)
    dead_pid = 2**22 + 12345  # above pid_max here: no such process
    (out / LOCK).write_text(json.dumps({"host": os.uname().nodename, "pid": dead_pid,
                                        "run_id": "dead"}))  # fmt: skip
    with RunLock(out, "r3") as lock:
        assert lock.recovered == [rel.as_posix()]
        assert sorted(p.read_bytes() for p in part.glob("*.parquet")) == before
        assert not (out / TRASH / "dead").exists()
        assert not (out / STAGING).exists()
    assert not (out / LOCK).exists()
    # And the next run completes: nothing is new, so it publishes nothing; asked to reprocess,
    # it rebuilds every partition.
    results, published = run_local(landing, out, policy=policy, keyring=dev_keyring, run_id="r4")
    assert (results, published) == ([], [])
    results, published = run_local(
        landing, out, policy=policy, keyring=dev_keyring, run_id="r5", reprocess=True
    )
    assert published
    assert all(r.status == "processed" for r in results)
