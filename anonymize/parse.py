"""Typing of raw string columns by their contract, with a reason for every row that fails.

Typing is strict: a value that is present but does not parse makes the row go to quarantine with
the reason ``bad_value:<Column>``; a missing value in a non-nullable column gives
``missing_value:<Column>``. Nothing is nulled silently.

Accepted forms (what SSMS and PowerShell write): datetimes ``YYYY-MM-DD HH:MM:SS[.fff]`` (a ``T``
may separate date and time) and the slash dates of ``Export-Csv`` (``M/D/YYYY h:mm:ss AM`` in
en-US, ``DD/MM/YYYY HH:mm:ss`` in en-GB and most other locales), all naive UTC. The day/month
order of slash dates is a property of the file (``DateOrder``): found in its values or set by the
policy, never guessed per value;
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

from dataclasses import dataclass
from typing import Literal

import polars as pl

from anonymize.contracts import Contract
from anonymize.errors import InputError

REASON = "_reason"
_DT = pl.Datetime("ms")
_DATETIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%m/%d/%Y %I:%M:%S %p",  # slash dates: "%m/%d" is swapped for day-first files
    "%m/%d/%Y %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M:%S%.fZ",
    # With a UTC offset (Adobe Connect, Apache/nginx): converted to UTC, then naive.
    "%Y-%m-%dT%H:%M:%S%.f%:z",
    "%d/%b/%Y:%H:%M:%S %z",
)
_SLASH = r"^\s*\d{1,2}/\d{1,2}/\d{4}\b"
_SLASH_FORMATS = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S")
Order = Literal["month_first", "day_first"]


@dataclass
class DateOrder:
    """The day/month order of one file's slash dates.

    ``setting`` comes from the policy (``organization.slash_dates``). With ``detect``, the first
    value whose first or second part is above 12 decides; until then slash dates are read month
    first, and ``assumed`` says so: a later value that shows day-first makes the file be read
    again (InputError with ``date_order``), and a file that never shows its order is refused.
    A file whose values show both orders, or the other order than the policy's, is refused.
    """

    setting: Literal["detect", "month_first", "day_first"] = "detect"
    found: Order | None = None
    assumed: bool = False

    @property
    def order(self) -> Order:
        if self.setting != "detect":
            return self.setting
        return self.found or "month_first"

    def observe(self, raw: pl.Series) -> None:
        """Learn from one column of raw strings; raise InputError on a contradiction."""
        slashed = raw.filter(raw.str.contains(_SLASH)).str.strip_chars()
        if slashed.is_empty():
            return
        # A value is evidence only when it is a valid datetime in one order and not the other
        # (a bad value such as 23/11/2026 25:00 proves nothing: it is quarantined).
        month, day = (
            pl.DataFrame({f: slashed.str.strptime(_DT, f, strict=False) for f in fmts})
            .select(pl.any_horizontal(pl.all().is_not_null()))
            .to_series()
            for fmts in (_SLASH_FORMATS, [f.replace("%m/%d/", "%d/%m/") for f in _SLASH_FORMATS])
        )
        shows = {o for o, hit in (("day_first", (day & ~month).any()),
                                  ("month_first", (month & ~day).any())) if hit}  # fmt: skip
        if len(shows) == 2:
            raise InputError(
                "the file's slash dates show both orders (a day above 12 first in some, second "
                "in others); export with ISO dates (yyyy-mm-dd)"
            )
        if not shows:
            if (month & day).any():  # valid either way: read month first until the file says
                self.assumed = self.assumed or (self.setting == "detect" and self.found is None)
            return
        (shown,) = shows
        if self.setting != "detect" and shown != self.setting:
            raise InputError(
                f"the file's slash dates are {shown.replace('_', ' ')} (a day above 12 shows "
                f"it), but the policy's organization.slash_dates is {self.setting}"
            )
        if self.found is not None and shown != self.found:
            raise InputError("the file's slash dates change order part-way; export with ISO dates")
        if self.setting == "detect" and self.found is None:
            self.found = shown
            if self.assumed and shown == "day_first":  # earlier rows were read month first
                raise InputError("slash dates are day first: read again", date_order="day_first")

    def check_decided(self) -> None:
        """At the end of a file: refuse it if its slash dates never showed their order."""
        if self.assumed and self.found is None:
            raise InputError(
                "the file's slash dates do not show their order (every day and month is 12 or "
                "less); set organization.slash_dates in the policy to month_first (en-US "
                "exports) or day_first (en-GB, fr-FR ...)"
            )


def _formats(order: Order) -> tuple[str, ...]:
    if order == "month_first":
        return _DATETIME_FORMATS
    return tuple(f.replace("%m/%d/", "%d/%m/") for f in _DATETIME_FORMATS)


_GUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def parse_datetime_series(
    raw: pl.Series, first: pl.Series | None = None, order: Order = "month_first"
) -> pl.Series:
    """Parse naive-UTC datetime strings in any accepted form; null when none fits.

    The common form is tried on the whole column; each other form only while values are left.

    ``first`` is the column already parsed with the common form, when the caller has it;
    ``order`` the day/month order of its slash dates.
    """
    out = raw.str.strptime(_DT, _DATETIME_FORMATS[0], strict=False) if first is None else first
    if out.null_count() == raw.null_count():
        return out
    stripped = raw.str.strip_chars()
    for fmt in _formats(order):
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


def parse_decimal(expr: pl.Expr) -> pl.Expr:
    """A decimal as SQL Server writes it (``0.0123``; a comma as the decimal mark is accepted);
    null when it is not a number."""
    s = expr.str.strip_chars()
    s = pl.when(s.str.contains(r"^-?\d+,\d+$")).then(s.str.replace(",", ".")).otherwise(s)
    return s.cast(pl.Float64, strict=False)


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
    "decimal": parse_decimal,
    "guid": parse_guid,
    "string": lambda e: e,
}


def type_frame(
    contract: Contract, raw: pl.DataFrame, order: DateOrder | None = None
) -> pl.DataFrame:
    """Type every column of a raw string frame by its contract and add the ``_reason`` column.

    The raw header may use a column's alias; outputs carry the canonical names. Optional contract
    columns absent from the header come out as typed nulls. ``_reason`` is null for a good row.
    ``order`` is the file's slash-date order (one per file, kept across its batches).
    """
    order = order if order is not None else DateOrder()
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
            dtype = {"datetime": _DT, "bit": pl.Boolean, "int": pl.Int64,
                     "decimal": pl.Float64}.get(col.type, pl.String)  # fmt: skip
            exprs.append(pl.lit(None, dtype=dtype).alias(col.name))
        elif col.type == "datetime":
            if first[col.name].null_count() != raw[src].null_count():  # not all ISO: slashes?
                order.observe(raw[src])
            parsed = parse_datetime_series(raw[src], first[col.name], order.order)
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
