"""Web-log operators: addresses against ipaddress, URL templates, referer hosts, user agents."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from anonymize.operators import REGISTRY
from anonymize.web import (
    DEFAULT_SITES,
    generalize_ip_value,
    url_host,
    url_template_value,
    user_agent_parts,
)


def apply(name: str, values: list, **opts) -> list:
    spec = REGISTRY[name]
    df = pl.DataFrame({"x": pl.Series(values, dtype=pl.String)})
    return df.select(spec.fn(pl.col("x"), options=spec.options(**opts), ctx=None))["x"].to_list()


def _oracle(ip: ipaddress._BaseAddress, v4: int = 24, v6: int = 48) -> str:
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ipaddress.ip_network(f"{ip}/{v4 if ip.version == 4 else v6}", strict=False))


@given(st.ip_addresses(), st.integers(8, 30), st.integers(16, 64))
def test_generalize_ip_matches_ipaddress(ip, v4, v6):
    assert apply("generalize_ip", [str(ip)], ipv4_prefix=v4, ipv6_prefix=v6) == [
        _oracle(ip, v4, v6)
    ]


@given(st.lists(st.ip_addresses(v=4), min_size=1, max_size=4))
def test_forwarded_for_chains_truncate_every_address(chain):
    got = generalize_ip_value(", ".join(map(str, chain)))
    assert got == ", ".join(_oracle(ip) for ip in chain)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("[::1]", "::/48"),
        ("192.0.2.7:51234", "192.0.2.0/24"),
        ("fe80::1%eth0", "fe80::/48"),
        ("::ffff:192.0.2.9", "192.0.2.0/24"),
        ("jsmith-pc.corp.example", None),
        ("10.0.0.2, unknown, 85.181.35.98", "10.0.0.0/24, -, 85.181.35.0/24"),
    ],
)
def test_generalize_ip_forms_servers_write(raw, want):
    assert generalize_ip_value(raw) == want


def test_generalize_ip_never_returns_a_full_address():
    got = apply("generalize_ip", ["198.51.100.23", "2001:db8:1234:5678:9abc::1", None])
    assert got == ["198.51.100.0/24", "2001:db8:1234::/48", None]


@pytest.mark.parametrize(
    ("url", "allow", "want"),
    [
        ("/meet/jane.doe/K7Q2XZ9B", (), "/meet/{user}/{conference}"),
        (
            "/newsletter/signup?email=jane.doe%40contoso.com&src=home",
            ("src",),
            "/newsletter/signup?email&src=home",
        ),
        ("/abs/handler/6F9619FF-8B86-D011-B42D-00C04FC964FF", (), "/abs/handler/{guid}"),
        ("/checkout?card=4111111111111111&amount=10", ("amount",), "/checkout?card&amount=10"),
        ("/order/4111111111111111/receipt", (), "/order/{number}/{segment}"),
        ("/~jsmith/index.html", (), "/{user}/index.html"),
        ("/ucwa/v1/people/sip:jane@contoso.com/presence", (), "/ucwa/v1/people/{user}/presence"),
        ("/people/jane.doe@contoso.com", (), "/people/{email}"),
        ("/session/a8Fk2LmQ9xZr7TpW3vYb", (), "/session/{id}"),
        ("/x?%40evil=1", (), "/{segment}"),
        ("/favicon.ico", (), "/favicon.ico"),
    ],
)
def test_url_template(url, allow, want):
    assert url_template_value(url, allow) == want
    assert apply("url_template", [url], allow_query=allow) == [want]


segment = st.one_of(
    st.from_regex(r"[a-z]{1,10}", fullmatch=True),
    st.emails(),
    st.from_regex(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", fullmatch=True
    ),
    st.integers(10_000, 10**16).map(str),
    st.from_regex(r"[A-Za-z0-9]{20,30}", fullmatch=True),
)


@given(
    st.lists(segment, min_size=1, max_size=5),
    st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), st.emails(), max_size=3),
)
def test_url_template_keeps_no_identifier_outside_the_allowlist(segments, query):
    url = (
        "/"
        + "/".join(segments)
        + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    )
    out = url_template_value(url, ())
    assert "@" not in out
    assert not re.search(r"\d{5,}", out)
    for k in query:
        assert f"{k}=" not in out


@given(
    st.from_regex(
        r"https?://[a-z]{1,10}(\.[a-z]{2,5}){1,2}(:\d{2,5})?/[a-z/]{0,10}\?q=[a-z+]{0,10}",
        fullmatch=True,
    )
)
def test_url_host_matches_urlsplit(url):
    assert url_host(url) == urlsplit(url).hostname
    # The operator publishes a known site only: any other host may be a person's own page.
    site = "{site}"
    host = urlsplit(url).hostname
    for known in DEFAULT_SITES:
        if host == known or host.endswith("." + known):
            site = known
    assert apply("url_host", [url, "-", None]) == [site, None, None]


@pytest.mark.parametrize(
    ("ua", "plus", "want"),
    [
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/120.0.0.0 Safari/537.36",
            False,
            ("Chrome", "120", "Windows", "desktop"),
        ),
        (
            "Mozilla/5.0+(Windows+NT+6.1;+Win64;+x64;+rv:57.0)+Gecko/20100101+Firefox/57.0",
            True,
            ("Firefox", "57", "Windows", "desktop"),
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
            False,
            ("Mobile Safari", "17", "iOS", "mobile"),
        ),
        (
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            False,
            ("Googlebot", "2", "Other", "bot"),
        ),
        ("check_http/v2.0 (nagios-plugins 2.0)", False, ("bot", None, "Other", "bot")),
    ],
)
def test_user_agent_parts(ua, plus, want):
    assert user_agent_parts(ua, plus) == want
    for part, value in zip(("browser", "browser_major", "os", "device_class"), want, strict=True):
        assert apply("user_agent", [ua], part=part, plus_is_space=plus) == [value]


_KEY = st.from_regex(r"[a-z]{1,8}", fullmatch=True)
_VAL = st.from_regex(r"[A-Za-z0-9@.]{0,12}", fullmatch=True)


@given(st.lists(st.tuples(_KEY, _VAL), min_size=1, max_size=5), st.sets(_KEY, max_size=3))
def test_query_part_of_a_url_and_of_a_bare_query_agree(pairs, allow):
    """IIS logs the query alone (cs-uri-query); Apache logs it in the path: same output."""
    query = "&".join(f"{k}={v}" for k, v in pairs)
    allow = tuple(sorted(allow))
    bare = apply("url_template", [query], part="query", allow_query=allow)
    in_url = apply("url_template", ["/a/b?" + query], part="query", allow_query=allow)
    assert bare == in_url
    kept = dict(kv.split("=", 1) if "=" in kv else (kv, None) for kv in (bare[0] or "").split("&"))
    for k, _ in pairs:
        if k not in allow:
            assert kept.get(k) is None  # the key may stay, its value never


def test_path_part_has_no_query():
    got = apply("url_template", ["/meet/jane.doe/K7Q2XZ9B?sl=1", "/", "/a?b=1"], part="path")
    assert got == ["/meet/{user}/{conference}", "/", "/a"]


def test_missing_marks_empty_values():
    assert apply("missing", ["x", None, ""]) == [False, True, False]
