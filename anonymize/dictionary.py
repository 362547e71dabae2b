"""The data dictionary: what each published column holds, in which unit, and how it was protected.

Descriptions and units come from the output schemas (``schemas/output/<dataset>.yaml`` and
``schemas/output/statistics.yaml``). The privacy treatment of a column is derived from what
made it: the policy's rules for a restricted dataset, the release's settings (k, perturbation or
differential privacy, pseudonym scope) for a shareable one. So the dictionary is true for the
policy that ran, and the same text goes into three places: the Parquet schema's field metadata
(``description``, ``unit``, ``treatment``), ``cdranon describe``, and the README's dataset
reference (rendered for the shipped default policy).

Examples
--------
>>> from anonymize.policy import load_policy
>>> policy = load_policy(default_policy_path())
>>> entry = dataset_entries("lync_sessions", policy)[0]
>>> entry.column, entry.unit
('session_hour', 'UTC hour')
>>> entry.treatment
'generalised: SessionIdTime truncated to the hour'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import polars as pl
import pyarrow as pa
import yaml

from anonymize.contracts import ColumnDoc, load_output_schema
from anonymize.policy import PSEUDONYM_OPS, CompiledRule, DatasetPolicy, Policy, ReleaseSpec
from anonymize.statistics import STATISTICS


@dataclass(frozen=True)
class Entry:
    """One column of a published dataset, as the data dictionary describes it."""

    column: str
    type: str
    unit: str | None
    description: str
    treatment: str

    def field_metadata(self) -> dict[str, str]:
        """The Parquet field metadata of the column (no unit key when it has none)."""
        meta = {"description": self.description, "treatment": self.treatment}
        return {**meta, "unit": self.unit} if self.unit else meta


def default_policy_path() -> Path:
    """The shipped default policy."""
    return Path(str(resources.files("anonymize.policies").joinpath("default.yaml")))


@cache
def statistics_dictionary() -> dict:
    """``schemas/output/statistics.yaml``: keys, shared and totals columns, each statistic's."""
    ref = resources.files("anonymize.schemas").joinpath("output", "statistics.yaml")
    raw = yaml.safe_load(ref.read_text(encoding="utf-8"))

    def docs(section: dict) -> dict[str, ColumnDoc]:
        return {c: ColumnDoc(**v) for c, v in (section or {}).items()}

    return {
        "keys": docs(raw["keys"]),
        "shared": docs(raw["shared"]),
        "totals": docs(raw["totals"]),
        "statistics": {s: docs(cols) for s, cols in raw["statistics"].items()},
        "tenant_tables": {t: docs(cols) for t, cols in raw["tenant_tables"].items()},
    }


# --- treatments of restricted columns ------------------------------------------------------------


def _rule_treatment(rule: CompiledRule) -> str:
    """One line on what a policy rule did to its input column."""
    o, col, name = rule.options, rule.column, rule.spec.name
    if name == "keep":
        return f"kept as exported ({col})"
    if name == "pseudonymize" and o.per_account:
        return (
            f"keyed pseudonym (HMAC-SHA256, kind {o.kind}) of {col} under its tenant's account "
            "key; null for an address of no tenant"
        )
    if name == "pseudonymize":
        return f"keyed pseudonym (HMAC-SHA256, kind {o.kind}) of {col}"
    if name == "account":
        return f"generalised: {col} to its tenant's id (the policy's tenants, by domain)"
    if name == "client_version":
        return f"generalised: {col} to a known product's version, major.minor"
    if name == "pseudonymize_lookup":
        return f"keyed pseudonym of the identifier {col} stands for in {o.lookup}"
    if name == "pseudonymize_session":
        return f"keyed pseudonym (kind meeting) of the session ({o.time}, {o.seq})"
    if name == "pseudonymize_dialog":
        return f"keyed pseudonym (kind meeting) of the SIP Call-ID of {col}"
    if name == "coarsen_time":
        return f"generalised: {col} truncated to the {o.to}"
    if name == "duration":
        return f"derived: {o.end} minus {o.start}, in seconds (the times are not published)"
    if name == "generalize_phone":
        return f"generalised: {col} to its country"
    if name == "uri_domain_class":
        return f"generalised: {col} to its domain class (the address is not published)"
    if name == "client_category":
        return f"generalised: {col} to a client category"
    if name == "media_modalities":
        return f"generalised: {col} to medium names"
    if name == "present":
        return f"derived: whether {col} is set (its value is not published)"
    if name == "missing":
        return f"derived: whether {col} is empty"
    if name == "conference_type":
        return f"generalised: {col} to its conference type (the URI is not published)"
    if name == "generalize_ip":
        return f"generalised: {col} to its IPv4 /{o.ipv4_prefix} or IPv6 /{o.ipv6_prefix} network"
    if name == "url_template":
        allowed = f"; query keys kept: {', '.join(o.allow_query)}" if o.allow_query else ""
        return (
            f"generalised: {col} ({o.part}) to a template, words outside the vocabulary as "
            f"placeholders{allowed}"
        )
    if name == "url_host":
        return f"generalised: {col} to a known site, else {{site}}"
    if name == "user_agent":
        return f"generalised: {col} to its {o.part.replace('_', ' ')} (ua-parser)"
    if name == "pool_region":
        return f"generalised: {col} to its region"
    return f"{name} of {col}"  # an operator registered by an extension


def _treatment(rules: list[CompiledRule]) -> str:
    if not rules:
        return "not produced by this policy: always null"
    lines = list(dict.fromkeys(_rule_treatment(r) for r in rules))
    text = "; or ".join(lines)
    if any(r.spec.name in PSEUDONYM_OPS for r in rules):
        text += "; the same key gives the same pseudonym in every restricted dataset"
    return text


def dataset_entries(dataset: str, policy: Policy) -> list[Entry]:
    """The dictionary of a restricted dataset under ``policy`` (partition keys excluded)."""
    schema = load_output_schema(dataset)
    ds: DatasetPolicy | None = policy.datasets.get(dataset)
    by_output: dict[str, list[CompiledRule]] = {}
    for rule in ds.rules if ds else ():
        by_output.setdefault(rule.output, []).append(rule)
    return [
        Entry(c, doc.type, doc.unit, doc.description, _treatment(by_output.get(c, [])))
        for c, doc in schema.docs.items()
    ]


def event_entries(dataset: str, policy: Policy, scope: str) -> list[Entry]:
    """The dictionary of an event dataset a release re-keys with the recipient's keys."""
    ds = policy.datasets.get(dataset)
    pseudonyms = set(ds.pseudonym_columns) if ds else set()
    out = []
    for e in dataset_entries(dataset, policy):
        if e.column in pseudonyms:
            again = (
                "removed for this recipient: always null"
                if scope == "none"
                else f"pseudonym re-keyed with the recipient's own key, stable within one {scope}"
                if scope in ("day", "month")
                else "pseudonym re-keyed with the recipient's own key, stable across periods"
            )
            e = Entry(e.column, e.type, e.unit, e.description, again)
        elif e.type == "float":
            e = Entry(e.column, e.type, e.unit, e.description, f"{e.treatment}; rounded")
        out.append(e)
    return out


# --- statistics ----------------------------------------------------------------------------------


def _noise(release: ReleaseSpec) -> str:
    if release.dp.enabled:
        return "Laplace noise (differential privacy, keyed)"
    return f"cell key perturbation (at most {release.perturbation.max_perturbation} units)"


def _protection(role: str, release: ReleaseSpec | None, magnitude: bool = False) -> str:
    if role == "dimension":
        return "category of the cell (a generalised value)"
    if release is None:
        return f"{role}: protection set by the release (k, perturbation or DP)"
    noise = _noise(release)
    if role == "people":
        return (
            f"distinct people, with {noise}; a cell with fewer than {release.k} people is "
            "not published"
        )
    if magnitude and not release.dp.enabled:
        p = release.perturbation
        noise = (
            f"cell key perturbation (at most {p.max_perturbation} x {p.magnitude_scale} of the "
            "largest single contribution); dominated cells are not published"
        )
    return f"sum over the cell's rows, with {noise}"


def statistic_entries(stat: str, release: ReleaseSpec | None, totals: bool = False) -> list[Entry]:
    """The dictionary of a statistic (or of its ``_totals``) as ``release`` publishes it."""
    d = statistics_dictionary()
    own = d["statistics"][stat]
    docs: dict[str, ColumnDoc] = {}
    if release is not None and release.granularity == "hour":
        docs["hour"] = d["keys"]["hour"]
    definition = STATISTICS[stat]
    if not totals:
        docs.update({c: own[c] for c in definition.dims})
    docs.update({c: own[c] for c in definition.measures})
    if totals:
        docs.update(d["totals"])
    dp = release is not None and release.dp.enabled
    if not (totals and dp):  # under DP a margin has no people: a sum of noisy counts is none
        docs["people"] = own.get("people", d["shared"]["people"])
    out = []
    for c, doc in docs.items():
        if c == "hour":
            treatment = "key of the cell"
        elif totals and c == "covers":
            treatment = "count of the published cells (exact)"
        elif totals and c == "people":
            treatment = (
                f"distinct people of the published cells, with {_noise(release)}"
                if release is not None
                else "distinct people of the published cells, perturbed"
            )
        elif totals:
            treatment = f"sum of the published cells' {c}; suppressed cells are left out"
        else:
            treatment = _protection(doc.role or "measure", release, doc.type == "float")
        if c == "minutes":
            treatment += "; rounded to 0.1"
        out.append(Entry(c, doc.type, doc.unit, doc.description, treatment))
    return out


def tenant_table_entries(table: str) -> list[Entry]:
    """The dictionary of a tenant release's table (``user_activity``: one row per user and
    day; ``connect_rooms``: one row per Connect room and day)."""
    out = []
    for c, doc in statistics_dictionary()["tenant_tables"][table].items():
        treatment = (
            "the tenant's own user, under the pseudonym keyed for that tenant"
            if c == "user"
            else "the room (sco-id), under a pseudonym keyed for that tenant"
            if c == "room"
            else "generalised: the hour, UTC"
            if doc.type == "datetime"
            else "exact, of the tenant's own users (an account holder's report)"
        )
        out.append(Entry(c, doc.type, doc.unit, doc.description, treatment))
    return out


def key_entries(hourly: bool = False) -> list[Entry]:
    """The partition keys (``date``, ``region``: folder names), and ``hour`` when hourly."""
    keys = statistics_dictionary()["keys"]
    names = ["date", "region", *(["hour"] if hourly else [])]
    return [
        Entry(n, keys[n].type, keys[n].unit, keys[n].description, "key of the partition")
        for n in names
    ]


# --- the Parquet schema --------------------------------------------------------------------------


def arrow_schema(schema: pl.Schema, entries: list[Entry]) -> pa.Schema:
    """The Arrow schema polars writes for ``schema``, with each column's dictionary entry as
    field metadata (``description``, ``unit``, ``treatment``)."""
    meta = {e.column: e.field_metadata() for e in entries}
    fields = pl.DataFrame(schema=schema).to_arrow().schema
    return pa.schema([f.with_metadata(meta[f.name]) if f.name in meta else f for f in fields])


# --- rendering -----------------------------------------------------------------------------------


def markdown_table(entries: list[Entry] | list[dict]) -> list[str]:
    """Dictionary entries (or their ``asdict`` documents) as the lines of a Markdown table."""
    rows = ["| column | type | unit | description | treatment |", "|---|---|---|---|---|"]
    for e in entries:
        d = e if isinstance(e, dict) else asdict(e)
        cells = [f"`{d['column']}`", d["type"], d["unit"] or "", d["description"], d["treatment"]]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return rows


def restricted_datasets() -> list[str]:
    """Every restricted dataset with an output schema."""
    folder = resources.files("anonymize.schemas").joinpath("output")
    return sorted(
        p.name.removesuffix(".yaml")
        for p in folder.iterdir()
        if p.name.endswith(".yaml") and p.name != "statistics.yaml"
    )


def describe_dataset(dataset: str, policy: Policy) -> dict:
    """A restricted dataset's or a statistic's dictionary as a document (for ``--json``)."""
    if dataset in STATISTICS:
        release = None
        return {
            "dataset": dataset,
            "kind": "statistic",
            "description": STATISTICS[dataset].description,
            "keys": [asdict(e) for e in key_entries()],
            "columns": [asdict(e) for e in statistic_entries(dataset, release)],
            "totals": [asdict(e) for e in statistic_entries(dataset, release, totals=True)],
        }
    schema = load_output_schema(dataset)
    return {
        "dataset": dataset,
        "kind": "restricted",
        "version": schema.version,
        "keys": [asdict(e) for e in key_entries()],
        "columns": [asdict(e) for e in dataset_entries(dataset, policy)],
    }


def describe_release(name: str, policy: Policy) -> dict:
    """A release's datasets and their dictionaries, as the policy declares the release."""
    release = policy.releases[name]
    return {
        "release": name,
        "recipient": release.recipient,
        "granularity": release.granularity,
        "k": release.k,
        "keys": [asdict(e) for e in key_entries()],
        "statistics": {
            s: {
                "description": STATISTICS[s].description,
                "columns": [asdict(e) for e in statistic_entries(s, release)],
                "totals": [asdict(e) for e in statistic_entries(s, release, totals=True)],
            }
            for s in release.statistics
        },
        "events": {
            d: {"scope": scope, "columns": [asdict(e) for e in event_entries(d, policy, scope)]}
            for d, scope in release.events.items()
        },
    }


def render_markdown(policy: Policy) -> str:
    """The dataset reference of the README: keys, every statistic, every restricted dataset."""
    lines = [
        "Generated from `anonymize/schemas/output/` for the default policy by "
        "`cdranon describe --markdown`; the same text is in every Parquet file's field "
        "metadata (`description`, `unit`, `treatment`).",
        "",
        "**Keys** (folder names `date=`/`region=`; `hour` is a column of hourly releases)",
        "",
        *markdown_table(key_entries(hourly=True)),
    ]
    names = sorted({s for r in policy.releases.values() for s in r.statistics})
    release = next(iter(policy.releases.values()), None)
    for s in names:
        lines += ["", f"**shareable `{s}`**: {STATISTICS[s].description}"]
        lines += ["", *markdown_table(statistic_entries(s, release))]
        totals = statistic_entries(s, release, totals=True)
        lines += ["", f"`{s}_totals`:", "", *markdown_table(totals)]
    for d in restricted_datasets():
        lines += ["", f"**restricted `{d}`**", "", *markdown_table(dataset_entries(d, policy))]
    return "\n".join(lines) + "\n"


def render_text(document: dict) -> str:
    """A ``describe`` document as plain text for the terminal."""
    out: list[str] = []

    def table(title: str, entries: list[dict]) -> None:
        out.append(title)
        for e in entries:
            unit = f" [{e['unit']}]" if e["unit"] else ""
            out.append(f"  {e['column']} ({e['type']}{unit}): {e['description']}")
            out.append(f"      treatment: {e['treatment']}")

    if "release" in document:
        out.append(
            f"release {document['release']}: recipient {document['recipient']}, "
            f"per {document['granularity']}, k = {document['k']}"
        )
        table("keys", document["keys"])
        for s, doc in document["statistics"].items():
            table(f"statistic {s}: {doc['description']}", doc["columns"])
            table(f"{s}_totals", doc["totals"])
        for d, doc in document["events"].items():
            table(f"events {d} (pseudonym scope {doc['scope']})", doc["columns"])
    else:
        head = f"{document['kind']} dataset {document['dataset']}"
        if document.get("description"):
            head += f": {document['description']}"
        table(head, document["columns"])
        if "totals" in document:
            table(f"{document['dataset']}_totals", document["totals"])
        table("keys", document["keys"])
    return "\n".join(out) + "\n"
