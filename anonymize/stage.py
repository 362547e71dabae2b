"""Stage one input file: read, contract check and anonymisation, into staged Parquet parts.

``process_file`` is the unit of work the flows schedule: it reads one export in fixed-size
batches, types every column by the file's contract, sends bad rows to quarantine with a reason,
applies the policy's operators, and writes each batch's rows into ``date=/region=`` partition
folders under a staging root. It returns counts and paths, never data. Every record of the file
ends in exactly one of: published, quarantined (with a reason), filtered (with a reason).

Examples
--------
See ``tests/test_pipeline.py``; ``anonymize.run`` calls ``process_file`` for each planned file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from anonymize.canaries import Canaries, Collector, Hint, canary_key
from anonymize.contracts import Contract, all_contracts, load_contract, load_output_schema
from anonymize.dictionary import arrow_schema, dataset_entries
from anonymize.errors import (
    CdranonError,
    ContractError,
    InputError,
    TransientReadError,
    read_failure,
    safe_text,
)
from anonymize.keys import KeyRing
from anonymize.layout import CANARIES, LOOKUPS, PARQUET_OPTIONS, SUBJECTS_FOUND
from anonymize.operators import (
    REGISTRY,
    OpContext,
    PseudonymizeOptions,
    pool_region,
    region_of_path,
)
from anonymize.parse import REASON, DateOrder, type_frame
from anonymize.policy import CompiledRule, DatasetPolicy, Policy, rule_columns
from anonymize.sources import Reader, open_source
from anonymize.sources.base import RAW_LINE, ROW, RawBatch, file_sha256, prefetch


@dataclass
class FileResult:
    """What happened to one input file. Counts and paths only: safe to log and persist."""

    path: str
    family: str
    status: str = "refused"  # "processed" or "refused"
    reason: str | None = None
    contract: str | None = None
    dataset: str | None = None
    sha256: str | None = None
    bytes: int = 0
    rows_read: int = 0
    rows_published: int = 0
    rows_quarantined: dict[str, int] = field(default_factory=dict)
    rows_filtered: dict[str, int] = field(default_factory=dict)
    partitions: list[str] = field(default_factory=list)
    keys_path: str | None = None  # session keys of this file, for lower-priority duplicates
    lookup_path: str | None = None  # join sources: key -> pseudonym, for later files of the run
    # Refused because the operating system failed the read (the file may read on the next run),
    # and of those, the failures a retry may cure now (see ``errors.is_transient``).
    io_error: bool = False
    transient: bool = False

    def refuse(self, exc: CdranonError) -> FileResult:
        """Refused for ``exc``: its one-line reason, capped, and whether it was the OS's doing."""
        self.status = "refused"
        self.reason = safe_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        self.io_error = bool(getattr(exc, "io_error", False))
        self.transient = isinstance(exc, TransientReadError)
        return self

    @property
    def balanced(self) -> bool:
        """Rows read = published + quarantined + filtered."""
        return self.rows_read == (
            self.rows_published
            + sum(self.rows_quarantined.values())
            + sum(self.rows_filtered.values())
        )

    def to_dict(self) -> dict:
        return asdict(self)


def make_context(policy: Policy, keyring: KeyRing, scope: str = "restricted") -> OpContext:
    """The operator context of a run: keys and the policy's organisation settings."""
    return OpContext(
        keyring=keyring,
        own_domains=policy.organization.own_domains,
        default_phone_region=policy.organization.default_phone_region,
        region_pools=dict(policy.regions),
        scope=scope,
        web=policy.web_vocabulary,
        accounts={t: spec.domains for t, spec in policy.tenants.items()},
        sites=policy.site_networks,
    )


def parquet_metadata(
    policy: Policy, keyring: KeyRing, dataset: str, inputs_digest: str
) -> dict[str, str]:
    """Key-value metadata of every output file.

    No run id and no clock time: reruns must stay byte-identical.
    """
    return {
        "cdranon.dataset": dataset,
        "cdranon.schema_version": load_output_schema(dataset).version,
        "cdranon.policy_version": policy.version,
        "cdranon.policy_hash": policy.hash,
        "cdranon.key_id": keyring.key_id,
        "cdranon.inputs_digest": inputs_digest,
        "cdranon.not_for_sharing": "true" if keyring.is_development else "false",
    }


def _rule_exprs(
    rules: tuple[CompiledRule, ...], contract: Contract, ctx: OpContext
) -> list[pl.Expr]:
    """The expressions of the rules that apply to this contract's columns."""
    known = contract.column_map
    exprs = []
    for rule in rules:
        if any(n not in known for n in rule_columns(rule)):
            continue  # a column of another export kind of the dataset: its output stays null
        src = pl.col(rule.column) if rule.column is not None else None
        exprs.append(rule.spec.fn(src, options=rule.options, ctx=ctx).alias(rule.output))
    return exprs


def _write_quarantine(
    raw: pl.DataFrame, reasons: pl.Series, batch: RawBatch, path: Path
) -> Counter[str]:
    """Write the bad rows of a batch (raw strings, reason, record index) to the quarantine."""
    counts: Counter[str] = Counter()
    frames = []
    mask = reasons.is_not_null()
    if mask.any():
        rows = (
            batch.row_numbers
            if batch.row_numbers is not None
            else pl.int_range(0, raw.height, dtype=pl.Int64, eager=True) + batch.first_row
        )
        bad = raw.with_columns(pl.Series(REASON, reasons), rows.alias(ROW)).filter(mask)
        counts.update(dict(bad.group_by(REASON).len().iter_rows()))
        frames.append(bad.with_columns(pl.lit(None, dtype=pl.String).alias(RAW_LINE)))
    if batch.rejected is not None and batch.rejected.height:
        counts.update(dict(batch.rejected.group_by(REASON).len().iter_rows()))
        frames.append(batch.rejected)
    if batch.ragged:
        counts["ragged_row"] += len(batch.ragged)
        frames.append(
            pl.DataFrame(
                {
                    REASON: ["ragged_row"] * len(batch.ragged),
                    # pyarrow numbers a bad line within its read chunk, not the file: no index.
                    ROW: [None] * len(batch.ragged),
                    RAW_LINE: [t for _, t in batch.ragged],
                },
                schema={REASON: pl.String, ROW: pl.Int64, RAW_LINE: pl.String},
            )
        )
    if frames:
        path.parent.mkdir(parents=True, exist_ok=True)
        pl.concat(frames, how="diagonal").write_parquet(path, compression="zstd")
    return counts


def process_file(
    path: Path,
    *,
    family: str,
    policy: Policy,
    keyring: KeyRing,
    staging: Path,
    quarantine: Path,
    landing: Path | None = None,
    skip_keys: list[str] | None = None,
    lookups: dict[str, list[str]] | None = None,
    ctx: OpContext | None = None,
    sha256: str | None = None,
    duplicate_of: str | None = None,
    erased: frozenset[str] = frozenset(),
    keep_from: date | None = None,
    previous: tuple[KeyRing, frozenset[str], frozenset[str]] | None = None,
) -> FileResult:
    """Read, check and anonymise one file into ``staging``; bad rows into ``quarantine``.

    ``skip_keys`` are Parquet files of session keys taken by a higher-priority kind of export in
    this run (a VoIP row beats the session row of the same session): rows with those keys are
    filtered as ``duplicate_session``. ``lookups`` are the key -> pseudonym files that join
    sources (Users, Phones, Connect users) of this run wrote, by contract name. A join source
    itself is read into such a file and publishes nothing (its rows are filtered as
    ``join_source``). A file that cannot be read to its end is refused whole, and nothing of it
    stays in staging or quarantine. Rows of ``erased`` people and of days before ``keep_from``
    are filtered (``erased``, ``retention``). ``previous``: on a key rotation, the previous
    key ring, the pseudonyms under it of every requested person and of the erased ones; the
    old -> new pseudonyms found are written to ``staging/_subjects/<file>.json``.
    """
    path = Path(path)
    rel = path.relative_to(landing).as_posix() if landing else path.name
    result = FileResult(path=rel, family=family)
    ctx = ctx or make_context(policy, keyring)
    ctx.erased, ctx.keep_from = erased, keep_from
    if previous is not None:
        ctx.previous = make_context(policy, previous[0])
        ctx.previous_subjects, ctx.previous_erased = previous[1], previous[2]
    if duplicate_of is not None:
        dup = Path(duplicate_of)
        dup_rel = dup.relative_to(landing).as_posix() if landing else dup.name
        result.sha256 = sha256
        result.reason = f"same content as {dup_rel}; its rows are counted there"
        return result
    try:
        result.sha256 = sha256 or file_sha256(path)
        result.bytes = path.stat().st_size
        if result.bytes == 0:
            result.reason = "the file is empty (0 bytes)"
            return result
        source = open_source(path, family)
        reader, contract = source.reader, source.contract
    except OSError as exc:
        return result.refuse(read_failure(exc))
    except (InputError, ContractError) as exc:
        return result.refuse(exc)
    result.contract = contract.name
    file_tag = result.sha256[:16]
    side = _SideFile(reader, contract, policy, ctx, staging, quarantine, file_tag, result)
    if contract.lookup is not None:
        looked_up = _process_lookup(side)
        _write_found(ctx, staging, file_tag)  # for the files that use this join source
        return looked_up
    ds = policy.dataset_for(contract)
    if ds is None:
        result.reason = f"the policy has no dataset for the contract {contract.name}"
        return result
    result.dataset = ds.name
    if contract.merge_into is not None:
        ctx.lookups = _load_lookups(lookups, rel)
        return _process_companion(side, ds)
    fixed_region = None
    region_col = ds.partition.region
    if ds.partition.region_from == "path" or region_col not in contract.column_map:
        fixed_region = region_of_path(rel, ctx.region_pools)
        if fixed_region is None:
            result.reason = (
                "the file's path maps to no region: put it in a folder named after its region "
                "(AMER, EMEA, APAC) or after the server's FQDN, matching the policy's regions"
            )
            return result
    ctx.lookups = _load_lookups(lookups, rel)
    companions = _load_companions(contract, lookups, rel)

    # Stage under a per-file folder first: a file that breaks half-way leaves nothing behind.
    work = staging / "_files" / file_tag
    qdir = quarantine / ds.name
    shutil.rmtree(work, ignore_errors=True)
    meta = parquet_metadata(policy, keyring, ds.name, _inputs_digest(result.sha256, contract))

    def forget() -> None:
        shutil.rmtree(work, ignore_errors=True)
        for stale in qdir.glob(f"{file_tag}-*.parquet"):
            stale.unlink()
        result.rows_read = result.rows_published = 0
        result.rows_quarantined, result.rows_filtered, result.partitions = {}, {}, []

    order = DateOrder(policy.organization.slash_dates)
    while True:
        try:
            _process_batches(
                reader, contract, ds, policy, ctx, work, qdir, file_tag, meta, skip_keys,
                fixed_region, companions, result, order,
            )  # fmt: skip
            break
        except InputError as exc:
            forget()
            if exc.bad_encoding and reader.encoding == "utf-8":
                # Not UTF-8 after all: SSMS and Windows tools also write the ANSI code page.
                reader.encoding = "cp1252"
                continue
            if exc.date_order is not None:  # rows were read month first before the file said
                order = DateOrder(order.setting, found=exc.date_order)
                continue
            return result.refuse(exc)
    _write_found(ctx, work, file_tag)
    # Move the file's parts (and its canaries) into the run's staging tree.
    moved = [*work.glob("restricted/**/*.parquet"), *work.glob(f"{CANARIES}/*"),
             *work.glob(f"{SUBJECTS_FOUND}/*")]  # fmt: skip
    for part in sorted(moved):
        target = staging / part.relative_to(work)
        target.parent.mkdir(parents=True, exist_ok=True)
        part.replace(target)
    keys = work / "keys.parquet"
    if keys.exists():
        result.keys_path = str(keys)
    result.status = "processed"
    return result


def _write_found(ctx: OpContext, root: Path, file_tag: str) -> None:
    """On a key rotation: the old -> new pseudonyms of requested people this file gave
    (pseudonyms, never raw values), under ``root/_subjects_found``."""
    if ctx.rederived:
        found = root / SUBJECTS_FOUND / f"{file_tag}.json"
        found.parent.mkdir(parents=True, exist_ok=True)
        found.write_text(json.dumps(dict(sorted(ctx.rederived.items()))))


def _drop_forgotten(
    out: pl.DataFrame, ds: DatasetPolicy, ctx: OpContext, filtered: Counter[str]
) -> pl.DataFrame:
    """Drop the rows of days past retention (``retention``) and those of erased people
    (``erased``), counted as filtered."""
    if ctx.keep_from is not None:
        old = pl.col("__date") < ctx.keep_from
        n = out.select(old.sum()).item()
        if n:
            filtered["retention"] += n
            out = out.filter(~old)
    cols = [c for c in ds.pseudonym_columns if c in out.columns]
    if ctx.erased and cols and out.height:
        hit = pl.any_horizontal(pl.col(c).is_in(list(ctx.erased)).fill_null(False) for c in cols)
        n = out.select(hit.sum()).item()
        if n:
            filtered["erased"] += n
            out = out.filter(~hit)
    return out


def canary_columns(contract: Contract, ds: DatasetPolicy | None) -> dict[str, Hint]:
    """Raw header names of the columns whose values are canaries, with how to read them.

    Every Personal Data column (but per-record random tokens, ``canary: false``), read by the
    rule that anonymises it: an X-Forwarded-For chain element by element (``generalize_ip``), a
    request path by what its template would not publish (``url_template``), a referer by its
    host and its free text (``url_host``); and the user agents (``user_agent``), whose product
    names can name a person or an app.
    """
    by_rule = {
        "generalize_ip": "chain", "url_template": "url", "url_host": "referer",
        "user_agent": "user_agent",
    }  # fmt: skip
    hints: dict[str, Hint] = {}
    for r in ds.rules if ds else ():
        if r.column is not None and r.spec.name in by_rule:
            hints.setdefault(r.column, by_rule[r.spec.name])  # type: ignore[arg-type]
    out: dict[str, Hint] = {}
    for header, name in contract.aliases.items():
        c = contract.column_map[name]
        if not c.canary or c.type not in ("string", "guid", "ip"):
            continue
        hint = hints.get(name, "plain")
        if c.privacy == "PD" or hint == "user_agent":
            out[header] = hint
    return dict(sorted(out.items()))


def _write_canaries(frames: list[pl.DataFrame], staging: Path, file_tag: str) -> None:
    """Keep the file's canaries (keyed hashes, no raw value) in the run's staging area."""
    if frames:
        target = staging / CANARIES / f"{file_tag}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        pl.concat(frames).unique().sort("h").write_parquet(target)


def _canary_collector(contract: Contract, ds: DatasetPolicy | None, ctx: OpContext):
    """A function from a raw batch to its hashed canary forms."""
    columns = canary_columns(contract, ds)
    return Collector(columns, Canaries(canary_key(ctx.keyring)), ctx.web)


def _inputs_digest(sha256: str, contract: Contract) -> str:
    """Digest of what a part was made from: the input's content hash and its contract."""
    return hashlib.sha256(f"{contract.name}\n{sha256}".encode()).hexdigest()


def _scoped_path(staging: Path, contract: Contract, rel: str, file_tag: str) -> Path:
    """Where a join source or companion is staged: under the landing folder it came from.

    Integer keys are only meaningful within one database: a Users export applies to the files
    of its own folder and the folders below it (another monitoring database's exports sit in
    another folder), and the nearest one wins.
    """
    folder = Path(rel).parent
    return staging / LOOKUPS / contract.name / folder / f"{file_tag}.parquet"


def _in_scope(paths: list[str], rel: str) -> list[str]:
    """The staged files of the nearest scope that holds ``rel`` (see ``_scoped_path``)."""
    here = Path(rel).parent
    best: dict[Path, list[str]] = {}
    for p in paths:
        staged = Path(p)
        root = next(a for a in staged.parents if a.parent.name == LOOKUPS)
        scope = staged.parent.relative_to(root)
        if scope == Path(".") or here == scope or scope in here.parents:
            best.setdefault(scope, []).append(p)
    if not best:
        return []
    nearest = max(best, key=lambda s: len(s.parts) if s != Path(".") else 0)
    return sorted(best[nearest])


def _load_companions(
    contract: Contract, lookups: dict[str, list[str]] | None, rel: str
) -> pl.DataFrame | None:
    """The anonymised companion rows staged for this contract (2010 VoipDetails for
    SessionDetails) in this file's scope, keyed by the contract's key; None when there are none."""
    frames = [
        pl.read_parquet(p)
        for c in all_contracts()
        if c.merge_into == contract.name
        for p in _in_scope((lookups or {}).get(c.name, []), rel)
    ]
    if not frames:
        return None
    return pl.concat(frames, how="diagonal_relaxed").unique(
        subset=list(contract.key), keep="first", maintain_order=True
    )


def _load_lookups(lookups: dict[str, list[str]] | None, rel: str) -> dict[str, pl.DataFrame]:
    """Key -> pseudonym tables of the join sources in this file's scope, one per contract."""
    out = {}
    for name, paths in (lookups or {}).items():
        if load_contract(name).lookup is None:
            continue
        if scoped := _in_scope(paths, rel):
            frames = [pl.read_parquet(p) for p in scoped]
            out[name] = pl.concat(frames).unique(subset="key", keep="first", maintain_order=True)
    return out


@dataclass
class _SideFile:
    """A join source or companion being staged: its reader and contract, the run's settings."""

    reader: Reader
    contract: Contract
    policy: Policy
    ctx: OpContext
    staging: Path
    quarantine: Path
    file_tag: str
    result: FileResult


def _stage_side_table(
    f: _SideFile, select: list[pl.Expr], unique_on: list[str], filtered_as: str, qdir: Path
) -> FileResult:
    """Read a file that publishes nothing itself into a table staged for later files of the run.

    Bad rows go to the quarantine as usual; the good ones are counted as filtered with the
    reason ``filtered_as``. The table holds only ``select`` (pseudonyms, anonymised columns),
    never a raw identifier.
    """
    result, file_tag = f.result, f.file_tag
    collect_canaries = _canary_collector(f.contract, f.policy.dataset_for(f.contract), f.ctx)
    order = DateOrder(f.policy.organization.slash_dates)
    while True:
        frames, canaries, quarantined = [], [], Counter[str]()
        result.rows_read = 0
        try:
            for i, batch in enumerate(prefetch(f.reader.batches(f.policy.batch_rows))):
                result.rows_read += batch.rows_read
                canaries.append(collect_canaries(batch.frame))
                typed = type_frame(f.contract, batch.frame, order)
                quarantined += _write_quarantine(
                    batch.frame, typed[REASON], batch, qdir / f"{file_tag}-{i:05d}.parquet"
                )
                frames.append(typed.filter(pl.col(REASON).is_null()).select(select))
            if f.contract.merge_into is not None:  # a companion's dates are published
                order.check_decided()
            break
        except InputError as exc:
            for stale in qdir.glob(f"{file_tag}-*.parquet"):
                stale.unlink()
            if exc.date_order is not None:
                order = DateOrder(order.setting, found=exc.date_order)
                continue
            result.rows_read = 0
            return result.refuse(exc)
    _write_canaries(canaries, f.staging, file_tag)
    table = pl.concat(frames).unique(subset=unique_on, keep="first", maintain_order=True)
    target = _scoped_path(f.staging, f.contract, result.path, file_tag)
    target.parent.mkdir(parents=True, exist_ok=True)
    table.write_parquet(target)
    result.rows_quarantined = dict(sorted(quarantined.items()))
    used = result.rows_read - sum(quarantined.values())
    result.rows_filtered = {filtered_as: used} if used else {}
    result.lookup_path = str(target)
    result.status = "processed"
    return result


def _process_lookup(f: _SideFile) -> FileResult:
    """Read a join source into ``key -> pseudonym`` (never the raw value) in the run's staging."""
    spec = f.contract.lookup
    assert spec is not None
    pseudo = REGISTRY["pseudonymize"].fn(
        pl.col(spec.value), options=PseudonymizeOptions(kind=spec.kind), ctx=f.ctx
    )
    select = [pl.col(spec.key).cast(pl.String).alias("key"), pseudo.alias("pseudonym")]
    return _stage_side_table(f, select, ["key"], "join_source", f.quarantine / f.contract.name)


def _process_companion(f: _SideFile, ds: DatasetPolicy) -> FileResult:
    """Anonymise a companion export (its key and the outputs of its columns) for the rows of the
    export it completes, processed later in the run; nothing of it is published on its own."""
    key_cols = list(f.contract.key)
    select = [*(pl.col(k) for k in key_cols), *_rule_exprs(ds.rules, f.contract, f.ctx)]
    reason = f"merged_into:{f.contract.merge_into}"
    return _stage_side_table(f, select, key_cols, reason, f.quarantine / ds.name)


def _process_batches(
    reader: Reader,
    contract: Contract,
    ds: DatasetPolicy,
    policy: Policy,
    ctx: OpContext,
    work: Path,
    qdir: Path,
    file_tag: str,
    meta: dict[str, str],
    skip_keys: list[str] | None,
    fixed_region: str | None,
    companions: pl.DataFrame | None,
    result: FileResult,
    order: DateOrder,
) -> None:
    rule_exprs = _rule_exprs(ds.rules, contract, ctx)
    if fixed_region is not None:
        region = pl.lit(fixed_region, dtype=pl.String)
    else:
        region = pool_region(pl.col(ds.partition.region), options=None, ctx=ctx)
    date_col = ds.partition.date_for(contract)
    known = contract.column_map
    excludes = [ex for ex in ds.exclude if ex.column in known]
    key_cols = list(contract.key)
    skip = (
        pl.concat([pl.read_parquet(p) for p in skip_keys]).unique()
        if skip_keys and key_cols
        else None
    )
    keys_out: list[pl.DataFrame] = []
    quarantined: Counter[str] = Counter()
    filtered: Counter[str] = Counter()
    out_schema = load_output_schema(ds.name)
    out_columns, out_types = list(out_schema.columns), out_schema.polars_schema
    fields = arrow_schema(out_types, dataset_entries(ds.name, policy))  # the data dictionary
    partitions: set[str] = set()

    collect_canaries = _canary_collector(contract, ds, ctx)
    canaries: list[pl.DataFrame] = []
    # The canaries (Python over distinct values) are collected in a thread while this one runs
    # the batch's polars work, which releases the GIL: on two cores they cost little wall time.
    with ThreadPoolExecutor(1, thread_name_prefix="canaries") as pool:
        for i, batch in enumerate(prefetch(reader.batches(policy.batch_rows))):
            result.rows_read += batch.rows_read
            collecting = pool.submit(collect_canaries, batch.frame)
            typed = type_frame(contract, batch.frame, order).with_columns(
                pl.col(date_col).dt.date().alias("__date"), region.alias("__region")
            )
            reasons = typed.select(
                pl.coalesce(
                    pl.col(REASON),
                    pl.when(pl.col("__region").is_null()).then(pl.lit("unmapped_pool")),
                )
            ).to_series()
            quarantined += _write_quarantine(
                batch.frame, reasons, batch, qdir / f"{file_tag}-{i:05d}.parquet"
            )
            good = typed.filter(reasons.is_null())
            if skip is not None and good.height:
                before = good.height
                good = good.join(skip, on=key_cols, how="anti", maintain_order="left")
                if before - good.height:
                    filtered["duplicate_session"] += before - good.height
            for ex in excludes:
                hit = (pl.col(ex.column).fill_null(0) & ex.bits) != 0
                n = good.select(hit.sum()).item()
                if n:
                    filtered[ex.reason] += n
                    good = good.filter(~hit)
            if key_cols and good.height:
                keys_out.append(good.select(key_cols))
            if companions is None:
                out = good.select([*rule_exprs, pl.col("__date"), pl.col("__region")])
            else:
                keyed = good.select([*rule_exprs, *key_cols, pl.col("__date"), pl.col("__region")])
                out = keyed.join(
                    companions, on=key_cols, how="left", maintain_order="left", suffix="__c"
                )
                out = out.with_columns(
                    pl.coalesce(pl.col(c), pl.col(f"{c}__c")).alias(c)
                    for c in companions.columns
                    if f"{c}__c" in out.columns
                )
            missing = [c for c in out_schema.columns if c not in out.columns]
            out = out.with_columns(
                pl.lit(None, dtype=out_schema.polars_schema[c]).alias(c) for c in missing
            )
            out = _drop_forgotten(out, ds, ctx, filtered)
            for (day, reg), part in out.partition_by(
                ["__date", "__region"], as_dict=True, maintain_order=True
            ).items():
                pdir = f"restricted/{ds.name}/date={day.isoformat()}/region={reg}"
                partitions.add(pdir)
                target = work / pdir / f"part-{file_tag}-{i:05d}.parquet"
                target.parent.mkdir(parents=True, exist_ok=True)
                part.select(out_columns).cast(out_types).write_parquet(
                    target, metadata=meta, arrow_schema=fields, **PARQUET_OPTIONS
                )
            result.rows_published += out.height
            canaries.append(collecting.result())

    order.check_decided()
    _write_canaries(canaries, work, file_tag)
    if keys_out:
        pl.concat(keys_out).write_parquet(work / "keys.parquet")
    result.rows_quarantined = dict(sorted(quarantined.items()))
    result.rows_filtered = dict(sorted(filtered.items()))
    result.partitions = sorted(partitions)
