"""The anonymisation policy: one rule per input column, default-deny, checked once at load time.

A policy is YAML. Each dataset names the contracts that feed it and gives every column of those
contracts exactly one rule: ``drop``, ``keep``, ``{op: NAME, as: OUTPUT, ...options}`` or a list
of such operators (one input may give several outputs). ``derive`` adds outputs computed from
several columns (durations). Loading refuses the policy, listing every problem, when a column has
no rule, a rule names a column no contract knows, an operator or option is unknown, ``keep``
is used on a PD column, an operator does not accept the column's type, or an output is not in
the dataset's strict output schema.

Examples
--------
>>> policy = load_policy(DEFAULT_POLICY)
>>> sorted(policy.datasets)[:3]
['connect_attendance', 'connect_meeting_sessions', 'connect_session_users']
>>> policy.datasets["web_requests"].partition.date_columns
('time', 'datetime')
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from anonymize.contracts import Contract, load_contract, load_output_schema
from anonymize.errors import ContractError, PolicyError
from anonymize.operators import (
    INPUT_TO_OUTPUT_TYPE,
    REGION_NAME,
    REGISTRY,
    OperatorSpec,
    Options,
)
from anonymize.statistics import STATISTICS

DEFAULT_POLICY = resources.files("anonymize.policies").joinpath("default.yaml")


class KeySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prefect_secret: str | None = None


class Organization(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    own_domains: tuple[str, ...] = ()
    default_phone_region: str = "US"
    # Day and month order of slash dates (``3/4/2026``) in CSV exports: found in each file's
    # values (a day above 12), or set here for exports whose days are all 12 or less.
    slash_dates: Literal["detect", "month_first", "day_first"] = "detect"


class TenantSpec(BaseModel):
    """An account holder (a business customer): the SIP and email domains of its users, and
    whether it is handed its account key (with which it maps the pseudonyms of its reports
    back to its own directory: ``cdranon account-key``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    domains: tuple[str, ...] = Field(min_length=1)
    hand_key: bool = False

    @field_validator("domains")
    @classmethod
    def _lower(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [
            d
            for d in v
            if not re.fullmatch(r"[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9\-]+)+", d.lower())
        ]
        if bad:
            raise ValueError(f"{len(bad)} domain(s) are not domain names")
        return tuple(d.lower() for d in v)


class NetworkSite(BaseModel):
    """A site of the provider's or a customer's network: its subnets (CIDR), for call quality
    by site (the QoE reports' endpoint addresses are never kept, only their site)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subnets: tuple[str, ...] = Field(min_length=1)

    @field_validator("subnets")
    @classmethod
    def _networks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not a subnet (CIDR, e.g. 10.20.0.0/16)") from None
        return v


class WebSettings(BaseModel):
    """Free text in web logs that may pass (see ``anonymize.web``): the site's own path words,
    the route templates whose placeholders hold identifiers, and the sites a referer may name.

    Each list adds to the shipped defaults (``anonymize.vocabulary``, ``web.DEFAULT_ROUTES``,
    ``web.DEFAULT_SITES`` and the organisation's own domains)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vocabulary: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    known_sites: tuple[str, ...] = ()

    def compiled(self, own_domains: tuple[str, ...] = (), words: tuple[str, ...] = ()):
        """The vocabulary operators and the gate use; ``words`` adds the query keys that
        ``url_template`` rules allowlist (declared by the policy, so known words)."""
        from anonymize.web import DEFAULT_ROUTES, DEFAULT_SITES, WebVocabulary

        return WebVocabulary.build(
            (*self.vocabulary, *words),
            (*self.routes, *DEFAULT_ROUTES),
            (*self.known_sites, *own_domains, *DEFAULT_SITES),
        )


class GateSettings(BaseModel):
    """The privacy gate: rows of restricted event datasets that carry a finding are withheld
    (quarantined) unless they are more than ``max_withheld_share`` of a dataset's rows, when
    the finding is taken as systemic and the run is refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_withheld_share: float = Field(default=0.001, ge=0, le=0.05)


class Retention(BaseModel):
    """How long each kind of state is kept, in days (None: for ever). Each run purges what is
    older: restricted partitions by their date (and the event datasets of releases with them;
    statistics, which are anonymous, stay), quarantine folders (raw rows: they expire first),
    manifests and reports, and staging folders left by killed runs, by their age."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    restricted_days: int | None = Field(default=None, ge=1)
    quarantine_days: int | None = Field(default=30, ge=1)
    manifests_days: int | None = Field(default=None, ge=1)
    staging_days: int = Field(default=2, ge=1)


# The scope of a recipient's pseudonyms in an event dataset ("none" removes them).
PseudonymScope = Literal["none", "day", "month", "stable"]


class DpSettings(BaseModel):
    """Differential privacy of a release's statistics (discrete Laplace noise, keyed: the same
    data always gets the same noise; see ``anonymize.perturbation``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    epsilon: float = Field(default=1.0, gt=0, le=20)  # per statistic and period
    # The accounting period: a person's rows are bounded over it (not per day), so a person
    # active on every day of it is charged once.
    period: Literal["week", "month"] = "week"
    max_rows_per_person: int = Field(default=20, ge=1)  # per statistic and period
    max_minutes: float = Field(default=240.0, gt=0)  # per row
    # Which cells exist is private too: cells are selected by the Laplace threshold mechanism,
    # whose threshold is set so a cell of a few people shows with probability delta.
    delta: float = Field(default=1e-6, gt=0, le=1e-2)
    # Epsilon the recipient may receive per period: the first publication of a period costs
    # epsilon per statistic, and so does each later one that draws new noise for a cell the
    # recipient already holds (its data changed). A run that would exceed it does not publish
    # the release.
    budget: float = Field(default=10.0, gt=0)


class Perturbation(BaseModel):
    """Consistent perturbation of the statistics without DP (``anonymize.perturbation``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # cell_key: every published count is perturbed by the cell key method. none: exact counts,
    # allowed only with ``freeze`` (a republished day would give exact differences below k).
    method: Literal["cell_key", "none"] = "cell_key"
    max_perturbation: int = Field(default=3, ge=1, le=10)
    sigma: float = Field(default=1.5, gt=0, le=5)
    # Magnitudes (sessions, minutes ...): a perturbation unit is this share of the largest
    # person's contribution to the cell (at least 1 for counts).
    magnitude_scale: float = Field(default=0.25, gt=0, le=2)


class DominanceRule(BaseModel):
    """An (n, k) dominance rule on magnitudes (minutes): a cell whose ``n`` largest contributors
    (people) give more than ``max_share`` of its total is suppressed, as tau-Argus does for
    magnitude tables: a published total would tell each dominant person's share."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(ge=1, le=5)
    max_share: float = Field(gt=0, le=1)


class ReleaseSpec(BaseModel):
    """One recipient's release, as the policy declares it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recipient: str = Field(pattern=r"^[a-z0-9][a-z0-9._\-]{0,62}$")
    # recipient: one third party. tenant: every account holder of the policy's ``tenants``,
    # each in a folder of its own (shareable/<release>/<tenant>/), with its own users only
    # under pseudonyms keyed for it, and its users' activity one row per person and day.
    kind: Literal["recipient", "tenant"] = "recipient"
    statistics: tuple[str, ...] = ()
    # The time of a cell: an hour, a day, or a week (from Monday) or month: over a week or a
    # month a person counts once (distinct people of the period, not a sum of its days).
    granularity: Literal["hour", "day", "week", "month"] = "day"
    k: int = Field(ge=2)
    dp: DpSettings = DpSettings()
    perturbation: Perturbation = Perturbation()
    # A partition the recipient already holds is never published again (later changes are
    # reported in the manifest, not delivered).
    freeze: bool = False
    # A day is released only once it is older than this many days (late exports have arrived
    # by then), and is then frozen (as with freeze). 0: released at once.
    settle_days: int = Field(default=0, ge=0, le=90)

    @property
    def frozen(self) -> bool:
        """Whether partitions the recipient holds are never published again."""
        return self.freeze or self.settle_days > 0

    # Event-level datasets this recipient may receive, with the scope of its pseudonyms.
    events: dict[str, PseudonymScope] = Field(default_factory=dict)
    # The gate refuses the release when more than this share of the people of an event dataset
    # are singled out by up to 4 of their own points (hour and region).
    max_unicity: float = Field(default=0.5, ge=0, le=1)
    # ... and when more than this share of its records sit in groups of fewer than k records
    # with the same quasi-identifiers (time, region, the categorical columns).
    max_share_below_k: float = Field(default=0.05, ge=0, le=1)
    # Event datasets released to several recipients with pseudonyms of their own: the share of
    # rows unique on their other columns (joining the releases links those pseudonyms).
    max_linkable_share: float = Field(default=0.0, ge=0, le=1)
    # Event datasets: durations and other decimals are published rounded to this many seconds.
    event_precision_s: float = Field(default=60.0, gt=0)
    # Magnitudes (minutes): cells where a few people give most of the total are suppressed.
    dominance: tuple[DominanceRule, ...] = (
        DominanceRule(n=1, max_share=0.7),
        DominanceRule(n=2, max_share=0.85),
    )


class Partition(BaseModel):
    """Where a dataset's partition keys come from.

    ``date``: the datetime column whose UTC day is the date key (a list when the dataset's
    contracts name it differently: each contract must have exactly one of them). ``region``: the
    column (a pool or site FQDN) mapped to a region by the policy's patterns; or, with
    ``region_from: path``, the file's folders in the landing zone (a region's name or a server
    FQDN), for sources whose rows say nothing of where they were served. A contract of the
    dataset without the region column (the 2010 tables carry only an integer PoolId) also takes
    its region from the path.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    date: str | tuple[str, ...]
    region: str | None = None
    region_from: Literal["column", "path"] = "column"

    @property
    def date_columns(self) -> tuple[str, ...]:
        return (self.date,) if isinstance(self.date, str) else self.date

    def date_for(self, contract: Contract) -> str:
        """The date column of one contract of the dataset."""
        return next(c for c in self.date_columns if c in contract.column_map)


@dataclass(frozen=True)
class CompiledRule:
    """One operator applied to one input column (or several, for derivations)."""

    column: str | None  # None for derivations
    output: str
    spec: OperatorSpec
    options: Options


# The operators whose output is a keyed pseudonym (``x-`` and 32 letters a-p).
PSEUDONYM_OPS = (
    "pseudonymize", "pseudonymize_lookup", "pseudonymize_session", "pseudonymize_dialog",
)  # fmt: skip


@dataclass(frozen=True)
class DatasetPolicy:
    name: str
    contracts: tuple[Contract, ...]
    partition: Partition
    rules: tuple[CompiledRule, ...]
    dropped: tuple[str, ...]
    exclude: tuple[Exclude, ...] = ()

    @property
    def pseudonym_columns(self) -> list[str]:
        """The outputs that hold keyed pseudonyms (of people, phones, meetings, sessions,
        dialogs): the gate checks they hold nothing else, releases re-key them, erasure looks
        in them."""
        return sorted({r.output for r in self.rules if r.spec.name in PSEUDONYM_OPS})

    @property
    def person_columns(self) -> list[str]:
        """The outputs that hold the provider's pseudonyms of people or phone numbers (not of
        meetings or sessions, not a tenant's)."""
        out = set()
        for r in self.rules:
            if r.spec.name == "pseudonymize_lookup" or (
                r.spec.name == "pseudonymize"
                and r.options.kind in ("auto", "person", "phone")
                and not r.options.per_account
            ):
                out.add(r.output)
        return sorted(out)

    @property
    def account_columns(self) -> list[tuple[str, str, str]]:
        """(person, account, account pseudonym) outputs made from one input column: the
        provider's pseudonym, the tenant id and the tenant's pseudonym of one person."""
        by_input: dict[str, dict[str, str]] = {}
        for r in self.rules:
            if r.column is None:
                continue
            role = (
                "account" if r.spec.name == "account"
                else "account_user" if r.spec.name == "pseudonymize" and r.options.per_account
                else "person" if r.spec.name == "pseudonymize"
                else None
            )  # fmt: skip
            if role:
                by_input.setdefault(r.column, {})[role] = r.output
        return sorted(
            (d["person"], d["account"], d["account_user"])
            for d in by_input.values()
            if {"person", "account", "account_user"} <= d.keys()
        )


@dataclass(frozen=True)
class Policy:
    """A loaded, validated policy. ``hash`` is the SHA-256 of the policy file's bytes."""

    version: str
    hash: str
    source: str
    key: KeySettings
    organization: Organization
    regions: dict[str, tuple[str, ...]]
    batch_rows: int
    datasets: dict[str, DatasetPolicy]
    releases: dict[str, ReleaseSpec] = field(default_factory=dict)
    tenants: dict[str, TenantSpec] = field(default_factory=dict)
    network_sites: dict[str, NetworkSite] = field(default_factory=dict)
    web: WebSettings = field(default_factory=WebSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    retention: Retention = field(default_factory=Retention)

    @property
    def site_networks(self) -> tuple[tuple[str, str], ...]:
        """(subnet, site) pairs of ``network_sites``, the most specific subnet first."""
        import ipaddress

        pairs = [(net, site) for site, spec in self.network_sites.items() for net in spec.subnets]
        return tuple(
            sorted(pairs, key=lambda p: (-ipaddress.ip_network(p[0], strict=False).prefixlen, p))
        )

    @property
    def web_vocabulary(self):
        """The compiled web vocabulary (``WebSettings.compiled``) of this policy."""
        allowed = sorted(
            {k for ds in self.datasets.values() for r in ds.rules
             for k in getattr(r.options, "allow_query", ())}
        )  # fmt: skip
        return self.web.compiled(self.organization.own_domains, tuple(allowed))

    def dataset_for(self, contract: Contract) -> DatasetPolicy | None:
        for ds in self.datasets.values():
            if any(c.name == contract.name for c in ds.contracts):
                return ds
        return None


class Exclude(BaseModel):
    """Rows left out of the dataset, counted as filtered with ``reason``.

    A row is excluded when ``column & bits`` is not zero (``Flag & 1``: a synthetic transaction,
    the pool's health probe, is no usage).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: str = Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")
    column: str
    bits: int = Field(ge=1)


class _RawDataset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contracts: list[str]
    partition: Partition
    columns: dict[str, Any] = Field(default_factory=dict)
    derive: dict[str, Any] = Field(default_factory=dict)
    exclude: list[Exclude] = Field(default_factory=list)


class _RawPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    releases: dict[str, ReleaseSpec] = Field(default_factory=dict)
    version: str
    key: KeySettings = KeySettings()
    organization: Organization = Organization()
    regions: dict[str, list[str]] = Field(default_factory=dict)
    batch_rows: int = Field(default=500_000, ge=1_000)
    datasets: dict[str, _RawDataset]
    tenants: dict[str, TenantSpec] = Field(default_factory=dict)
    network_sites: dict[str, NetworkSite] = Field(default_factory=dict)
    web: WebSettings = WebSettings()
    gate: GateSettings = GateSettings()
    retention: Retention = Retention()


def _pydantic_problems(where: str, exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        out.append(f"{where}{'.' + loc if loc else ''}: {err['msg']}")
    return out


def _rule_problems(doc: dict, exc: ValidationError) -> list[str]:
    """The rule problems of the datasets whose shape is valid, when another part of the policy
    is not: every problem is listed in one pass, not the rule problems on the next try."""
    broken = {
        str(e["loc"][1]) for e in exc.errors() if len(e["loc"]) > 1 and e["loc"][0] == "datasets"
    }
    problems: list[str] = []
    datasets = doc.get("datasets")
    for name, body in datasets.items() if isinstance(datasets, dict) else ():
        if str(name) in broken or not isinstance(body, dict):
            continue
        try:
            _compile_dataset(str(name), _RawDataset(**body), problems)
        except (ValidationError, TypeError):
            continue
    return problems


def _as_steps(rule: Any) -> list[dict[str, Any]] | None:
    """Normalise the rule shorthands to a list of {op, as, ...options} dicts."""
    if isinstance(rule, str):
        return [{"op": rule}]
    if isinstance(rule, dict):
        return [dict(rule)]
    if isinstance(rule, list) and rule and all(isinstance(r, (str, dict)) for r in rule):
        return [{"op": r} if isinstance(r, str) else dict(r) for r in rule]
    return None


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if (
            ch.isupper()
            and i
            and (not name[i - 1].isupper() or (i + 1 < len(name) and name[i + 1].islower()))
        ):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def rule_columns(rule: CompiledRule) -> list[str]:
    """The input columns a compiled rule reads."""
    cols = [rule.column] if rule.column else []
    return cols + [getattr(rule.options, o) for o in rule.spec.column_options]


def _compile_dataset(name: str, raw: _RawDataset, problems: list[str]) -> DatasetPolicy | None:
    where = f"datasets.{name}"
    contracts: list[Contract] = []
    for cname in raw.contracts:
        try:
            contract = load_contract(cname)
        except (FileNotFoundError, ContractError):
            problems.append(f"{where}.contracts: no contract named {cname!r} in schemas/")
            continue
        if contract.lookup is not None:
            problems.append(
                f"{where}.contracts: {cname} is a join source; its rows are never published "
                "(use it through pseudonymize_lookup)"
            )
            continue
        contracts.append(contract)
    if not contracts:
        problems.append(f"{where}: names no usable contract")
        return None
    columns = {}
    for contract in contracts:
        columns.update(contract.column_map)
    try:
        out_schema = load_output_schema(name)
    except FileNotFoundError:
        problems.append(f"{where}: no output schema schemas/output/{name}.yaml")
        return None

    for col in sorted(set(columns) - set(raw.columns)):
        problems.append(
            f"{where}.columns.{col}: no rule (every input column needs exactly one: "
            "drop, keep or an operator)"
        )
    for col in sorted(set(raw.columns) - set(columns)):
        problems.append(f"{where}.columns.{col}: no contract of this dataset has this column")
    part = raw.partition
    for contract in contracts:
        found = [c for c in part.date_columns if c in contract.column_map]
        if len(found) != 1:
            problems.append(
                f"{where}.partition.date: the contract {contract.name} has "
                f"{'none' if not found else 'more than one'} of {', '.join(part.date_columns)}"
            )
        elif contract.column_map[found[0]].type != "datetime":
            problems.append(f"{where}.partition.date: {found[0]} is not a datetime column")
    if part.region_from == "column":
        if part.region is None:
            problems.append(f"{where}.partition.region: name the pool column, or region_from: path")
        elif part.region not in columns:
            problems.append(f"{where}.partition.region: unknown column {part.region!r}")
    elif part.region is not None:
        problems.append(f"{where}.partition.region: not used with region_from: path; remove it")

    rules: list[CompiledRule] = []
    dropped: list[str] = []

    def compile_step(step: dict[str, Any], col: str | None, loc: str) -> None:
        step = dict(step)
        op = step.pop("op", None)
        out = step.pop("as", None)
        if op not in REGISTRY:
            known = ", ".join(sorted(REGISTRY))
            problems.append(f"{loc}: unknown operator {op!r} (known: {known})")
            return
        spec = REGISTRY[op]
        try:
            options = spec.options(**step)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(f"{loc} ({op})", exc))
            return
        if col is None and not spec.column_options:
            problems.append(f"{loc}: {op} cannot be used in derive (it reads one column)")
            return
        if col is not None and spec.column_options:
            problems.append(f"{loc}: {op} reads several columns; declare it under derive")
            return
        in_types = []
        if col is not None:
            meta = columns[col]
            in_types.append(meta.type)
            if op == "keep" and meta.privacy == "PD":
                problems.append(
                    f"{loc}: keep is not allowed on {col}, a PD column; use pseudonymize or drop"
                )
                return
        for opt in spec.column_options:
            ref = getattr(options, opt)
            if ref not in columns:
                problems.append(f"{loc}.{opt}: unknown column {ref!r}")
                return
            in_types.append(columns[ref].type)
        if spec.accepts is not None and any(t not in spec.accepts for t in in_types):
            problems.append(
                f"{loc}: {op} does not accept a {'/'.join(in_types)} column "
                f"(it takes {', '.join(sorted(spec.accepts))})"
            )
            return
        if op == "drop":
            dropped.append(col or "")
            return
        output = out or (_snake(col) if col else None)
        if output is None:
            problems.append(f"{loc}: needs an output name")
            return
        out_type = INPUT_TO_OUTPUT_TYPE[in_types[0]] if spec.output == "same" else spec.output
        expected = out_schema.columns.get(output)
        if expected is None:
            problems.append(
                f"{loc}: output {output!r} is not in the output schema of {name} "
                f"(schemas/output/{name}.yaml); outputs are strict"
            )
            return
        if expected != out_type:
            problems.append(
                f"{loc}: output {output!r} would be {out_type}, the output schema says {expected}"
            )
            return
        rules.append(CompiledRule(col, output, spec, options))

    for col, rule in raw.columns.items():
        if col not in columns:
            continue
        steps = _as_steps(rule)
        loc = f"{where}.columns.{col}"
        if steps is None:
            problems.append(f"{loc}: a rule is drop, keep, {{op: ...}} or a list of {{op: ...}}")
            continue
        if len(steps) > 1 and any(s.get("op") == "drop" for s in steps):
            problems.append(f"{loc}: drop cannot be combined with other operators")
            continue
        for i, step in enumerate(steps):
            compile_step(step, col, loc if len(steps) == 1 else f"{loc}[{i}]")
    for out, rule in raw.derive.items():
        # A list gives alternatives for contracts that name the columns differently (the 2010
        # tables' SessionEndTime, the views' EndTime): one per contract at most.
        alternatives = rule if isinstance(rule, list) else [rule]
        if not alternatives or not all(isinstance(r, dict) for r in alternatives):
            problems.append(
                f"{where}.derive.{out}: must be {{op: ..., ...options}} or a list of them"
            )
            continue
        for i, alt in enumerate(alternatives):
            loc = f"{where}.derive.{out}" + (f"[{i}]" if len(alternatives) > 1 else "")
            compile_step({**alt, "as": out}, None, loc)
    for i, ex in enumerate(raw.exclude):
        if ex.column not in columns:
            problems.append(f"{where}.exclude[{i}]: unknown column {ex.column!r}")
        elif columns[ex.column].type != "int":
            problems.append(f"{where}.exclude[{i}]: {ex.column} is not an int column")

    outputs = [r.output for r in rules]
    for dup in sorted({o for o in outputs if outputs.count(o) > 1}):
        # Allowed across kinds of export (Apache's "time" and IIS's "datetime" both give the
        # request hour), never twice from the columns of one contract.
        for contract in contracts:
            known = contract.column_map
            producing = [
                r for r in rules if r.output == dup and all(c in known for c in rule_columns(r))
            ]
            if len(producing) > 1:
                problems.append(
                    f"{where}: the output {dup!r} is produced by more than one rule "
                    f"(for {contract.name})"
                )
                break
    for key in out_schema.partitioning:
        if key in outputs:
            problems.append(
                f"{where}: {key!r} is a partition key; it lives only in directory names"
            )
    return DatasetPolicy(
        name, tuple(contracts), raw.partition, tuple(rules), tuple(dropped), tuple(raw.exclude)
    )


def effective_policy(path: str | Path | Any) -> dict:
    """The policy at ``path`` as the run applies it: every setting, defaults filled in.

    Validates it first (``load_policy``'s errors). A mapping that dumps back to YAML.
    """
    load_policy(path)
    data = Path(path).read_bytes() if isinstance(path, (str, Path)) else path.read_bytes()
    return _RawPolicy(**yaml.safe_load(data)).model_dump(mode="json", by_alias=True)


def load_policy(path: str | Path | Any) -> Policy:
    """Load and validate a policy file; raise PolicyError listing every problem."""
    source = str(path)
    try:
        data = Path(path).read_bytes() if isinstance(path, (str, Path)) else path.read_bytes()
    except OSError as exc:
        raise PolicyError(source, [f"cannot read the file ({exc.strerror})"]) from None
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise PolicyError(source, [f"not valid YAML{where}"]) from None
    if not isinstance(doc, dict):
        raise PolicyError(source, ["the file must be a YAML mapping"])
    try:
        raw = _RawPolicy(**doc)
    except ValidationError as exc:
        problems = _pydantic_problems("policy", exc)
        raise PolicyError(source, problems + _rule_problems(doc, exc)) from None

    problems: list[str] = []
    for region in raw.regions:
        if not re.fullmatch(REGION_NAME, region):
            problems.append(
                f"regions.{region}: a region's name is an upper-case word (letters, digits, _)"
            )
    datasets = {}
    for name, ds in raw.datasets.items():
        compiled = _compile_dataset(name, ds, problems)
        if compiled is not None:
            datasets[name] = compiled
    for rname, rel in raw.releases.items():
        if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]{0,40}", rname):
            problems.append(f"releases.{rname}: a release name is lower-case letters, digits, - _")
        for stat in rel.statistics:
            if stat not in STATISTICS:
                known = ", ".join(sorted(STATISTICS))
                problems.append(
                    f"releases.{rname}.statistics: unknown statistic {stat!r} ({known})"
                )
        for dataset in rel.events:
            if dataset not in raw.datasets:
                problems.append(f"releases.{rname}.events: no dataset {dataset!r} in this policy")
        if not rel.statistics and not rel.events:
            problems.append(f"releases.{rname}: releases nothing (no statistics, no events)")
        exact = rel.perturbation.method == "none" and not rel.dp.enabled
        if rel.statistics and exact and not rel.frozen:
            problems.append(
                f"releases.{rname}.perturbation: exact counts (method: none) need "
                "freeze: true, or a day published again (a late export) would tell its "
                "changes below k; keep method: cell_key, or add freeze: true"
            )
        if rel.dp.enabled and rel.dp.budget < rel.dp.epsilon * len(rel.statistics):
            problems.append(
                f"releases.{rname}.dp.budget: {rel.dp.budget} is less than one publication "
                f"costs (epsilon {rel.dp.epsilon} x {len(rel.statistics)} statistic(s))"
            )
    for sname in raw.network_sites:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]{0,40}", sname) or sname in ("outside", "unknown"):
            problems.append(
                f"network_sites.{sname}: a site's name is lower-case letters, digits, - _ "
                "(and neither outside nor unknown)"
            )
    for tname in raw.tenants:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]{0,40}", tname):
            problems.append(f"tenants.{tname}: a tenant id is lower-case letters, digits, - _")
    owners: dict[str, str] = {}
    for tname, tenant in raw.tenants.items():
        for domain in tenant.domains:
            if domain in owners:
                problems.append(
                    f"tenants.{tname}.domains: {domain!r} is also a domain of {owners[domain]!r}"
                )
            owners.setdefault(domain, tname)
    for rname, rel in raw.releases.items():
        if rel.kind == "tenant" and not raw.tenants:
            problems.append(f"releases.{rname}: a tenant release needs tenants: in the policy")
        if rel.kind == "tenant" and rel.dp.enabled:
            problems.append(
                f"releases.{rname}.dp: a tenant release takes perturbation, not DP (its users' "
                "activity is exact: it is their account holder's)"
            )
        if rel.kind == "tenant" and rel.events:
            problems.append(
                f"releases.{rname}.events: a tenant release has its users' activity, not events"
            )
    recipients = [r.recipient for r in raw.releases.values()]
    for dup in sorted({r for r in recipients if recipients.count(r) > 1}):
        problems.append(f"releases: the recipient {dup!r} has more than one release")
    keep = raw.retention
    if keep.restricted_days is not None and (
        keep.quarantine_days is None or keep.quarantine_days > keep.restricted_days
    ):
        problems.append(
            "retention.quarantine_days: the quarantine holds raw values and must expire first "
            f"(at most restricted_days, {keep.restricted_days})"
        )
    if problems:
        raise PolicyError(source, problems)
    return Policy(
        version=raw.version,
        hash=hashlib.sha256(data).hexdigest(),
        source=source,
        key=raw.key,
        organization=raw.organization,
        regions={k: tuple(v) for k, v in raw.regions.items()},
        batch_rows=raw.batch_rows,
        datasets=datasets,
        releases=dict(raw.releases),
        tenants=dict(raw.tenants),
        network_sites=dict(raw.network_sites),
        web=raw.web,
        gate=raw.gate,
        retention=raw.retention,
    )
