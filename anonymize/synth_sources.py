"""Synthetic web/IIS access logs and Adobe Connect reports for the people of a Lync world.

The same people who call each other in ``synth.generate_lync`` browse the provider's web site
(Apache combined logs), use the Lync web services (IIS W3C logs on the front ends) and attend
Adobe Connect meetings (report XML responses and a Users CSV download), so cross-source tests see
one population. Personal Data sits where real logs hide it: emails in a newsletter sign-up query
string, names in search terms and referers, a card number typed into a GET form, aliases in
``/meet/`` URLs and in REST paths, ``DOMAIN\\user`` in ``cs-username``, cookies, meeting titles
with people's names, room URLs named after their hosts, GUID logins.

Everything identifying that is written is recorded in ``World.extra``, for the canary tests.

Examples
--------
>>> import tempfile, pathlib
>>> from anonymize.synth import make_world
>>> out = pathlib.Path(tempfile.mkdtemp())
>>> world = make_world(3, people=30)
>>> generate_weblogs(out, world, seed=3, requests=50, days=1)
>>> files = (out / "weblogs").rglob("*")
>>> sorted(p.relative_to(out).as_posix() for p in files if p.is_file())[:2]
['weblogs/AMER/lyncweb01.us.uchost.net/u_ex261123.log', 'weblogs/AMER/www/access-2026-11-23.log']
"""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import polars as pl

from anonymize.synth import REGION_SETUP, Person, World

UTC_OFFSET_HOURS = {"AMER": -8, "EMEA": 0, "APAC": 8}
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Lync 16.0.5215; Pro)",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
)
UA_WEIGHTS = (0.34, 0.14, 0.12, 0.14, 0.1, 0.1, 0.06)
# Cards that pass the Luhn check (test numbers of the card networks).
CARDS = ("4111111111111111", "5500005555555559", "340000000000009")


def _person_attrs(world: World, seed: int) -> dict[str, dict[str, str]]:
    """Per-person web identity: client address, Windows account, Connect principal id."""
    rng = np.random.default_rng(seed + 7)
    out = {}
    for i, p in enumerate(world.people):
        if rng.random() < 0.2:
            net = f"{int(rng.integers(1, 0xFFFF)):x}:{int(rng.integers(0, 0xFFFF)):x}"
            ip = f"2001:db8:{net}::{i + 1:x}"
        else:
            a, b, c = (int(x) for x in rng.integers(1, 255, 3))
            ip = f"{a}.{b}.{c}.{int(rng.integers(1, 255))}"
        local, domain = p.sip.split("@", 1)
        out[p.sip] = {
            "ip": ip,
            "account": f"{domain.split('.', 1)[0].upper()}\\{local.replace('.', '')[:12]}",
            "principal": str(2_000_000 + i * 7),
            "guid_login": str(uuid.UUID(bytes=rng.bytes(16), version=4)),
        }
    return out


def _record(world: World, kind: str, *values: str) -> None:
    world.extra.setdefault(kind, set()).update(v for v in values if v)


def _day_times(rng: np.random.Generator, day: date, region: str, n: int) -> list[datetime]:
    """Business-hours request times (UTC) for one region's day, sorted."""
    nine = REGION_SETUP[region][2]
    hours = np.clip(rng.normal(4.5, 2.8, n), -3, 13) + nine
    base = datetime(day.year, day.month, day.day)
    secs = np.sort((hours * 3600).astype(int) % 86400)
    return [base + timedelta(seconds=int(s)) for s in secs]


def _roaming_address(rng) -> str:
    """A phone's address on a carrier network: a new one for many requests."""
    a, b = int(rng.integers(100, 200)), int(rng.integers(0, 255))
    return f"{a}.{b}.{int(rng.integers(0, 255))}.{int(rng.integers(1, 255))}"


def _apache_line(
    p: Person, attrs: dict[str, str], t: datetime, rng, world: World, truth: int | None = None
) -> str:
    local = p.sip.split("@", 1)[0]
    first, last = p.name.split(" ", 1)
    r = rng.random()
    referer = "-"
    user = "-"
    if r < 0.06:
        path = f"/newsletter/subscribe?email={p.sip}&lang=en"
        _record(world, "email", p.sip)
    elif r < 0.11:
        path = f"/search?q={first}+{last}&page=2"
        _record(world, "name", p.name)
    elif r < 0.13:
        card = CARDS[int(rng.integers(len(CARDS)))]
        path = f"/billing/pay?card={card}&exp=12%2F29&amount=49"
        _record(world, "card", card)
    elif r < 0.2:
        path = f"/portal/users/{p.sip}/settings"
        user = p.sip
        _record(world, "email", p.sip)
    elif r < 0.25:
        path = f"/~{local}/"
    elif r < 0.35:
        path = f"/support/kb/{int(rng.integers(100000, 999999))}"
        referer = f"https://www.google.com/search?q={first}+{last}+lync+support"
        _record(world, "name", p.name)
    else:
        path = ("/", "/pricing", "/products/skype-for-business", "/products/connect",
                "/contact", "/static/site.css", "/favicon.ico")[int(rng.integers(7))]  # fmt: skip
        if rng.random() < 0.3:
            referer = "https://www.uchost.net/"
    status = 200 if rng.random() < 0.9 else int(rng.choice([301, 304, 404, 500]))
    size = int(rng.integers(200, 40000))
    ua = USER_AGENTS[int(rng.choice(len(USER_AGENTS), p=UA_WEIGHTS))]
    client = attrs["ip"]
    if truth is not None:  # the writer's index in the size; phones roam between networks
        size = truth * 1000 + size % 1000
        ua = attrs.get("ua", ua)
        if "Mobile" in ua and rng.random() < 0.6:
            client = _roaming_address(rng)
    if rng.random() < 0.15:  # behind the load balancer: the client is in X-Forwarded-For
        client = f"{client}, 10.20.0.{int(rng.integers(2, 9))}"
    stamp = t.replace(tzinfo=UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    _record(world, "ip", attrs["ip"])
    return f'{client} - {user} [{stamp}] "GET {path} HTTP/1.1" {status} {size} "{referer}" "{ua}"'


IIS_FIELDS_1 = (
    "date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip "
    "cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken"
)
IIS_FIELDS_2 = (
    "date time s-sitename s-computername s-ip cs-method cs-uri-stem cs-uri-query s-port "
    "cs-username c-ip cs-version cs(User-Agent) cs(Cookie) cs(Referer) cs-host sc-status "
    "sc-substatus sc-win32-status sc-bytes cs-bytes time-taken"
)


def _iis_line(
    p: Person, attrs: dict[str, str], t: datetime, rng, world: World, layout: int,
    truth: int | None = None,
) -> str:  # fmt: skip
    local, domain = p.sip.split("@", 1)
    conf = "".join(rng.choice(list("ABCDEFGHJKLMNPQRSTUVWXYZ23456789"), 8))
    r = rng.random()
    user = "-"
    if r < 0.3:
        stem, query = f"/meet/{local}/{conf}", "-"
    elif r < 0.45:
        stem = "/Autodiscover/AutodiscoverService.svc/root"
        query = f"originalDomain={domain}&sipuri={p.sip}&lang=en-US"
        _record(world, "email", p.sip)
    elif r < 0.65:
        app = int(rng.integers(10**9, 10**10))
        stem = f"/ucwa/oauth/v1/applications/{app}/people/{p.sip}/presence"
        query = "-"
        user = attrs["account"]
        _record(world, "account", attrs["account"])
    elif r < 0.8:
        stem, query = "/WebTicket/WebTicketService.svc/mex", "-"
        user = attrs["account"]
    elif r < 0.9:
        stem, query = "/dialin/", "lang=en-US"
    else:
        stem, query = "/Reach/Client/WebPages/ReachJoin.aspx", f"xml={conf}&&reachLocale=en-US"
    ua = USER_AGENTS[int(rng.choice(len(USER_AGENTS), p=UA_WEIGHTS))]
    c_ip = attrs["ip"]
    if truth is not None:  # as in _apache_line
        ua = attrs.get("ua", ua)
        if "Mobile" in ua and rng.random() < 0.6:
            c_ip = _roaming_address(rng)
    ua = ua.replace(" ", "+")
    status = 200 if rng.random() < 0.85 else int(rng.choice([401, 404, 500]))
    _record(world, "ip", c_ip)
    stamp = t.strftime("%Y-%m-%d %H:%M:%S")
    # time-taken: the writer's index in truth mode (the same draws either way)
    if layout == 1:
        taken = str(int(rng.integers(5, 900)) if truth is None else truth * 1000 + 999)
        fields = [stamp, "10.10.1.5", "GET", stem, query, "443", user, c_ip, ua,
                  f"https://meet.{domain}/", str(status), "0", "0", taken]  # fmt: skip
    else:
        token = str(uuid.UUID(bytes=rng.bytes(16)))
        cookie = f"MRASCredentials={token};+sip={p.sip}"
        _record(world, "email", p.sip)
        _record(world, "cookie", cookie, token)
        sizes = [str(int(rng.integers(300, 9000))), str(int(rng.integers(200, 900)))]
        taken = str(int(rng.integers(5, 900)) if truth is None else truth * 1000 + 999)
        fields = [stamp, "W3SVC34578", "LYNCFE01", "10.10.1.5", "GET", stem, query, "443", user,
                  c_ip, "HTTP/1.1", ua, cookie, "-", f"meet.{domain}", str(status), "0", "0",
                  *sizes, taken]  # fmt: skip
    return " ".join(fields)


def generate_weblogs(
    out: Path, world: World, *, seed: int, requests: int, days: int = 2,
    start: date = date(2026, 11, 23), truth: bool = False,
) -> None:  # fmt: skip
    """Write Apache (web site) and IIS (Lync web services) logs per region and day.

    ``weblogs/<REGION>/www/access-<day>.log`` (combined format; gzip on the second day) and
    ``weblogs/<REGION>/<front-end FQDN>/u_ex<yymmdd>.log`` (W3C, the layout changes mid-file).
    With ``truth``, each person browses with one device of their own, phones roam between
    carrier networks, and the writer of each line (its index in ``world.people``) is the
    thousands of its size (Apache) or time-taken (IIS): a test reads who wrote each published
    row back from the restricted dataset.
    """
    rng = np.random.default_rng(seed + 11)
    attrs = _person_attrs(world, seed)
    index = {p.sip: i for i, p in enumerate(world.people)}
    if truth:
        devices = np.random.default_rng(seed + 13)
        weights = np.array(UA_WEIGHTS[:-1]) / sum(UA_WEIGHTS[:-1])
        for a in attrs.values():
            a["ua"] = USER_AGENTS[int(devices.choice(len(weights), p=weights))]
    by_region = world.by_region()
    for d in range(days):
        day = start + timedelta(days=d)
        for region, people in sorted(by_region.items()):
            host = REGION_SETUP[region][3][0].replace("fepool01", "lyncweb01")
            n = max(requests // (days * len(by_region)), 1)
            lines = []
            for t in _day_times(rng, day, region, n):
                p = people[int(rng.integers(len(people)))]
                who = index[p.sip] if truth else None
                lines.append(_apache_line(p, attrs[p.sip], t, rng, world, who))
            lines.insert(len(lines) // 2, "\x16\x03\x01 garbage from a TLS probe")  # quarantined
            folder = Path(out) / "weblogs" / region / "www"
            folder.mkdir(parents=True, exist_ok=True)
            data = ("\n".join(lines) + "\n").encode()
            if d % 2:
                (folder / f"access-{day.isoformat()}.log.gz").write_bytes(
                    gzip.compress(data, mtime=0)
                )
            else:
                (folder / f"access-{day.isoformat()}.log").write_bytes(data)
            iis = [
                "#Software: Microsoft Internet Information Services 10.0",
                "#Version: 1.0",
                f"#Date: {day.isoformat()} 00:00:00",
                f"#Fields: {IIS_FIELDS_1}",
            ]
            times = _day_times(rng, day, region, n)
            for i, t in enumerate(times):
                if i == len(times) // 2:  # IIS restarted with more fields logged
                    iis += [f"#Date: {t:%Y-%m-%d %H:%M:%S}", f"#Fields: {IIS_FIELDS_2}"]
                layout = 1 if i < len(times) // 2 else 2
                p = people[int(rng.integers(len(people)))]
                who = index[p.sip] if truth else None
                iis.append(_iis_line(p, attrs[p.sip], t, rng, world, layout, who))
            folder = Path(out) / "weblogs" / region / host
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"u_ex{day:%y%m%d}.log").write_text("\r\n".join(iis) + "\r\n")


def _iso(t: datetime, region: str) -> str:
    off = UTC_OFFSET_HOURS[region]
    local = t.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=off)))
    return local.isoformat(timespec="milliseconds")


def _xml(report: str, rows: list[str]) -> str:
    body = "\n".join(rows)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<results><status code="ok"/>\n'
        f"<{report}>\n{body}\n</{report}></results>\n"
    )


def _row(attrs: dict[str, str], children: dict[str, str | None]) -> str:
    a = " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items())
    c = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in children.items() if v is not None)
    return f"  <row {a}>{c}</row>"


def generate_connect(
    out: Path, world: World, *, seed: int, meetings: int, days: int = 2,
    start: date = date(2026, 11, 23),
) -> None:  # fmt: skip
    """Write Connect report responses per region: transactions, attendance, sessions, users.

    ``connect/<REGION>/<day>/report-*.xml`` and ``connect/<REGION>/users.csv`` (the Users
    download, a join source for report-meeting-session-users).
    """
    rng = np.random.default_rng(seed + 13)
    attrs = _person_attrs(world, seed)
    by_region = world.by_region()
    for region, people in sorted(by_region.items()):
        folder = Path(out) / "connect" / region
        folder.mkdir(parents=True, exist_ok=True)
        # Users download (CSV, the documented column names).
        users = pl.DataFrame(
            {
                "principal-id": [attrs[p.sip]["principal"] for p in people],
                "login": [p.sip for p in people],
                "name": [p.name for p in people],
                "email": [p.sip for p in people],
                "manager": [people[0].sip for _ in people],
                "type": ["user" for _ in people],
            }
        )
        users.write_csv(folder / "users.csv")
        for d in range(days):
            day = start + timedelta(days=d)
            tx, att, sess, sess_users = [], [], [], []
            n = max(meetings // (days * len(by_region)), 1)
            for m, t0 in enumerate(_day_times(rng, day, region, n)):
                host = people[int(rng.integers(len(people)))]
                sco = str(1_100_000 + int(rng.integers(0, 90_000)))
                asset = str(int(sco) + 1 + m)
                title = f"Quarterly review with {host.name}"
                room = f"/{host.sip.split('@', 1)[0].replace('.', '')}/"
                _record(world, "name", host.name)
                _record(world, "title", title)
                length = timedelta(seconds=int(rng.lognormal(7.6, 0.6)))
                k = int(rng.integers(2, min(12, len(people))))
                crowd = [people[int(i)] for i in rng.choice(len(people), k, replace=False)]
                open_session = m == n - 1  # the last meeting of the day is still running
                sess.append(_row(
                    {"sco-id": sco, "asset-id": asset, "version": "0", "num-participants": str(k)},
                    {"date-created": _iso(t0, region),
                     "date-end": None if open_session else _iso(t0 + length, region)},
                ))  # fmt: skip
                for j, p in enumerate(crowd):
                    a = attrs[p.sip]
                    join = t0 + timedelta(seconds=int(rng.integers(0, 300)))
                    leave = join + length * float(rng.uniform(0.3, 1.0))
                    still = open_session and j % 2 == 0
                    login = a["guid_login"] if j % 5 == 4 else p.sip  # SSO logins are GUIDs
                    _record(world, "guid", a["guid_login"])
                    _record(world, "email", p.sip)
                    tx.append(_row(
                        {"transaction-id": str(3_000_000 + len(tx) + 1000 * m), "sco-id": sco,
                         "type": "meeting", "principal-id": a["principal"], "score": "0"},
                        {"name": title, "url": room, "login": login, "user-name": p.name,
                         "status": "in-progress" if still else "completed",
                         "date-created": _iso(join, region),
                         "date-closed": None if still else _iso(leave, region)},
                    ))  # fmt: skip
                    att.append(_row(
                        {"transcript-id": str(5_000_000 + len(att)), "asset-id": asset,
                         "sco-id": sco, "principal-id": a["principal"], "answered-survey": "0"},
                        {"login": login, "session-name": p.name, "sco-name": title,
                         "date-created": _iso(join, region),
                         "date-end": None if still else _iso(leave, region),
                         "participant-name": p.name},
                    ))  # fmt: skip
                    sess_users.append(_row(
                        {"principal-id": a["principal"]},
                        {"principal-name": p.name, "date-created": _iso(join, region),
                         "date-end": None if still else _iso(leave, region)},
                    ))  # fmt: skip
            dfolder = folder / day.isoformat()
            dfolder.mkdir(parents=True, exist_ok=True)
            for report, rows in (
                ("report-bulk-consolidated-transactions", tx),
                ("report-meeting-attendance", att),
                ("report-meeting-sessions", sess),
                ("report-meeting-session-users", sess_users),
            ):
                (dfolder / f"{report}.xml").write_text(_xml(report, rows), encoding="utf-8")


def generate_all(
    out: Path, *, seed: int, rows: int, days: int = 2, people: int = 600,
    start: date = date(2026, 11, 23), truth: bool = False,
) -> World:  # fmt: skip
    """Every source kind for one world: Lync exports and their QoE reports, web and IIS logs,
    Connect reports.

    ``rows`` sessions; about ``rows // 2`` web requests and ``rows // 40`` Connect meetings.
    """
    from anonymize.synth import generate_lync

    world = generate_lync(out, seed=seed, rows=rows, days=days, people=people, start=start)
    generate_lync_more(
        out, world, seed=seed, conferences=max(rows // 25, 8), days=days, start=start
    )
    generate_weblogs(out, world, seed=seed, requests=max(rows // 2, 12), days=days, start=start,
                     truth=truth)  # fmt: skip
    generate_connect(out, world, seed=seed, meetings=max(rows // 40, 6), days=days, start=start)
    generate_qoe(out, seed=seed)
    return world


# --- Lync conferences, registrations, join/leave tables and Lync 2010 table exports ----------

DEREGISTER_REASONS = ("Client_Logout", "Client_Timeout", "Server_Shutdown", "Client_Crash")


def _guid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4)).upper()


def _ssms_csv(rows: list[dict], path: Path, columns: list[str]) -> None:
    """Write rows the way SSMS "Save results as" does: ms datetimes, 0/1 bits, NULL."""
    frame = pl.DataFrame(rows, schema_overrides=None, infer_schema_length=None).select(columns)
    frame = frame.with_columns(
        pl.col(pl.Datetime).dt.strftime("%Y-%m-%d %H:%M:%S%.3f"),
        pl.col(pl.Boolean).cast(pl.Int8).cast(pl.String),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(path, null_value="NULL")


def _contract_columns(name: str) -> list[str]:
    from anonymize.contracts import load_contract

    return [c.name for c in load_contract(name).columns if c.name != "LastModifiedTime"]


def generate_lync_more(
    out: Path, world: World, *, seed: int, conferences: int, days: int = 2,
    start: date = date(2026, 11, 23),
) -> None:  # fmt: skip
    """Conferences, conference sessions, join/leave tables, registrations and 2010 tables.

    ``lync/<day>/`` gets ConferencesView.csv, ConferenceSessionDetailsView.csv,
    RegistrationView.csv and Users.csv (the monitoring database's Users table, for the
    FocusJoinsAndLeaves / McuJoinsAndLeaves tables in ``lync/<day>/<REGION>/``, which carry no
    pool). ``lync/legacy2010/<day>/EMEA/`` holds a Lync Server 2010 pool's table exports
    (SessionDetails, VoipDetails, Conferences, ConferenceSessionDetails) with its own Users and
    Phones tables, numbered differently.
    """
    rng = np.random.default_rng(seed + 17)
    attrs = _person_attrs(world, seed)
    everyone = world.people
    user_ids = {p.sip: 1000 + i for i, p in enumerate(everyone)}
    dialin = world.pstn_numbers[:5]
    for n in dialin:
        user_ids[f"tel:{n}"] = 5000 + len(user_ids)
    by_region = world.by_region()
    for d in range(days):
        day = start + timedelta(days=d)
        folder = Path(out) / "lync" / day.isoformat()
        confs, conf_sessions, regs = [], [], []
        focus: dict[str, list[dict]] = {}
        mcu: dict[str, list[dict]] = {}
        for region, people in sorted(by_region.items()):
            pool = REGION_SETUP[region][3][0]
            n = max(conferences // (days * len(by_region)), 2)
            for m, t0 in enumerate(_day_times(rng, day, region, n + 1)):
                synthetic = m == n  # one health probe per region and day
                org = people[int(rng.integers(len(people)))]
                org_uri = f"stprobe{region.lower()}@contoso.com" if synthetic else org.sip
                conf_id = "".join(rng.choice(list("ABCDEFGHJKLMNPQRSTUVWXYZ23456789"), 8))
                focus_uri = f"sip:{org_uri};gruu;opaque=app:conf:focus:id:{conf_id}"
                mcu_uri = f"sip:{org_uri};gruu;opaque=app:conf:audio-video:id:{conf_id}"
                instance = _guid(rng)
                _record(world, "guid", instance.lower())
                length = timedelta(seconds=int(rng.lognormal(7.4, 0.6)))
                confs.append({
                    "SessionIdTime": t0, "SessionIdSeq": 1, "ConferenceUri": focus_uri,
                    "ConferenceUriType": "UserUri", "ConfInstance": instance,
                    "ConferenceStartTime": t0, "ConferenceEndTime": t0 + length,
                    "OrganizerUri": org_uri, "OrganizerType": "UserUri",
                    "OrganizerTenant": org.tenant.upper(), "Pool": pool,
                    "Flag": 1 if synthetic else 0,
                })  # fmt: skip
                if synthetic:
                    continue
                k = int(rng.integers(2, min(8, len(people))))
                crowd = [org] + [people[int(i)] for i in rng.choice(len(people), k, replace=False)]
                crowd = list({p.sip: p for p in crowd}.values())
                for j, p in enumerate(crowd):
                    join = t0 + timedelta(seconds=int(rng.integers(0, 240)))
                    leave = join + length * float(rng.uniform(0.3, 1.0))
                    for seq, kind in enumerate(("focus", "mcu")):
                        conf_sessions.append({
                            "SessionIdTime": join + timedelta(milliseconds=seq * 7 + j),
                            "SessionIdSeq": 1, "ConferenceUri": focus_uri,
                            "ConfInstance": instance,
                            "McuConferenceUri": mcu_uri if kind == "mcu" else None,
                            "UserUri": f"sip:{p.sip}", "UserUriType": "UserUri",
                            "UserTenant": p.tenant.upper(), "UserEndpointId": p.endpoint.upper(),
                            "UserClientVersion": p.client,
                            "DialogId": f"{rng.bytes(8).hex()};from-tag={rng.bytes(4).hex()},x",
                            "IsUserInternal": True, "ResponseCode": 200, "DiagnosticId": None,
                            "ContentType": "application/sdp" if kind == "mcu" else
                            "application/cccp+xml",
                            "Pool": pool, "EdgeServer": None if j % 4 else f"edge01.{pool}",
                            "InviteTime": join, "ResponseTime": join + timedelta(milliseconds=420),
                            "EndTime": leave, "UserFlag": 0, "CallFlag": 0,
                        })  # fmt: skip
                    focus.setdefault(region, []).append({
                        "SessionIdTime": t0, "SessionIdSeq": 1, "UserId": user_ids[p.sip],
                        "FocusUserInstance": 1, "IsUserInternal": True,
                        "UserRole": "presenter" if p is org else "attendee",
                        "UserJoinTime": join, "UserLeaveTime": leave,
                        "UserEndpointId": p.endpoint.upper(),
                    })  # fmt: skip
                    mcu.setdefault(region, []).append({
                        "SessionIdTime": t0, "SessionIdSeq": 1, "UserId": user_ids[p.sip],
                        "McuUserInstance": 1, "IsFromPstn": False, "McuId": 2,
                        "UserJoinTime": join + timedelta(seconds=2), "UserLeaveTime": leave,
                    })  # fmt: skip
                if m % 3 == 0:  # somebody dials in from a phone
                    phone = dialin[int(rng.integers(len(dialin)))]
                    mcu[region].append({
                        "SessionIdTime": t0, "SessionIdSeq": 1, "UserId": user_ids[f"tel:{phone}"],
                        "McuUserInstance": 1, "IsFromPstn": True, "McuId": 2,
                        "UserJoinTime": t0 + timedelta(seconds=30), "UserLeaveTime": t0 + length,
                    })  # fmt: skip
            for p in people:
                a = attrs[p.sip]
                t = _day_times(rng, day, region, 1)[0]
                polycom = p.client.startswith("Polycom")
                mac = "00-04-F2-" + "-".join(f"{b:02X}" for b in rng.bytes(3)) if polycom else None
                _record(world, "mac", mac or "")
                _record(world, "ip", a["ip"])
                era = _guid(rng)
                _record(world, "guid", era.lower())
                dialog = f"{rng.bytes(8).hex()};epid={rng.bytes(5).hex()}"
                regs.append({
                    "SessionIdTime": t, "SessionIdSeq": 1, "RegisterTime": t, "UserUri": p.sip,
                    "UserUriType": "UserUri", "UserTenant": p.tenant.upper(),
                    "EndpointId": p.endpoint.upper(), "EndpointEra": era,
                    "DeRegisterType": t + timedelta(hours=float(rng.uniform(0.5, 9))),
                    "DeRegisterReason": DEREGISTER_REASONS[int(rng.integers(4))],
                    "ClientVersion": p.client, "ClientType": 4, "ClientCategory": "OC",
                    "IpAddress": a["ip"], "DialogId": dialog,
                    "ResponseCode": 200, "DiagnosticId": None, "Registrar": f"fe01.{pool}",
                    "Pool": pool, "EdgeServer": f"edge01.{pool}" if rng.random() < 0.2 else None,
                    "IsInternal": True, "IsUserServiceAvailable": True, "IsPrimaryRegistrar": True,
                    "DeviceMacAddress": mac, "DeviceManufacturer": "Polycom" if polycom else None,
                    "DeviceHardwareVersion": "VVX 411" if polycom else None,
                })  # fmt: skip
        _ssms_csv(confs, folder / "ConferencesView.csv", _contract_columns("lync_conferences_view"))
        _ssms_csv(
            conf_sessions,
            folder / "ConferenceSessionDetailsView.csv",
            [c for c in _contract_columns("lync_conference_session_details_view")
             if c in conf_sessions[0]],
        )  # fmt: skip
        _ssms_csv(
            regs, folder / "RegistrationView.csv", _contract_columns("lync_registration_view")
        )
        users = [
            {"NextUpdateTS": datetime(day.year, day.month, day.day), "UserId": uid, "UserUri": uri,
             "TenantId": 1, "UriTypeId": 0 if uri.startswith("tel:") else 1}
            for uri, uid in user_ids.items()
        ]  # fmt: skip
        _ssms_csv(users, folder / "Users.csv", _contract_columns("lync_users"))
        for region in sorted(focus):
            cols = [c for c in _contract_columns("lync_focus_joins") if c in focus[region][0]]
            _ssms_csv(focus[region], folder / region / "FocusJoinsAndLeaves.csv", cols)
            cols = [c for c in _contract_columns("lync_mcu_joins") if c in mcu[region][0]]
            _ssms_csv(mcu[region], folder / region / "McuJoinsAndLeaves.csv", cols)
        _legacy_2010(out, world, rng, day, by_region.get("EMEA", everyone), conferences // days)


def _legacy_2010(
    out: Path, world: World, rng: np.random.Generator, day: date, people: list[Person], n: int
) -> None:
    """A Lync Server 2010 pool's table exports for one day, with its own Users and Phones."""
    folder = Path(out) / "lync" / "legacy2010" / day.isoformat() / "EMEA"
    user_ids = {p.sip: 7 + 3 * i for i, p in enumerate(people)}  # not the 2013 pool's numbering
    phones = {p.phone: 40 + i for i, p in enumerate(people)}
    outside = world.pstn_numbers[5:15]
    phones.update({num: 900 + i for i, num in enumerate(outside)})
    sessions, voip, confs, conf_sessions = [], [], [], []
    for i, t in enumerate(_day_times(rng, day, "EMEA", max(n, 4))):
        a, b = (people[int(j)] for j in rng.choice(len(people), 2, replace=False))
        pstn = i % 3 == 0
        answer = t + timedelta(seconds=float(rng.uniform(1, 8)))
        end = answer + timedelta(seconds=int(rng.lognormal(5.2, 1.0)))
        sessions.append({
            "SessionIdTime": t, "SessionIdSeq": 1, "InviteTime": t, "ResponseTime": answer,
            "SessionEndTime": end, "User1Id": user_ids[a.sip],
            "User2Id": None if pstn else user_ids[b.sip], "TargetUserId": None,
            "SessionStartedById": user_ids[a.sip], "OnBehalfOfId": None, "ReferredById": None,
            "ServerId": 3, "PoolId": 2, "ContentTypeID": 1, "User1ClientVerId": 12,
            "User2ClientVerId": None if pstn else 12, "User1EdgeServerid": None,
            "User2EdgeServerid": None, "IsUser1Internal": True, "IsUser2Internal": not pstn,
            "ResponseCode": 200, "DiagnosticId": None, "CallPriority": 0,
            "User1MessageCount": 0, "User2MessageCount": 0, "MediaTypes": 16,
            "User1Flag": 0, "User2Flag": 0, "CallFlag": 0, "Processed": True,
        })  # fmt: skip
        if pstn:
            callee = outside[int(rng.integers(len(outside)))]
            voip.append({
                "SessionIdTime": t, "SessionIdSeq": 1, "FromNumberId": phones[a.phone],
                "ConnectedNumberId": phones[callee], "FromMediationServerId": 4,
                "ToMediationServerId": 4, "FromGatewayId": None, "ToGatewayId": 6,
                "DisconnectedbyURIId": user_ids[a.sip], "DisconnectedbyPhoneId": None,
            })  # fmt: skip
        if i % 4 == 0:
            instance = _guid(rng)
            _record(world, "guid", instance.lower())
            confs.append({
                "SessionIdTime": t, "SessionIdSeq": 2, "ConferenceUriId": 30 + i,
                "ConfInstance": instance, "ConferenceStartTime": t,
                "ConferenceEndTime": end, "PoolId": 2, "OrganizerId": user_ids[a.sip],
                "Flag": 0, "Processed": True,
            })  # fmt: skip
            for j, p in enumerate((a, b)):
                conf_sessions.append({
                    "SessionIdTime": t + timedelta(milliseconds=3 + j), "SessionIdSeq": 1,
                    "ConferenceUriId": 30 + i, "ConfInstance": instance, "McuConferenceUriId": None,
                    "UserId": user_ids[p.sip], "OnBehalfOfId": None, "ReferredById": None,
                    "UserClientVersionId": 12, "ConfClientVersionId": 13,
                    "IsStartedByConfServer": False, "IsEndedByConfServer": False,
                    "IsUserInternal": True, "ResponseCode": 200, "DiagnosticId": None,
                    "ServerId": 3, "PoolId": 2, "MediationServerId": None, "GatewayId": None,
                    "EdgeServerId": None, "ContentTypeId": 2, "InviteTime": t,
                    "ResponseTime": answer, "SessionEndTime": end, "UriTypeId": 1,
                    "UserFlag": 0, "CallFlag": 0,
                })  # fmt: skip

    def cols(name: str, rows: list[dict]) -> list[str]:
        return [c for c in _contract_columns(name) if c in rows[0]]

    _ssms_csv(sessions, folder / "SessionDetails.csv", cols("lync2010_session_details", sessions))
    if voip:
        _ssms_csv(voip, folder / "VoipDetails.csv", cols("lync2010_voip_details", voip))
    if confs:
        _ssms_csv(confs, folder / "Conferences.csv", cols("lync2010_conferences", confs))
        _ssms_csv(
            conf_sessions,
            folder / "ConferenceSessionDetails.csv",
            cols("lync2010_conference_session_details", conf_sessions),
        )
    users = [{"UserId": uid, "UserUri": uri} for uri, uid in user_ids.items()]
    _ssms_csv(users, folder / "Users.csv", ["UserId", "UserUri"])
    phone_rows = [{"PhoneId": pid, "PhoneUri": f"tel:{num}"} for num, pid in phones.items()]
    _ssms_csv(phone_rows, folder / "Phones.csv", ["PhoneId", "PhoneUri"])


# --- QoE (QoEMetrics) exports of the Lync sessions ------------------------------------------

# Where each region's endpoints sit (the default policy's network_sites), and the VPN pool.
QOE_SUBNETS = {"AMER": "10.10", "EMEA": "10.20", "APAC": "10.30"}
QOE_CONNECTIONS = (("wired", 0.55), ("Wifi", 0.35), ("MobileBB", 0.10))
# The chance that a stream is poor, by the receiving endpoint's connection (outside adds 0.1).
QOE_POOR = {"wired": 0.04, "Wifi": 0.2, "MobileBB": 0.3}


def _qoe_endpoint(rng: np.random.Generator, region: str) -> dict:
    """An endpoint of a QoE media line: address, connection, VPN and inside flags."""
    r = rng.random()
    names, weights = zip(*QOE_CONNECTIONS, strict=True)
    connection = str(rng.choice(names, p=weights))
    if r < 0.15:  # outside the network: a public (documentation) address
        ip, inside, vpn = f"203.0.113.{rng.integers(1, 255)}", False, False
    elif r < 0.20:
        ip, inside, vpn = f"10.99.{rng.integers(0, 255)}.{rng.integers(1, 255)}", True, True
    else:
        net = QOE_SUBNETS[region]
        ip, inside, vpn = f"{net}.{rng.integers(0, 255)}.{rng.integers(1, 255)}", True, False
    mac = "-".join(f"{b:02X}" for b in rng.bytes(6))
    return {"ip": ip, "inside": inside, "vpn": vpn, "connection": connection, "mac": mac}


def _qoe_stream(rng: np.random.Generator, poor: bool) -> dict:
    if poor:  # one of the metrics CQD classifies a stream poor by
        which = int(rng.integers(4))
        return {
            "JitterInterArrival": int(rng.integers(35, 90))
            if which == 0
            else int(rng.integers(2, 15)),
            "PacketLossRate": round(float(rng.uniform(0.11, 0.3)), 4) if which == 1 else 0.004,
            "RoundTrip": int(rng.integers(520, 900)) if which == 2 else int(rng.integers(30, 140)),
            "DegradationAvg": round(float(rng.uniform(1.1, 2.5)), 2) if which == 3 else 0.6,
        }
    return {
        "JitterInterArrival": int(rng.integers(2, 15)),
        "PacketLossRate": round(float(rng.uniform(0, 0.02)), 4),
        "RoundTrip": int(rng.integers(20, 140)),
        "DegradationAvg": round(float(rng.uniform(0.05, 0.45)), 2),
    }


def generate_qoe(landing: Path, *, seed: int) -> int:
    """The QoE reports of the audio/video sessions of a landing zone's SessionDetailsView
    exports: ``lync/<day>/<REGION>/`` gets QoESessionView.csv, QoEMediaLineView.csv and
    QoEAudioStream.csv. Each report's ConferenceURI is its session's DialogId, its URIs and user
    agents the session's; endpoints sit in their region's site subnet, on a VPN or outside, and
    streams are poor more often on Wi-Fi, mobile and outside. Returns the sessions reported."""
    rng = np.random.default_rng(seed + 29)
    region_of = {pool: region for region, setup in REGION_SETUP.items() for pool in setup[3]}
    reported = 0
    for export in sorted(Path(landing).glob("lync/*/SessionDetailsView.csv")):
        cdr = pl.read_csv(export, null_values="NULL", infer_schema=False)
        av = cdr.filter(
            (pl.col("MediaTypes").cast(pl.Int64, strict=False).fill_null(0) & 48 != 0)
            & (pl.col("ResponseCode") == "200")
        )
        by_region: dict[str, tuple[list, list, list]] = {}
        for seq, row in enumerate(av.iter_rows(named=True), start=1):
            region = region_of.get(row["Pool"])
            if region is None:
                continue
            sessions, lines, streams = by_region.setdefault(region, ([], [], []))
            t = datetime.strptime(row["SessionIdTime"], "%Y-%m-%d %H:%M:%S.%f")
            local = row["FromUri"].split("@")[0].split(":")[-1].replace(".", "").upper()
            sessions.append({
                "ConferenceDateTime": t, "SessionSeq": seq, "ConferenceURI": row["DialogId"],
                "Correlation": row.get("CorrelationId"), "DialogCategory": False,
                "MediationServerBypassFlag": False, "MediaBypassWarningFlag": 0,
                "StartTime": datetime.strptime(row["ResponseTime"], "%Y-%m-%d %H:%M:%S.%f"),
                "EndTime": (datetime.strptime(row["EndTime"], "%Y-%m-%d %H:%M:%S.%f")
                            if row["EndTime"] else None),
                "CallerPool": row["Pool"], "CalleePool": row["Pool"],
                "CallerPAI": row["FromUri"], "CalleePAI": row["ToUri"],
                "CallerEndpoint": f"{local[:12]}-PC", "CalleeEndpoint": None,
                "CallerUserAgent": row["FromClientVersion"], "CallerUserAgentType": 4,
                "CallerUserAgentCategory": "OC", "CalleeUserAgent": row["ToClientVersion"],
                "CalleeUserAgentType": 4, "CalleeUserAgentCategory": "OC",
                "CallerURI": row["FromUri"], "CalleeURI": row["ToUri"], "CallPrioirty": 0,
            })  # fmt: skip
            video = int(row["MediaTypes"]) & 32 != 0
            for label in (0, 1) if video else (0,):
                ends = [_qoe_endpoint(rng, region), _qoe_endpoint(rng, region)]
                poor_flags = []
                if label == 0:
                    for stream_id, sender_is_caller in ((1, True), (2, False)):
                        receiver = ends[1] if sender_is_caller else ends[0]
                        chance = QOE_POOR[receiver["connection"]] + (0.1 * (not receiver["inside"]))
                        poor = bool(rng.random() < chance)
                        poor_flags.append(poor)
                        streams.append({
                            "ConferenceDateTime": t, "SessionSeq": seq, "MediaLineLabel": 0,
                            "StreamID": stream_id, **_qoe_stream(rng, poor),
                            "RoundTripMax": None, "OverallAvgNetworkMOS": 3.9 - 1.2 * poor,
                            "OverallMinNetworkMOS": 3.2 - 1.2 * poor,
                            "AudioPayloadDescription": 114, "SenderIsCallerPAI": sender_is_caller,
                        })  # fmt: skip
                mos = round(3.8 - 1.1 * any(poor_flags), 2) if label == 0 else None
                lines.append({
                    "ConferenceDateTime": t, "SessionSeq": seq, "MediaLineLabel": label,
                    "Security": 1, "Transport": 0,
                    "CallerIPAddr": ends[0]["ip"], "CallerPort": int(rng.integers(50000, 50100)),
                    "CallerInside": ends[0]["inside"], "CallerMacAddress": ends[0]["mac"],
                    "CallerNetworkConnectionDetail": ends[0]["connection"],
                    "CallerBssid": ("00-1A-2B-" + ends[0]["mac"][9:]
                                    if ends[0]["connection"] == "Wifi" else None),
                    "CallerVPN": ends[0]["vpn"],
                    "CallerCaptureDev": "Microphone (Realtek High Definition Audio)",
                    "CalleeIPAddr": ends[1]["ip"], "CalleePort": int(rng.integers(50000, 50100)),
                    "CalleeInside": ends[1]["inside"], "CalleeMacAddress": ends[1]["mac"],
                    "CalleeNetworkConnectionDetail": ends[1]["connection"],
                    "CalleeBssid": None, "CalleeVPN": ends[1]["vpn"],
                    "CalleeCaptureDev": "Headset Microphone (Jabra EVOLVE 40)",
                    "ConversationalMOS": mos,
                    "Caller": True, "Callee": True, "MidCallReport": False,
                    "ClassifiedPoorCall": any(poor_flags) if label == 0 else None,
                })  # fmt: skip
            reported += 1
        day = export.parent
        for region, (sessions, lines, streams) in sorted(by_region.items()):
            folder = day / region
            for rows, name, contract in (
                (sessions, "QoESessionView.csv", "qoe_session_view"),
                (lines, "QoEMediaLineView.csv", "qoe_media_line_view"),
                (streams, "QoEAudioStream.csv", "qoe_audio_stream"),
            ):
                columns = [c for c in _contract_columns(contract) if any(c in r for r in rows)]
                full = [{c: r.get(c) for c in columns} for r in rows]
                _ssms_csv(full, folder / name, columns)
    return reported
