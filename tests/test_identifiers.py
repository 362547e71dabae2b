"""Normalisation and keyed pseudonyms, checked against stdlib and phonenumbers oracles."""

from __future__ import annotations

import hashlib
import hmac
import re

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from anonymize.identifiers import (
    is_phone_uri,
    normalize_identifier,
    normalize_person,
    normalize_phone,
    phone_country,
    pseudonym,
)

KEY = bytes(range(32))
local = st.from_regex(r"[a-z][a-z0-9._-]{0,20}", fullmatch=True)
domain = st.from_regex(r"[a-z][a-z0-9-]{0,12}\.(com|net|org|co\.uk)", fullmatch=True)
params = st.sampled_from(["", ";gruu", ";transport=tls", ";gruu;opaque=user:epid:x", "?subject=hi"])


def _oracle(key: bytes, prefix: str, value: str) -> str:
    digest = hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]
    return prefix + "-" + "".join("abcdefghijklmnop"[int(c, 16)] for c in digest)


@given(local, domain, params, st.sampled_from(["", "sip:", "SIP:", "sips:", "mailto:"]))
def test_person_forms_normalize_to_one_address(user, dom, param, scheme):
    raw = f"{scheme}{user.upper()}@{dom.upper()}{param}"
    kind, norm = normalize_identifier(raw)
    assert kind == "person"
    assert norm == f"{user}@{dom}"


@pytest.mark.parametrize(
    "raw",
    [
        "sip:Alice@Contoso.com",
        "alice@contoso.com",
        "SIP:alice@contoso.com;gruu",
        " <sip:alice@contoso.com> ",
    ],
)
def test_issue_examples_give_one_person(raw):
    assert normalize_identifier(raw) == ("person", "alice@contoso.com")


@given(st.text(min_size=0, max_size=40))
def test_pseudonym_matches_hmac_oracle(value):
    assert pseudonym(KEY, "person", value) == _oracle(KEY, "u", value)


@given(st.text(max_size=40))
def test_pseudonym_alphabet_cannot_look_like_a_number(value):
    p = pseudonym(KEY, "phone", value)
    assert re.fullmatch(r"p-[a-p]{32}", p)


def test_different_keys_give_different_pseudonyms():
    assert pseudonym(KEY, "person", "a@b.com") != pseudonym(bytes(32), "person", "a@b.com")


us_numbers = st.builds(
    lambda area, line: f"+1{area}555{line:04d}",
    st.sampled_from(["206", "425", "312", "917"]),
    st.integers(100, 9999),
)


@given(
    us_numbers, st.sampled_from(["{n}", "tel:{n}", "sip:{n}@contoso.com;user=phone", "{n};ext=42"])
)
def test_phone_forms_normalize_to_e164(number, form):
    raw = form.format(n=number)
    kind, norm = normalize_identifier(raw)
    assert kind == "phone"
    expected = phonenumbers.format_number(
        phonenumbers.parse(number, None), phonenumbers.PhoneNumberFormat.E164
    )
    assert norm == expected + (";ext=42" if "ext" in raw else "")


def test_national_format_uses_default_region():
    assert normalize_phone("(425) 555-0100", "US") == "+14255550100"
    assert normalize_phone("020 7946 0018", "GB") == "+442079460018"
    assert (
        normalize_phone("tel:+1-425-555-0100;ext=12".removeprefix("tel:")) == "+14255550100;ext=12"
    )


def test_phone_country():
    assert phone_country("+442079460018") == "GB"
    assert phone_country("+85221234567") == "HK"
    assert phone_country("not a number") is None


def test_phone_uri_detection():
    assert is_phone_uri("tel:+14255550100")
    assert is_phone_uri("sip:+14255550100@contoso.com;user=phone")
    assert is_phone_uri("+14255550100")
    assert not is_phone_uri("sip:alice@contoso.com")
    assert not is_phone_uri("agent007@contoso.com")


def test_normalize_person_strips_headers_and_params():
    assert normalize_person("sip:Bob@Fabrikam.com;transport=tls?x=1") == "bob@fabrikam.com"
