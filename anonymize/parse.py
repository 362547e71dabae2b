"""Typing of raw string columns by their contract, with a reason for every row that fails.

Typing is strict: a value that is present but does not parse makes the row go to quarantine with
the reason ``bad_value:<Column>``; a missing value in a non-nullable column gives
``missing_value:<Column>``. Nothing is nulled silently.

Accepted forms (what SSMS and PowerShell write): datetimes ``YYYY-MM-DD HH:MM:SS[.fff]`` (a ``T``
may separate date and time) and the en-US ``M/D/YYYY h:mm:ss AM`` of ``Export-Csv``, all naive UTC;
ISO 8601 with an offset (Adobe Connect) and ``10/Oct/2000:13:55:36 -0700`` (Apache, nginx),
converted to UTC;
bits ``0``/``1``/``True``/``False``; GUIDs in either case, with or without braces.

Examples
--------
>>> import polars as pl
>>> raw = pl.Series(["2024-03-01 09:41:07.250", "3/1/2024 9:41:07 AM", "x"])
>>> parse_datetime_series(raw).to_list()
[datetime.datetime(2024, 3, 1, 9, 41, 7, 250000), datetime.datetime(2024, 3, 1, 9, 41, 7), None]
>>> parse_datetime_series(pl.Series(["2024-03-01T02:41:07.250-07:00"])).to_list()
[datetime.datetime(2024, 3, 1, 9, 41, 7, 250000)]
"""

from __future__ import annotations

import polars as pl

from anonymize.contracts import Contract

REASON = "_reason"
_DT = pl.Datetime("ms")
_DATETIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M:%S%.fZ",
    # With a UTC offset (Adobe Connect, Apache/nginx): converted to UTC, then naive.
    "%Y-%m-%dT%H:%M:%S%.f%:z",
    "%d/%b/%Y:%H:%M:%S %z",
)
_GUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def parse_datetime_series(raw: pl.Series, first: pl.Series | None = None) -> pl.Series:
    """Parse naive-UTC datetime strings in any accepted form; null when none fits.

    The common form is tried on the whole column; each other form only while values are left.

    ``first`` is the column already parsed with the common form, when the caller has it.
    """
    out = raw.str.strptime(_DT, _DATETIME_FORMATS[0], strict=False) if first is None else first
    if out.null_count() == raw.null_count():
        return out
    stripped = raw.str.strip_chars()
    for fmt in _DATETIME_FORMATS:
        missing = out.is_null() & raw.is_not_null()
        if not missing.any():
            break
        parsed = stripped.str.strptime(_DT, fmt, strict=False)
        if "%z" in fmt or "%:z" in fmt:
            parsed = parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        out = out.zip_with(~missing, parsed)
    return out


def parse_bit(expr: pl.Expr) -> pl.Expr:
    """``1``/``true`` to True, ``0``/``false`` to False (any case); anything else null."""
    s = expr.str.strip_chars().str.to_lowercase()
    return (
        pl.when(s.is_in(["1", "true"]))
        .then(True)
        .when(s.is_in(["0", "false"]))
        .then(False)
        .otherwise(None)
    )


def parse_int(expr: pl.Expr) -> pl.Expr:
    return expr.str.strip_chars().cast(pl.Int64, strict=False)


def parse_guid(expr: pl.Expr) -> pl.Expr:
    """Lower-case a GUID and strip braces; null when it is not a GUID."""
    s = expr.str.strip_chars().str.strip_chars("{}").str.to_lowercase()
    return pl.when(s.str.contains(_GUID)).then(s).otherwise(None)


_IP = r"^(?:\d{1,3}(?:\.\d{1,3}){3}|\[?[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]?(?:%[\w.\-]+)?)$"


def parse_ip(expr: pl.Expr) -> pl.Expr:
    """An IPv4 or IPv6 address as written (brackets and zone allowed); null when it is not one.

    A shape check, vectorised; ``generalize_ip`` validates each unique value with ``ipaddress``.
    """
    s = expr.str.strip_chars()
    return pl.when(s.str.contains(_IP)).then(s).otherwise(None)


_PARSERS = {
    "ip": parse_ip,
    "bit": parse_bit,
    "int": parse_int,
    "guid": parse_guid,
    "string": lambda e: e,
}


def type_frame(contract: Contract, raw: pl.DataFrame) -> pl.DataFrame:
    """Type every column of a raw string frame by its contract and add the ``_reason`` column.

    The raw header may use a column's alias; outputs carry the canonical names. Optional contract
    columns absent from the header come out as typed nulls. ``_reason`` is null for a good row.
    """
    aliases = contract.aliases
    present = {aliases[h]: h for h in raw.columns}
    # Datetimes: every column in the common form at once (in parallel); fallbacks per column.
    dt_cols = {
        c.name: present[c.name]
        for c in contract.columns
        if c.type == "datetime" and c.name in present
    }
    first = raw.select(
        pl.col(src).str.strptime(_DT, _DATETIME_FORMATS[0], strict=False).alias(name)
        for name, src in dt_cols.items()
    )
    exprs: list[pl.Expr] = []
    for col in contract.columns:
        src = present.get(col.name)
        if src is None:
            dtype = {"datetime": _DT, "bit": pl.Boolean, "int": pl.Int64}.get(col.type, pl.String)
            exprs.append(pl.lit(None, dtype=dtype).alias(col.name))
        elif col.type == "datetime":
            parsed = parse_datetime_series(raw[src], first[col.name])
            exprs.append(pl.lit(parsed).alias(col.name))
        else:
            exprs.append(_PARSERS[col.type](pl.col(src)).alias(col.name))
    typed = raw.select(exprs)
    # Raw and typed side by side (zero-copy) to find values that were present but did not parse.
    both = pl.concat([raw.select(pl.all().name.prefix("__raw__")), typed], how="horizontal")
    reasons: list[pl.Expr] = []
    for col in contract.columns:
        src = present.get(col.name)
        if src is None:
            continue
        raw_col = pl.col(f"__raw__{src}")
        # Column-level null counts are free: only columns where typing lost a value need a check.
        if col.type != "string" and typed[col.name].null_count() != raw[src].null_count():
            bad = raw_col.is_not_null() & pl.col(col.name).is_null()
            reasons.append(pl.when(bad).then(pl.lit(f"bad_value:{col.name}")))
        if not col.nullable and raw[src].null_count():
            reasons.append(pl.when(raw_col.is_null()).then(pl.lit(f"missing_value:{col.name}")))
    if not reasons:
        return typed.with_columns(pl.lit(None, dtype=pl.String).alias(REASON))
    reason = both.select(pl.coalesce(reasons).cast(pl.String).alias(REASON)).to_series()
    return typed.with_columns(reason)
