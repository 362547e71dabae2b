"""What each recipient already holds, and the privacy budget it has been given.

The delivery ledger (``<out>/_deliveries.json``, restricted like the rest of the output root's
state) records, per recipient, every shareable file ever published to it (its path in the
release and a SHA-256 of the columns and values of each version: hashes, never values) and,
for releases with differential privacy, the epsilon charged per accounting period. A
recipient keeps every version it was given, so the checks of a new publication run against
all of them:

- **Freeze** (``freeze: true``): a partition the recipient holds is never published again with
  other values; the new version stays in the restricted data and the manifest lists it.
- **Budget** (DP): the first publication of a period charges epsilon per statistic; a later
  one charges it again when it would give the recipient a file it holds with other values (new
  noise for changed data), never for the same values (the noise is keyed: the same data gives
  the same values) nor for the new days of a period already charged (each person's rows are
  bounded over the whole period). A publication that would take the period's spend above the
  policy's ``budget`` is not made: that release keeps its published version, the run says so.

``account`` applies both to a run's staged releases before the gate; ``Deliveries.record``
charges and records them just before they are published (a crash in between over-charges,
never under-charges).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from anonymize.errors import InputError
from anonymize.layout import SHAREABLE, partition_key, write_atomically
from anonymize.releases import period_of

DELIVERIES = "_deliveries.json"
DELIVERIES_VERSION = 1


def content_digest(path: Path) -> str:
    """SHA-256 of what a file tells its reader: its columns and values (as CSV text), not its
    bytes, so a new policy version or software version in the metadata is no new delivery."""
    frame = pl.read_parquet(path)
    flat = frame.with_columns(  # lists (modalities) as text: CSV has no lists
        pl.col(c).cast(pl.List(pl.String)).list.join("\x1f")
        for c, t in frame.schema.items()
        if isinstance(t, pl.List)
    )
    return hashlib.sha256(flat.write_csv().encode()).hexdigest()


def release_files(root: Path) -> dict[str, str]:
    """``<dataset>/date=D/region=R/<file>`` -> content digest, for one release folder."""
    root = Path(root)
    return {
        f.relative_to(root).as_posix(): content_digest(f) for f in sorted(root.rglob("*.parquet"))
    }


def _key(rel: str) -> str:
    """The ``date/region`` key of ``[<tenant>/]<dataset>/date=D/region=R/<file>``."""
    return partition_key(rel) or ""


def _day(rel: str) -> str:
    return _key(rel).partition("/")[0]


@dataclass
class Deliveries:
    """Per recipient: ``files`` (path -> every SHA-256 delivered) and ``budget`` (period ->
    ``{"spent": epsilon, "charges": [{"run_id", "epsilon", "why"}]}``)."""

    recipients: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, out: Path, published: Path | None = None, policy=None) -> Deliveries:
        """The ledger of ``out``; with the ``published`` version and the ``policy``, a
        recipient it does not know yet starts from what is published for it (``adopt``)."""
        path = Path(out) / DELIVERIES
        if not path.exists():
            return cls()._adopted(published, policy)
        try:
            body = json.loads(path.read_text())
            if body.get("version") != DELIVERIES_VERSION:
                raise ValueError("version")
            return cls(dict(body["recipients"]))._adopted(published, policy)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise InputError(
                f"the delivery ledger {path} cannot be read; restore it from a backup (without "
                "it, what each recipient holds and the privacy budget it was given are unknown)"
            ) from None

    def save(self, out: Path) -> Path:
        body = {"version": DELIVERIES_VERSION, "recipients": self.recipients}
        return write_atomically(Path(out) / DELIVERIES, json.dumps(body, indent=1) + "\n")

    def of(self, recipient: str) -> dict:
        held = self.recipients.setdefault(recipient, {"files": {}, "budget": {}})
        held.setdefault("settled", [])
        return held

    def _adopted(self, published: Path | None, policy) -> Deliveries:
        if published is not None and policy is not None:
            for name, spec in policy.releases.items():
                self.adopt(spec.recipient, Path(published) / SHAREABLE / name, spec)
        return self

    def adopt(self, recipient: str, published: Path, spec) -> None:
        """Start the record of a recipient from what is published for it (an output root from
        before this ledger): its files are held, each DP period in them charged once."""
        if recipient in self.recipients or not Path(published).is_dir():
            return
        held = self.of(recipient)
        for rel, sha in release_files(published).items():
            held["files"][rel] = [sha]
            if spec.dp.enabled:
                cost = spec.dp.epsilon * len(spec.statistics)
                period = period_of(_day(rel), spec.dp.period)
                held["budget"].setdefault(
                    period, {"spent": cost, "charges": [{"run_id": None, "epsilon": cost,
                                                         "why": "published before the ledger"}]}
                )  # fmt: skip

    def record(self, pending: dict[str, dict], run_id: str) -> None:
        """Record what ``account`` let through for each recipient, with its charges."""
        for recipient, todo in pending.items():
            held = self.of(recipient)
            for rel, sha in todo["files"].items():
                versions = held["files"].setdefault(rel, [])
                if sha not in versions:
                    versions.append(sha)
            held["settled"] = sorted(set(held["settled"]) | set(todo.get("settled", [])))
            for period, (cost, why) in todo["charges"].items():
                entry = held["budget"].setdefault(period, {"spent": 0.0, "charges": []})
                entry["spent"] = round(entry["spent"] + cost, 9)
                entry["charges"].append({"run_id": run_id, "epsilon": cost, "why": why})


def account(
    staging: Path,
    policy,
    entries: dict[str, dict],
    deliveries: Deliveries,
    must: set[str] = frozenset(),
    settled: dict[str, list[str]] | None = None,
) -> tuple[dict[str, dict], dict[str, dict]]:
    """Apply freeze and budget to the staged releases (see the module docstring).

    ``must``: ``date/region`` keys rebuilt for data-subject requests (an erasure, an opt-out):
    they are published even to a frozen release or over the budget (the charge is recorded).
    ``settled``: per release with ``settle_days``, the ``date/region`` keys it was computed for
    that are old enough: recorded as delivered (even when every cell is suppressed).

    Removes from staging what may not be published and adds to each release's manifest entry
    ``delivery`` (files new, changed, unchanged, frozen partitions) and ``budget`` (per period:
    spent before, charged, spent after, the budget, remaining), or ``refused`` with the reason.
    Returns the entries and what to record when the run publishes.
    """
    pending: dict[str, dict] = {}
    for name, entry in entries.items():
        spec = policy.releases[name]
        recipient = spec.recipient
        root = Path(staging) / SHAREABLE / name
        held = deliveries.of(recipient)
        staged = release_files(root)
        changed = {rel for rel, sha in staged.items() if rel in held["files"]
                   and sha not in held["files"][rel]}  # fmt: skip
        frozen: list[str] = []
        if spec.frozen:
            for rel in sorted(rel for rel in changed if _key(rel) not in must):
                frozen.append(str(Path(rel).parent.as_posix()))
                shutil.rmtree(root / Path(rel).parent, ignore_errors=True)
                del staged[rel]
            changed = {rel for rel in changed if _key(rel) in must}
        new = sum(rel not in held["files"] for rel in staged)
        entry["delivery"] = {
            "new": new,
            "changed": len(changed),
            "unchanged": len(staged) - len(changed) - new,
            "frozen": sorted(set(frozen)),
        }
        charges: dict[str, tuple[float, str]] = {}
        if spec.dp.enabled and spec.statistics:
            cost = spec.dp.epsilon * len(spec.statistics)
            for rel in staged:
                period = period_of(_day(rel), spec.dp.period)
                if period not in held["budget"] and period not in charges:
                    charges[period] = (cost, "first publication of the period")
                elif rel in changed:
                    charges[period] = (cost, "new noise for data the recipient holds")
            budget = {}
            over = []
            for period, (cost_p, _) in sorted(charges.items()):
                before = held["budget"].get(period, {}).get("spent", 0.0)
                after = round(before + cost_p, 9)
                budget[period] = {
                    "spent_before": before, "charged": cost_p, "spent": after,
                    "budget": spec.dp.budget, "remaining": round(spec.dp.budget - after, 9),
                }  # fmt: skip
                if after > spec.dp.budget + 1e-9:
                    over.append(period)
            entry["budget"] = budget
            if over and any(_key(rel) in must for rel in staged):
                entry["over_budget_for_requests"] = over
            elif over:
                shutil.rmtree(root, ignore_errors=True)
                entry["refused"] = (
                    f"the privacy budget of {recipient} for {', '.join(over)} would be exceeded "
                    f"(budget {spec.dp.budget} per {spec.dp.period}); the release keeps its "
                    "published version"
                )
                continue
        pending[recipient] = {
            "files": staged, "charges": charges, "settled": (settled or {}).get(name, []),
        }  # fmt: skip
    return entries, pending
