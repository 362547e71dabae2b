"""Synthetic Lync / Skype for Business call records, realistic enough to test and benchmark on.

A seeded world of tenants (each with its own SIP domain), people (names, SIP URIs, phone numbers,
devices, client versions) and front-end pools in three regions, and sessions drawn from it:
business-hours arrivals in each region's time zone, IM / audio / video / app-sharing / file
transfer mixes, heavy-tailed (log-normal) call durations, failed calls with real SIP response
codes, PSTN calls through gateways and mediation servers, and federated partners.

People are made with faker, once; sessions are drawn with numpy and written with polars, so ten
million rows take seconds, not hours. The files mimic how administrators really export the views:
``SessionDetailsView`` as SSMS writes it (``NULL``, ``0/1`` bits, upper-case GUIDs, URIs without
``sip:``), ``VoIPDetailsView`` as Windows PowerShell ``Export-Csv`` writes it (a ``#TYPE`` line,
every field quoted, ``True/False``, en-US datetimes, ``sip:`` URIs, gzip).

Examples
--------
>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp())
>>> world = generate_lync(out, seed=1, rows=200, days=1)
>>> sorted(p.name for p in (out / "lync").rglob("*.csv*"))
['SessionDetailsView.csv', 'VoIPDetailsView.csv.gz']
"""

from __future__ import annotations

import gzip
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from faker import Faker

from anonymize.contracts import load_contract

OWN_DOMAINS = (
    "contoso.com",
    "fabrikam.com",
    "litwareinc.com",
    "tailspintoys.com",
    "wingtiptoys.com",
)
REGION_SETUP = {
    # region: (faker locale, calling code prefix, UTC hour of 9:00 local, pools)
    "AMER": ("en_US", "+1", 14, ("fepool01.us.uchost.net", "fepool02.us.uchost.net")),
    "EMEA": ("en_GB", "+44", 9, ("fepool01.uk.uchost.net",)),
    "APAC": ("en_AU", "+852", 1, ("fepool01.hk.uchost.net",)),
}
CLIENTS = (
    "UCCAPI/16.0.5215.1000 OC/16.0.5215.1000 (Skype for Business)",
    "UCCAPI/15.0.5023.1000 OC/15.0.5023.1000 (Microsoft Lync)",
    "UCCAPI/16.0.4266.1003 OC/16.0.4266.1003 (Skype for Business)",
    "UCWA/6.0.0.0 iPhoneLync/6.22.1 (iOS 12.1)",
    "UCWA/6.0.0.0 AndroidLync/6.21.0.4 (Android 9)",
    "UCCAPI/16.0.5215.1000 OC/16.0.5215.1000 (Skype for Business for Mac)",
    "LWA/6.0.0.0 (Skype Meetings App)",
    "OCPhone/4.0.7577.4540 (Microsoft Lync 2010 Phone Edition)",
    "Polycom/5.9.5.0333 PolycomVVX-VVX_411-UA/5.9.5.0333",
)
CLIENT_WEIGHTS = (0.45, 0.12, 0.1, 0.08, 0.07, 0.05, 0.05, 0.04, 0.04)
# (MediaTypes, weight, mean log-duration in seconds, sigma)
MODALITIES = (
    (1, 0.42, 4.5, 1.2),  # IM
    (16, 0.30, 5.2, 1.1),  # audio
    (48, 0.12, 6.3, 0.9),  # audio + video
    (24, 0.07, 6.8, 0.8),  # app sharing with audio
    (8, 0.04, 6.0, 1.0),  # app sharing
    (2, 0.03, 3.0, 1.0),  # file transfer
    (4, 0.02, 6.0, 0.8),  # remote assistance
)
# Failed calls: SIP response code, diagnostic id, weight among failures.
FAILURES = (
    (487, 10009, 0.35),  # request terminated (caller hung up while ringing)
    (480, 10003, 0.25),  # temporarily unavailable
    (486, 10007, 0.15),  # busy here
    (408, 10006, 0.08),  # request timeout
    (603, 10010, 0.07),  # decline
    (404, 10002, 0.06),  # not found
    (500, 52001, 0.04),  # server internal error
)
FAILURE_RATE = 0.12
PSTN_SHARE = 0.18  # of audio calls
FEDERATED_SHARE = 0.10


@dataclass
class Person:
    name: str
    sip: str  # "first.last@domain"
    phone: str  # E.164
    region: str
    pool: str
    tenant: str
    endpoint: str
    client: str


@dataclass
class World:
    """Everything identifying the generator made: the canaries the leak tests look for."""

    people: list[Person] = field(default_factory=list)
    federated: list[Person] = field(default_factory=list)
    pstn_numbers: list[str] = field(default_factory=list)
    guids: list[str] = field(default_factory=list)
    # What the web and Connect generators wrote, per kind (ip, email, account, card, title ...).
    extra: dict[str, set[str]] = field(default_factory=dict)

    def by_region(self) -> dict[str, list[Person]]:
        """The people of each hosting region, in the order they were made."""
        out: dict[str, list[Person]] = {}
        for p in self.people:
            out.setdefault(p.region, []).append(p)
        return out

    def identifiers(self) -> dict[str, set[str]]:
        """Every raw identifier, per kind (for canary tests)."""
        everyone = self.people + self.federated
        out = {
            "sip": {p.sip for p in everyone},
            "local_part": {p.sip.split("@", 1)[0] for p in everyone},
            "name": {p.name for p in everyone},
            "phone": {p.phone for p in everyone} | set(self.pstn_numbers),
            "guid": {g.lower() for g in self.guids} | {p.endpoint for p in everyone},
        }
        for kind, values in self.extra.items():
            out[kind] = out.get(kind, set()) | values
        return out


def _people(
    fake: Faker, rng: np.random.Generator, n: int, region: str, tenant: str, domain: str
) -> list[Person]:
    locale, cc, _, pools = REGION_SETUP[region]
    out = []
    seen: set[str] = set()
    while len(out) < n:
        first, last = fake[locale].first_name(), fake[locale].last_name()
        local = f"{first}.{last}".lower().replace(" ", "").replace("'", "")
        if local in seen:
            local = f"{local}{len(seen)}"
        seen.add(local)
        digits = "".join(str(d) for d in rng.integers(0, 10, 8))
        phone = f"{cc}{'425' if cc == '+1' else '20'}{digits}"[: 12 if cc == "+1" else 13]
        out.append(
            Person(
                name=f"{first} {last}",
                sip=f"{local}@{domain}",
                phone=phone,
                region=region,
                pool=pools[int(rng.integers(len(pools)))],
                tenant=tenant,
                endpoint=str(uuid.UUID(bytes=rng.bytes(16), version=4)),
                client=CLIENTS[int(rng.choice(len(CLIENTS), p=CLIENT_WEIGHTS))],
            )
        )
    return out


def make_world(seed: int, people: int = 600) -> World:
    """Tenants, people and federated partners, all from one seed."""
    rng = np.random.default_rng(seed)
    fake = Faker(["en_US", "en_GB", "en_AU"])
    fake.seed_instance(seed)
    world = World()
    regions = list(REGION_SETUP)
    per_tenant = max(people // len(OWN_DOMAINS), 2)
    for i, domain in enumerate(OWN_DOMAINS):
        tenant = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        world.people += _people(fake, rng, per_tenant, regions[i % 3], tenant, domain)
    for _ in range(4):
        domain = fake["en_US"].domain_name()
        tenant = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        world.federated += _people(fake, rng, max(per_tenant // 5, 2), "AMER", tenant, domain)
    world.pstn_numbers = [
        f"+1{int(rng.integers(200, 999))}555{int(rng.integers(0, 10_000)):04d}"
        for _ in range(max(people // 2, 10))
    ]
    return world


def _sessions(
    world: World, rng: np.random.Generator, rows: int, days: int, start: date
) -> pl.DataFrame:
    """Draw ``rows`` sessions as a typed frame with every VoIPDetailsView column."""
    n = rows
    people = pl.DataFrame([p.__dict__ for p in world.people])
    fed = pl.DataFrame([p.__dict__ for p in world.federated])
    caller = rng.integers(0, people.height, n)
    # Zipf-like skew: a few people make many sessions.
    callee = (rng.zipf(1.6, n) - 1 + caller * 7) % people.height
    callee = np.where(callee == caller, (callee + 1) % people.height, callee)
    c = people[caller]
    d = people[callee]

    mod_idx = rng.choice(len(MODALITIES), n, p=[m[1] for m in MODALITIES])
    media = np.array([m[0] for m in MODALITIES])[mod_idx]
    mu = np.array([m[2] for m in MODALITIES])[mod_idx]
    sigma = np.array([m[3] for m in MODALITIES])[mod_idx]
    duration_ms = (np.exp(rng.normal(mu, sigma)) * 1000).astype(np.int64)

    day = rng.integers(0, days, n)
    region_hour = c["region"].replace_strict({r: v[2] for r, v in REGION_SETUP.items()}).to_numpy()
    # Business hours: a 9-hour day with a lunch dip, some evening traffic.
    local_hour = rng.choice(
        12, n, p=[0.08, 0.13, 0.14, 0.12, 0.06, 0.1, 0.12, 0.11, 0.08, 0.03, 0.02, 0.01]
    )
    base = datetime(start.year, start.month, start.day)
    offset_ms = (
        day * 86_400_000
        + ((region_hour + local_hour) % 24) * 3_600_000
        + rng.integers(0, 3_600_000, n)
    )
    invite = pl.Series(offset_ms).cast(pl.Duration("ms")) + base
    setup_ms = rng.gamma(2.0, 1500.0, n).astype(np.int64) + 200

    failed = rng.random(n) < FAILURE_RATE
    fail_idx = rng.choice(len(FAILURES), n, p=[f[2] for f in FAILURES])
    code = np.where(failed, np.array([f[0] for f in FAILURES])[fail_idx], 200)
    diag = np.where(failed, np.array([f[1] for f in FAILURES])[fail_idx], 51004)

    audio = (media & 16) != 0
    pstn = audio & (rng.random(n) < PSTN_SHARE)
    pstn_out = pstn & (rng.random(n) < 0.6)  # 60% outbound to the PSTN, 40% inbound
    federated = ~pstn & (rng.random(n) < FEDERATED_SHARE)
    fed_pick = fed[rng.integers(0, fed.height, n)]
    pstn_num = pl.Series(world.pstn_numbers)[rng.integers(0, len(world.pstn_numbers), n)]
    world.guids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(min(n, 250_000))]
    corr = pl.Series(world.guids)[rng.integers(0, len(world.guids), n)]
    gateway = pl.Series([f"gw0{i}.{r}.uchost.net" for r in ("us", "uk", "hk") for i in (1, 2)])

    callee_uri = (
        pl.when(pl.lit(pstn_out))
        .then(pl.lit(pstn_num) + "@" + c["sip"].str.split("@").list.get(1) + ";user=phone")
        .when(pl.lit(federated))
        .then(pl.lit(fed_pick["sip"]))
        .otherwise(pl.lit(d["sip"]))
    )
    caller_uri = (
        pl.when(pl.lit(pstn & ~pstn_out))
        .then(pl.lit(pstn_num) + "@" + d["sip"].str.split("@").list.get(1) + ";user=phone")
        .otherwise(pl.lit(c["sip"]))
    )
    response = invite + pl.Series(setup_ms).cast(pl.Duration("ms"))
    end = response + pl.Series(duration_ms).cast(pl.Duration("ms"))
    null_s = pl.lit(None, dtype=pl.String)
    frame = pl.DataFrame({"_i": np.arange(n)}).select(
        SessionIdTime=pl.lit(invite),
        SessionIdSeq=pl.lit(1, dtype=pl.Int64),
        InviteTime=pl.lit(invite),
        FromUri=caller_uri,
        ToUri=callee_uri,
        FromUriType=pl.when(pl.lit(pstn & ~pstn_out))
        .then(pl.lit("PhoneUri"))
        .otherwise(pl.lit("UserUri")),
        ToUriType=pl.when(pl.lit(pstn_out)).then(pl.lit("PhoneUri")).otherwise(pl.lit("UserUri")),
        FromTenant=pl.lit(c["tenant"]),
        ToTenant=pl.when(pl.lit(federated))
        .then(pl.lit(fed_pick["tenant"]))
        .otherwise(pl.lit(d["tenant"])),
        FromEndpointId=pl.lit(c["endpoint"]),
        ToEndpointId=pl.when(pl.lit(pstn_out)).then(null_s).otherwise(pl.lit(d["endpoint"])),
        EndTime=pl.when(pl.lit(failed)).then(None).otherwise(pl.lit(end)),
        FromMessageCount=pl.when(pl.lit(media == 1)).then(pl.lit(rng.poisson(6, n))).otherwise(0),
        ToMessageCount=pl.when(pl.lit(media == 1)).then(pl.lit(rng.poisson(5, n))).otherwise(0),
        FromClientVersion=pl.lit(c["client"]),
        FromClientType=pl.lit(4, dtype=pl.Int64),
        FromClientCategory=pl.lit("OC"),
        ToClientVersion=pl.when(pl.lit(pstn_out))
        .then(pl.lit("RTCC/6.0.0.0 MediationServer"))
        .otherwise(pl.lit(d["client"])),
        ToClientType=pl.when(pl.lit(pstn_out)).then(1).otherwise(4),
        ToClientCategory=pl.when(pl.lit(pstn_out))
        .then(pl.lit("MediationServer"))
        .otherwise(pl.lit("OC")),
        TargetUri=callee_uri,
        TargetUriType=pl.lit("UserUri"),
        OnBehalfOfUri=null_s,
        OnBehalfOfUriType=null_s,
        OnBehalfOfTenant=null_s,
        ReferredByUri=pl.when(pl.lit(rng.random(n) < 0.02))
        .then(pl.lit(d["sip"]))
        .otherwise(null_s),
        ReferredByUriType=null_s,
        ReferredByTenant=null_s,
        DialogId=pl.format(
            "{}-{};from-tag={};to-tag={}",
            pl.lit(rng.integers(10**9, 10**10, n)),
            pl.lit(c["sip"].str.split("@").list.get(0)),
            pl.lit(rng.integers(10**6, 10**7, n)),
            pl.lit(rng.integers(10**6, 10**7, n)),
        ),
        CorrelationId=pl.lit(corr),
        ReplaceDialogIdTime=pl.lit(None, dtype=pl.Datetime("ms")),
        ReplaceDialogIdSeq=pl.lit(None, dtype=pl.Int64),
        ReplacesDialogId=null_s,
        ResponseTime=pl.lit(response),
        ResponseCode=pl.lit(code),
        DiagnosticId=pl.lit(diag),
        ContentType=pl.when(pl.lit(media == 1))
        .then(pl.lit("text/plain"))
        .otherwise(pl.lit("application/sdp")),
        FrontEnd=pl.lit(c["pool"]).str.replace("fepool", "fe01.pool"),
        Pool=pl.lit(c["pool"]),
        FromEdgeServer=pl.when(pl.lit(rng.random(n) < 0.2))
        .then(pl.lit("edge01.uchost.net"))
        .otherwise(null_s),
        ToEdgeServer=pl.when(pl.lit(federated)).then(pl.lit("edge01.uchost.net")).otherwise(null_s),
        IsFromInternal=pl.lit(rng.random(n) < 0.8),
        IsToInternal=pl.lit(~federated & ~pstn_out),
        CallPriority=pl.lit(0, dtype=pl.Int64),
        FromUserFlag=pl.lit(0, dtype=pl.Int64),
        ToUserFlag=pl.lit(0, dtype=pl.Int64),
        CallFlag=pl.lit(0, dtype=pl.Int64),
        Location=null_s,
        LastModifiedTime=pl.lit(end) + pl.duration(minutes=2),
        MediaTypes=pl.lit(media),
        FromPhone=pl.when(pl.lit(pstn & ~pstn_out))
        .then(pl.lit(pstn_num))
        .otherwise(pl.lit(c["phone"])),
        ToPhone=pl.when(pl.lit(pstn_out)).then(pl.lit(pstn_num)).otherwise(pl.lit(d["phone"])),
        DisconnectedByUri=pl.lit(c["sip"]),
        DisconnectedByUriType=pl.lit("UserUri"),
        DisconnectedByTenant=pl.lit(c["tenant"]),
        DisconnectedByPhone=null_s,
        FromMediationServer=pl.when(pl.lit(pstn & ~pstn_out))
        .then(pl.lit("med01.uchost.net"))
        .otherwise(null_s),
        ToMediationServer=pl.when(pl.lit(pstn_out))
        .then(pl.lit("med01.uchost.net"))
        .otherwise(null_s),
        FromGateway=pl.when(pl.lit(pstn & ~pstn_out))
        .then(pl.lit(gateway[rng.integers(0, 6, n)]))
        .otherwise(null_s),
        ToGateway=pl.when(pl.lit(pstn_out))
        .then(pl.lit(gateway[rng.integers(0, 6, n)]))
        .otherwise(null_s),
        _pstn=pl.lit(pstn),
    )
    return frame.sort("SessionIdTime", maintain_order=True)


def _as_ssms(frame: pl.DataFrame) -> pl.DataFrame:
    """Strings as SSMS writes them: ms datetimes, 0/1 bits, upper-case GUIDs, NULL."""
    return frame.with_columns(
        pl.col(pl.Datetime).dt.strftime("%Y-%m-%d %H:%M:%S%.3f"),
        pl.col(pl.Boolean).cast(pl.Int8).cast(pl.String),
        pl.col("FromEndpointId", "ToEndpointId", "CorrelationId").str.to_uppercase(),
    )


def _as_export_csv(frame: pl.DataFrame) -> pl.DataFrame:
    """Strings as Windows PowerShell Export-Csv writes them: True/False, ``sip:`` URIs.

    Datetimes keep their milliseconds (the export query converts them with style 121, as admin
    scripts do so that ``SessionIdTime`` still identifies the session).
    """
    uri_cols = [c for c in frame.columns if c.endswith("Uri") and not c.endswith("UriType")]
    return frame.with_columns(
        pl.col(pl.Datetime).dt.strftime("%Y-%m-%d %H:%M:%S%.3f"),
        pl.col(pl.Boolean).replace_strict({True: "True", False: "False"}, return_dtype=pl.String),
        *[("sip:" + pl.col(c)).alias(c) for c in uri_cols],
    )


def write_session_details(frame: pl.DataFrame, path: Path) -> None:
    """Write a SessionDetailsView export the way SSMS "Save results as" does."""
    cols = [c.name for c in load_contract("lync_session_details_view").columns]
    path.parent.mkdir(parents=True, exist_ok=True)
    _as_ssms(frame.select(cols)).write_csv(path, null_value="NULL")


def write_voip_details(frame: pl.DataFrame, path: Path) -> None:
    """Write a VoIPDetailsView export the way ``Export-Csv`` does (gzip when the name says so)."""
    cols = [c.name for c in load_contract("lync_voip_details_view").columns]
    body = _as_export_csv(frame.select(cols)).write_csv(quote_style="always", null_value="")
    data = ("#TYPE System.Data.DataRow\r\n" + body.replace("\n", "\r\n")).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def generate_lync(
    out: Path,
    *,
    seed: int,
    rows: int,
    days: int = 2,
    start: date = date(2026, 11, 23),
    voip: bool = True,
    people: int = 600,
) -> World:
    """Write a landing zone of Lync exports under ``out/lync/<day>/`` and return the world.

    Every session goes to the day's ``SessionDetailsView.csv``; PSTN calls also go to the day's
    ``VoIPDetailsView.csv.gz``, as when an administrator exports both views.
    """
    world = make_world(seed, people)
    rng = np.random.default_rng(seed + 1)
    frame = _sessions(world, rng, rows, days, start)
    for d in range(days):
        day = start + timedelta(days=d)
        lo = datetime(day.year, day.month, day.day)
        part = frame.filter(
            pl.col("SessionIdTime").is_between(lo, lo + timedelta(days=1), closed="left")
        )
        folder = Path(out) / "lync" / day.isoformat()
        write_session_details(part, folder / "SessionDetailsView.csv")
        if voip:
            write_voip_details(part.filter(pl.col("_pstn")), folder / "VoIPDetailsView.csv.gz")
    return world
