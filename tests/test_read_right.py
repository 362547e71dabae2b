"""Inputs read right: slash dates in the file's own day/month order, log lines split where the
server split them, escapes decoded as the bytes they stand for, typed read failures.
"""

from __future__ import annotations

import errno
import re
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from anonymize.errors import InputError, TransientReadError, read_failure
from anonymize.parse import DateOrder, parse_datetime_series
from anonymize.policy import DEFAULT_POLICY, load_policy
from anonymize.sources.weblog import _unescape, split_lines
from tests.conftest import SAMPLE
from tests.test_pipeline import published, run_file

SESSIONS = SAMPLE / "lync" / "2026-11-23" / "SessionDetailsView.csv"
_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}:\d{2}:\d{2})(?:\.\d+)?")


def _rewrite(text: str, form: str, day: str | None = None) -> str:
    """The sample export with every datetime in ``form`` (to the second), its day set to ``day``."""

    def one(m: re.Match[str]) -> str:
        y, mo, d, t = m.group(1), m.group(2), day or m.group(3), m.group(4)
        return {
            "iso": f"{y}-{mo}-{d} {t}",
            "month_first": f"{mo}/{d}/{y} {t}",
            "day_first": f"{d}/{mo}/{y} {t}",
        }[form]

    return _ISO.sub(one, text)


def _stage(tmp_path: Path, text: str, name: str, policy) -> tuple[object, pl.DataFrame | None]:
    from anonymize.keys import KeyRing

    landing, out = tmp_path / name / "landing", tmp_path / name / "out"
    path = landing / "lync" / "SessionDetailsView.csv"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    result = run_file(path, landing, out, policy, KeyRing.development())
    if result.status != "processed":
        return result, None
    frame = published(out).drop("date", "region", strict=False)
    return result, frame.sort(frame.columns)


def _policy_with(tmp_path: Path, **organization) -> object:
    doc = yaml.safe_load(DEFAULT_POLICY.read_text())
    doc["organization"].update(organization)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_policy(path)


@pytest.mark.parametrize("form", ["month_first", "day_first"])
def test_a_slash_date_export_reads_as_its_iso_twin(tmp_path, policy, form):
    text = SESSIONS.read_text()
    _, iso = _stage(tmp_path, _rewrite(text, "iso"), "iso", policy)
    result, slashed = _stage(tmp_path, _rewrite(text, form), form, policy)
    assert result.status == "processed", result.reason
    assert slashed.equals(iso)


def test_an_export_whose_days_are_all_12_or_less_is_refused_unless_the_policy_says(
    tmp_path, policy
):
    text = _rewrite(SESSIONS.read_text(), "day_first", day="05")  # 05/11: May 11 or 5 Nov?
    result, _ = _stage(tmp_path, text, "ambiguous", policy)
    assert result.status == "refused"
    assert "do not show their order" in result.reason
    assert "organization.slash_dates" in result.reason

    day_first = _policy_with(tmp_path, slash_dates="day_first")
    _, iso = _stage(tmp_path, _rewrite(SESSIONS.read_text(), "iso", day="05"), "iso", day_first)
    result, frame = _stage(tmp_path, text, "told", day_first)
    assert result.status == "processed"
    assert frame.equals(iso)
    # The policy says month first, the file shows day first (a day above 12): refused.
    month_first = _policy_with(tmp_path, slash_dates="month_first")
    result, _ = _stage(tmp_path, _rewrite(SESSIONS.read_text(), "day_first"), "m", month_first)
    assert result.status == "refused"
    assert "day first" in result.reason


def test_a_file_that_shows_day_first_only_after_its_first_batch_is_read_again(tmp_path, policy):
    header, *rows = SESSIONS.read_text().splitlines()
    early = [_rewrite(r, "day_first", day="05") for r in rows] * (1200 // len(rows) + 1)
    late = [_rewrite(r, "day_first") for r in rows]
    text = "\n".join([header, *early, *late]) + "\n"
    iso_early = [_rewrite(r, "iso", day="05") for r in rows] * (1200 // len(rows) + 1)
    iso = "\n".join([header, *iso_early, *(_rewrite(r, "iso") for r in rows)]) + "\n"
    small = _policy_with(tmp_path, slash_dates="detect")
    small = type(small)(**{**small.__dict__, "batch_rows": 1000})
    result, frame = _stage(tmp_path, text, "late", small)
    assert result.status == "processed", result.reason
    _, expected = _stage(tmp_path, iso, "iso", small)
    assert frame.equals(expected)


@given(
    st.lists(
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1)).map(
            lambda d: d.replace(microsecond=0)
        ),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from(["month_first", "day_first"]),
    st.integers(1, 30),
)
def test_slash_dates_are_never_read_in_the_wrong_order(values, form, batch):
    """Split into batches as a reader would: either every value comes back as written, or the
    file is refused; a day and month are never swapped."""
    fmt = "%m/%d/%Y %H:%M:%S" if form == "month_first" else "%d/%m/%Y %H:%M:%S"
    raw = [v.strftime(fmt) for v in values]
    order = DateOrder()
    for _ in range(2):  # at most one restart, as stage.process_file does
        got: list = []
        try:
            for i in range(0, len(raw), batch):
                part = pl.Series(raw[i : i + batch])
                order.observe(part)
                got += parse_datetime_series(part, order=order.order).to_list()
            order.check_decided()
        except InputError as exc:
            if exc.date_order is None:
                assert all(v.day <= 12 and v.month <= 12 for v in values)  # refused: ambiguous
                return
            order = DateOrder(found=exc.date_order)
            continue
        assert got == values
        return
    raise AssertionError("read more than twice")


_LINE = st.text(
    alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=40
).filter(lambda t: not t.endswith("\r"))


@given(st.lists(_LINE, max_size=20), st.sampled_from(["\n", "\r\n"]))
def test_log_lines_split_at_newline_only(lines, end):
    text = "".join(line + end for line in lines)
    assert split_lines(text) == lines


def _apache_escape(text: str) -> str:
    """What Apache writes for a request: printable ASCII as is, '"' and '\\' escaped, every
    other byte of the UTF-8 text as \\xhh."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8"))
    return "".join(out)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_escaped_requests_decode_to_what_the_client_sent(text):
    assert _unescape(_apache_escape(text)) == text


@pytest.mark.parametrize(
    ("exc", "transient", "io"),
    [
        (TimeoutError(), True, True),
        (OSError(errno.ESTALE, "stale"), True, True),
        (FileNotFoundError(errno.ENOENT, "gone"), False, True),
        (PermissionError(errno.EACCES, "denied"), False, True),
        (EOFError(), False, False),
    ],
)
def test_read_failures_are_typed_not_matched_on_words(exc, transient, io):
    error = read_failure(exc)
    assert isinstance(error, TransientReadError) is transient
    assert error.io_error is io


def test_a_corrupt_gzip_log_is_refused_never_a_crash(tmp_path):
    import gzip

    from anonymize.sources.weblog import AccessLog

    line = '10.0.0.1 - - [23/Nov/2026:10:00:00 +0000] "GET /a HTTP/1.1" 200 5 "-" "curl/8"\n'
    base = gzip.compress((line * 20_000).encode())
    for where, message in ((len(base) // 2, "could not be read to its end"), (10, "cannot read")):
        data = bytearray(base)
        data[where : where + 64] = bytes(64)  # zeros in the deflate stream: zlib.error at 10
        path = tmp_path / f"access-{where}.log.gz"
        path.write_bytes(bytes(data))
        with pytest.raises(InputError) as exc:
            list(AccessLog.open(path).batches(1000))
        assert message in str(exc.value)
        assert "corrupt gzip data" in str(exc.value)
        assert exc.value.io_error is False  # the same bytes will not read better tomorrow


def test_an_endless_line_is_quarantined_without_being_held(tmp_path, policy, dev_keyring):
    """One line of 30 MB in a gzip of a few KB: quarantined as line_too_long (its text never
    kept), the lines around it published, every line accounted."""
    import gzip

    from anonymize.run import run_local

    good = '10.0.0.{i} - - [23/Nov/2026:10:00:0{i} +0000] "GET /help HTTP/1.1" 200 5 "-" "curl/8"\n'
    with gzip.open(tmp_path / "bomb.log.gz", "wb") as fh:
        fh.write(good.format(i=1).encode())
        fh.write(b'10.0.0.9 - - [23/Nov/2026:10:00:00 +0000] "GET /' + b"a" * 30_000_000)
        fh.write(b' HTTP/1.1" 200 5 "-" "curl/8"\n')
        fh.write(good.format(i=2).encode())
    landing = tmp_path / "landing" / "weblogs" / "EMEA"
    landing.mkdir(parents=True)
    (tmp_path / "bomb.log.gz").rename(landing / "access.log.gz")
    [result], _ = run_local(tmp_path / "landing", tmp_path / "out", policy=policy,
                            keyring=dev_keyring, run_id="r")  # fmt: skip
    assert result.status == "processed", result.reason
    assert (result.rows_read, result.rows_published) == (3, 2)
    assert result.rows_quarantined == {"line_too_long": 1}
    q = pl.read_parquet(tmp_path / "out" / "_quarantine" / "r" / "**" / "*.parquet")
    assert q["_raw_line"].to_list() == [None]
