"""Synthetic web traffic as it really arrives: hostile (people in it) and noisy (scanners, spam).

Hostile: people in paths, user agents and referers. Noisy: scanners, spam, network-address
clients, very long and non-ASCII URLs.

``generate_hostile_weblogs`` writes, for the people of a world, the requests that carry Personal
Data in the places the templating must catch: names in directory pages, SharePoint personal-site
slugs, phone numbers in many layouts, emails encoded once and twice, short invite ids, Skype for
Business simple URLs on a dedicated meet host, bots and apps named after people, personal
referer hosts, query values and keys holding names. Every planted value is recorded per class in
``World.extra["hostile:<class>"]``, and the ``HostileTruth`` of each line (who wrote it) lets a
test compare published people with the truth.

``noisy_access_log`` writes an Apache combined log with the noise that made the privacy gate
refuse real logs: client addresses that are network addresses (``a.b.c.0``), spam paths whose
sentence is echoed in the referer, scanners' junk, very long URLs, non-ASCII paths, IPv6 and
X-Forwarded-For chains, empty and garbage request lines.

Examples
--------
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "access.log"
>>> noisy_access_log(path, lines=50, seed=1)
>>> len(path.read_text().splitlines())
50
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import numpy as np

from anonymize.synth import REGION_SETUP, Person, World
from anonymize.synth_sources import USER_AGENTS

BROWSERS = USER_AGENTS[:4]  # desktop and mobile browsers, no bots
SITE_PATHS = ("/", "/pricing", "/products/connect", "/support", "/contact", "/static/site.css",
              "/favicon.ico", "/search", "/login", "/meet", "/dialin/")  # fmt: skip
HOSTILE_CLASSES = (
    "directory_name", "personal_site", "phone_path", "email_path", "short_id", "meet_host",
    "bot_name", "personal_referer", "query_value", "query_key",
)  # fmt: skip


def _parts(p: Person) -> tuple[str, str, str, str]:
    """(first, last, local part, domain) of a person."""
    first, last = p.name.split(" ", 1)
    local, domain = p.sip.split("@", 1)
    return first, last.replace(" ", ""), local, domain


def _alias(p: Person) -> str:
    first, last, _, _ = _parts(p)
    return (first[0] + last).lower().replace("'", "")[:8]


def _phone_layouts(p: Person, rng: np.random.Generator) -> str:
    """The person's number written the way people write it (US or UK shapes)."""
    digits = p.phone.lstrip("+")
    if digits.startswith("1"):
        a, b, c = digits[1:4], digits[4:7], digits[7:11]
        shapes = (f"({a}) {b}-{c}", f"{a}.{b}.{c}", f"+1-{a}-{b}-{c}", f"{a}{b}{c}",
                  f"+1 {a} {b} {c}", f"1{a}{b}{c}")  # fmt: skip
    else:
        nat = digits[2:]
        shapes = (f"+44 {nat[:2]} {nat[2:6]} {nat[6:]}", f"0{nat[:2]} {nat[2:6]} {nat[6:]}",
                  f"+44{nat}", f"0{nat}")  # fmt: skip
    return shapes[int(rng.integers(len(shapes)))]


def _record(world: World, kind: str, *values: str) -> None:
    world.extra.setdefault(f"hostile:{kind}", set()).update(v for v in values if v)


def hostile_request(
    p: Person, rng: np.random.Generator, world: World
) -> tuple[str, str, str, str, str]:
    """(class, host, path with query, referer, user agent) of one hostile request by ``p``."""
    first, last, local, domain = _parts(p)
    kind = HOSTILE_CLASSES[int(rng.integers(len(HOSTILE_CLASSES)))]
    host, referer = "www.uchost.net", "-"
    ua = BROWSERS[int(rng.integers(len(BROWSERS)))]
    if kind == "directory_name":
        form = int(rng.integers(4))
        name = (f"{first}%20{last}", f"{first}+{last}", f"{first.lower()}.{last.lower()}",
                f"{first}{last}")[form]  # fmt: skip
        path = ("/people/", "/directory/", "/team/", "/profile/")[form] + name
        _record(world, kind, p.name)
    elif kind == "personal_site":
        slug = f"{first}_{last}_{domain.replace('.', '_')}".lower()
        path = f"/personal/{slug}/Documents/Forms/AllItems.aspx"
        _record(world, kind, slug, p.name)
    elif kind == "phone_path":
        shape = _phone_layouts(p, rng)
        path = (f"/call/{quote(shape)}", f"/contact/phone/{quote(shape, safe='')}",
                f"/dial?number={quote(shape, safe='')}")[int(rng.integers(3))]  # fmt: skip
        _record(world, kind, shape, p.phone)
    elif kind == "email_path":
        once = quote(p.sip, safe="")
        twice = quote(once, safe="")
        path = (f"/u/{once}", f"/u/{twice}", f"/unsubscribe?id={twice}",
                f"/profile/{p.sip}")[int(rng.integers(4))]  # fmt: skip
        _record(world, kind, p.sip)
    elif kind == "short_id":
        alphabet = list("ABCDEFGHJKLMNPQRSTUVWXYZ23456789")
        code = "".join(rng.choice(alphabet, 8))
        path = (f"/j/{code}", f"/invite/{code.lower()}", f"/join?id={code}")[int(rng.integers(3))]
        _record(world, kind, code)
    elif kind == "meet_host":
        alphabet = list("ABCDEFGHJKLMNPQRSTUVWXYZ23456789")
        code = "".join(rng.choice(alphabet, 8))
        host = f"meet.{domain}"
        path = f"/{_alias(p)}/{code}"
        _record(world, kind, _alias(p), code)
    elif kind == "bot_name":
        forms = (
            f"{first}{last}Bot/1.{int(rng.integers(9))} (+https://{first.lower()}"
            f"{last.lower()}.example.org/bot)",
            f"Mozilla/5.0 (compatible; {first}{last}Crawler/2.1)",
            f"{first}{last}App/3.{int(rng.integers(9))} CFNetwork/1410.0.3 Darwin/22.6.0",
        )
        ua = forms[int(rng.integers(len(forms)))]  # fmt: skip
        path = SITE_PATHS[int(rng.integers(len(SITE_PATHS)))]
        _record(world, kind, f"{first}{last}", p.name)
    elif kind == "personal_referer":
        hosts = (f"{first}-{last}.github.io", f"{first}{last}.wordpress.com")
        ref_host = hosts[int(rng.integers(2))].lower()
        referer = f"https://{ref_host}/about"
        path = SITE_PATHS[int(rng.integers(len(SITE_PATHS)))]
        _record(world, kind, ref_host)
    elif kind == "query_value":
        form = int(rng.integers(4))
        path = (f"/search?q={first}+{last}", f"/products?view={_alias(p)}",
                f"/pricing?lang={first}", f"/support?page={quote(p.name)}")[form]  # fmt: skip
        _record(world, kind, p.name if form in (0, 3) else (_alias(p) if form == 1 else first))
    else:  # query_key
        path = (f"/search?{local}=1", f"/contact?{_alias(p)}")[int(rng.integers(2))]
        _record(world, kind, local if "?" + local in path else _alias(p))
    return kind, host, path, referer, ua


def _address(rng: np.random.Generator) -> str:
    a, b, c = (int(x) for x in rng.integers(1, 224, 3))
    return f"{a}.{b}.{c}.{int(rng.integers(1, 255))}"


def generate_hostile_weblogs(
    out: Path, world: World, *, seed: int, requests: int, days: int = 1, share: float = 0.05,
    start: date = date(2026, 11, 23),
) -> None:  # fmt: skip
    """Apache logs (``weblogs/<REGION>/hostile/access-<day>.log``, vhost first) of ordinary
    visits with ``share`` hostile requests among them (see the module)."""
    rng = np.random.default_rng(seed + 101)
    by_region = world.by_region()
    for d in range(days):
        day = start + timedelta(days=d)
        for region, people in sorted(by_region.items()):
            n = max(requests // (days * len(by_region)), 1)
            nine = REGION_SETUP[region][2]
            lines = []
            for i in range(n):
                p = people[int(rng.integers(len(people)))]
                t = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
                    hours=nine, seconds=int(rng.integers(0, 9 * 3600)) + i
                )
                stamp = t.strftime("%d/%b/%Y:%H:%M:%S +0000")
                if rng.random() < share:
                    _, host, path, referer, ua = hostile_request(p, rng, world)
                else:
                    host, referer = "www.uchost.net", "-"
                    path = SITE_PATHS[int(rng.integers(len(SITE_PATHS)))]
                    ua = BROWSERS[int(rng.integers(len(BROWSERS)))]
                lines.append(f'{host} {_address(rng)} - - [{stamp}] "GET {path} HTTP/1.1" 200 '
                             f'{int(rng.integers(200, 9000))} "{referer}" "{ua}"')  # fmt: skip
            folder = Path(out) / "weblogs" / region / "hostile"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"access-{day.isoformat()}.log").write_text("\n".join(lines) + "\n")


# --- noise ------------------------------------------------------------------------------------

_SCANNER_PATHS = (
    "/wp-login.php", "/wp-admin/setup-config.php", "/.env", "/.git/config", "/phpmyadmin/",
    "/cgi-bin/..%2F..%2F..%2Fetc%2Fpasswd", "/index.php?s=/Index/\\think\\app/invokefunction",
    "/boaform/admin/formLogin", "/actuator/health", "/solr/admin/info/system?wt=json",
    "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php", "/HNAP1/", "/owa/auth/logon.aspx",
    "/?id=1%27%20OR%20%271%27=%271", "/search?q=%3Cscript%3Ealert(1)%3C/script%3E",
    "/xmlrpc.php", "/ecp/Current/exporttool/microsoft.exchange.ediscovery.exporttool.application",
)  # fmt: skip
_SPAM = (
    "Buy cheap watches online best prices free shipping today only",
    "Meilleurs prix pour les montres de luxe livraison gratuite",
    "Лучшие цены на часы бесплатная доставка",
    "最高の時計を最安値で今すぐ購入",
)
_NON_ASCII_PATHS = ("/produits/téléphonie", "/über-uns", "/新闻/最新", "/ürün/fiyat", "/café")
_BOTS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "curl/7.88.1", "python-requests/2.31.0", "Go-http-client/1.1", "-",
    "Mozilla/5.0 zgrab/0.x", "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
)  # fmt: skip


def noisy_access_log(path: Path, *, lines: int, seed: int, day: date = date(2026, 11, 23)) -> None:
    """An Apache combined log of ``lines`` lines with the noise real public logs carry."""
    rng = np.random.default_rng(seed)
    out = []
    base = datetime(day.year, day.month, day.day, tzinfo=UTC)
    for i in range(lines):
        t = base + timedelta(seconds=int(i * 86000 / max(lines, 1)))
        stamp = t.strftime("%d/%b/%Y:%H:%M:%S +0000")
        client = _address(rng)
        ua = BROWSERS[int(rng.integers(len(BROWSERS)))]
        referer = "-"
        status = 200
        r = rng.random()
        request = f"GET {SITE_PATHS[int(rng.integers(len(SITE_PATHS)))]} HTTP/1.1"
        if r < 0.03:  # a client address that is itself a network address
            client = client.rsplit(".", 1)[0] + ".0"
        elif r < 0.06:  # spam: the sentence in the path and in the referer
            sentence = quote(_SPAM[int(rng.integers(len(_SPAM)))])
            request = f"GET /?{sentence} HTTP/1.1"
            referer = f"http://spam.example/?q={sentence},{sentence[:20]}"
        elif r < 0.14:  # scanners
            request = f"GET {_SCANNER_PATHS[int(rng.integers(len(_SCANNER_PATHS)))]} HTTP/1.1"
            ua = _BOTS[int(rng.integers(len(_BOTS)))]
            status = 404
        elif r < 0.16:  # very long URLs
            junk = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz0123456789%"), 3000))
            request = f"GET /search?q={junk} HTTP/1.1"
            status = 414
        elif r < 0.19:  # non-ASCII paths, raw or encoded
            p = _NON_ASCII_PATHS[int(rng.integers(len(_NON_ASCII_PATHS)))]
            request = f"GET {p if rng.random() < 0.5 else quote(p)} HTTP/1.1"
        elif r < 0.22:  # IPv6 clients
            client = f"2001:db8:{int(rng.integers(1, 0xFFFF)):x}::{int(rng.integers(1, 0xFFFF)):x}"
        elif r < 0.26:  # behind proxies
            client = f"{client}, 10.0.{int(rng.integers(0, 255))}.{int(rng.integers(1, 255))}"
        elif r < 0.27:  # empty or garbage request lines
            request = "-" if rng.random() < 0.5 else ""
            status = 408
        elif r < 0.35:  # crawlers
            ua = _BOTS[int(rng.integers(3))]
        elif r < 0.40:  # self-referrals and search engines
            referer = ("https://www.uchost.net/pricing",
                       "https://www.google.com/")[int(rng.integers(2))]  # fmt: skip
        out.append(f'{client} - - [{stamp}] "{request}" {status} {int(rng.integers(0, 50000))} '
                   f'"{referer}" "{ua}"')  # fmt: skip
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(out) + "\n", encoding="utf-8")
