"""Generalisation of web-log quasi-identifiers: addresses, URLs, referers, user agents.

Pure functions on one value; the operators in ``operators.py`` run them over the unique values
of a column only. They are the building blocks of the web and IIS access-log sources.

Examples
--------
>>> generalize_ip_value("192.0.2.77")
'192.0.2.0/24'
>>> generalize_ip_value("2001:db8:abcd:12::1")
'2001:db8:abcd::/48'
>>> url_template_value("/meet/jane.doe/K7Q2XZ9B?lang=en&email=jane@contoso.com", ("lang",))
'/meet/{user}/{conference}?lang=en&email'
>>> url_host("https://www.Example.com:8443/search?q=jane+doe")
'www.example.com'
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from urllib.parse import parse_qsl, unquote, urlsplit

# --- addresses ------------------------------------------------------------------------------


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
    v = value.strip().strip('"').strip()
    if v.startswith("["):
        v = v[1:].split("]", 1)[0]
    elif v.count(":") == 1:  # IPv4 with a port
        v = v.split(":", 1)[0]
    v = v.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(v)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


# --- URLs -----------------------------------------------------------------------------------

_EMAIL = re.compile(r"^[^@\s/]+@[^@\s/]+\.[A-Za-z]{2,}$")
_SIP = re.compile(r"^(sips?|tel):", re.IGNORECASE)
_GUID = re.compile(r"^\{?[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}\}?$")
_NUMBER = re.compile(r"^\+?\d[\d\-.]{4,}$")  # 5+ digits: ids, phone numbers, card numbers
_TOKEN = re.compile(r"^[A-Za-z0-9_\-=+.~]{16,}$")
_HEXISH = re.compile(r"^[0-9a-fA-F]{12,}$")
_SAFE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-\[\]]{0,31}$")
# Lync / Skype for Business simple URLs and web services with a person in a fixed position.
_NAMED = {
    "meet": ("{user}", "{conference}"),  # /meet/<alias>/<conference id>
    "dialin": ("{value}",),
}


def _segment_placeholder(segment: str) -> str | None:
    s = unquote(segment)
    if _SIP.match(s):
        return "{user}"
    if "@" in s:
        return "{email}" if _EMAIL.match(s) else "{user}"
    if _GUID.match(s):
        return "{guid}"
    if _NUMBER.match(s):
        return "{number}"
    if _HEXISH.match(s) or (
        _TOKEN.match(s) and any(c.isdigit() for c in s) and any(c.isalpha() for c in s)
    ):
        return "{token}"
    if "~" in s[:1]:  # /~user/ home directories
        return "{user}"
    return None


def _path_template(path: str) -> str:
    segments = path.split("/")
    out = []
    i = 0
    while i < len(segments):
        seg = segments[i]
        named = _NAMED.get(seg.lower())
        out.append(_segment_placeholder(seg) or seg)
        if named:
            for placeholder in named:
                if i + 1 < len(segments) and segments[i + 1]:
                    i += 1
                    out.append(placeholder)
        i += 1
    return "/".join(out)


@lru_cache(maxsize=1 << 16)
def url_template_value(value: str, allow_query: tuple[str, ...] = ()) -> str:
    """A URL as a path template, with only allowlisted query values kept.

    Path segments that look like emails or SIP URIs, GUIDs, long numbers or tokens become
    ``{email}``, ``{user}``, ``{guid}``, ``{number}``, ``{token}``; the Lync simple URL
    ``/meet/<alias>/<id>`` becomes ``/meet/{user}/{conference}``. A query key outside the
    allowlist keeps its name and loses its value; a key that is not a plain name is dropped.
    Scheme and host are removed (a request line carries none; use ``url_host`` for referers).
    """
    parts = urlsplit(value.strip())
    path = _path_template(parts.path or "/")
    kept = []
    for key, val in parse_qsl(parts.query, keep_blank_values=True):
        if key in allow_query:
            kept.append(f"{key}={val}")
        elif _SAFE_KEY.match(key):
            kept.append(key)
    return path + ("?" + "&".join(kept) if kept else "")


def url_host(value: str) -> str | None:
    """The host of an absolute URL, lower case, without port or credentials; None otherwise."""
    try:
        host = urlsplit(value.strip()).hostname
    except ValueError:
        return None
    return host.lower() if host else None


# --- user agents ----------------------------------------------------------------------------

_BOT = re.compile(r"bot|crawl|spider|slurp|monitor|nagios|curl|wget|python-requests", re.I)


@lru_cache(maxsize=1 << 16)
def user_agent_parts(value: str, plus_is_space: bool = False) -> tuple[str, str | None, str, str]:
    """(browser family, browser major version, OS family, device class) of a user agent.

    ``plus_is_space`` undoes IIS's ``+`` for spaces first (only families are kept, so a real
    ``+`` read as a space costs nothing). Device classes: desktop, mobile, tablet, bot, other.
    """
    from ua_parser import parse  # imported here: its regex tables load on first use

    ua = value.replace("+", " ") if plus_is_space else value
    r = parse(ua)
    browser = r.user_agent.family if r.user_agent else "Other"
    major = r.user_agent.major if r.user_agent else None
    os_family = r.os.family if r.os else "Other"
    device = r.device.family if r.device else ""
    if (r.device and r.device.family == "Spider") or _BOT.search(ua):
        cls = "bot"
    elif "iPad" in device or "Tablet" in device or (os_family == "Android" and "Mobile" not in ua):
        cls = "tablet"
    elif os_family in ("iOS", "Android", "Windows Phone") or "Mobile" in ua:
        cls = "mobile"
    elif os_family in ("Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora"):
        cls = "desktop"
    else:
        cls = "other"
    return browser, major, os_family, cls
