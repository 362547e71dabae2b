"""Every operator: hypothesis properties against stdlib oracles, plus edge cases."""

from __future__ import annotations

import fnmatch
import random
from datetime import datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anonymize.identifiers import normalize_identifier, pseudonym
from anonymize.keys import KeyRing
from anonymize.operators import (
    MEDIA_BITS,
    REGISTRY,
    Memo,
    OpContext,
    client_category_of,
    map_unique,
)

times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)).map(
    lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
)


def ctx() -> OpContext:
    return OpContext(
        keyring=KeyRing.development(),
        own_domains=("contoso.com",),
        region_pools={"AMER": ("*.us.*",), "EMEA": ("*.uk.*",)},
    )


def apply(name: str, values: list, dtype: pl.DataType, context: OpContext | None = None, **opts):
    spec = REGISTRY[name]
    df = pl.DataFrame({"x": pl.Series(values, dtype=dtype)})
    expr = spec.fn(pl.col("x"), options=spec.options(**opts), ctx=context or ctx())
    return df.select(expr.alias("y"))["y"].to_list()


@given(st.lists(st.one_of(st.none(), st.emails(), st.text(max_size=20)), max_size=30))
@settings(deadline=None, max_examples=60)
def test_pseudonymize_equals_hmac_on_each_value(values):
    c = ctx()
    got = apply("pseudonymize", values, pl.String, c, kind="auto")
    for v, g in zip(values, got, strict=True):
        if v is None:
            assert g is None
        else:
            kind, norm = normalize_identifier(v)
            assert g == pseudonym(c.keyring.derive(f"pseudonym/restricted/{kind}"), kind, norm)


def test_pseudonymize_links_forms_and_separates_kinds():
    got = apply(
        "pseudonymize",
        [
            "sip:Alice@Contoso.com",
            "alice@contoso.com",
            "SIP:alice@contoso.com;gruu",
            "tel:+14255550100",
            "+1 425 555 0100",
        ],
        pl.String,
    )
    assert len(set(got[:3])) == 1
    assert got[0].startswith("u-")
    assert got[3] == got[4]
    assert got[3].startswith("p-")
    tenant = apply("pseudonymize", ["alice@contoso.com"], pl.String, kind="tenant")
    assert tenant[0] != got[0]


def test_pseudonym_scopes_differ():
    a = apply("pseudonymize", ["bob@contoso.com"], pl.String, ctx())
    other = ctx()
    other.scope = "partner-x"
    assert apply("pseudonymize", ["bob@contoso.com"], pl.String, other) != a


@given(st.lists(st.one_of(st.none(), times), max_size=20), st.sampled_from(["hour", "day"]))
def test_coarsen_time_matches_datetime_replace(values, to):
    got = apply("coarsen_time", values, pl.Datetime("ms"), to=to)
    for v, g in zip(values, got, strict=True):
        if v is None:
            assert g is None
            continue
        want = v.replace(minute=0, second=0, microsecond=0)
        if to == "day":
            want = want.replace(hour=0)
        assert g == want


@given(times, st.integers(-(10**8), 10**9))
def test_duration_matches_timedelta(start, delta_ms):
    end = start + timedelta(milliseconds=delta_ms)
    spec = REGISTRY["duration"]
    df = pl.DataFrame(
        {"s": [start], "e": [end]}, schema={"s": pl.Datetime("ms"), "e": pl.Datetime("ms")}
    )
    got = df.select(spec.fn(None, options=spec.options(start="s", end="e"), ctx=None))[0, 0]
    if delta_ms < 0:
        assert got is None  # clock skew never becomes a negative duration
    else:
        assert got == pytest.approx((end - start).total_seconds())


@given(st.lists(st.one_of(st.none(), st.integers(0, 127)), max_size=20))
def test_media_modalities_match_bits(values):
    got = apply("media_modalities", values, pl.Int64)
    for v, g in zip(values, got, strict=True):
        if v is None:
            assert g is None
        else:
            assert g == [name for bit, name in MEDIA_BITS if v & bit]


@given(st.lists(st.one_of(st.none(), st.text(max_size=5)), max_size=20))
def test_present(values):
    assert apply("present", values, pl.String) == [v is not None for v in values]


def test_keep_is_identity():
    assert apply("keep", [1, None, 3], pl.Int64) == [1, None, 3]


def test_generalize_phone_keeps_only_the_country():
    got = apply(
        "generalize_phone",
        ["+14255550100", "+442079460018", "+85221234567", None, "garbage"],
        pl.String,
    )
    assert got == ["US", "GB", "HK", None, None]


def test_uri_domain_class():
    got = apply(
        "uri_domain_class",
        [
            "sip:a@contoso.com",
            "b@sub.contoso.com",
            "c@partner.example",
            "+14255550100@contoso.com;user=phone",
            "nodomain",
            None,
        ],
        pl.String,
    )
    assert got == ["internal", "internal", "federated", "phone", "unknown", None]


@pytest.mark.parametrize(
    ("version", "category"),
    [
        ("UCCAPI/16.0.5215.1000 OC/16.0.5215.1000 (Skype for Business)", "desktop_windows"),
        ("UCCAPI/15.0.4481.1000 OC/15.0.4481.1000 (Microsoft Lync)", "desktop_windows"),
        ("UCWA/6.0.0.0 iPhoneLync/6.22.1 (iOS 12.1)", "mobile_ios"),
        ("UCWA/6.0.0.0 AndroidLync/6.21.0.4 (Android 9)", "mobile_android"),
        ("RTCC/6.0.0.0 MediationServer", "mediation_server"),
        ("LWA/6.0.0.0 (Skype Meetings App)", "web_app"),
        ("OCPhone/4.0.7577.4540 (Microsoft Lync 2010 Phone Edition)", "desk_phone"),
        ("Polycom/5.9.5.0333 PolycomVVX-VVX_411-UA/5.9.5.0333", "desk_phone"),
        ("UCCAPI/16.0.5215.1000 OC/16.0.5215.1000 (Skype for Business for Mac)", "desktop_mac"),
        ("Microsoft Office Communicator 2007 R2", "desktop_legacy"),
        ("something else/1.0", "other"),
    ],
)
def test_client_category(version, category):
    assert client_category_of(version) == category
    assert apply("client_category", [version], pl.String) == [category]


@given(
    st.lists(st.from_regex(r"[a-z]{2,6}\.(us|uk|hk)\.[a-z]{2,5}\.net", fullmatch=True), max_size=10)
)
def test_pool_region_matches_fnmatch(pools):
    c = ctx()
    got = apply("pool_region", pools, pl.String, c)
    for p, g in zip(pools, got, strict=True):
        want = next(
            (
                r
                for r, pats in c.region_pools.items()
                if any(fnmatch.fnmatchcase(p, x) for x in pats)
            ),
            None,
        )
        assert g == want


def test_map_unique_calls_the_function_once_per_distinct_value():
    calls: list[str] = []

    def fn(v: str) -> str:
        calls.append(v)
        return v.upper()

    cache = Memo()
    df = pl.DataFrame({"x": ["a", "b", "a", None, "b", "a"]})
    out = df.select(map_unique(pl.col("x"), fn, return_dtype=pl.String(), cache=cache))
    assert out["x"].to_list() == ["A", "B", "A", None, "B", "A"]
    df.select(map_unique(pl.col("x"), fn, return_dtype=pl.String(), cache=cache))
    later = pl.DataFrame({"x": ["c", "a", None, "c"]})  # a next batch: only "c" is new
    out = later.select(map_unique(pl.col("x"), fn, return_dtype=pl.String(), cache=cache))
    assert out["x"].to_list() == ["C", "A", None, "C"]
    assert sorted(calls) == ["a", "b", "c"]
    assert len(cache) == 3


def test_columns_sharing_one_memo_map_every_row_when_polars_runs_them_in_parallel():
    """Several columns pseudonymised by one rule share a memo, and polars may apply them at
    once: every row must still find its value, and each value be computed once."""
    calls: list[str] = []

    def fn(v: str) -> str:
        calls.append(v)
        return v[::-1]

    rng = random.Random(7)
    names = [f"user{i:05d}" for i in range(3000)]
    cache = Memo()
    for _ in range(5):  # batches
        df = pl.DataFrame({c: [rng.choice(names) for _ in range(20_000)] for c in "abcdef"})
        out = df.select(
            map_unique(pl.col(c), fn, return_dtype=pl.String(), cache=cache) for c in "abcdef"
        )
        for c in "abcdef":
            assert out[c].to_list() == [v[::-1] for v in df[c].to_list()]
    assert len(calls) == len(set(calls)) == len(cache)


def test_every_operator_has_frozen_strict_options():
    for spec in REGISTRY.values():
        assert spec.options.model_config.get("extra") == "forbid"
        assert spec.options.model_config.get("frozen") is True


phone_regions = st.sampled_from(["US", "GB", "HK", "DE", "FR", "AU", "JP", "IN", "BR", "ZA"])


@given(phone_regions, st.sampled_from(["+{cc}{nat}", "tel:+{cc}{nat}", "+{cc} {nat};ext=7"]))
def test_generalize_phone_matches_phonenumbers(region, form):
    import phonenumbers

    example = phonenumbers.example_number(region)
    raw = form.format(cc=example.country_code, nat=example.national_number)
    got = apply("generalize_phone", [raw], pl.String)
    assert got == [phonenumbers.region_code_for_number(example)]


@given(
    st.emails(),
    st.lists(st.from_regex(r"[a-z]{2,8}\.(com|org|net)", fullmatch=True), max_size=3),
    st.sampled_from(["", "sip:", "SIP:"]),
)
def test_uri_domain_class_matches_domain_oracle(email, own, scheme):
    c = ctx()
    c.own_domains = tuple(own)
    domain = email.rsplit("@", 1)[1].lower()
    want = "internal" if any(domain == d or domain.endswith("." + d) for d in own) else "federated"
    if (
        all(ch.isdigit() or ch in "+-(). /" for ch in email.split("@")[0])
        and sum(ch.isdigit() for ch in email.split("@")[0]) >= 5
    ):
        want = "phone"  # a numeric user part is a phone URI
    assert apply("uri_domain_class", [scheme + email], pl.String, c) == [want]
