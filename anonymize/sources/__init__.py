"""Readers: turn raw exports into batches of string records plus rejected records.

``open_source`` recognises what a file is (from its bytes, not its name) and returns the reader
together with the input contract that types it: a CSV export's header picks the contract among
its family's; an access log's format (Apache/nginx or IIS) does; a Connect XML response's report
element does.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from anonymize.contracts import Contract, all_contracts, match_header, safe_column_name
from anonymize.errors import ContractError, read_failure
from anonymize.sources.base import RawBatch


class Reader(Protocol):
    """What the pipeline needs of a reader."""

    encoding: str

    def batches(self, batch_rows: int) -> Iterator[RawBatch]: ...


@dataclass
class Source:
    """An opened input file: its reader and its contract."""

    reader: Reader
    contract: Contract


def _head(path: Path, n: int = 4096) -> bytes:
    try:
        with open(path, "rb") as fh:
            is_gz = fh.read(2) == b"\x1f\x8b"
        with (gzip.open if is_gz else open)(path, "rb") as fh:
            return fh.read(n)
    except (OSError, EOFError, zlib.error) as exc:
        raise read_failure(exc) from None


def open_source(path: Path, family: str) -> Source:
    """Open one landing-zone file of a source family (``lync``, ``connect``, ``weblogs``).

    Raises InputError when the file cannot be read or is of no known format, ContractError when
    its columns match no contract of the family.
    """
    from anonymize.sources.connect import ConnectXml, looks_like_xml
    from anonymize.sources.csvfile import CsvFile
    from anonymize.sources.weblog import AccessLog

    path = Path(path)
    if family == "weblogs":
        log = AccessLog.open(path)
        contract = _by_format(family, f"web_access_{log.format}")
        log.known_fields = frozenset(contract.aliases)
        return Source(log, contract)
    if family == "connect" and looks_like_xml(_head(path)):
        xml = ConnectXml.open(path)
        matches = [c for c in all_contracts() if c.family == family and c.xml_element == xml.report]
        if not matches:
            raise ContractError(
                f"no contract reads the Connect report {safe_column_name(xml.report, 0)}; "
                "known reports: "
                + ", ".join(sorted(c.xml_element for c in all_contracts() if c.xml_element))
            )
        xml.known_fields = frozenset(matches[0].aliases)
        return Source(xml, matches[0])
    csv = CsvFile.open(path)
    return Source(csv, match_header(csv.header, family=family))


def _by_format(family: str, name: str) -> Contract:
    for c in all_contracts():
        if c.family == family and c.name == name:
            return c
    raise ContractError(f"no contract {name} for the source family {family!r} in schemas/")
