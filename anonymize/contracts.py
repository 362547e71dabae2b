"""Input contracts and output schemas, loaded from the YAML files in ``schemas/``.

A contract lists every column one kind of export may carry, with its type and privacy class
(PD, QI, SAFE). A file's kind is recognised from its header: the contract whose required columns
are all present and that knows every column of the header. An output schema lists the columns
of a published dataset; it is strict (a column it does not list is an error).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Literal

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from anonymize.errors import ContractError

ColumnType = Literal["string", "int", "decimal", "bit", "datetime", "guid", "ip"]
PrivacyClass = Literal["PD", "QI", "SAFE"]


class Column(BaseModel):
    """One column of an input contract."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    type: ColumnType
    privacy: PrivacyClass = Field(alias="class")
    required: bool = True
    nullable: bool = True
    aliases: tuple[str, ...] = ()
    # PD values are canaries for the privacy gate, except per-record random tokens (dialog
    # ids, correlation ids, transaction ids): millions of them, and nothing to re-identify.
    canary: bool = True


class Lookup(BaseModel):
    """A join source: an export that maps integer keys to the identifiers they stand for.

    Its rows are never published. The pipeline keeps ``key`` -> pseudonym of ``value`` (never the
    raw value) in the run's staging area, for the ``pseudonymize_lookup`` operator.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    value: str
    kind: Literal["auto", "person", "phone"] = "auto"


class Contract(BaseModel):
    """Every column one kind of export may carry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    family: str
    dataset: str | None = None
    priority: int = 1
    key: tuple[str, ...] = ()
    # Connect XML responses: the report element that identifies this kind of response.
    xml_element: str | None = None
    # Set for join sources (Users, Phones, Connect users): read first, never published.
    lookup: Lookup | None = None
    # Set for companion exports (Lync 2010 VoipDetails): their anonymised columns join the rows
    # of this other contract's export, on the shared key; never published on their own.
    merge_into: str | None = None
    columns: tuple[Column, ...]

    @property
    def column_map(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}

    @property
    def aliases(self) -> dict[str, str]:
        """Map of every accepted header name (canonical or alias) to the canonical name."""
        out = {c.name: c.name for c in self.columns}
        for c in self.columns:
            out.update(dict.fromkeys(c.aliases, c.name))
        return out

    def header_problems(self, header: list[str]) -> tuple[list[str], list[str]]:
        """Return (missing required columns, unknown columns) of a header against this contract."""
        names = self.aliases
        canonical = {names[h] for h in header if h in names}
        missing = [c.name for c in self.columns if c.required and c.name not in canonical]
        unknown = [h for h in header if h not in names]
        return missing, unknown


OUTPUT_DTYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "int": pl.Int64(),
    "float": pl.Float64(),
    "bool": pl.Boolean(),
    "datetime": pl.Datetime("ms", "UTC"),  # UTC instants (the CDRs' clock), typed so
    "list[string]": pl.List(pl.String()),
}


OutputType = Literal["string", "int", "float", "bool", "datetime", "list[string]"]


class ColumnDoc(BaseModel):
    """The data dictionary entry of one output column: what it holds, in which unit.

    The privacy treatment is not written here: it follows from the policy that made the column
    (``anonymize.dictionary``), so it is true for whichever policy ran.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: OutputType | Literal["date"]
    description: str = Field(min_length=12, max_length=240)
    unit: str | None = None
    role: Literal["dimension", "measure", "people"] | None = None  # statistics only


class OutputSchema(BaseModel):
    """The strict column list of one published dataset (partition keys excluded), with the data
    dictionary entry of each column (``docs``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str
    version: str
    partitioning: tuple[str, ...]
    columns: dict[str, OutputType]
    docs: dict[str, ColumnDoc]

    @model_validator(mode="before")
    @classmethod
    def _split_docs(cls, raw: dict) -> dict:
        """``columns: {name: {type, unit, description}}`` in YAML: types and docs apart."""
        if isinstance(raw, dict) and "docs" not in raw:
            cols = raw.get("columns") or {}
            undocumented = sorted(c for c, v in cols.items() if not isinstance(v, dict))
            if undocumented:
                raise ValueError(
                    f"columns without a description: {', '.join(undocumented)} (write "
                    "{type, unit, description} for each)"
                )
            raw = {
                **raw,
                "columns": {c: v.get("type") for c, v in cols.items()},
                "docs": cols,
            }
        return raw

    @property
    def polars_schema(self) -> pl.Schema:
        return pl.Schema({k: OUTPUT_DTYPES[v] for k, v in self.columns.items()})


def _read_yaml(*parts: str) -> dict:
    ref = resources.files("anonymize.schemas").joinpath(*parts)
    return yaml.safe_load(ref.read_text(encoding="utf-8"))


def _raw_contract(name: str) -> dict:
    raw = _read_yaml(f"{name}.yaml")
    if raw.get("name") != name:
        raise ContractError(f"schemas/{name}.yaml declares the name {raw.get('name')!r}")
    parent = raw.pop("extends", None)
    cols = dict(raw.get("columns") or {})
    if parent:
        # A child inherits everything it does not set itself (key, family, dataset ...).
        base = _raw_contract(parent)
        cols = {**base["columns"], **cols}
        raw = {**base, **raw}
    raw["columns"] = cols
    return raw


@cache
def load_contract(name: str) -> Contract:
    """Load one input contract by name (the YAML file ``schemas/<name>.yaml``)."""
    raw = _raw_contract(name)
    raw["columns"] = tuple(Column(name=k, **v) for k, v in raw["columns"].items())
    return Contract(**raw)


@cache
def all_contracts() -> tuple[Contract, ...]:
    """Every input contract shipped in ``schemas/``."""
    names = sorted(
        p.name.removesuffix(".yaml")
        for p in resources.files("anonymize.schemas").iterdir()
        if p.name.endswith(".yaml")
    )
    return tuple(load_contract(n) for n in names)


@cache
def load_output_schema(dataset: str) -> OutputSchema:
    """Load the strict output schema of a dataset (``schemas/output/<dataset>.yaml``)."""
    return OutputSchema(**_read_yaml("output", f"{dataset}.yaml"))


_COLUMN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_ ()\-]{0,63}")
# W3C extended log fields (``cs-uri-stem``, ``cs(User-Agent)``, ``x-forwarded-for``): a syntax,
# not free text, so an unknown one can be named.
# Adobe Connect's XML names are lower-case words joined by hyphens (``host-email``): a name of the
# API, not of a person, when it has at least one hyphen.
_W3C_FIELD = re.compile(
    r"(?:c|s|r|cs|sc|sr|rs|x)[-(][A-Za-z0-9\-]{1,40}\)?|[a-z]{2,20}(?:-[a-z]{2,20}){1,4}"
)
MAX_NAMED = 8  # header cells named in one message; the rest are counted


@cache
def known_column_names() -> frozenset[str]:
    """Every column name and alias any contract knows (header cells that may be named)."""
    return frozenset(h for c in all_contracts() for h in c.aliases)


def safe_column_name(name: str, position: int) -> str:
    """A header cell fit for an error message, or a placeholder.

    Named only when it is a column name some contract knows, a W3C log field or a hyphenated
    Connect name: a file exported
    without a header has a data row where the header should be (names, addresses), and its
    cells must not reach a message, a log or a manifest.

    >>> safe_column_name("SessionIdTime", 0), safe_column_name("Jane Doe", 2)
    ('SessionIdTime', '<column 3: not a known column name>')
    """
    if name in known_column_names() or _W3C_FIELD.fullmatch(name):
        return name
    return f"<column {position + 1}: not a known column name>"


def _named(names: list[str]) -> str:
    """At most MAX_NAMED names, then a count: a 20,000-column header stays one short line."""
    shown = ", ".join(names[:MAX_NAMED])
    return shown if len(names) <= MAX_NAMED else f"{shown} and {len(names) - MAX_NAMED} more"


def match_header(header: list[str], family: str | None = None) -> Contract:
    """Return the contract a header belongs to, or raise ContractError naming the problems.

    A header matches when it has every required column of a contract and no column that the
    contract does not know. When nothing matches, the error names the missing and unknown
    columns against the closest contract.
    """
    candidates = [c for c in all_contracts() if family is None or c.family == family]
    looks_like_data = sum(not _COLUMN_NAME.fullmatch(h) for h in header) > len(header) // 3
    if looks_like_data:
        raise ContractError(
            "the first line looks like data, not a header; export with column headers "
            "(SSMS: Options > Query Results > Include column headers when saving)"
        )
    counts: dict[str, int] = {}
    for h in header:
        counts[h] = counts.get(h, 0) + 1
    dupes = sorted({safe_column_name(h, i) for i, h in enumerate(header) if counts[h] > 1})
    if dupes:
        raise ContractError(f"the header repeats the column(s) {_named(dupes)}")
    scored = []
    for contract in candidates:
        missing, unknown = contract.header_problems(header)
        if not missing and not unknown:
            return contract
        scored.append((len(missing) + len(unknown), contract.name, missing, unknown))
    if not scored:
        raise ContractError(f"no contract is known for the source family {family!r}")
    _, name, missing, unknown = min(scored)
    position = {h: i for i, h in reversed(list(enumerate(header)))}
    unknown = [safe_column_name(h, position[h]) for h in unknown]
    parts = []
    if unknown:
        parts.append(f"{len(unknown)} unknown column(s) {_named(unknown)}")
    if missing:
        parts.append(f"missing column(s) {_named(missing)}")
    raise ContractError(
        f"the header matches no contract; closest is {name}, with {' and '.join(parts)}. "
        "Export the view with its documented columns, or add the column to the contract "
        "in schemas/ and a rule for it to the policy"
    )
