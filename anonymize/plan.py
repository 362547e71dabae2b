"""Plan a run's input files: hash each, recognise its kind from its header, order and group them.

Examples
--------
>>> priority_groups([])
[]
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from anonymize.errors import ContractError, InputError, read_failure, safe_text
from anonymize.layout import PlannedFile
from anonymize.policy import Policy
from anonymize.sources import open_source
from anonymize.sources.base import file_sha256

# Hashes this process has taken, by (path, size, modification time): the command line decides a
# run's work (``Run.work``) and the run then plans the same new files, which are not read twice.
_HASHED: OrderedDict[tuple[str, int, int], str] = OrderedDict()
_HASHED_MAX = 100_000


def _sha256(path: str, size: int, mtime_ns: int, reuse: bool) -> str:
    key = (path, size, mtime_ns)
    if reuse and key in _HASHED:
        _HASHED.move_to_end(key)
        return _HASHED[key]
    sha = _HASHED[key] = file_sha256(Path(path))
    if len(_HASHED) > _HASHED_MAX:
        _HASHED.popitem(last=False)
    return sha


def plan_inputs(
    files: list[tuple[str, str]],
    policy: Policy,
    known: dict[str, tuple[int, int, str]] | None = None,
) -> list[PlannedFile]:
    """Hash each file and recognise its kind from its header, for ordering and deduplication.

    Files whose header cannot be matched are still planned; ``process_file`` refuses them with
    the reason. A file with the same bytes as an earlier one (a copy dropped twice into the
    landing zone) is marked, so it is refused instead of counted twice. Higher-priority kinds
    come first (VoIP rows before the session rows they beat). ``known`` maps a path to the
    size, modification time (ns) and hash the ledger recorded: a file whose size and time are
    unchanged is not hashed again, nor one this process hashed already with that size and time.
    """
    planned = []
    seen: dict[str, str] = {}
    for path, family in sorted(files):
        contract = dataset = sha = duplicate_of = None
        priority = size = mtime_ns = 0
        join_source = side = False
        merge_into = problem = None
        try:
            st = os.stat(path)
            size, mtime_ns = st.st_size, st.st_mtime_ns
            cached = (known or {}).get(path)
            if cached is not None and cached[:2] == (size, mtime_ns):
                sha = cached[2]
            else:  # without ``known`` (an unscoped reprocess) every file is hashed anew
                sha = _sha256(path, size, mtime_ns, reuse=known is not None)
            c = open_source(Path(path), family).contract
            ds = policy.dataset_for(c)
            contract, dataset, priority = c.name, ds.name if ds else None, c.priority
            join_source = c.lookup is not None
            side = join_source or c.merge_into is not None
            merge_into = c.merge_into
            if not size:
                problem = "the file is empty (0 bytes)"
        except OSError as exc:
            problem = str(read_failure(exc))
        except (InputError, ContractError) as exc:
            problem = safe_text(str(exc).splitlines()[0])
        # A join source publishes nothing: the same Users export in two folders serves both.
        # Empty files are all alike: each is refused as empty, none as a copy of another.
        if sha is not None and not join_source and size:
            duplicate_of = seen.setdefault(sha, path)
            duplicate_of = None if duplicate_of == path else duplicate_of
        planned.append(
            PlannedFile(
                path,
                family,
                contract,
                dataset,
                priority,
                sha,
                duplicate_of,
                side,
                merge_into,
                size,
                mtime_ns,
                problem if duplicate_of is None else "same content as another file of the batch",
            )
        )
    return sorted(planned, key=lambda p: (-p.priority, p.path))


def priority_groups(planned: list[PlannedFile]) -> list[list[PlannedFile]]:
    """Planned files in groups of equal priority, highest first.

    Files of one group are independent (they may run in parallel); a group needs the session
    keys of the groups before it (``skip_keys``) to filter sessions those already published.
    """
    groups: dict[int, list[PlannedFile]] = {}
    for p in planned:
        groups.setdefault(p.priority, []).append(p)
    return [groups[k] for k in sorted(groups, reverse=True)]
