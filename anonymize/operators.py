"""Anonymisation operators: small functions ``(expr, *, options, ctx) -> pl.Expr``.

Each operator is registered by name with a frozen, typed options model (``extra="forbid"``) that
the policy loader checks once. Operators that need Python (keyed hashing, phone parsing, client
version patterns) run it only over the unique values of a column, through ``map_unique``.

Examples
--------
>>> import polars as pl
>>> spec = REGISTRY["coarsen_time"]
>>> opts = spec.options(to="hour")
>>> df = pl.DataFrame({"t": [datetime(2024, 3, 1, 9, 41, 7)]})
>>> df.select(spec.fn(pl.col("t"), options=opts, ctx=None)).item()
datetime.datetime(2024, 3, 1, 9, 0)
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime  # noqa: F401 - datetime is used by the doctest above
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from anonymize.identifiers import (
    is_phone_uri,
    normalize_identifier,
    phone_country,
    pseudonym,
    uri_domain,
)
from anonymize.keys import KeyRing
from anonymize.web import (
    DEFAULT_WEB,
    WebVocabulary,
    generalize_ip_value,
    parse_ip,
    referer_site,
    url_template_value,
    user_agent_parts,
)

# Output type of an operator: a fixed name, or "same" (the input column's type).
OutputType = str

INPUT_TO_OUTPUT_TYPE = {
    "string": "string",
    "guid": "string",
    "ip": "string",
    "int": "int",
    "decimal": "float",
    "bit": "bool",
    "datetime": "datetime",
}

# A region's name (the policy's ``regions``): a partition value, so a plain upper-case word.
REGION_NAME = r"^[A-Z][A-Z0-9_]{0,31}$"


class Options(BaseModel):
    """Base of every operator's options: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass
class OpContext:
    """What operators may need beyond their options: keys and organisation settings.

    Caches live here so a value is hashed or parsed once per run, whatever the number of batches.
    """

    keyring: KeyRing
    own_domains: tuple[str, ...] = ()
    default_phone_region: str = "US"
    region_pools: dict[str, tuple[str, ...]] = field(default_factory=dict)
    scope: str = "restricted"
    # What free text of web logs may pass: vocabulary, routes, known sites (the policy's web:).
    web: WebVocabulary = DEFAULT_WEB
    # Pseudonyms of erased people: rows that hold one are dropped as they are read.
    erased: frozenset[str] = frozenset()
    # Rows of days before this one are dropped as they are read (retention).
    keep_from: date | None = None
    # A key rotation: the context of the previous key and the pseudonyms under it of the
    # people of data-subject requests; ``rederived`` collects old -> new pseudonym as values
    # are pseudonymised, and their rows are erased as they are read.
    previous: OpContext | None = field(default=None, repr=False)
    previous_subjects: frozenset[str] = frozenset()
    previous_erased: frozenset[str] = frozenset()
    rederived: dict[str, str] = field(default_factory=dict, repr=False)
    # Network sites (the policy's network_sites): (network, site) pairs, most specific first.
    sites: tuple[tuple[str, str], ...] = ()
    # Account holders (the policy's tenants): tenant id -> its users' domains.
    accounts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Join sources of the run: contract name -> frame (key, pseudonym). Set per file.
    lookups: dict[str, pl.DataFrame] = field(default_factory=dict, repr=False)
    _keys: dict[str, bytes] = field(default_factory=dict, repr=False)
    _caches: dict[str, Memo] = field(default_factory=dict, repr=False)

    def key_for(self, kind: str) -> bytes:
        """The derived pseudonym key of one identifier kind in this context's scope."""
        if kind not in self._keys:
            self._keys[kind] = self.keyring.derive(f"pseudonym/{self.scope}/{kind}")
        return self._keys[kind]

    def account_key_for(self, tenant: str, kind: str) -> bytes:
        """The pseudonym key of one identifier kind for one tenant (``account_pseudonym``)."""
        name = f"account/{tenant}/{kind}"
        if name not in self._keys:
            self._keys[name] = account_key(self.keyring.for_account(tenant), kind)
        return self._keys[name]

    def cache(self, name: str) -> Memo:
        return self._caches.setdefault(name, Memo())

    def __reduce__(self):
        raise TypeError("an OpContext holds keys and cannot be pickled or persisted")


@dataclass(frozen=True)
class OperatorSpec:
    """A registered operator."""

    name: str
    fn: Callable[..., pl.Expr]
    options: type[Options]
    accepts: frozenset[str] | None  # input column types, None = any
    output: OutputType
    # Options naming other input columns (derivations), checked by the policy loader.
    column_options: tuple[str, ...] = ()


REGISTRY: dict[str, OperatorSpec] = {}


def register(
    name: str,
    *,
    options: type[Options],
    accepts: set[str] | None,
    output: OutputType,
    column_options: tuple[str, ...] = (),
) -> Callable[[Callable[..., pl.Expr]], Callable[..., pl.Expr]]:
    """Register an operator under ``name``."""

    def deco(fn: Callable[..., pl.Expr]) -> Callable[..., pl.Expr]:
        if name in REGISTRY:
            raise ValueError(f"operator {name!r} is registered twice")
        REGISTRY[name] = OperatorSpec(
            name, fn, options, frozenset(accepts) if accepts else None, output, column_options
        )
        return fn

    return deco


class Memo:
    """The results of one function over the distinct values it met, kept across batches (and
    files) of a run as a frame ``k -> v``; ``map_unique`` adds to it under its lock."""

    def __init__(self) -> None:
        self.frame: pl.DataFrame | None = None
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return 0 if self.frame is None else self.frame.height


def map_unique(
    expr: pl.Expr,
    fn: Callable[[Any], Any],
    *,
    return_dtype: pl.DataType,
    cache: Memo | None = None,
) -> pl.Expr:
    """Apply a Python function to the unique non-null values of a column only, then map back.

    ``cache`` keeps results across batches, so each distinct value meets ``fn`` once per run;
    a batch's values are matched against it by a join, and only the new ones reach Python.
    """
    memo = Memo() if cache is None else cache

    def _apply(s: pl.Series) -> pl.Series:
        uniq = s.drop_nulls().unique()
        if uniq.len() == 0:
            return pl.Series(s.name, [None] * s.len(), dtype=return_dtype)
        # Columns of one frame can share a memo and polars may run them in parallel: one at
        # a time, so that no value is added twice (a left join must find one row per key).
        with memo.lock:
            known = memo.frame
            todo = uniq if known is None else uniq.filter(~uniq.is_in(known["k"].implode()))
            if todo.len():
                new = pl.DataFrame(
                    {"k": todo, "v": pl.Series([fn(v) for v in todo.to_list()], dtype=return_dtype)}
                )
                memo.frame = new if known is None else pl.concat([known, new])
            table = memo.frame
        # A left join maps values back (faster than replace_strict, and works for list values).
        return (
            s.to_frame("k")
            .join(table, on="k", how="left", maintain_order="left")
            .get_column("v")
            .alias(s.name)
        )

    return expr.map_batches(_apply, return_dtype=return_dtype, is_elementwise=True)


# --- keep / drop ----------------------------------------------------------------------------


class NoOptions(Options):
    pass


@register("keep", options=NoOptions, accepts=None, output="same")
def keep(expr: pl.Expr, *, options: NoOptions, ctx: OpContext | None) -> pl.Expr:
    """Pass the value through unchanged. Refused by the policy loader on PD columns."""
    return expr


@register("drop", options=NoOptions, accepts=None, output="none")
def drop(expr: pl.Expr, *, options: NoOptions, ctx: OpContext | None) -> pl.Expr:
    """Remove the column. Never evaluated: the policy compiler emits no output for it."""
    raise AssertionError("drop produces no expression")


# --- pseudonymize ---------------------------------------------------------------------------


def account_key(ring: KeyRing, kind: str) -> bytes:
    """The pseudonym key of one identifier kind under a tenant's account key ring."""
    return ring.derive(f"pseudonym/account/{kind}")


def account_of(value: str, accounts: dict[str, tuple[str, ...]]) -> str | None:
    """The tenant whose domain (or a subdomain of it) a SIP URI or email is in, else None; the
    most specific domain wins (``eu.contoso.com`` before ``contoso.com``).

    >>> accounts = {"contoso": ("contoso.com",), "contoso-eu": ("eu.contoso.com",)}
    >>> account_of("sip:Jane.Doe@EU.Contoso.com", accounts), account_of("jd@contoso.com", accounts)
    ('contoso-eu', 'contoso')
    >>> account_of("tel:+14255550100", accounts) is None
    True
    """
    if is_phone_uri(value):
        return None
    domain = uri_domain(value)
    if domain is None:
        return None
    pairs = sorted(((d, t) for t, ds in accounts.items() for d in ds), key=lambda p: -len(p[0]))
    for d, tenant in pairs:
        if domain == d or domain.endswith("." + d):
            return tenant
    return None


def account_pseudonym(ring: KeyRing, value: str, default_region: str = "US") -> str:
    """A user's pseudonym in its tenant's reports, from the tenant's account key ring and the
    user's SIP URI or email: what a tenant handed its key computes over its own directory.

    >>> ring = KeyRing.development().for_account("contoso")
    >>> a = account_pseudonym(ring, "sip:Jane@contoso.com")
    >>> a == account_pseudonym(ring, "jane@CONTOSO.com")
    True
    """
    kind, norm = normalize_identifier(value, "auto", default_region)
    return pseudonym(account_key(ring, kind), kind, norm)


class PseudonymizeOptions(Options):
    kind: Literal[
        "auto", "person", "phone", "endpoint", "tenant", "infrastructure", "meeting", "opaque"
    ] = "auto"
    # true: the pseudonym of the value's tenant (its account key), null for a value of no
    # tenant; what that tenant's reports carry (a tenant release).
    per_account: bool = False


@register("pseudonymize", options=PseudonymizeOptions, accepts={"string", "guid"}, output="string")
def pseudonymize(expr: pl.Expr, *, options: PseudonymizeOptions, ctx: OpContext) -> pl.Expr:
    """Keyed pseudonym (HMAC-SHA256) of the normalised value, one key per identifier kind.

    ``kind="auto"`` treats phone URIs as phones and everything else as people, so a PSTN caller
    in ``FromUri`` and the same number in ``FromPhone`` get the same pseudonym.
    """
    region = ctx.default_phone_region
    if options.per_account:

        def per_account(value: str) -> str | None:
            tenant = account_of(value, ctx.accounts)
            if tenant is None:
                return None
            kind, norm = normalize_identifier(value, options.kind, region)
            return pseudonym(ctx.account_key_for(tenant, kind), kind, norm)

        return map_unique(
            expr, per_account, return_dtype=pl.String(),
            cache=ctx.cache(f"pseudonymize/account/{options.kind}"),
        )  # fmt: skip

    def one(value: str) -> str:
        kind, norm = normalize_identifier(value, options.kind, region)
        new = pseudonym(ctx.key_for(kind), kind, norm)
        if ctx.previous is not None:  # a key rotation: find requested people again
            old = pseudonym(ctx.previous.key_for(kind), kind, norm)
            if old in ctx.previous_subjects:
                ctx.rederived[old] = new
                if old in ctx.previous_erased:
                    ctx.erased = ctx.erased | {new}
        return new

    return map_unique(
        expr, one, return_dtype=pl.String(), cache=ctx.cache(f"pseudonymize/{options.kind}")
    )


class PseudonymizeLookupOptions(Options):
    lookup: str  # the contract name of a join source (connect_users, lync_users, lync_phones)

    @field_validator("lookup")
    @classmethod
    def _is_join_source(cls, v: str) -> str:
        from anonymize.contracts import all_contracts

        names = sorted(c.name for c in all_contracts() if c.lookup is not None)
        if v not in names:
            raise ValueError(f"{v!r} is not a join source (known: {', '.join(names)})")
        return v


@register(
    "pseudonymize_lookup",
    options=PseudonymizeLookupOptions,
    accepts={"string", "int"},
    output="string",
)
def pseudonymize_lookup(
    expr: pl.Expr, *, options: PseudonymizeLookupOptions, ctx: OpContext
) -> pl.Expr:
    """The pseudonym of the identifier a surrogate key stands for, through a join source.

    ``UserId`` 42 resolved through the run's Users export gives the pseudonym of its SIP URI, the
    same one a view export's ``FromUri`` gets. A key the join source does not have (no Users
    export in the batch, a user created since) gets a pseudonym of the key itself, in a domain of
    its own: counted as a distinct person, never linked, never null.
    """
    table = ctx.lookups.get(options.lookup)
    name = options.lookup
    key = ctx.key_for("opaque")

    def fallback(value: str) -> str:
        return pseudonym(key, "opaque", f"{name}:{value.strip().lower()}")

    as_text = expr.cast(pl.String)
    unresolved = map_unique(
        as_text, fallback, return_dtype=pl.String(), cache=ctx.cache(f"lookup/{name}")
    )
    if table is None or not table.height:
        return unresolved
    resolved = as_text.str.strip_chars().replace_strict(
        table["key"], table["pseudonym"], default=None, return_dtype=pl.String
    )
    return pl.coalesce(resolved, unresolved)


class SessionKeyOptions(Options):
    time: str  # the key's time column (SessionIdTime)
    seq: str  # its sequence column (SessionIdSeq)


@register(
    "pseudonymize_session",
    options=SessionKeyOptions,
    accepts={"datetime", "int"},
    output="string",
    column_options=("time", "seq"),
)
def pseudonymize_session(expr: pl.Expr, *, options: SessionKeyOptions, ctx: OpContext) -> pl.Expr:
    """Keyed pseudonym (kind ``meeting``) of a Lync session key (``SessionIdTime``,
    ``SessionIdSeq``), so that the rows of one conference join across tables.

    ``expr`` is ignored: the operator reads its two columns from the options. FocusJoinsAndLeaves
    and McuJoinsAndLeaves carry the key of the conference they belong to, the Conferences
    table its own: the joins of a conference get the conference's pseudonym. Neither the time
    nor the number can be read back from it.
    """
    key = ctx.key_for("meeting")
    text = pl.concat_str(
        pl.col(options.time).dt.strftime("%Y-%m-%dT%H:%M:%S%.3f"),
        pl.col(options.seq).cast(pl.String),
        separator="|",
    )

    def one(value: str) -> str:
        return pseudonym(key, "meeting", f"session:{value}")

    return map_unique(text, one, return_dtype=pl.String(), cache=ctx.cache("session-key"))


# --- time -----------------------------------------------------------------------------------


class CoarsenTimeOptions(Options):
    to: Literal["hour", "day"] = "hour"


@register("coarsen_time", options=CoarsenTimeOptions, accepts={"datetime"}, output="datetime")
def coarsen_time(expr: pl.Expr, *, options: CoarsenTimeOptions, ctx: OpContext | None) -> pl.Expr:
    """Truncate a timestamp to the start of its hour or day."""
    return expr.dt.truncate("1h" if options.to == "hour" else "1d")


class DurationOptions(Options):
    start: str
    end: str
    unit: Literal["s", "ms"] = "s"


@register(
    "duration",
    options=DurationOptions,
    accepts={"datetime"},
    output="float",
    column_options=("start", "end"),
)
def duration(expr: pl.Expr, *, options: DurationOptions, ctx: OpContext | None) -> pl.Expr:
    """Time from ``start`` to ``end`` in seconds (or ms), computed before times are coarsened.

    ``expr`` is ignored: the operator reads its two columns from the options. A negative
    interval (clock skew between servers) becomes null rather than a wrong duration.
    """
    ms = (pl.col(options.end) - pl.col(options.start)).dt.total_milliseconds()
    value = ms.cast(pl.Float64) / (1000.0 if options.unit == "s" else 1.0)
    return pl.when(ms >= 0).then(value).otherwise(None)


# --- phones and URIs ------------------------------------------------------------------------


@register("generalize_phone", options=NoOptions, accepts={"string"}, output="string")
def generalize_phone(expr: pl.Expr, *, options: NoOptions, ctx: OpContext) -> pl.Expr:
    """Keep only the country of a phone number (ISO region code such as ``US``)."""
    region = ctx.default_phone_region
    return map_unique(
        expr,
        lambda v: phone_country(v, region),
        return_dtype=pl.String(),
        cache=ctx.cache("generalize_phone"),
    )


def domain_class(value: str, own_domains: tuple[str, ...]) -> str:
    """``phone``, ``internal`` (own domain or subdomain), ``federated`` or ``unknown``."""
    if is_phone_uri(value):
        return "phone"
    domain = uri_domain(value)
    if domain is None:
        return "unknown"
    if any(domain == d or domain.endswith("." + d) for d in own_domains):
        return "internal"
    return "federated"


@register("uri_domain_class", options=NoOptions, accepts={"string"}, output="string")
def uri_domain_class(expr: pl.Expr, *, options: NoOptions, ctx: OpContext) -> pl.Expr:
    """Replace a URI by the class of its domain, from the policy's list of own domains."""
    own = tuple(d.lower() for d in ctx.own_domains)
    return map_unique(
        expr,
        lambda v: domain_class(v, own),
        return_dtype=pl.String(),
        cache=ctx.cache("uri_domain_class"),
    )


@register("account", options=NoOptions, accepts={"string"}, output="string")
def account(expr: pl.Expr, *, options: NoOptions, ctx: OpContext) -> pl.Expr:
    """Replace a SIP URI or email by the id of its tenant (the policy's ``tenants``, by
    domain), null for an address of no tenant."""
    accounts = dict(ctx.accounts)
    return map_unique(
        expr,
        lambda v: account_of(v, accounts),
        return_dtype=pl.String(),
        cache=ctx.cache("account"),
    )


# --- clients, media, infrastructure ---------------------------------------------------------

# Client version strings to the UserAgentDef categories of the CDR schema, coarsened.
# The first match wins.
CLIENT_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"mediationserver|rtcc/.*mediation", "mediation_server"),
    (r"av-mcu|conferencing|\bmcu\b|focus", "conferencing_server"),
    (r"gateway|sbc|audiocodes|sonus|ribbon", "gateway"),
    (r"iphonelync|ipadlync|ios", "mobile_ios"),
    (r"androidlync|android", "mobile_android"),
    (r"wplync|windows ?phone", "mobile_windows"),
    (r"\bmcx\b|mobility", "mobile_other"),
    (r"\b(?:lwa|cwa)\b|web ?app|ucwa", "web_app"),
    (r"ocphone|lpe|polycom|yealink|snom|audiocodes|crestron|\bphone edition", "desk_phone"),
    (r"lync ?room|skype ?room|\brooms?\b|surface hub", "room_system"),
    (r"macintosh|\bmac\b|lync ?mac", "desktop_mac"),
    (r"skype for business|lync|uccapi|\boc/", "desktop_windows"),
    (r"communicator", "desktop_legacy"),
    (r"teams", "teams"),
)
_CLIENT_RE = tuple((re.compile(p, re.IGNORECASE), c) for p, c in CLIENT_PATTERNS)


def client_category_of(version: str) -> str:
    """Coarse client category of a Lync/SfB client version string."""
    for pattern, category in _CLIENT_RE:
        if pattern.search(version):
            return category
    return "other"


@register("client_category", options=NoOptions, accepts={"string"}, output="string")
def client_category(expr: pl.Expr, *, options: NoOptions, ctx: OpContext | None) -> pl.Expr:
    """Map a client version string (a user-agent) to a coarse client category."""
    memo = ctx.cache("client_category") if ctx is not None else None
    return map_unique(expr, client_category_of, return_dtype=pl.String(), cache=memo)


# The product token of a client version string (``UCCAPI/16.0.4266.1003 OC/16.0.4266.1003``,
# ``iPhoneLync/6.19.0.9 (iOS)``, ``CPE/4.0.7577.4445``): its major.minor only. Anything else (a
# device's own firmware string, a free-form agent) is ``other``.
_VERSION_RE = re.compile(
    r"\b(?:OC|UCCAPI|CPE|LWA|UCWA|Lync|LyncMac|MacLync|iPhoneLync|iPadLync|AndroidLync|WPLync|"
    r"MCX|Skype(?:ForBusiness)?|RTCC|Teams)/(\d{1,2})\.(\d{1,3})\.",
    re.I,
)


def client_version_of(version: str) -> str:
    """The product version (major.minor) of a Lync/SfB client version string.

    >>> client_version_of("UCCAPI/16.0.4266.1003 OC/16.0.4266.1003 (Skype for Business)")
    '16.0'
    >>> client_version_of("Jane's phone 1.2.3")
    'other'
    """
    m = _VERSION_RE.search(version)
    return f"{int(m.group(1))}.{int(m.group(2))}" if m else "other"


@register("client_version", options=NoOptions, accepts={"string"}, output="string")
def client_version(expr: pl.Expr, *, options: NoOptions, ctx: OpContext | None) -> pl.Expr:
    """Map a client version string to its product version (major.minor), from known product
    tokens only."""
    memo = ctx.cache("client_version") if ctx is not None else None
    return map_unique(expr, client_version_of, return_dtype=pl.String(), cache=memo)


MEDIA_BITS: tuple[tuple[int, str], ...] = (
    (1, "im"),
    (2, "file_transfer"),
    (4, "remote_assistance"),
    (8, "app_sharing"),
    (16, "audio"),
    (32, "video"),
    (64, "app_invite"),
)


@register("media_modalities", options=NoOptions, accepts={"int"}, output="list[string]")
def media_modalities(expr: pl.Expr, *, options: NoOptions, ctx: OpContext | None) -> pl.Expr:
    """Turn the MediaTypes bitmask into a list of named modalities (``["audio", "video"]``)."""
    memo = ctx.cache("media_modalities") if ctx is not None else None
    return map_unique(
        expr,
        lambda v: [name for bit, name in MEDIA_BITS if v & bit],
        return_dtype=pl.List(pl.String()),
        cache=memo,
    )


def region_of_path(path: str, region_pools: dict[str, tuple[str, ...]]) -> str | None:
    """The region of a landing-zone file from its folders: a region's name, or a server FQDN.

    >>> pools = {"EMEA": ("*.uk.*",), "AMER": ("*.us.*",)}
    >>> region_of_path("weblogs/EMEA/2026-11-23/access.log", pools)
    'EMEA'
    >>> region_of_path("connect/connect.uk.example.net/report.xml", pools)
    'EMEA'
    >>> region_of_path("weblogs/access.log", pools) is None
    True
    """
    folders = path.replace("\\", "/").split("/")[:-1]
    names = {name.upper(): name for name in region_pools}
    for folder in folders:
        if folder.upper() in names:
            return names[folder.upper()]
    for folder in folders:
        if (region := region_of(folder, region_pools)) is not None:
            return region
    return None


def region_of(pool: str, region_pools: dict[str, tuple[str, ...]]) -> str | None:
    """The region whose pool patterns (shell globs, case-insensitive) match a pool FQDN."""
    p = pool.strip().lower()
    for region, patterns in region_pools.items():
        if any(fnmatch.fnmatchcase(p, pat.lower()) for pat in patterns):
            return region
    return None


@register("pool_region", options=NoOptions, accepts={"string"}, output="string")
def pool_region(expr: pl.Expr, *, options: NoOptions, ctx: OpContext) -> pl.Expr:
    """Map a pool or site FQDN to its hosting region (the policy's ``regions``)."""
    pools = ctx.region_pools
    return map_unique(
        expr,
        lambda v: region_of(v, pools),
        return_dtype=pl.String(),
        cache=ctx.cache("pool_region"),
    )


@register("present", options=NoOptions, accepts=None, output="bool")
def present(expr: pl.Expr, *, options: NoOptions, ctx: OpContext | None) -> pl.Expr:
    """Keep only whether the column has a value (e.g. "went through an edge server")."""
    return expr.is_not_null()


_CONF_TYPE = re.compile(r"app:conf:([a-z][a-z0-9\-]*)", re.IGNORECASE)


def conference_type_of(uri: str) -> str:
    """The conference type of a focus or MCU URI; the organiser's address is never kept.

    >>> conference_type_of("sip:kmyer@litwareinc.com;gruu;opaque=app:conf:focus:id:drg2y8v4")
    'focus'
    >>> conference_type_of("sip:pool.contoso.com;gruu;opaque=app:conf:audio-video:id:4XB")
    'audio-video'
    >>> conference_type_of("sip:someone@contoso.com")
    'other'
    """
    m = _CONF_TYPE.search(uri)
    return m.group(1).lower() if m else "other"


@register("conference_type", options=NoOptions, accepts={"string"}, output="string")
def conference_type(expr: pl.Expr, *, options: NoOptions, ctx: OpContext | None) -> pl.Expr:
    """Replace a conference URI (which embeds its organiser's SIP address) by its type."""
    memo = ctx.cache("conference_type") if ctx is not None else None
    return map_unique(expr, conference_type_of, return_dtype=pl.String(), cache=memo)


@register("missing", options=NoOptions, accepts=None, output="bool")
def missing(expr: pl.Expr, *, options: NoOptions, ctx: OpContext | None) -> pl.Expr:
    """Keep only whether the column is empty (a Connect visit with no end is still in progress)."""
    return expr.is_null()


# --- web and IIS logs -----------------------------------------------------------------------


class GeneralizeIpOptions(Options):
    ipv4_prefix: int = Field(default=24, ge=8, le=30)
    ipv6_prefix: int = Field(default=48, ge=16, le=64)


@register("generalize_ip", options=GeneralizeIpOptions, accepts={"string", "ip"}, output="string")
def generalize_ip(expr: pl.Expr, *, options: GeneralizeIpOptions, ctx: OpContext | None) -> pl.Expr:
    """Truncate addresses to their network (IPv4 /24, IPv6 /48 by default), chains included.

    Anything that is not an address (a host name) becomes null.
    """
    v4, v6 = options.ipv4_prefix, options.ipv6_prefix
    memo = ctx.cache(f"generalize_ip/{v4}/{v6}") if ctx is not None else None
    return map_unique(
        expr, lambda v: generalize_ip_value(v, v4, v6), return_dtype=pl.String(), cache=memo
    )


def site_of(value: str, sites: tuple[tuple[str, str], ...]) -> str:
    """The network site (the policy's ``network_sites``) of an IP address: the site of the most
    specific subnet that holds it; ``outside`` for a public address of no site, ``unknown``
    for a private one of no site or a value that is no address.

    >>> sites = (("10.20.0.0/16", "london"), ("10.0.0.0/8", "corp"))
    >>> site_of("10.20.3.4", sites), site_of("10.9.9.9", sites), site_of("8.8.8.8", sites)
    ('london', 'corp', 'outside')
    """
    address = parse_ip(value)
    if address is None:
        return "unknown"
    for network, site in sites:
        net = ipaddress.ip_network(network, strict=False)
        if address.version == net.version and address in net:
            return site
    return (
        "unknown"
        if any(address in n for n in _INTERNAL if n.version == address.version)
        else "outside"
    )


# Addresses only an organisation's own network uses (RFC 1918, shared, link-local, ULA): one of
# no site is somewhere inside, unknown; any other is outside.
_INTERNAL = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
              "fc00::/7", "fe80::/10")
)  # fmt: skip


@register("network_site", options=NoOptions, accepts={"string", "ip"}, output="string")
def network_site(expr: pl.Expr, *, options: NoOptions, ctx: OpContext) -> pl.Expr:
    """Replace an IP address by the site of its subnet (the policy's ``network_sites``), or
    outside / unknown: where a media endpoint sat, never the address."""
    sites = ctx.sites
    return map_unique(
        expr, lambda v: site_of(v, sites), return_dtype=pl.String(), cache=ctx.cache("site")
    )


# What a QoE report's network connection detail names, to a class (first match wins).
_CONNECTION = (
    (re.compile(r"wi-?fi|wireless|802\.11", re.I), "wifi"),
    (re.compile(r"wired|ethernet|lan\b", re.I), "wired"),
    (re.compile(r"mobile|cellular|\b[345]g\b|lte|wwan", re.I), "mobile"),
    (re.compile(r"ppp|dial", re.I), "other"),
)


def connection_class(value: str) -> str:
    """``wired``, ``wifi``, ``mobile`` or ``other`` from a network connection detail.

    >>> connection_class("Wifi"), connection_class("wired"), connection_class("MobileBB")
    ('wifi', 'wired', 'mobile')
    """
    for pattern, name in _CONNECTION:
        if pattern.search(value):
            return name
    return "other"


@register("network_connection", options=NoOptions, accepts={"string"}, output="string")
def network_connection(expr: pl.Expr, *, options: NoOptions, ctx: OpContext | None) -> pl.Expr:
    """Replace a network connection detail by its class (wired, wifi, mobile, other)."""
    memo = ctx.cache("network_connection") if ctx is not None else None
    return map_unique(expr, connection_class, return_dtype=pl.String(), cache=memo)


def dialog_call_id(value: str) -> str | None:
    """The SIP Call-ID of a dialog id (``call-id;from-tag=...;to-tag=...``), lower-cased; None
    for a conference URI (a QoE session's ConferenceURI of a conference).

    >>> dialog_call_id("1234-abc;from-tag=9;to-tag=8")
    '1234-abc'
    >>> dialog_call_id("sip:jdoe@contoso.com;gruu;opaque=app:conf:audio-video:id:X") is None
    True
    """
    value = value.strip()
    if not value or value.lower().startswith(("sip:", "sips:")):
        return None
    call_id = value.split(";", 1)[0].strip().lower()
    return call_id or None


@register("pseudonymize_dialog", options=NoOptions, accepts={"string"}, output="string")
def pseudonymize_dialog(expr: pl.Expr, *, options: NoOptions, ctx: OpContext) -> pl.Expr:
    """Keyed pseudonym (kind meeting) of a dialog's SIP Call-ID: the link between a CDR session
    (DialogId) and its quality report (a QoE session's ConferenceURI); null for a conference."""
    key = ctx.key_for("meeting")

    def one(value: str) -> str | None:
        call_id = dialog_call_id(value)
        return None if call_id is None else pseudonym(key, "meeting", f"dialog:{call_id}")

    return map_unique(expr, one, return_dtype=pl.String(), cache=ctx.cache("dialog"))


class UrlTemplateOptions(Options):
    allow_query: tuple[str, ...] = ()
    # "all": template?query; "path": the template only; "query": the filtered query only (of a
    # URL, or of a bare query string such as IIS's cs-uri-query).
    part: Literal["all", "path", "query"] = "all"


@register("url_template", options=UrlTemplateOptions, accepts={"string"}, output="string")
def url_template(expr: pl.Expr, *, options: UrlTemplateOptions, ctx: OpContext | None) -> pl.Expr:
    """A request path as a template; only allowlisted query keys keep their values."""
    allow, part = options.allow_query, options.part
    memo = ctx.cache(f"url_template/{allow}/{part}") if ctx is not None else None
    vocab = ctx.web if ctx is not None else DEFAULT_WEB

    def one(v: str) -> str | None:
        if part == "query" and "?" not in v and not v.startswith(("/", "*")) and "://" not in v:
            v = "/?" + v  # a bare query string
        out = url_template_value(v, allow, vocab)
        path, _, query = out.partition("?")
        if part == "path":
            return path
        if part == "query":
            return query or None
        return out

    return map_unique(expr, one, return_dtype=pl.String(), cache=memo)


@register("url_host", options=NoOptions, accepts={"string"}, output="string")
def url_host_op(expr: pl.Expr, *, options: NoOptions, ctx: OpContext | None) -> pl.Expr:
    """The known site a URL belongs to (``google.com``), ``{site}`` for any other host (a
    personal page may name its owner), null without a host. Search terms and paths are dropped.
    Known sites: the policy's ``web.known_sites``, the organisation's domains and common ones."""
    memo = ctx.cache("url_host") if ctx is not None else None
    vocab = ctx.web if ctx is not None else DEFAULT_WEB
    return map_unique(expr, lambda v: referer_site(v, vocab), return_dtype=pl.String(), cache=memo)


class UserAgentOptions(Options):
    part: Literal["browser", "browser_major", "os", "device_class"]
    plus_is_space: bool = False


_UA_PART = {"browser": 0, "browser_major": 1, "os": 2, "device_class": 3}


@register("user_agent", options=UserAgentOptions, accepts={"string"}, output="string")
def user_agent(expr: pl.Expr, *, options: UserAgentOptions, ctx: OpContext | None) -> pl.Expr:
    """One part of a parsed user agent (ua-parser): browser, its major version, OS, device class."""
    i, plus = _UA_PART[options.part], options.plus_is_space
    memo = ctx.cache(f"user_agent/{options.part}/{plus}") if ctx is not None else None
    return map_unique(
        expr, lambda v: user_agent_parts(v, plus)[i], return_dtype=pl.String(), cache=memo
    )
