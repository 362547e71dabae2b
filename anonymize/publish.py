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
    AREAS,
    CURRENT,
    LOCK,
    MANIFESTS,
    QUARANTINE,
    SHAREABLE,
    STAGING,
    TRASH,
    VERSIONS,
    fsync_dir,
    partition_key,
    write_atomically,
)


def recover(out: Path) -> list[str]:
    """Finish what a crashed run left, before a new run starts: only under the lock.

    A crash before the pointer swap leaves a version that was never published: it is removed,
    and readers never saw it. A root of the layout before versions (real ``restricted/`` and
    ``shareable/`` folders, partitions left in ``_trash/`` by a crash mid-swap) is put back
    together and becomes a version. The staging area goes. Returns what was restored or removed.
    """
    out = Path(out)
    done = []
    for run in sorted((out / TRASH).glob("*")):
        for part in sorted(run.glob("**/date=*/region=*")):
            live = out / part.relative_to(run)
            if not live.exists():  # the crash fell between the two renames: put it back
                live.parent.mkdir(parents=True, exist_ok=True)
                os.replace(part, live)
                done.append(live.relative_to(out).as_posix())
        shutil.rmtree(run, ignore_errors=True)
    with contextlib.suppress(OSError):
        (out / TRASH).rmdir()
    if any((out / a).is_dir() and not (out / a).is_symlink() for a in AREAS):
        _adopt_unversioned(out)
    current = current_version(out)
    if current is None and (out / VERSIONS).is_dir():
        complete = sorted(v for v in (out / VERSIONS).iterdir() if (v / _COMPLETE).exists())
        if complete:  # the crash fell in a first pointing: point at the newest whole version
            _point(out, complete[-1].name)
            current = complete[-1]
    for version in sorted((out / VERSIONS).glob("*")):
        if not (version / _COMPLETE).exists() and version != current:
            shutil.rmtree(version, ignore_errors=True)  # built, never published
            done.append(f"{VERSIONS}/{version.name}")
    shutil.rmtree(out / STAGING, ignore_errors=True)
    return done


_COMPLETE = ".complete"  # in a version folder: it is whole and may be pointed at
VERSIONS_KEPT = 2  # the published version and the one before, for readers still on it


def current_version(out: Path) -> Path | None:
    """The folder of the published version (``<out>/_versions/<run-id>``), None before any."""
    link = Path(out) / CURRENT
    if not link.is_symlink():
        return None
    return Path(out) / VERSIONS / Path(os.readlink(link)).name


def _point(out: Path, version: str) -> None:
    """Publish ``version``: one atomic rename of the ``current`` symlink, made durable."""
    tmp = out / f".{CURRENT}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(f"{VERSIONS}/{version}", tmp)
    os.replace(tmp, out / CURRENT)
    for area in AREAS:  # fixed links through ``current``: made once
        if not (out / area).is_symlink():
            os.symlink(f"{CURRENT}/{area}", out / area)
    fsync_dir(out)


def _adopt_unversioned(out: Path) -> None:
    """Turn the real ``restricted/`` and ``shareable/`` folders of an older root into a version."""
    version = out / VERSIONS / "unversioned"
    version.mkdir(parents=True, exist_ok=True)
    for area in AREAS:
        src, dst = out / area, version / area
        if src.is_dir() and not src.is_symlink():
            with contextlib.suppress(OSError):
                dst.rmdir()  # an empty one, from an adoption a crash interrupted
            os.replace(src, dst)
        dst.mkdir(exist_ok=True)
    (version / _COMPLETE).touch()
    fsync_dir(version)
    _point(out, version.name)


PRIVATE = (VERSIONS, QUARANTINE, STAGING, MANIFESTS, TRASH, "_ledger.json", LOCK)


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
    """The partitions under ``root``: ``restricted/<dataset>/date=/region=`` and, of every
    release (or of ``releases``), ``shareable/<release>/<dataset>/date=/region=`` and, in a
    tenant release, ``shareable/<release>/<tenant>/<dataset>/date=/region=``."""
    names = ["*"] if releases is None else list(releases)
    shareable = {
        p
        for r in names
        for depth in ("*", "*/*")
        for p in root.glob(f"shareable/{r}/{depth}/date=*/region=*")
    }
    return sorted([*root.glob("restricted/*/date=*/region=*"), *shareable])


def _release_documents(root: Path) -> list[Path]:
    """The documents of each release folder (its datasheet): ``shareable/<release>/<FILE>``,
    and ``shareable/<release>/<tenant>/<FILE>`` in a tenant release."""
    found = [*Path(root).glob(f"{SHAREABLE}/*/*"), *Path(root).glob(f"{SHAREABLE}/*/*/*")]
    return sorted(p for p in found if p.is_file())


def carried_over(
    staging: Path,
    out: Path,
    replace: set[str] | None = None,
    releases: list[str] | None = None,
    purge: set[str] = frozenset(),
    purge_shareable: set[str] = frozenset(),
) -> list[str]:
    """The published partitions (paths relative to the version) that the next version keeps
    as they are: those the run did not stage, rebuild away or purge (see
    ``publish_partitions``). With the staged ones, they are the next version's partitions."""
    old = current_version(Path(out))
    if old is None:
        return []
    staged = {p.relative_to(staging).as_posix() for p in _partition_dirs(Path(staging))}
    replaceable = {p.relative_to(old).as_posix() for p in _partition_dirs(old, releases)}
    kept = []
    for part in _partition_dirs(old):
        rel = part.relative_to(old).as_posix()
        rebuilt = replace is not None and partition_key(rel) in replace and rel in replaceable
        expired = partition_key(rel) in purge and (
            rel.startswith("restricted/") or "/".join(rel.split("/")[1:3]) in purge_shareable
        )
        if rel not in staged and not rebuilt and not expired:
            kept.append(rel)
    return kept


def publish_partitions(
    staging: Path,
    out: Path,
    run_id: str,
    *,
    replace: set[str] | None = None,
    releases: list[str] | None = None,
    purge: set[str] = frozenset(),
    purge_shareable: set[str] = frozenset(),
) -> list[str]:
    """Publish the staged partitions as a new version of the whole output; return them.

    The new version (``_versions/<run-id>``) is the published one with every staged
    ``restricted/<dataset>/date=D/region=R`` and ``shareable/<release>/<dataset>/date=D/region=R``
    put in place, and the other partitions carried over as hard links (no copy). ``replace``
    lists the ``date/region`` keys the run rebuilt: a published partition with such a key that
    the run did not stage (its rows are gone, e.g. a corrected export) is left out, in the
    restricted datasets and in the shareable folders of ``releases`` (all when None). ``purge``
    lists ``date/region`` keys past retention: their restricted partitions, and those of the
    shareable ``<release>/<dataset>`` folders in ``purge_shareable`` (event releases), are left
    out; the statistics stay.

    Then one atomic rename of the ``current`` symlink publishes it: a reader sees the whole
    previous output or the whole new one, whenever the process dies, never a mix or a hole.
    Readers that resolve ``current`` once (``os.path.realpath``) keep a stable snapshot while
    later runs publish; the two newest versions are kept.
    """
    staging, out = Path(staging), Path(out)
    new = out / VERSIONS / run_id
    old = current_version(out)
    staged = {p.relative_to(staging).as_posix(): p for p in _partition_dirs(staging)}
    kept = carried_over(staging, out, replace, releases, purge, purge_shareable)
    documents = {p.relative_to(staging).as_posix(): p for p in _release_documents(staging)}
    try:
        shutil.rmtree(new, ignore_errors=True)
        for area in AREAS:
            (new / area).mkdir(parents=True, exist_ok=True)
        for rel in kept:
            _link_tree(old / rel, new / rel)
        for doc in _release_documents(old) if old else []:  # a release this run left alone
            rel = doc.relative_to(old).as_posix()
            if rel not in documents and (new / rel).parent.is_dir():
                os.link(doc, new / rel)
        for rel, part in [*staged.items(), *documents.items()]:
            (new / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, new / rel)
        (new / _COMPLETE).touch()
        _fsync_tree(new)
        _point(out, run_id)
    except OSError as exc:
        raise PublishError(
            f"could not publish the new version: {describe_os_error(exc)}; the previous one "
            "is still the published one, and the next run removes the half-built one"
        ) from None
    versions = sorted(v for v in (out / VERSIONS).iterdir() if (v / _COMPLETE).exists())
    for version in versions[:-VERSIONS_KEPT]:
        if version != new:
            shutil.rmtree(version, ignore_errors=True)
    return sorted(staged)


def _link_tree(src: Path, dst: Path) -> None:
    """``dst`` as a copy of the folder ``src`` made of hard links (published files never change)."""
    for folder, _, files in os.walk(src):
        target = dst / Path(folder).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            os.link(Path(folder) / name, target / name)


def _fsync_tree(root: Path) -> None:
    """Make a new version's folders durable before it is pointed at."""
    for folder, _, _ in os.walk(root):
        fsync_dir(Path(folder))


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
    key_rotation: dict | None = None,
    subjects: dict | None = None,
    purged: dict | None = None,
) -> dict:
    """The manifest of a run: counts, hashes and ids only, never a data value.

    ``ignored``: the other files of the landing zone, as (path, reason). ``key_rotation``: the
    key ids before and after, for a run with ``--rekey`` under a new key.
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
        "key": {"key_id": key_id, "development": development, "rotation": key_rotation},
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
        "subject_requests": subjects or {},
        "purged": purged or {},
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
