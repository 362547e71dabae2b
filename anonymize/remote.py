"""Landing zones and output roots on object storage (``s3://``, ``gs://``, ``az://`` URLs).

A run works on local folders, as always; a URL is mirrored around it:

- **Landing zone**: the objects under the URL are copied into a local cache (only those new or
  changed since the last run: same key, size and ETag are skipped), each with the object's time
  as its modification time, so the run's ledger sees the same files, sizes and times on every
  machine. Objects gone from the store are removed from the cache.
- **Output root**: the published state is pulled into a local mirror (the version the store's
  ``CURRENT`` names, the ledger, deliveries, data-subject requests, manifests), the run publishes
  into the mirror, and the new version is pushed: every file of ``_versions/<run-id>/`` (a
  partition carried over from the previous version is copied inside the store, not uploaded),
  then ``.complete``, the delivery ledger, and last ``CURRENT``: one small object written in one
  PUT. A reader reads ``CURRENT`` once and then only ``_versions/<that id>/``: it sees one whole
  release, whenever a run dies, and keeps it while later runs publish (the two newest versions
  are kept, as on disk). ``pinned`` gives a reader that folder's URL.
- **Lock**: ``_lock``, created only if absent (a conditional PUT), removed at the end.

The bytes of every Parquet file are those a run on local folders writes. Credentials come from
the store's usual environment and configuration (``AWS_*`` variables and ``~/.aws`` for S3,
``AWS_ENDPOINT_URL`` for an S3-compatible server; the Google and Azure libraries' own), never
from the policy; no URL is logged with credentials in it (fsspec URLs carry none).

- **Dask workers that share only the store**: each file's task fetches its input, the staged
  tables it needs and the requests into a temporary area of the worker, stages there, and
  uploads what it staged under ``_staging/<run-id>/``; the driver fetches that after each group
  (``stage_on_worker``, ``fetch_staging``) and removes it from the store when the run ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from anonymize.errors import RunRefused, StorageError
from anonymize.layout import (
    CURRENT,
    MANIFESTS,
    QUARANTINE,
    STAGING,
    SUBJECTS_FOUND,
    VERSIONS,
    PlannedFile,
)
from anonymize.publish import _COMPLETE, _point, current_version, owner_only

REMOTE = re.compile(r"^(s3|s3a|gs|gcs|az|abfs|abfss|memory)://", re.IGNORECASE)
POINTER = "CURRENT"  # the store's pointer object: the id of the published version
REMOTE_LOCK = "_lock"
# The run's state besides versions, mirrored both ways (deletions too: retention purges).
STATE = ("_ledger.json", "_deliveries.json", "_subjects", MANIFESTS, QUARANTINE)
SYNC_INDEX = ".sync.json"  # beside a cache or mirror: what was fetched, by ETag
CACHE_ENV = "CDRANON_CACHE"


_FOLDED = re.compile(r"^(s3|s3a|gs|gcs|az|abfs|abfss|memory):/(?!/)", re.IGNORECASE)


def place(value: str | os.PathLike) -> str:
    """A landing zone or output root as given: a URL that went through ``Path`` (which folds
    ``s3://b`` into ``s3:/b``, as Prefect's parameter coercion does) is a URL again.

    >>> place(Path("s3://uc-anon/out")), place(Path("/srv/uc/out")), place("gs://b/x")
    ('s3://uc-anon/out', '/srv/uc/out', 'gs://b/x')
    """
    return _FOLDED.sub(lambda m: f"{m.group(1)}://", str(value))


def is_remote(place: str | os.PathLike | None) -> bool:
    """Whether ``place`` is an object-store URL rather than a local path."""
    return place is not None and bool(REMOTE.match(str(place)))


def cache_dir() -> Path:
    """Where mirrors and landing caches live: ``$CDRANON_CACHE``, else the user's cache."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cdranon"


def _local_for(url: str, kind: str) -> Path:
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return cache_dir() / f"{kind}-{digest}"


def filesystem(url: str):
    """The fsspec filesystem of ``url`` and the path inside it (no trailing slash)."""
    try:
        from fsspec.core import url_to_fs
    except ImportError:  # pragma: no cover - fsspec comes with the base install
        raise StorageError("object storage needs fsspec: pip install 'cdranon[s3]'") from None
    try:
        fs, path = url_to_fs(url)
    except (ImportError, ValueError) as exc:
        scheme = url.split("://", 1)[0]
        extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}.get(scheme, "azure")
        raise StorageError(
            f"no filesystem for {scheme}:// URLs ({type(exc).__name__}); install the extra: "
            f"pip install 'cdranon[{extra}]'"
        ) from None
    return fs, path.rstrip("/")


def _mtime(info: dict) -> float | None:
    for key in ("LastModified", "mtime", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def _tag(info: dict) -> str:
    return str(info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("size"))


def _listing(fs, root: str) -> dict[str, dict]:
    """Every object under ``root``: relative key -> its info (size, ETag, time). Listed anew
    (fsspec caches listings, and other machines write the store). A key that would leave the
    local folder it is copied into (``..``, an absolute path) refuses the run."""
    fs.invalidate_cache(root)
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    listed = {
        p[len(root) + 1 :]: info
        for p, info in found.items()
        if info.get("type", "file") == "file" and p.startswith(root + "/")
    }
    for rel in listed:
        parts = rel.split("/")
        if ".." in parts or "" in parts or rel.startswith("/"):
            raise StorageError(
                f"an object under {root} has a key with '..' or an empty segment; cdranon "
                "copies keys into local folders and will not follow it: rename or remove it"
            )
    return listed


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """The store's own errors as a StorageError naming the URL and the error's type only (a
    client library's message can carry request details; credentials never reach one here)."""
    try:
        yield
    except (StorageError, RunRefused):
        raise
    except Exception as exc:
        raise StorageError(
            f"the object store at {url} failed ({type(exc).__name__}); check the credentials "
            "and endpoint in the environment (AWS_*, AWS_ENDPOINT_URL ...), and the bucket"
        ) from None


def sync_landing(url: str, cache: Path | None = None) -> Path:
    """Copy the landing zone at ``url`` into a local cache (what changed only); return it.
    The cache holds raw exports: readable by its owner alone, like everything a run writes."""
    owner_only()
    fs, root = filesystem(url)
    cache = Path(cache) if cache else _local_for(url, "landing")
    cache.mkdir(parents=True, exist_ok=True)
    index_path = cache.parent / f"{cache.name}{SYNC_INDEX}"  # beside it: not an input
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    remote = _listing(fs, root)
    if not remote and not fs.exists(root):
        raise StorageError(f"the landing zone {url} does not exist or cannot be listed")
    for rel in sorted(set(index) - set(remote)):  # gone from the store
        (cache / rel).unlink(missing_ok=True)
        index.pop(rel, None)
    for rel, info in sorted(remote.items()):
        local = cache / rel
        tag = _tag(info)
        if index.get(rel) == tag and local.exists() and local.stat().st_size == info.get("size"):
            continue
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(f"{root}/{rel}", str(local))
        when = _mtime(info)
        if when is not None:
            os.utime(local, (when, when))
        index[rel] = tag
    index_path.write_text(json.dumps(index, sort_keys=True))
    return cache


class RemoteOut:
    """An output root on object storage, worked on through a local mirror."""

    def __init__(self, url: str, mirror: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = filesystem(self.url)
        self.mirror = Path(mirror) if mirror else _local_for(self.url, "out")
        self._locked = False

    # --- reading the store ---------------------------------------------------------------------

    def published(self) -> str | None:
        """The id of the version the store's ``CURRENT`` names, None before any."""
        try:
            return self.fs.cat_file(f"{self.root}/{POINTER}").decode().strip() or None
        except FileNotFoundError:
            return None

    def pinned(self) -> str | None:
        """The URL of the published version's folder: a reader reads under it only."""
        version = self.published()
        return f"{self.url}/{VERSIONS}/{version}" if version else None

    # --- the lock ------------------------------------------------------------------------------

    def lock(self, run_id: str) -> None:
        """Take the store's run lock, or refuse: another run of this output root is going."""
        body = json.dumps({"run_id": run_id, "host": socket.gethostname(), "since": time.time()})
        try:
            self.fs.pipe_file(f"{self.root}/{REMOTE_LOCK}", body.encode(), mode="create")
        except FileExistsError:
            raise RunRefused(
                f"another run holds the lock of {self.url} ({REMOTE_LOCK}); if no run is going "
                f"(one was killed), delete {self.url}/{REMOTE_LOCK} and run again"
            ) from None
        self._locked = True

    def unlock(self) -> None:
        if self._locked:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(f"{self.root}/{REMOTE_LOCK}")
            self._locked = False

    # --- pull ----------------------------------------------------------------------------------

    def pull(self) -> Path:
        """Make the mirror the store's published state; return the mirror (owner-only, as the
        output root it copies: pseudonymised events, quarantined raw rows)."""
        owner_only()
        m = self.mirror
        m.mkdir(parents=True, exist_ok=True)
        version = self.published()
        local = current_version(m)
        if version is not None and (local is None or local.name != version):
            target = m / VERSIONS / version
            if not (target / _COMPLETE).exists():
                shutil.rmtree(target, ignore_errors=True)
                prefix = f"{self.root}/{VERSIONS}/{version}"
                for rel in sorted(_listing(self.fs, prefix)):
                    (target / rel).parent.mkdir(parents=True, exist_ok=True)
                    self.fs.get_file(f"{prefix}/{rel}", str(target / rel))
                (target / _COMPLETE).touch()
            _point(m, version)
        elif version is None and local is not None:  # the store was emptied: start over
            for name in (CURRENT, "restricted", "shareable"):
                (m / name).unlink(missing_ok=True)
        # Versions the store does not have (a push that died) are not the mirror's either.
        keep = {version} if version else set()
        for folder in (m / VERSIONS).iterdir() if (m / VERSIONS).is_dir() else []:
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)
        self._pull_state()
        return m

    # --- push ----------------------------------------------------------------------------------

    def push(self, before: str | None) -> str | None:
        """Upload what the run wrote into the mirror; publish its version last. ``before``: the
        version published when the run started. Returns the version the store now names."""
        local = current_version(self.mirror)
        new = local.name if local is not None else None
        if new is not None and new != before:
            self._upload_version(local, before)
            # Charged before the switch (as on disk): a crash in between over-charges.
            self._push_state(only="_deliveries.json")
            self.fs.pipe_file(f"{self.root}/{POINTER}", new.encode())
            self._drop_old_versions(keep={new, before} - {None})
        self._push_state()
        with contextlib.suppress(FileNotFoundError):  # what Dask workers staged for the run
            if self.fs.exists(f"{self.root}/{STAGING}"):
                self.fs.rm(f"{self.root}/{STAGING}", recursive=True)
        return self.published()

    # --- the state besides versions ------------------------------------------------------------

    def _index(self) -> dict[str, dict]:
        try:
            return json.loads(self._index_path.read_text())
        except (OSError, ValueError):
            return {}

    def _save_index(self, index: dict[str, dict]) -> None:
        self._index_path.write_text(json.dumps(index, sort_keys=True))

    @property
    def _index_path(self) -> Path:
        return self.mirror.parent / f"{self.mirror.name}{SYNC_INDEX}"  # beside the mirror

    def _remote_state(self) -> dict[str, dict]:
        listing = _listing(self.fs, self.root)
        return {r: i for r, i in listing.items() if r.split("/", 1)[0] in STATE}

    def _local_state(self) -> dict[str, Path]:
        found = {}
        for name in STATE:
            top = self.mirror / name
            files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
            found.update({f.relative_to(self.mirror).as_posix(): f for f in files})
        return found

    def _pull_state(self) -> None:
        """The store's state files into the mirror (what changed), and none it does not have."""
        index, remote = self._index(), self._remote_state()
        for rel, f in self._local_state().items():
            if rel not in remote:
                f.unlink()
                index.pop(rel, None)
        for rel, info in sorted(remote.items()):
            local, known = self.mirror / rel, index.get(rel, {})
            st = local.stat() if local.exists() else None
            changed_here = st is None or (st.st_size, st.st_mtime_ns) != (
                known.get("size"),
                known.get("mtime_ns"),
            )  # a run that could not push: the store's copy wins
            if known.get("tag") != _tag(info) or changed_here:
                local.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(f"{self.root}/{rel}", str(local))
            st = local.stat()
            index[rel] = {"tag": _tag(info), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        self._save_index(index)

    def _push_state(self, only: str | None = None) -> None:
        """The mirror's state files the run wrote or changed into the store; those it deleted
        (retention) out of the store."""
        index, local = self._index(), self._local_state()
        for rel, f in sorted(local.items()):
            if only is not None and rel != only:
                continue
            st = f.stat()
            known = index.get(rel, {})
            if known.get("size") != st.st_size or known.get("mtime_ns") != st.st_mtime_ns:
                self.fs.put_file(str(f), f"{self.root}/{rel}")
                tag = _tag(self.fs.info(f"{self.root}/{rel}"))
                index[rel] = {"tag": tag, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if only is None:
            for rel in sorted(set(index) - set(local)):
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(f"{self.root}/{rel}")
                index.pop(rel)
        self._save_index(index)

    def _upload_version(self, local: Path, before: str | None) -> None:
        """Every file of the new version; one that is the previous version's (a hard link in
        the mirror) is copied inside the store instead of uploaded."""
        prefix = f"{self.root}/{VERSIONS}/{local.name}"
        old = self.mirror / VERSIONS / before if before else None
        for f in sorted(p for p in local.rglob("*") if p.is_file() and p.name != _COMPLETE):
            rel = f.relative_to(local).as_posix()
            twin = old / rel if old is not None else None
            if twin is not None and twin.exists() and os.path.samefile(twin, f):
                self.fs.copy(f"{self.root}/{VERSIONS}/{before}/{rel}", f"{prefix}/{rel}")
            else:
                self.fs.put_file(str(f), f"{prefix}/{rel}")
        self.fs.pipe_file(f"{prefix}/{_COMPLETE}", b"")

    def _drop_old_versions(self, keep: set[str]) -> None:
        """The store keeps the published version and the one before (readers pinned to it)."""
        try:
            names = {
                p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(f"{self.root}/{VERSIONS}")
            }
        except FileNotFoundError:
            return
        for name in sorted(names - keep):
            self.fs.rm(f"{self.root}/{VERSIONS}/{name}", recursive=True)


@contextlib.contextmanager
def view(out: str | Path) -> Iterator[Path]:
    """A local, read-only view of an output root: the folder itself, or for a URL a copy of its
    published state pulled into a mirror of its own (a run's mirror is never touched)."""
    if not is_remote(out):
        yield Path(out)
        return
    url = str(out)
    with storage_errors(url):
        here = RemoteOut(url, mirror=_local_for(url, "view")).pull()
    yield here


@contextlib.contextmanager
def session(
    landing: str | Path | None, out: str | Path, run_id: str | None = None
) -> Iterator[tuple]:
    """Local ``(landing, out)`` for a run whose landing zone or output root may be URLs.

    A URL landing zone is synced into its cache; a URL output root is pulled into its mirror
    (under the store's lock), and whatever the run wrote is pushed when the block ends, even
    when the run failed (its manifest and quarantine), its version only when it published one.
    Local paths pass through untouched; ``landing`` may be None (a change of the output root's
    state alone, such as a data-subject request).
    """
    if landing is None or not is_remote(landing):
        local_landing = None if landing is None else Path(landing)
    else:
        with storage_errors(str(landing)):
            local_landing = sync_landing(str(landing))
    if not is_remote(out):
        yield local_landing, Path(out)
        return
    with storage_errors(str(out)):
        store = RemoteOut(str(out))
        store.lock(run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
    try:
        with storage_errors(str(out)):
            before = store.published()
            mirror = store.pull()
        try:
            yield local_landing, mirror
        finally:
            with storage_errors(str(out)):
                store.push(before)
    finally:
        with storage_errors(str(out)):
            store.unlock()


# --- Dask workers that share only the object store ------------------------------------------


@dataclass(frozen=True)
class StorePlaces:
    """The URLs of a run whose tasks run on workers that share only the object store."""

    landing: str
    out: str


def relative(path: str | Path, root: Path) -> str:
    """A path of the driver's local copies as the store's key below its root."""
    return Path(path).relative_to(root).as_posix()


def stage_on_worker(
    places: StorePlaces,
    run_id: str,
    planned: PlannedFile,
    skip_keys: list[str],
    lookups: dict[str, list[str]],
    stage: Callable[[PlannedFile, Path, Path, list[str], dict[str, list[str]]], dict],
) -> dict:
    """Stage one file on a worker that sees only the store.

    ``planned.path``, ``skip_keys`` and ``lookups`` are keys relative to the landing zone and the
    output root (the driver's local paths mean nothing here). The worker fetches the file, the
    staged tables it needs and the data-subject requests into a temporary area of its own, runs
    ``stage(planned, landing, out, skip_keys, lookups)`` there, and uploads what it staged and
    quarantined under ``_staging/<run-id>/`` and ``_quarantine/<run-id>/`` of the store, where the
    driver fetches it (``fetch_staging``). The result's paths come back relative to the root.
    """
    owner_only()  # a worker's temporary area holds a raw export while it stages it
    area = Path(tempfile.mkdtemp(prefix="cdranon-worker-"))
    try:
        lfs, lroot = filesystem(places.landing)
        ofs, oroot = filesystem(places.out)
        landing, out = area / "landing", area / "out"
        source = landing / planned.path
        source.parent.mkdir(parents=True, exist_ok=True)
        lfs.get_file(f"{lroot}/{planned.path}", str(source))

        def fetch(rel: str) -> str:
            local = out / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            ofs.get_file(f"{oroot}/{rel}", str(local))
            return str(local)

        skip = [fetch(r) for r in skip_keys]
        tables = {k: [fetch(r) for r in v] for k, v in lookups.items()}
        for folder in ("_subjects", f"{STAGING}/{run_id}/{SUBJECTS_FOUND}"):
            for rel in _listing(ofs, f"{oroot}/{folder}"):
                fetch(f"{folder}/{rel}")
        fetched = {p for p in out.rglob("*") if p.is_file()}
        result = stage(replace(planned, path=str(source)), landing, out, skip, tables)
        for f in sorted(p for p in out.rglob("*") if p.is_file() and p not in fetched):
            ofs.put_file(str(f), f"{oroot}/{f.relative_to(out).as_posix()}")
        for key in ("keys_path", "lookup_path"):
            if isinstance(result, dict) and result.get(key):
                result[key] = relative(result[key], out)
        return result
    finally:
        shutil.rmtree(area, ignore_errors=True)


def fetch_staging(places: StorePlaces, run_id: str, out: Path) -> None:
    """The driver's side: what workers staged and quarantined for the run, into ``out``."""
    ofs, oroot = filesystem(places.out)
    for folder in (f"{STAGING}/{run_id}", f"{QUARANTINE}/{run_id}"):
        for rel, info in _listing(ofs, f"{oroot}/{folder}").items():
            local = Path(out) / folder / rel
            if local.exists() and local.stat().st_size == info.get("size"):
                continue
            local.parent.mkdir(parents=True, exist_ok=True)
            ofs.get_file(f"{oroot}/{folder}/{rel}", str(local))
