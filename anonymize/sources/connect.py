"""Reader for Adobe Connect web-services report responses (``/api/xml?action=report-...``).

A response is ``<results><status code="ok"/><report-NAME><row .../>...</report-NAME></results>``.
Each ``row`` becomes one record: its attributes and its child elements, by name (``sco-id``,
``login``, ``date-created`` ...). Elements may be absent (``date-end`` while someone is still in
the room); they come out as nulls. The report element names the kind of report, so the contract
is chosen by it, not by the fields of the first rows.

Parsing is safe: the file is refused if it declares a DTD or entities, and lxml runs with entity
resolution, DTD loading and network access off. It streams (``iterparse``), clearing each row
after use, so memory is bounded by the batch. XML leaves no choice but a Python step per row to
turn elements into fields; everything after that is polars.

Examples
--------
>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "r.xml"
>>> _ = p.write_text('<results><status code="ok"/><report-meeting-sessions>'
...     '<row sco-id="1" asset-id="2" num-participants="3"><date-created>2024-01-01T10:00:00.000'
...     '-07:00</date-created></row></report-meeting-sessions></results>')
>>> x = ConnectXml.open(p)
>>> x.report
'report-meeting-sessions'
>>> x.known_fields = frozenset({"sco-id", "asset-id", "num-participants", "date-created"})
>>> [b.frame.row(0) for b in x.batches(100)]
[('2', '2024-01-01T10:00:00.000-07:00', '3', '1')]
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from lxml import etree

from anonymize.contracts import safe_column_name
from anonymize.errors import InputError, read_failure
from anonymize.sources.base import REJECTED_SCHEMA, RawBatch

_SNIFF = 1 << 16
_DTD = re.compile(rb"<!(DOCTYPE|ENTITY)", re.IGNORECASE)


def looks_like_xml(head: bytes) -> bool:
    """True when the first non-blank character (after a byte-order mark) is ``<``."""
    return head.lstrip(b"\xef\xbb\xbf").lstrip()[:1] == b"<"


def _opener(path: Path):
    with open(path, "rb") as fh:
        is_gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open if is_gz else open


def _parser_args() -> dict:
    return {
        "resolve_entities": False,
        "load_dtd": False,
        "no_network": True,
        "huge_tree": False,
        "remove_comments": True,
    }


@dataclass
class ConnectXml:
    """A Connect report response, sniffed: which report it is and whether it says ``ok``."""

    path: Path
    report: str
    encoding: str = "utf-8"  # the XML declaration decides; kept for the pipeline's retry logic
    known_fields: frozenset[str] | None = None

    @classmethod
    def open(cls, path: Path) -> ConnectXml:
        path = Path(path)
        try:
            opener = _opener(path)
            with opener(path, "rb") as fh:
                head = fh.read(_SNIFF)
        except (OSError, EOFError, zlib.error) as exc:
            raise read_failure(exc) from None
        if not looks_like_xml(head):
            raise InputError("not an XML document")
        if _DTD.search(head):
            raise InputError(
                "the XML declares a DTD or entities; Connect responses have none, and they are "
                "refused so that no entity can be expanded"
            )
        report = status = None
        try:
            with opener(path, "rb") as fh:
                for event, el in etree.iterparse(fh, events=("start",), **_parser_args()):
                    depth = sum(1 for _ in el.iterancestors())
                    if depth == 0 and el.tag != "results":
                        raise InputError(
                            "not a Connect web-services response (the root element is not results)"
                        )
                    if depth == 1 and el.tag == "status":
                        status = el.get("code")
                    elif depth == 1:
                        report = str(el.tag)
                        break
                    del event
        except etree.XMLSyntaxError:
            if report is None:
                raise InputError("the XML is not well-formed before its first report row") from None
        except (OSError, EOFError, zlib.error) as exc:
            raise read_failure(exc) from None
        if status not in ("ok", "no-data"):
            shown = status if status and re.fullmatch(r"[a-z\-]{1,40}", status) else "missing"
            raise InputError(f"the response's status is {shown}, not ok: it holds no report")
        if report is None:
            report = "empty"
        return cls(path, report)

    def batches(self, batch_rows: int) -> Iterator[RawBatch]:
        """Rows as String records (attributes and child elements), ``batch_rows`` at a time.

        A row with a field the contract does not know (``known_fields``) is rejected as
        ``unknown_field:<name>``, with its XML text, for the quarantine. Raises InputError when
        the document breaks (truncated, not well-formed).
        """
        known = sorted(self.known_fields or ())
        schema = dict.fromkeys(known, pl.String)
        records: list[dict[str, str | None]] = []
        rejected: list[tuple[int, str, str]] = []
        first = n = 0

        def flush() -> RawBatch:
            frame = (
                pl.from_dicts(records, schema=schema) if records else pl.DataFrame(schema=schema)
            )
            skipped = {r[0] for r in rejected}
            rows = [i for i in range(first + 1, n + 1) if i not in skipped]
            bad = pl.DataFrame(rejected, schema=REJECTED_SCHEMA, orient="row")
            return RawBatch(
                frame=frame,
                first_row=first + 1,
                rejected=bad,
                row_numbers=pl.Series(rows, dtype=pl.Int64),
            )

        try:
            with _opener(self.path)(self.path, "rb") as fh:
                for _, row in etree.iterparse(fh, events=("end",), tag="row", **_parser_args()):
                    n += 1
                    record: dict[str, str | None] = dict(row.attrib)
                    for child in row:
                        if isinstance(child.tag, str):
                            text = (child.text or "").strip()
                            record[child.tag] = text or None
                    unknown = [k for k in record if k not in schema]
                    if unknown:
                        name = safe_column_name(unknown[0], 0)
                        text = etree.tostring(row, encoding="unicode")
                        rejected.append((n, text, f"unknown_field:{name}"))
                    else:
                        records.append(record)
                    row.clear()
                    while row.getprevious() is not None:
                        del row.getparent()[0]
                    if len(records) + len(rejected) >= batch_rows:
                        yield flush()
                        records, rejected, first = [], [], n
        except etree.XMLSyntaxError:
            raise InputError("the XML could not be read to its end (not well-formed)") from None
        except (OSError, EOFError, zlib.error) as exc:
            raise read_failure(exc, whole=True) from None
        if records or rejected or first == 0:
            yield flush()
