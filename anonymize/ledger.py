"""Incremental batches: the ledger of inputs done, and which files a run must read.

The ledger (``<out>/_ledger.json``) records every input file by content hash: its path in the
landing zone, whether it was processed or refused, the partitions (``date/region``) its rows
fell into, and those of them that have been published. A run then reads only what it must:

1. *pending* files: content never seen (a new file, a late file, a corrected export that
   replaced an earlier one under the same path), or seen but with partitions in the run's
   scope that were never published (an earlier run was limited to other regions or dates);
   with ``reprocess``, also every file refused before (new software may read it now);
2. the *side* files those need: the join sources (Users, Phones, Connect users) of their
   folders and above, the companions (2010 VoipDetails) of their folder; a *new* companion also
   brings back the files it completes;
3. after those, every earlier file with rows in an *affected* partition: the partitions the
   pending files touched, those of a superseded export, and with ``reprocess`` every recorded
   partition in the scope. A partition is republished whole, from all its inputs, never
   appended to, so outputs never double-count.

Staged partitions outside the affected set (an earlier file's other days) are dropped before
releases, gate and publish. The ledger is written after publication, under the run lock; a crash
before that only makes the next run redo the same partitions, which gives the same bytes.

>>> scope = Scope(regions=frozenset({"EMEA"}))
>>> scope.covers("2026-11-01/EMEA"), scope.covers("2026-11-01/AMER")
(True, False)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from anonymize.errors import InputError
from anonymize.layout import PlannedFile, partition_key, write_atomically

LEDGER = "_ledger.json"
LEDGER_VERSION = 1


@dataclass(frozen=True)
class Scope:
    """The partitions a run may publish: regions and an inclusive date range (None: all)."""

    regions: frozenset[str] | None = None
    date_from: date | None = None
    date_to: date | None = None

    def covers(self, key: str) -> bool:
        day, _, region = key.partition("/")
        if self.regions is not None and region not in self.regions:
            return False
        if self.date_from is not None and day < self.date_from.isoformat():
            return False
        return not (self.date_to is not None and day > self.date_to.isoformat())


@dataclass
class Ledger:
    """Input files done, by content hash (see the module docstring)."""

    entries: dict[str, dict] = field(default_factory=dict)
    # The key the output root's pseudonyms are under (a run with another key is refused).
    key_id: str | None = None

    @classmethod
    def load(cls, out: Path) -> Ledger:
        path = Path(out) / LEDGER
        if not path.exists():
            return cls()
        try:
            body = json.loads(path.read_text())
            if body.get("version") != LEDGER_VERSION:
                raise ValueError("version")
            key = body.get("key_id")
            if key is not None and not isinstance(key, str):
                raise ValueError("key_id")
            return cls(dict(body["files"]), key)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise InputError(
                f"the ledger {path} cannot be read; restore it from a backup, or move it away to "
                "reprocess every input file of the landing zone"
            ) from None

    def save(self, out: Path) -> Path:
        """Write atomically and durably (``layout.write_atomically``)."""
        body = {
            "version": LEDGER_VERSION,
            "key_id": self.key_id,
            "files": dict(sorted(self.entries.items())),
        }
        return write_atomically(Path(out) / LEDGER, json.dumps(body, indent=1) + "\n")

    def known_files(self, landing: Path) -> dict[str, tuple[int, int, str]]:
        """Path -> (size, modification time in ns, hash) of the recorded files, so that an
        unchanged file is not hashed again (``plan.plan_inputs``)."""
        return {
            str(Path(landing) / e["path"]): (e["size"], e["mtime_ns"], sha)
            for sha, e in self.entries.items()
            if "size" in e and "mtime_ns" in e
        }

    def forget_partitions(self, keys: set[str]) -> None:
        """Retention purged these partitions: their files stay recorded (so they are not read
        again as new) without them."""
        for e in self.entries.values():
            e["partitions"] = [k for k in e.get("partitions", []) if k not in keys]
            e["published"] = [k for k in e.get("published", []) if k not in keys]

    def unpublished(self, sha: str, scope: Scope) -> bool:
        e = self.entries[sha]
        done = set(e.get("published", []))
        return any(scope.covers(k) and k not in done for k in e.get("partitions", []))


def _abs(rel: str, landing: Path) -> str:
    return str(landing / rel)


def _rel(path: str, landing: Path) -> str:
    try:
        return Path(path).relative_to(landing).as_posix()
    except ValueError:
        return Path(path).as_posix()


@dataclass
class IncrementalBatch:
    """Which files a run reads, in two steps, and what it publishes (see the module docstring).

    ``planned`` are the files of the landing zone (``plan.plan_inputs``); ``sources`` limits
    the families whose new files the run takes (earlier files of any family are still read to
    complete an affected partition).
    """

    planned: list[PlannedFile]
    ledger: Ledger
    landing: Path
    scope: Scope = field(default_factory=Scope)
    reprocess: bool = False
    sources: frozenset[str] | None = None
    affected: set[str] = field(default_factory=set)
    first: list[PlannedFile] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    completed: set[str] = field(default_factory=set)  # read again for a new companion
    unchanged: int = 0
    has_work: bool = False

    def __post_init__(self) -> None:
        self.landing = Path(self.landing)
        here = {_rel(p.path, self.landing): p.sha256 for p in self.planned}
        self.superseded = sorted(
            sha
            for sha, e in self.ledger.entries.items()
            if e.get("path") in here and here[e["path"]] != sha
        )

    def _pending(self, p: PlannedFile) -> bool:
        if p.side and p.merge_into is None:
            return False  # a join source: read when a file it serves is read
        if p.sha256 is None:
            return True  # unreadable: refused and reported by every run until it is fixed
        if self.sources is not None and p.family not in self.sources:
            return False
        entry = self.ledger.entries.get(p.sha256)
        if entry is None:
            return True
        if entry.get("status") == "refused":
            return self.reprocess
        return self.ledger.unpublished(p.sha256, self.scope)

    def _with_side_files(
        self, files: list[PlannedFile], have: list[PlannedFile]
    ) -> list[PlannedFile]:
        """``files`` plus the side files they need that are not in ``have``.

        A join source serves the files of its folder and below; a companion completes the
        rows of its target contract's files in its own folder.
        """
        chosen = {p.path for p in have} | {p.path for p in files}
        folders = {Path(p.path).parent for p in files if not p.side}
        targets = {(Path(p.path).parent, p.contract) for p in files if not p.side}
        extra = []
        for p in self.planned:
            if not p.side or p.path in chosen:
                continue
            here = Path(p.path).parent
            if p.merge_into is not None:
                needed = (here, p.merge_into) in targets
            else:
                needed = any(f == here or here in f.parents for f in folders)
            if needed:
                extra.append(p)
        return extra + files

    def first_files(self) -> list[PlannedFile]:
        """Pending files and the side files they need; empty when the run has nothing to do.

        A new companion (a 2010 VoipDetails export arriving after its SessionDetails) brings
        back the files it completes, so their partitions are rebuilt with its rows.
        """
        pending = [p for p in self.planned if self._pending(p)]
        self.unchanged = sum(1 for p in self.planned if not p.side) - sum(
            1 for p in pending if not p.side
        )
        self.has_work = bool(pending or self.superseded or self.reprocess)
        if not self.has_work:
            self.first = []
            return []
        paths = {p.path for p in pending}
        for c in [p for p in pending if p.merge_into is not None]:
            for p in self.planned:
                same_folder = Path(p.path).parent == Path(c.path).parent
                if same_folder and p.contract == c.merge_into and p.path not in paths:
                    pending.append(p)
                    paths.add(p.path)
                    self.completed.add(p.path)
        self.first = self._with_side_files(pending, [])
        return self.first

    def second_files(self, first_results: list[dict]) -> tuple[list[PlannedFile], bool]:
        """The earlier files an affected partition also needs, and whether to restart.

        Restart (discard the staging area, read the first and second files together) is needed
        only when an earlier file outranks a new one of the same dataset: the new one was read
        without the session keys that filter its duplicates.
        """
        scope = self.scope
        for r in first_results:
            if r["status"] != "processed":
                continue
            keys = {k for k in map(partition_key, r["partitions"]) if k and scope.covers(k)}
            # A file read again for partitions an earlier, narrower run left out: only those.
            entry = self.ledger.entries.get(r.get("sha256") or "", {})
            before = {k for k in entry.get("partitions", []) if scope.covers(k)}
            completed = _abs(r["path"], self.landing) in self.completed
            if entry and not self.reprocess and not completed and before == keys:
                keys -= set(entry.get("published", []))
            self.affected |= keys
        for sha in self.superseded:
            self.affected |= {k for k in self.ledger.entries[sha]["partitions"] if scope.covers(k)}
        if self.reprocess:
            for e in self.ledger.entries.values():
                self.affected |= {k for k in e.get("partitions", []) if scope.covers(k)}
        first_paths = {p.path for p in self.first}
        by_sha = {p.sha256: p for p in self.planned if p.duplicate_of is None}
        second, missing = [], set()
        for sha, e in sorted(self.ledger.entries.items()):
            touched = self.affected.intersection(e.get("partitions", []))
            if not touched or sha in self.superseded or e.get("status") != "processed":
                continue
            p = by_sha.get(sha)
            if p is None:
                self.missing.append(sha)
                missing |= {k.split("/")[0] for k in touched}
            elif p.path not in first_paths:
                second.append(p)
        if missing and not self.reprocess:  # a reprocess rebuilds from what is there
            days = sorted(missing)
            raise InputError(
                f"new input touches {len(days)} day(s) ({days[0]} .. {days[-1]}) whose earlier "
                "input files are no longer in the landing zone; republishing them would lose "
                "rows. Put those files back, or rebuild the days from what is there with "
                "--reprocess and a date range"
            )
        restart = any(
            b.dataset == a.dataset and b.priority > a.priority
            for b in second
            for a in self.first
            if not a.side and not b.side
        )
        return self._with_side_files(second, self.first), restart

    def prune(self, staging: Path) -> list[str]:
        """Remove staged partitions outside the affected set; return them."""
        removed = []
        for part in sorted(Path(staging).glob("restricted/*/date=*/region=*")):
            rel = part.relative_to(staging).as_posix()
            if partition_key(rel) not in self.affected:
                shutil.rmtree(part)
                removed.append(rel)
        return removed

    def commit(self, results: list[dict], run_id: str) -> None:
        """Record the run's files in the ledger, after publication (or with nothing to publish)."""
        for sha in self.superseded:
            self.ledger.entries.pop(sha, None)
        for sha in self.missing:  # gone from the landing zone: its rebuilt partitions lost it
            e = self.ledger.entries[sha]
            e["partitions"] = [k for k in e["partitions"] if k not in self.affected]
            e["published"] = [k for k in e["published"] if k not in self.affected]
            if not e["partitions"]:
                del self.ledger.entries[sha]
        planned = {_rel(p.path, self.landing): p for p in self.planned}
        for r in results:
            p = planned.get(r["path"])
            sha = r.get("sha256")
            # A copy of another file is refused, and its original carries the hash. Join
            # sources are not recorded: they are read whenever a file they serve is.
            if not sha or p is None or p.duplicate_of is not None:
                continue
            if p.side and p.merge_into is None:
                continue
            if r["status"] != "processed" and r.get("io_error"):
                continue  # the OS failed the read: the next run reads it again
            seen = {"size": p.size, "mtime_ns": p.mtime_ns}
            if r["status"] != "processed":
                self.ledger.entries[sha] = {
                    "path": _rel(r["path"], self.landing),
                    "status": "refused",
                    "reason": r["reason"],
                    "partitions": [],
                    "published": [],
                    "run_id": run_id,
                    **seen,
                }
                continue
            keys = sorted({k for k in map(partition_key, r["partitions"]) if k})
            old = self.ledger.entries.get(sha, {})
            done = set(old.get("published", [])).intersection(keys) | self.affected.intersection(
                keys
            )
            self.ledger.entries[sha] = {
                "path": _rel(r["path"], self.landing),
                "status": "processed",
                "contract": r.get("contract"),
                "partitions": keys,
                "published": sorted(done),
                "run_id": run_id,
                **seen,
            }
