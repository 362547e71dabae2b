"""The datasheet of a release: what a recipient receives, how it was protected, what it must not do.

A third party knows only what a release tells it. Each publication writes, next to the release's
datasets, ``shareable/<release>/DATASHEET.json`` and ``DATASHEET.md`` (the same content, for
programs and for people): the recipient, each statistic with its dimensions and measures, the
granularity, k, the perturbation or differential-privacy settings with their accuracy, the share
of cells suppressed, the period and regions the release covers, the policy and schema versions,
the key id of the recipient's pseudonyms, the data dictionary of every column, what the
recipient must not do and the known limits. Its figures are the run manifest's entry for the
release (a test keeps them equal). No run id and no clock time: the same inputs, policy and key
give the same bytes, as for the Parquet files. The privacy gate scans both files like every
shareable output.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path

from anonymize import __version__
from anonymize.contracts import load_output_schema
from anonymize.dictionary import (
    event_entries,
    key_entries,
    markdown_table,
    statistic_entries,
    tenant_table_entries,
)
from anonymize.layout import SHAREABLE, partition_key, write_atomically
from anonymize.policy import Policy
from anonymize.statistics import STATISTICS
from anonymize.tenants import CONNECT_ROOMS, USER_ACTIVITY

DATASHEET = "DATASHEET"
TENANT_TABLES = (USER_ACTIVITY, CONNECT_ROOMS)  # a tenant release's tables besides statistics
FORMAT_VERSION = "1"

MUST_NOT = (
    "try to identify, single out or contact any person, or to find out whether a person is in "
    "the data",
    "link or combine the release with other data (other releases, other recipients' data, "
    "directories, logs) to learn about a person",
    "subtract or difference versions, totals or cells to recover a suppressed or perturbed value",
    "pass the release on beyond the purposes and parties of the data-sharing agreement",
    "keep a copy after the agreement ends; report a suspected disclosure to the provider at once",
)


def _limits(policy: Policy, name: str, events: bool) -> list[str]:
    spec = policy.releases[name]
    out = [
        f"Cells with fewer than {spec.k} distinct people are not published; the *_totals files "
        "add up the published cells only (their `covers` column counts them), so totals "
        "undercount activity in small groups.",
        "A statistic has a file in every date and region the release covers, empty where all "
        "cells were suppressed: which days and regions are covered is disclosed, nothing more.",
        "Web people are signed-in users, else a visitor (network, browser, OS and device of a "
        "day) that never splits a person: web people counts err low.",
        "Times are UTC; meeting and session sizes are bucketed; minutes are rounded to 0.1.",
    ]
    if spec.dp.enabled:
        out.insert(1, "Every count carries keyed Laplace noise (differential privacy): small "
                   "differences between cells or days may be noise; see accuracy.")  # fmt: skip
    else:
        out.insert(1, f"Every count is perturbed by the cell key method (at most "
                   f"{spec.perturbation.max_perturbation} units): the same cell always gets the "
                   "same perturbation, so sums of published cells differ slightly from the "
                   "published totals.")  # fmt: skip
    if spec.settle_days:
        out.append(f"A day is published once it is {spec.settle_days} day(s) old and is never "
                   "republished: later corrections are not delivered.")  # fmt: skip
    elif spec.freeze:
        out.append("A partition, once delivered, is never republished (freeze): later "
                   "corrections are not delivered.")  # fmt: skip
    if events:
        out.append("Event datasets carry pseudonyms keyed for this recipient only: they do not "
                   "match another recipient's pseudonyms or the provider's.")  # fmt: skip
    return out


def coverage(partitions: list[str], name: str, granularity: str = "day") -> dict:
    """The days and regions of a release's partitions (paths relative to a version); for a
    release per week or month, from the first day of its first period to the last day of its
    last one, and the number of periods."""
    days: set[str] = set()
    regions: set[str] = set()
    prefix = f"{SHAREABLE}/{name}/"
    for rel in partitions:
        if rel.startswith(prefix) and (key := partition_key(rel)):
            day, _, region = key.partition("/")
            days.add(day)
            regions.add(region)
    last = max(days) if days else None
    if last is not None and granularity in ("week", "month"):
        start = date.fromisoformat(last)
        end = (
            start + timedelta(days=6)
            if granularity == "week"
            else (start.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        )
        last = end.isoformat()
    out = {
        "first_day": min(days) if days else None,
        "last_day": last,
        "days": len(days),
        "regions": sorted(regions),
    }
    if granularity in ("week", "month"):
        out["days"] = (
            (date.fromisoformat(last) - date.fromisoformat(min(days))).days + 1 if days else 0
        )
        out[f"{granularity}s"] = len(days)
    return out


def build(
    name: str, policy: Policy, entry: dict, partitions: list[str], meta: dict[str, str]
) -> dict:
    """The datasheet of release ``name``: its manifest ``entry`` of the run, the version's
    ``partitions`` (relative paths) and the shareable files' key-value ``meta``."""
    spec = policy.releases[name]
    stats = {}
    for s, report in entry["statistics"].items():
        cells = report["cells"]
        stats[s] = {
            "description": STATISTICS[s].description,
            "dimensions": list(STATISTICS[s].dims),
            "measures": list(STATISTICS[s].measures),
            "this_publication": {
                "cells": cells,
                "published": report["published"],
                "suppressed": report["suppressed"],
                "suppressed_share": round(report["suppressed"] / cells, 4) if cells else 0.0,
                "suppressed_for_dominance": report["suppressed_dominance"],
            },
            **({"dp": report["dp"]} if "dp" in report else {}),
            **({"perturbation": report["perturbation"]} if "perturbation" in report else {}),
            "columns": [asdict(e) for e in statistic_entries(s, spec)],
            "totals_columns": [asdict(e) for e in statistic_entries(s, spec, totals=True)],
        }
    events = {
        d: {
            "pseudonym_scope": e["scope"],
            "rows_this_publication": e["rows"],
            "columns": [asdict(x) for x in event_entries(d, policy, e["scope"])],
        }
        for d, e in entry.get("events", {}).items()
    }
    tables = (
        {t: [asdict(e) for e in tenant_table_entries(t)] for t in TENANT_TABLES}
        if spec.kind == "tenant"
        else {}
    )
    doc = {
        "datasheet_version": FORMAT_VERSION,
        "release": name,
        "recipient": spec.recipient,
        "not_for_sharing": meta.get("cdranon.not_for_sharing") == "true",
        "key_id": entry["key_id"],
        "granularity": spec.granularity,
        "k": spec.k,
        "protection": (
            {
                "method": "differential privacy (keyed Laplace noise, OpenDP)",
                "settings": spec.dp.model_dump(),
                "spent": entry.get("dp", {}),
            }
            if spec.dp.enabled
            else {
                "method": "cell key perturbation",
                "settings": spec.perturbation.model_dump(),
            }
        ),
        "dominance": [r.model_dump() for r in spec.dominance],
        "coverage": coverage(partitions, name, spec.granularity),
        "policy": {"version": policy.version, "sha256": policy.hash},
        # The versions of the statistics' schema and of the restricted datasets (their output
        # contracts) the release was computed from.
        "schemas": {
            "statistics": meta.get("cdranon.schema_version"),
            **{
                d: load_output_schema(d).version
                for d in sorted(
                    {src for s in spec.statistics for src in STATISTICS[s].sources}
                    | set(spec.events)
                )
            },
        },
        "software_version": __version__,
        "inputs_digest": meta.get("cdranon.inputs_digest"),
        "keys": [asdict(e) for e in key_entries(spec.granularity == "hour")],
        "statistics": stats,
        "events": events,
        **({"tables": tables} if tables else {}),
        "must_not": list(MUST_NOT),
        "known_limits": _limits(policy, name, bool(events)),
    }
    return doc


def render_markdown(doc: dict) -> str:
    """The datasheet for people; the same facts as the JSON."""
    cov, prot = doc["coverage"], doc["protection"]
    lines = [f"# Datasheet: release `{doc['release']}` for {doc['recipient']}", ""]
    if doc["not_for_sharing"]:
        lines += ["**NOT FOR SHARING**: made with the development key, for tests only.", ""]
    lines += [
        "| | |",
        "|---|---|",
        f"| recipient | {doc['recipient']} |",
        f"| period covered | {cov['first_day']} to {cov['last_day']} ({cov['days']} day(s)) |",
        f"| regions | {', '.join(cov['regions']) or 'none'} |",
        f"| granularity | per {doc['granularity']} |",
        f"| k (distinct people per published cell) | {doc['k']} |",
        f"| protection | {prot['method']} |",
        f"| policy | {doc['policy']['version']} (sha256 {doc['policy']['sha256']}) |",
        f"| key id of the recipient's pseudonyms | {doc['key_id']} |",
        f"| schema versions | {', '.join(f'{k} {v}' for k, v in doc['schemas'].items())} |",
        f"| software | cdranon {doc['software_version']} |",
        "",
        "## Protection",
        "",
        "```json",
        json.dumps(prot, indent=1),
        "```",
        "",
        "## Statistics",
    ]
    for s, st in doc["statistics"].items():
        pub = st["this_publication"]
        lines += [
            "",
            f"### `{s}`: {st['description']}",
            "",
            f"Dimensions: {', '.join(st['dimensions'])}; measures: {', '.join(st['measures'])}.",
            f"This publication: {pub['cells']} cell(s) computed, {pub['published']} published, "
            f"{pub['suppressed']} suppressed ({pub['suppressed_share']:.1%}; "
            f"{pub['suppressed_for_dominance']} for dominance).",
        ]
        if "dp" in st:
            lines += ["", f"Accuracy (95 % bound on the absolute error): {st['dp']}"]
        elif "perturbation" in st:
            p = st["perturbation"]
            lines += [
                "",
                f"Accuracy: perturbation variance {p['variance']}, probability a count is "
                f"unchanged {p['p_unchanged']}.",
            ]
        lines += ["", *markdown_table(st["columns"]), "", f"`{s}_totals`:", ""]
        lines += markdown_table(st["totals_columns"])
    for d, ev in doc["events"].items():
        lines += ["", f"### events `{d}` (pseudonym scope {ev['pseudonym_scope']})", ""]
        lines += [*markdown_table(ev["columns"])]
    for t, columns in doc.get("tables", {}).items():
        lines += ["", f"### `{t}`: the tenant's own users, exact", "", *markdown_table(columns)]
    lines += ["", "## Keys", "", *markdown_table(doc["keys"]), "", "## The recipient must not", ""]
    lines += [f"- {m}" for m in doc["must_not"]]
    lines += ["", "## Known limits", "", *(f"- {x}" for x in doc["known_limits"]), ""]
    return "\n".join(lines)


def write(folder: Path, doc: dict) -> list[Path]:
    """Write ``DATASHEET.json`` and ``DATASHEET.md`` into a staged release folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=1, sort_keys=False) + "\n"
    return [
        write_atomically(folder / f"{DATASHEET}.json", text),
        write_atomically(folder / f"{DATASHEET}.md", render_markdown(doc)),
    ]


def documents(root: Path) -> list[Path]:
    """The datasheets under an output or staging root (``shareable/*/DATASHEET.*``, and
    ``shareable/*/<tenant>/DATASHEET.*`` in tenant releases)."""
    return sorted(
        p for depth in ("*", "*/*") for p in Path(root).glob(f"{SHAREABLE}/{depth}/{DATASHEET}.*")
    )
