"""Generalisation of web-log quasi-identifiers: addresses, URLs, referers, user agents.

Pure functions on one value; the operators in ``operators.py`` run them over the unique values
of a column only. They are the building blocks of the web and IIS access-log sources.

Free text is default-deny (``anonymize.vocabulary``): a path segment, query key or query value
is published as written only when every word of it is in the vocabulary (the shipped one plus
the policy's ``web.vocabulary``), after decoding it as often as it was encoded (``%2540`` is an
``@``) and splitting it at ``_ - . + ~``, spaces and camelCase; anything else becomes a typed
placeholder (``{email}``, ``{phone}``, ``{number}``, ``{guid}``, ``{id}``, ``{text}``,
``{segment}``, ``{file}.pdf``). Route templates of the policy (``/meet/{alias}/{id}``) name the
segments that hold identifiers even when they look like words. Referers keep only a known site
(``google.com``), else ``{site}``.

Examples
--------
>>> generalize_ip_value("192.0.2.77")
'192.0.2.0/24'
>>> generalize_ip_value("2001:db8:abcd:12::1")
'2001:db8:abcd::/48'
>>> url_template_value("/meet/jane.doe/K7Q2XZ9B?lang=en&email=jane@contoso.com", ("lang",))
'/meet/{user}/{conference}?lang=en&email'
>>> url_template_value("/people/Jane%2520Doe/call/(425)%20555-0100")
'/people/{text}/call/{phone}'
>>> url_template_value("/personal/jane_doe_contoso_com/Documents/cv.pdf")
'/personal/{site}/documents/{file}.pdf'
>>> referer_site("https://www.google.com/search?q=jane+doe"), referer_site("https://jane-doe.github.io/")
('google.com', '{site}')
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl, unquote, urlsplit

from anonymize.vocabulary import (
    BROWSER_FAMILIES,
    EXTENSIONS,
    LANGUAGES,
    OS_FAMILIES,
    is_vocabulary_word,
)

# --- addresses ------------------------------------------------------------------------------


_IP_TEXT = re.compile(r"[0-9A-Fa-f.:]{2,45}")


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """One address as servers log it: brackets (``[::1]``), a port (``192.0.2.7:51234``), an
    IPv6 zone (``fe80::1%eth0``); IPv4-mapped IPv6 as IPv4. None when it is no address."""
    v = value.strip().strip('"').strip()
    if v.startswith("["):
        v = v[1:].split("]", 1)[0]
    elif v.count(":") == 1:  # IPv4 with a port
        v = v.split(":", 1)[0]
    v = v.split("%", 1)[0]
    if not _IP_TEXT.fullmatch(v):  # most values are no address: answer before ipaddress does
        return None
    try:
        ip = ipaddress.ip_address(v)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def generalize_ip_value(value: str, ipv4_prefix: int = 24, ipv6_prefix: int = 48) -> str | None:
    """The network of an address (``a.b.c.0/24``, ``x:y:z::/48``), or None when not an address.

    Accepts what servers log: brackets (``[::1]``), a port (``192.0.2.7:51234``), an IPv6 zone
    (``fe80::1%eth0``), IPv4-mapped IPv6 (truncated as IPv4). A comma-separated X-Forwarded-For
    chain gives the chain of networks; an element that is not an address (a host name, which
    can name a person's machine) becomes ``-``.
    """
    if "," in value:
        parts = [generalize_ip_value(p, ipv4_prefix, ipv6_prefix) for p in value.split(",")]
        return ", ".join(p or "-" for p in parts)
    ip = parse_ip(value)
    if ip is None:
        return None
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def first_public_network(chain: str | None) -> str | None:
    """The first network of a generalised chain that is not private, loopback or link-local.

    The left-most public address of an X-Forwarded-For chain is the client; proxies append
    theirs. Falls back to the first network when none is public.

    >>> first_public_network("10.0.0.0/24, 85.181.35.0/24, 127.0.0.0/24")
    '85.181.35.0/24'
    """
    if not chain:
        return None
    parts = [p.strip() for p in chain.split(",") if p.strip() and p.strip() != "-"]
    for p in parts:
        try:
            net = ipaddress.ip_network(p, strict=False)
        except ValueError:
            continue
        if net.is_global:
            return p
    return parts[0] if parts else None


# --- free text: decoding and the vocabulary test ----------------------------------------------

_EMAIL = re.compile(r"[^@\s/]+@[^@\s/]+\.[A-Za-z]{2,}")
_SIP = re.compile(r"^(sips?|tel|mailto):", re.IGNORECASE)
_GUID = re.compile(r"^\{?[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}\}?$")
_PLAIN = re.compile(r"^[A-Za-z0-9_\-.+~ ]+$")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z])(?=[A-Z])")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_API_VERSION = re.compile(r"^v\d{1,2}$")
_VERSION = re.compile(r"^\d{1,2}(\.\d{1,6}){1,3}$")
_LANG = re.compile(r"^([a-z]{2})(?:[-_]([a-z]{2}))?$", re.IGNORECASE)
_PHONEISH = re.compile(r"^[\d\s()+.\-/]+$")


def decode_fully(value: str, plus_is_space: bool = False, rounds: int = 4) -> str:
    """Percent-decode until nothing changes (an email encoded twice is ``%2540``).

    >>> decode_fully("jane%2540contoso.com")
    'jane@contoso.com'
    """
    v = value.replace("+", " ") if plus_is_space else value
    for _ in range(rounds):
        d = unquote(v)
        if d == v:
            break
        v = d
    return v


def words_of(text: str) -> list[str]:
    """Lower-case words of a text: split at anything but letters and digits, and where a
    capital follows a small letter (camelCase); an id such as ``LQF32YA4`` stays one word.

    >>> words_of("ReachJoin.aspx"), words_of("jane_doe-contoso.com"), words_of("/j/LQF32YA4")
    (['reach', 'join', 'aspx'], ['jane', 'doe', 'contoso', 'com'], ['j', 'lqf32ya4'])
    """
    out = []
    for chunk in re.split(r"[^A-Za-z0-9]+", text):
        out += [w.lower() for w in _CAMEL_BOUNDARY.split(chunk) if w] if chunk else []
    return out


@dataclass(frozen=True)
class WebVocabulary:
    """What free text may pass: the policy's own words, route templates and known sites."""

    words: frozenset[str] = frozenset()
    routes: tuple[tuple[str, ...], ...] = ()
    known_sites: tuple[str, ...] = ()

    @classmethod
    def build(
        cls, words=(), routes=(), known_sites=()
    ) -> WebVocabulary:  # fmt: skip
        parsed = tuple(
            tuple(s.lower() if not s.startswith("{") else s for s in r.strip("/").split("/"))
            for r in routes
        )
        return cls(
            frozenset(w.lower() for w in words),
            tuple(sorted(parsed, key=len, reverse=True)),  # the longest route wins
            tuple(s.lower().strip(".") for s in known_sites),
        )


DEFAULT_ROUTES = (
    "/meet/{user}/{conference}",
    "/dialin/{value}",
    "/personal/{site}",
    "/ucwa/oauth/v1/applications/{id}/people/{user}",
    "/portal/users/{user}",
)
DEFAULT_SITES = (
    "google.com", "bing.com", "yahoo.com", "duckduckgo.com", "baidu.com", "yandex.ru",
    "facebook.com", "linkedin.com", "twitter.com", "x.com", "t.co", "microsoft.com",
    "office.com", "live.com", "outlook.com", "skype.com", "adobe.com", "youtube.com",
)  # fmt: skip
DEFAULT_WEB = WebVocabulary.build(routes=DEFAULT_ROUTES, known_sites=DEFAULT_SITES)


def _is_vocabulary_text(text: str, vocab: WebVocabulary) -> bool:
    """True when every word of a plain text is a vocabulary word or a file extension."""
    if not _PLAIN.match(text):
        return False
    if text in (".", ".."):
        return True
    chunks = [c for c in re.split(r"[^A-Za-z0-9]+", text) if c]
    return bool(chunks) and all(_known_chunk(c, vocab.words) for c in chunks)


def _known_word(word: str, extra: frozenset[str]) -> bool:
    return bool(
        is_vocabulary_word(word, extra)
        or word in EXTENSIONS
        or _API_VERSION.match(word)
        or (word.isdigit() and len(word) <= 2)
    )


def _known_chunk(chunk: str, extra: frozenset[str]) -> bool:
    """A chunk between separators: a word as a whole (``webpages``), or all its camelCase words
    (``WebTicketService``)."""
    low = chunk.lower()
    if _known_word(low, extra):
        return True
    words = [w.lower() for w in _CAMEL.findall(chunk)]
    return len(words) > 1 and all(_known_word(w, extra) for w in words)


def placeholder(text: str) -> str:
    """The typed placeholder of a decoded free-text value that is not vocabulary.

    >>> [placeholder(v) for v in ("jane@contoso.com", "(425) 555-0100", "K7Q2XZ9B", "kmyer")]
    ['{email}', '{phone}', '{id}', '{segment}']
    """
    s = text.strip()
    if _SIP.match(s):
        return "{user}"
    if "@" in s:
        return "{email}" if _EMAIL.search(s) else "{user}"
    if _GUID.match(s):
        return "{guid}"
    digits = sum(c.isdigit() for c in s)
    if _PHONEISH.match(s) and digits:
        return "{phone}" if digits >= 7 and not s.isdigit() else "{number}"
    if s.startswith("~"):
        return "{user}"
    if not s.isascii() or not _PLAIN.match(s) or " " in s or len(s) > 40:
        return "{text}"
    stem, dot, ext = s.rpartition(".")
    if dot and stem and ext.lower() in EXTENSIONS:
        return "{file}." + ext.lower()
    if digits:
        return "{id}"
    return "{segment}"


def _segment(raw: str, vocab: WebVocabulary) -> str:
    text = decode_fully(raw)
    if not text or _is_vocabulary_text(text, vocab):
        return text.lower() if text else raw
    return placeholder(text)


def _route_for(segments: list[str], vocab: WebVocabulary) -> tuple[str, ...] | None:
    for route in vocab.routes:
        if len(segments) < len(route):
            continue
        if all(
            (r.startswith("{") and bool(seg)) or r == decode_fully(seg).lower()
            for r, seg in zip(route, segments, strict=False)
        ):
            return route
    return None


def path_template(path: str, vocab: WebVocabulary = DEFAULT_WEB) -> str:
    """A request path with every segment that is not vocabulary replaced by its placeholder."""
    segments = path.split("/")
    lead, rest = segments[:1], segments[1:]
    route = _route_for(rest, vocab) if rest else None
    out = [_segment(s, vocab) for s in lead]
    for i, seg in enumerate(rest):
        if route is not None and i < len(route) and route[i].startswith("{"):
            out.append(route[i])
        else:
            out.append(_segment(seg, vocab))
    return "/".join(out)


def _query_value(value: str, vocab: WebVocabulary) -> str:
    v = decode_fully(value)
    if not v or (v.isdigit() and len(v) <= 4) or _VERSION.match(v):
        return v
    m = _LANG.match(v)
    if m and m.group(1).lower() in LANGUAGES:
        return v
    return v.lower() if _is_vocabulary_text(v, vocab) else placeholder(v)


def query_template(query: str, allow_query: tuple[str, ...], vocab: WebVocabulary) -> str:
    """``key=value`` for allowlisted keys (a value that is not vocabulary as a placeholder);
    other keys by name when they are vocabulary words, else dropped."""
    kept = []
    for key, val in parse_qsl(query, keep_blank_values=True):
        k = decode_fully(key)
        if k in allow_query:
            kept.append(f"{k}={_query_value(val, vocab)}")
        elif _is_vocabulary_text(k, vocab):
            kept.append(k)
    return "&".join(kept)


@lru_cache(maxsize=1 << 16)
def url_template_value(
    value: str, allow_query: tuple[str, ...] = (), vocab: WebVocabulary = DEFAULT_WEB
) -> str:
    """A URL as a path template, with only allowlisted query values kept (see the module).

    Scheme and host are removed (a request line carries none; referers go through
    ``referer_site``).
    """
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return "{text}"
    path = path_template(parts.path or "/", vocab)
    query = query_template(parts.query, allow_query, vocab)
    return path + ("?" + query if query else "")


def url_host(value: str) -> str | None:
    """The host of an absolute URL, lower case, without port or credentials; None otherwise."""
    try:
        host = urlsplit(value.strip()).hostname
    except ValueError:
        return None
    return host.lower() if host else None


@lru_cache(maxsize=1 << 16)
def referer_site(value: str, vocab: WebVocabulary = DEFAULT_WEB) -> str | None:
    """The known site a referer belongs to (``google.com`` for ``www.google.co``...), ``{site}``
    for any other host (a personal page, ``jane-doe.github.io``), None when it has no host."""
    host = url_host(value)
    if host is None:
        return None
    for site in vocab.known_sites:
        if host == site or host.endswith("." + site):
            return site
    return "{site}"


# --- user agents ----------------------------------------------------------------------------

_BOT = re.compile(r"bot|crawl|spider|slurp|monitor|nagios|curl|wget|python-requests", re.I)


@lru_cache(maxsize=1 << 16)
def user_agent_parts(value: str, plus_is_space: bool = False) -> tuple[str, str | None, str, str]:
    """(browser family, browser major version, OS family, device class) of a user agent.

    Families come from a closed list (``anonymize.vocabulary``): any other browser is
    ``Other``, or ``bot`` for a crawler (a bot or an app may carry a person's name), any other
    OS ``Other``. ``plus_is_space`` undoes IIS's ``+`` for spaces first. Device classes:
    desktop, mobile, tablet, bot, other.
    """
    from ua_parser import parse  # imported here: its regex tables load on first use

    ua = value.replace("+", " ") if plus_is_space else value
    r = parse(ua)
    family = r.user_agent.family if r.user_agent else "Other"
    major = r.user_agent.major if r.user_agent else None
    os_family = r.os.family if r.os else "Other"
    device = r.device.family if r.device else ""
    is_bot = (r.device is not None and r.device.family == "Spider") or bool(_BOT.search(ua))
    if family in BROWSER_FAMILIES:
        browser = family
    else:
        browser, major = ("bot" if is_bot else "Other"), None
    if major is not None and not (major.isdigit() and len(major) <= 4):
        major = None
    os_out = os_family if os_family in OS_FAMILIES else "Other"
    if is_bot:
        cls = "bot"
    elif "iPad" in device or "Tablet" in device or (os_family == "Android" and "Mobile" not in ua):
        cls = "tablet"
    elif os_family in ("iOS", "Android", "Windows Phone") or "Mobile" in ua:
        cls = "mobile"
    elif os_family in ("Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora"):
        cls = "desktop"
    else:
        cls = "other"
    return browser, major, os_out, cls
