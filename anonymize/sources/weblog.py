"""Readers for web-server access logs: Apache/nginx (combined, common) and IIS W3C extended.

Lines are read in chunks (bounded memory) and parsed with polars regular expressions over the
whole chunk, not a Python loop per line. What no layout explains (a corrupted line, a line with
the wrong number of IIS fields, data before any ``#Fields:``) comes back as a rejected line with
a reason, never dropped.

Apache / nginx: the address field may be a host name, an IPv6 address, a vhost prefix
(``%v %h``), an X-Forwarded-For chain (``10.0.0.2, 10.0.0.1, 85.181.35.98``) or a quoted chain
before the address; the request line may be ``"-"`` or ``""``; trailing extra fields are kept in
``extra``; ``\\xhh`` escapes are decoded (on the unique values that have one).

IIS: a ``#Fields:`` directive may appear anywhere and changes the layout from there; ``-`` is
empty; values keep IIS's ``+`` for spaces (operators decide, e.g. ``user_agent`` with
``plus_is_space``); times are UTC.

Examples
--------
>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "access.log"
>>> _ = p.write_text('::1 - - [26/Dec/2016:16:16:29 +0200] "GET /a HTTP/1.1" 404 209\\n')
>>> log = AccessLog.open(p)
>>> log.format
'apache'
>>> [(c.good.height, c.rejected.height) for c in log.chunks()]
[(1, 0)]
"""

from __future__ import annotations

import codecs
import gzip
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from anonymize.contracts import safe_column_name
from anonymize.errors import InputError, read_failure
from anonymize.sources.base import RAW_LINE, REJECTED_SCHEMA, ROW, RawBatch

LINE = "_line"  # 1-based physical line number
RAW = "_raw_line"
# A line longer than this is quarantined as ``line_too_long`` without ever being held whole:
# a gzip of one endless line cannot take the memory of the machine.
MAX_LINE_BYTES = 1 << 20
_TOO_LONG = "\x00line_too_long\x00"
REASON = "_reason"

APACHE_COLUMNS = (
    "vhost", "forwarded_for", "client", "ident", "user", "time", "request", "method", "path",
    "protocol", "status", "bytes", "referer", "user_agent", "extra",
)  # fmt: skip

_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_APACHE = re.compile(
    r"^(?P<prefix>.*?) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    + _QUOTED.replace("(", "(?P<request>", 1)
    + r" (?P<status>\d{3}) (?P<bytes>\d+|-)"
    + r"(?: "
    + _QUOTED.replace("(", "(?P<referer>", 1)
    + r" "
    + _QUOTED.replace("(", "(?P<user_agent>", 1)
    + r")?(?P<extra>.*)$"
)
# The address part: "<first> <client>" where <first> is a vhost or an X-Forwarded-For chain
# (quoted or not); a bare chain ("a, b, c") is the client itself.
_PREFIX = r'^(?P<first>.*[^,\s])\s+(?P<client>[^\s,"]+)$'
_REQUEST = r"^(?P<method>[A-Za-z]+) (?P<path>\S+)(?: (?P<protocol>\S+))?$"
_ESCAPE = re.compile(r'((?:\\x[0-9a-fA-F]{2})+)|\\(["\\])|\\([nt])')


def _unescape(value: str) -> str:
    r"""Undo Apache's and nginx's escaping (``\xhh``, ``\"``, ``\\``, ``\n``, ``\t``).

    A run of ``\xhh`` escapes is the bytes of the original text: decoded as UTF-8 (what
    browsers send), never one character per byte.

    >>> _unescape(r"/people/Jos\xc3\xa9 \"x\"")
    '/people/José "x"'
    """

    def one(m: re.Match[str]) -> str:
        if m.group(1):
            raw = bytes.fromhex(m.group(1).replace("\\x", ""))
            return raw.decode("utf-8", errors="replace")
        if m.group(2):
            return m.group(2)
        return "\n" if m.group(3) == "n" else "\t"

    return _ESCAPE.sub(one, value)


def split_lines(text: str) -> list[str]:
    r"""Lines of a log as the server wrote them: split at ``\n`` only (a ``\r`` before it is
    dropped); ``\x85``, ``\u2028`` and form feeds inside a request stay in their line.

    >>> split_lines("a\x85b\u2028c\x0cd\r\ne\n")
    ['a\x85b\u2028c\x0cd', 'e']
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def line_blocks(fh, size: int, max_line: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The bytes of ``fh`` in blocks of whole lines (about ``size`` bytes each).

    A line longer than ``max_line`` bytes comes out as a marker line instead, and is skipped as
    it is read: memory stays within ``size + max_line`` whatever the lengths of the lines.

    >>> import io
    >>> [b.split(b"\\n") for b in line_blocks(io.BytesIO(b"ab\\n" + b"x" * 50 + b"\\ncd"), 8, 10)]
    [[b'ab', b''], [b'\\x00line_too_long\\x00', b''], [b'cd']]
    """
    marker = _TOO_LONG.encode() + b"\n"
    carry, skipping = b"", False
    while data := fh.read(size):
        out = []
        if skipping:
            cut = data.find(b"\n")
            if cut < 0:
                continue
            data, skipping = data[cut + 1 :], False
            out.append(marker)
        data = carry + data
        cut = data.rfind(b"\n") + 1
        whole, carry = data[:cut], data[cut:]
        if len(whole) > max_line and any(len(x) > max_line for x in whole.split(b"\n")):
            lines = whole.split(b"\n")
            whole = b"\n".join(marker[:-1] if len(x) > max_line else x for x in lines)
        if whole:
            out.append(whole)
        if len(carry) > max_line:
            carry, skipping = b"", True
        if out:
            yield b"".join(out)
    if skipping:
        yield marker
    elif carry:
        yield carry


@dataclass
class Chunk:
    """Parsed lines (strings, one column per field) and rejected lines (raw, with a reason)."""

    good: pl.DataFrame
    rejected: pl.DataFrame


def _rejected(lines: pl.DataFrame, reason: str | pl.Expr) -> pl.DataFrame:
    r = pl.lit(reason) if isinstance(reason, str) else reason
    return lines.select(pl.col(LINE), pl.col(RAW), r.alias(REASON))


def _empty_rejected() -> pl.DataFrame:
    return pl.DataFrame(schema={LINE: pl.Int64, RAW: pl.String, REASON: pl.String})


def parse_apache(lines: pl.DataFrame) -> Chunk:
    """Parse combined / common lines (with their variants) in one vectorised pass."""
    parsed = lines.with_columns(pl.col(RAW).str.extract_groups(_APACHE.pattern).alias("_m"))
    ok = pl.col("_m").struct.field("status").is_not_null()
    bad = _rejected(parsed.filter(~ok), "unparseable_line")
    g = parsed.filter(ok).select(pl.col(LINE), pl.col("_m").struct.unnest())
    prefix = pl.col("prefix").str.extract_groups(_PREFIX)
    first = prefix.struct.field("first")
    is_chain = first.str.contains(",") | first.str.starts_with('"')
    request = pl.col("request").str.extract_groups(_REQUEST)
    g = g.with_columns(
        pl.when(first.is_not_null() & ~is_chain).then(first).alias("vhost"),
        pl.when(is_chain).then(first.str.strip_chars('"')).alias("forwarded_for"),
        pl.coalesce(prefix.struct.field("client"), pl.col("prefix")).alias("client"),
        request.struct.field("method").alias("method"),
        request.struct.field("path").alias("path"),
        request.struct.field("protocol").alias("protocol"),
        pl.col("extra").str.strip_chars(),
    )
    # "-" and "" mean "no value" in every field of these formats.
    g = g.with_columns(
        pl.when(pl.col(c).is_in(["-", ""])).then(None).otherwise(pl.col(c)).alias(c)
        for c in APACHE_COLUMNS
    )
    escaped = [c for c in ("request", "path", "referer", "user_agent", "user") if c in g.columns]
    for c in escaped:
        col = g[c]
        has_escape = col.str.contains("\\", literal=True)
        if has_escape.any():
            uniq = col.filter(has_escape).unique()
            mapping = pl.DataFrame({"k": uniq, "v": [_unescape(v) for v in uniq.to_list()]})
            joined = g.select(pl.col(c).alias("k")).join(
                mapping, on="k", how="left", maintain_order="left"
            )
            g = g.with_columns(pl.coalesce(joined["v"], pl.col(c)).alias(c))
    return Chunk(g.select(LINE, *APACHE_COLUMNS), bad)


class _IisState:
    """The layout in force (the last ``#Fields:`` seen) and every layout seen before it."""

    def __init__(self) -> None:
        self.fields: list[str] | None = None
        self.seen: list[list[str]] = []

    def set(self, fields: list[str]) -> None:
        self.fields = fields
        self.seen = [f for f in self.seen if f != fields] + [fields]

    def layout_for(self, n: int) -> list[str] | None:
        """The most recent layout with ``n`` fields (files appended from other servers)."""
        return next((f for f in reversed(self.seen) if len(f) == n), None)


def parse_iis(lines: pl.DataFrame, state: _IisState) -> Chunk:
    """Parse W3C extended lines; each ``#Fields:`` starts a new layout for the lines after it."""
    raw = pl.col(RAW)
    lines = lines.with_columns(
        raw.str.starts_with("#").alias("_directive"),
        raw.str.starts_with("#Fields:").cum_sum().alias("_block"),
    )
    goods, bads = [], []
    for _, part in lines.group_by("_block", maintain_order=True):
        directives = part.filter(pl.col("_directive") & pl.col(RAW).str.starts_with("#Fields:"))
        for directive in directives[RAW]:
            state.set(directive.removeprefix("#Fields:").split())
        data = part.filter(~pl.col("_directive") & (pl.col(RAW).str.strip_chars() != ""))
        if not data.height:
            continue
        if not state.fields:
            bads.append(_rejected(data, "no_fields_directive"))
            continue
        split = data.with_columns(
            pl.col(RAW).str.strip_chars_end("\r").str.split(" ").alias("_p")
        ).with_columns(pl.col("_p").list.len().alias("_n"))
        # Lines of the layout in force first; a line with another count takes the most recent
        # earlier layout of that count, if any (logs appended from several servers).
        for (n,), group in split.group_by("_n", maintain_order=True):
            fields = state.fields if n == len(state.fields) else state.layout_for(n)
            if fields is None:
                bads.append(_rejected(group, "field_count"))
                continue
            goods.append(
                group.select(
                    pl.col(LINE),
                    *[
                        pl.col("_p").list.get(i).replace("-", None).alias(name)
                        for i, name in enumerate(fields)
                    ],
                )
            )
    good = (
        pl.concat(goods, how="diagonal").sort(LINE)
        if goods
        else pl.DataFrame(schema={LINE: pl.Int64})
    )
    bad = pl.concat(bads) if bads else _empty_rejected()
    return Chunk(good, bad)


@dataclass
class AccessLog:
    """An access log, sniffed: compression, encoding and format (``apache`` or ``iis``)."""

    path: Path
    gzip: bool
    encoding: str
    format: str
    known_fields: frozenset[str] | None = None  # IIS: the fields the contract knows

    @classmethod
    def open(cls, path: Path) -> AccessLog:
        path = Path(path)
        try:
            with open(path, "rb") as fh:
                is_gz = fh.read(2) == b"\x1f\x8b"
            with (gzip.open if is_gz else open)(path, "rb") as fh:
                head = fh.read(1 << 16)
        except (OSError, EOFError, zlib.error) as exc:
            raise read_failure(exc) from None
        if not head.strip():
            raise InputError("the file is empty")
        if b"\x00" in head:
            raise InputError("the file is binary, not an access log")
        encoding = "utf-8"
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 4:
                encoding = "cp1252"
        first = head.decode(encoding, errors="replace").lstrip("\ufeff").lstrip()
        if first.startswith(("#Software:", "#Version:", "#Date:", "#Fields:")):
            fmt = "iis"
        else:
            sample = split_lines(first)[:20]
            if not any(_APACHE.match(line) for line in sample):
                raise InputError(
                    "not an access log: no line of the first 20 is in the Apache/nginx "
                    "combined or common format, and there is no IIS #Fields directive"
                )
            fmt = "apache"
        return cls(path, is_gz, encoding, fmt)

    def chunks(self, lines_per_chunk: int = 200_000) -> Iterator[Chunk]:
        """Parse the file chunk by chunk, in order. Raises InputError if it breaks half-way."""
        state = _IisState()
        line_no = 0
        opener = gzip.open if self.gzip else open
        decoder = codecs.getincrementaldecoder(self.encoding)(errors="strict")
        try:
            with opener(self.path, "rb") as fh:
                for block in line_blocks(fh, lines_per_chunk * 256, MAX_LINE_BYTES):
                    text = decoder.decode(block)
                    lines = split_lines(text.lstrip("\ufeff") if line_no == 0 else text)
                    frame = pl.DataFrame(
                        {
                            LINE: pl.int_range(line_no + 1, line_no + len(lines) + 1, eager=True),
                            RAW: pl.Series(lines, dtype=pl.String),
                        }
                    )
                    line_no += len(lines)
                    too_long = frame.filter(pl.col(RAW) == _TOO_LONG)
                    frame = frame.filter(pl.col(RAW) != _TOO_LONG)
                    if self.format == "apache":
                        frame = frame.filter(pl.col(RAW).str.strip_chars() != "")
                        chunk = parse_apache(frame)
                    else:
                        chunk = parse_iis(frame, state)
                    if too_long.height:
                        rejected = _rejected(
                            too_long.with_columns(pl.lit(None, pl.String).alias(RAW)),
                            "line_too_long",
                        )
                        chunk = Chunk(chunk.good, pl.concat([chunk.rejected, rejected]))
                    yield chunk
        except UnicodeDecodeError:
            raise InputError(
                "the file could not be read to its end (UnicodeDecodeError)", bad_encoding=True
            ) from None
        except (OSError, EOFError, zlib.error) as exc:
            raise read_failure(exc, whole=True) from None

    def batches(self, batch_rows: int) -> Iterator[RawBatch]:
        """The file as reader batches: one String column per field, rejected lines with reasons.

        IIS ``date`` and ``time`` become one ``datetime`` column (``YYYY-MM-DD HH:MM:SS``, UTC).
        A line of a layout with a field the contract does not know (``known_fields``) is
        rejected as ``unknown_field:<name>``: default-deny holds line by line, since a layout can
        change anywhere in a file.
        """
        first = 1
        for chunk in self.chunks(batch_rows):
            good, rejected = chunk.good, [chunk.rejected]
            if self.format == "iis":
                good, unknown = _iis_to_contract(good, self.known_fields)
                rejected.append(unknown)
            bad = pl.concat(rejected).rename({LINE: ROW, RAW: RAW_LINE}).cast(REJECTED_SCHEMA)
            if self.format == "iis" and good.height:
                good = good.sort(LINE)
            yield RawBatch(
                frame=good.drop(LINE),
                first_row=first,
                rejected=bad,
                row_numbers=good[LINE].cast(pl.Int64),
            )
            first += good.height + bad.height


def _iis_to_contract(
    good: pl.DataFrame, known: frozenset[str] | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Merge ``date`` + ``time``; split off lines that carry a field the contract does not know."""
    if "date" in good.columns or "time" in good.columns:
        date = pl.col("date") if "date" in good.columns else pl.lit(None, dtype=pl.String)
        time = pl.col("time") if "time" in good.columns else pl.lit(None, dtype=pl.String)
        good = good.with_columns(pl.concat_str([date, time], separator=" ").alias("datetime")).drop(
            [c for c in ("date", "time") if c in good.columns]
        )
    unknown = [c for c in good.columns if c != LINE and known is not None and c not in known]
    if not unknown:
        return good, _empty_rejected()
    reason = pl.coalesce(
        pl.when(pl.col(c).is_not_null()).then(
            pl.lit(f"unknown_field:{safe_column_name(c, good.columns.index(c))}")
        )
        for c in unknown
    )
    marked = good.with_columns(reason.alias(REASON))
    bad = marked.filter(pl.col(REASON).is_not_null())
    # Rejected lines keep their fields as text, re-joined with spaces as IIS writes them.
    fields = [c for c in good.columns if c != LINE]
    bad = bad.select(
        pl.col(LINE),
        pl.concat_str([pl.col(c).fill_null("-") for c in fields], separator=" ").alias(RAW),
        pl.col(REASON),
    )
    return marked.filter(pl.col(REASON).is_null()).drop([REASON, *unknown]), bad
