"""Atomic publication of staged partitions, and the run manifest.

The output root's layout is in ``anonymize.layout``. Staging sits outside every dataset root,
so no reader (polars and DuckDB globs included) sees a half-written run. Each staged partition
replaces its live twin by two renames on one filesystem.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

from anonymize.errors import PublishError, RunRefused, describe_os_error, safe_text
from anonymize.layout import (
    LOCK,
    MANIFESTS,
    QUARANTINE,
    STAGING,
    TRASH,
    fsync_dir,
    partition_key,
    write_atomically,
)


def recover(out: Path) -> list[str]:
    """Finish what a crashed run left: restore partitions it moved to ``_trash`` but did not
    replace, drop the trash of swaps that completed, and remove its staging area.

    Only call it while holding the lock (no other run can be publishing). Returns the partitions
    restored.
    """
    out = Path(out)
    restored = []
    for run in sorted((out / TRASH).glob("*")):
        for part in sorted(run.glob("**/date=*/region=*")):
            live = out / part.relative_to(run)
            if not live.exists():  # the crash fell between the two renames: put it back
                live.parent.mkdir(parents=True, exist_ok=True)
                os.replace(part, live)
                restored.append(live.relative_to(out).as_posix())
        shutil.rmtree(run, ignore_errors=True)
    shutil.rmtree(out / STAGING, ignore_errors=True)
    return restored


PRIVATE = ("restricted", QUARANTINE, STAGING, MANIFESTS, TRASH, "_ledger.json", LOCK)


def owner_only() -> None:
    """Make everything this process creates from now on readable by its owner alone.

    Pseudonymised events, quarantined raw rows, staging, manifests and the ledger are private:
    a crash (``kill -9``) must leave nothing readable by other users of the machine. Called by
    the run (and by every task, which may run in a Dask worker process of its own).
    """
    os.umask(0o077)


def lock_down(out: Path) -> None:
    """Owner-only modes on what an earlier run (or an earlier version) left readable."""
    for name in PRIVATE:
        top = Path(out) / name
        if not top.exists():
            continue
        for p in [top, *top.rglob("*")] if top.is_dir() else [top]:
            with contextlib.suppress(OSError):
                p.chmod(0o700 if p.is_dir() else 0o600)


class RunLock:
    """Exclusive ownership of an output root by one run: ``<out>/_lock`` (host, pid, run id).

    The lock is an ``flock`` on that file, held for the whole run: the kernel drops it when the
    process dies, however it dies, so a lock left by a dead run is simply taken, and two runs
    can never both hold it (the file is checked to be the same one after locking, so a run that
    opened it just before the owner removed it tries again). The next run first recovers what a
    crashed run left (``recover``). A live owner makes ``acquire`` raise RunRefused naming its
    run id.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> with RunLock(root, "run-a"):
    ...     (root / LOCK).exists()
    True
    >>> (root / LOCK).exists()
    False
    """

    def __init__(self, out: Path, run_id: str) -> None:
        self.path = Path(out) / LOCK
        self.run_id = run_id
        self.recovered: list[str] = []
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        owner_only()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while self._fd is None:
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise self._busy() from None
                try:
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # the owner removed it between our open and our lock: again
                    os.close(fd)
                    continue
                body = {"host": os.uname().nodename, "pid": os.getpid(), "run_id": self.run_id}
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(body).encode(), 0)
                self._fd = fd
        except OSError as exc:
            self.release()
            raise RunRefused(describe_os_error(exc, "take the lock of")) from None
        self.recovered = recover(self.path.parent)
        lock_down(self.path.parent)
        return self

    def _busy(self) -> RunRefused:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            owner = {}
        return RunRefused(
            f"the output root is in use by run {safe_text(str(owner.get('run_id', 'unknown')))} "
            f"(pid {owner.get('pid', '?')} on {safe_text(str(owner.get('host', '?')))}); wait "
            "for it to end: the lock is released when its process ends, however it ends"
        )

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still holding it: see the class docstring
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id: UTC time and 6 random hex digits."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _partition_dirs(root: Path, releases: list[str] | None = None) -> list[Path]:
    shareable = "shareable/*/*/date=*/region=*"
    return sorted(
        [
            *root.glob("restricted/*/date=*/region=*"),
            *(
                root.glob(shareable)
                if releases is None
                else (p for r in releases for p in root.glob(f"shareable/{r}/*/date=*/region=*"))
            ),
        ]
    )


def publish_partitions(
    staging: Path,
    out: Path,
    run_id: str,
    *,
    replace: set[str] | None = None,
    releases: list[str] | None = None,
) -> list[str]:
    """Swap every staged partition folder into ``out``; return the published partition paths.

    For each ``restricted/<dataset>/date=D/region=R`` and
    ``shareable/<release>/<dataset>/date=D/region=R`` in staging: the live folder (if any) is
    renamed into ``_trash/<run-id>/``, the staged one renamed into place, and the trash removed.
    A crash between the two renames leaves the old partition in the trash, never a mixed one.

    ``replace`` lists the ``date/region`` keys the run rebuilt: a live partition with such a key
    that the run did not stage (its rows are gone, e.g. a corrected export) is removed too, in
    the restricted datasets and in the shareable folders of ``releases`` (all when None).
    """
    staging, out = Path(staging), Path(out)
    published = []
    staged = _partition_dirs(staging)
    for part_dir in staged:
        rel = part_dir.relative_to(staging)
        live = out / rel
        trash = out / TRASH / run_id / rel
        try:
            live.parent.mkdir(parents=True, exist_ok=True)
            if live.exists():
                trash.parent.mkdir(parents=True, exist_ok=True)
                os.replace(live, trash)
            os.replace(part_dir, live)
            fsync_dir(live.parent)
        except OSError as exc:
            raise PublishError(
                f"could not swap the partition {rel} into place: {describe_os_error(exc)}; "
                f"the previous version is kept under {TRASH}/{run_id}/ and is put back by the "
                "next run"
            ) from None
        published.append(rel.as_posix())
    if replace:
        fresh = set(published)
        for live in _partition_dirs(out, releases):
            rel = live.relative_to(out)
            if rel.as_posix() not in fresh and partition_key(rel.as_posix()) in replace:
                trash = out / TRASH / run_id / rel
                trash.parent.mkdir(parents=True, exist_ok=True)
                os.replace(live, trash)
    shutil.rmtree(out / TRASH / run_id, ignore_errors=True)
    return published


def write_manifest(out: Path, run_id: str, manifest: dict) -> Path:
    """Write ``_manifests/<run-id>.json`` atomically and durably."""
    folder = Path(out) / MANIFESTS
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n"
    return write_atomically(folder / f"{run_id}.json", text)


def _sum_reasons(results: list[dict], key: str) -> dict[str, int]:
    total: dict[str, int] = {}
    for r in results:
        for reason, n in r[key].items():
            total[reason] = total.get(reason, 0) + n
    return dict(sorted(total.items()))


# The libraries whose versions decide the bytes of the outputs (a rerun on other versions may
# differ: parquet encoding, phone metadata, user-agent regexes, DP noise) or how the run went.
OUTPUT_LIBRARIES = ("polars", "pyarrow", "phonenumbers", "ua-parser", "ua-parser-builtins",
                    "opendp", "pydantic", "lxml", "prefect")  # fmt: skip


def library_versions() -> dict[str, str | None]:
    """Python's and each of ``OUTPUT_LIBRARIES``' installed version (None when absent)."""
    import platform
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), **{n: version(n) for n in OUTPUT_LIBRARIES}}


def build_manifest(
    *,
    run_id: str,
    started_at: datetime,
    landing: Path,
    out: Path,
    policy: object,
    key_id: str,
    development: bool,
    results: list[dict],
    published: list[str],
    status: str,
    reason: str | None,
    software_version: str,
    releases: dict | None = None,
    gate: dict | None = None,
    incremental: dict | None = None,
    ignored: list[tuple[str, str]] | None = None,
) -> dict:
    """The manifest of a run: counts, hashes and ids only, never a data value.

    ``ignored``: the other files of the landing zone, as (path, reason).
    """
    staged_paths = ("keys_path", "lookup_path")
    inputs = [{k: v for k, v in r.items() if k not in staged_paths} for r in results]
    processed = [r for r in inputs if r["status"] == "processed"]

    def total(key: str) -> int:
        return sum(sum(r[key].values()) if isinstance(r[key], dict) else r[key] for r in processed)

    return {
        "run_id": run_id,
        "status": status,
        "reason": reason,
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "software_version": software_version,
        "library_versions": library_versions(),
        "not_for_sharing": development,
        "key": {"key_id": key_id, "development": development},
        "policy": {
            "source": getattr(policy, "source", None),
            "version": getattr(policy, "version", None),
            "sha256": getattr(policy, "hash", None),
        },
        "landing": str(landing),
        "out": str(out),
        "totals": {
            "files": len(inputs),
            "files_processed": len(processed),
            "files_refused": len(inputs) - len(processed),
            "files_ignored": len(ignored or []),
            "rows_read": total("rows_read"),
            "rows_published": total("rows_published"),
            "rows_quarantined": total("rows_quarantined"),
            "rows_filtered": total("rows_filtered"),
        },
        "quarantine": {
            "folder": f"{QUARANTINE}/{run_id}",
            "rows_by_reason": _sum_reasons(processed, "rows_quarantined"),
        },
        "filtered_by_reason": _sum_reasons(processed, "rows_filtered"),
        "incremental": incremental or {},
        "partitions_published": published,
        "releases": releases or {},
        "gate": {
            k: v
            for k, v in (gate or {"verdict": "not_run", "findings": []}).items()
            if k not in ("volumes", "unicity")
        },
        "volumes": (gate or {}).get("volumes", []),
        "unicity": (gate or {}).get("unicity", {}),
        "inputs": inputs,
        "ignored": [{"path": p, "reason": r} for p, r in ignored or []],
    }
