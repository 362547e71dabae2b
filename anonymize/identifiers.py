"""Normalisation of identifiers and keyed pseudonyms.

These functions run in Python, but only ever on the *unique* values of a column (see
``operators.map_unique``), never row by row.

Normalisation makes equal people equal: ``sip:Alice@Contoso.com``, ``alice@contoso.com`` and
``SIP:alice@contoso.com;gruu`` are one person; ``tel:+1 (425) 555-0100;ext=12`` and
``+14255550100;ext=12`` are one phone.

Examples
--------
>>> normalize_identifier("SIP:Alice@Contoso.com;gruu")
('person', 'alice@contoso.com')
>>> normalize_identifier("tel:+1-425-555-0100;ext=12")
('phone', '+14255550100;ext=12')
"""

from __future__ import annotations

import hashlib
import hmac
import re
from functools import lru_cache
from typing import Literal

import phonenumbers

IdentifierKind = Literal[
    "person", "phone", "endpoint", "tenant", "infrastructure", "meeting", "opaque"
]

_SCHEMES = ("sips:", "sip:", "mailto:", "tel:")
_EXT = re.compile(r"[;,]?\s*(?:ext|x|extension)\s*[=.:]?\s*(\d+)\s*$", re.IGNORECASE)
_PHONE_CHARS = re.compile(r"^\+?[\d\s().\-/]{5,}$")
# Pseudonyms are written with the letters a-p (one per nibble), so no pseudonym can look like a
# phone number, an IP address or a card number to the privacy gate's detectors.
_NIBBLE_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")
PREFIX: dict[str, str] = {
    "person": "u",
    "phone": "p",
    "endpoint": "e",
    "tenant": "t",
    "infrastructure": "i",
    "meeting": "m",
    "opaque": "x",
}


def _strip_uri(value: str) -> tuple[str, str]:
    """Return (scheme, rest without parameters or headers), lower-cased and trimmed."""
    v = value.strip().strip("<>\"' ").strip()
    low = v.lower()
    scheme = ""
    for s in _SCHEMES:
        if low.startswith(s):
            scheme, v = s[:-1], v[len(s) :]
            break
    return scheme, v


def normalize_phone(value: str, default_region: str = "US") -> str:
    """Normalise a phone number to E.164, keeping an extension as ``;ext=N``.

    Numbers ``phonenumbers`` cannot parse keep their digits only (and a leading ``+``), so the
    same malformed number still gives the same pseudonym.
    """
    v = value.strip()
    ext = ""
    m = _EXT.search(v)
    if m:
        ext, v = m.group(1), v[: m.start()]
    e164, num_ext = _e164(v.split(";", 1)[0].split("@", 1)[0], default_region)
    ext = ext or num_ext
    return e164 + (f";ext={ext}" if ext else "")


@lru_cache(maxsize=1 << 18)
def parsed_phone(number: str, default_region: str = "US") -> phonenumbers.PhoneNumber | None:
    """``phonenumbers.parse`` of a number, cached (do not change the result); None when it does
    not parse. A number written with ``+`` parses the same whatever the region."""
    try:
        return phonenumbers.parse(number, default_region)
    except phonenumbers.NumberParseException:
        return None


@lru_cache(maxsize=1 << 18)
def _e164(number: str, default_region: str) -> tuple[str, str]:
    """(E.164 form, extension) of a number without parameters; digits only when unparseable."""
    num = parsed_phone(number, default_region)
    if num is not None and phonenumbers.is_possible_number(num):
        e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
        return e164, num.extension or ""
    digits = re.sub(r"\D", "", number)
    return ("+" if number.lstrip().startswith("+") else "") + digits, ""


def phone_country(value: str, default_region: str = "US") -> str | None:
    """Return the ISO region code (``US``, ``GB`` ...) of a phone number, or None."""
    e164 = normalize_phone(value, default_region).split(";", 1)[0]
    if not e164.startswith("+"):
        return None
    try:
        num = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.region_code_for_number(num)


def is_phone_uri(value: str) -> bool:
    """True for ``tel:`` URIs, SIP URIs with ``user=phone`` or a ``+digits`` user, bare numbers."""
    scheme, rest = _strip_uri(value)
    if scheme == "tel":
        return True
    if ";user=phone" in value.lower():
        return True
    user = rest.split(";", 1)[0].split("@", 1)[0]
    return bool(_PHONE_CHARS.match(user)) and sum(ch.isdigit() for ch in user) >= 5


def normalize_person(value: str) -> str:
    """Normalise a SIP URI or an email: no scheme, no parameters or headers, lower case."""
    _, rest = _strip_uri(value)
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    return rest.strip().lower()


def uri_domain(value: str) -> str | None:
    """The domain of a SIP URI or email (lower case), or None when it has none."""
    rest = normalize_person(value)
    if "@" not in rest:
        return None
    domain = rest.rsplit("@", 1)[1].split(":", 1)[0]
    return domain or None


def normalize_identifier(
    value: str, kind: IdentifierKind | Literal["auto"] = "auto", default_region: str = "US"
) -> tuple[IdentifierKind, str]:
    """Return (kind, normalised value) for one identifier.

    With ``kind="auto"`` a phone URI is recognised as a phone and anything else as a person.
    """
    if kind == "auto":
        kind = "phone" if is_phone_uri(value) else "person"
    if kind == "phone":
        _, rest = _strip_uri(value)
        return kind, normalize_phone(rest, default_region)
    if kind == "person":
        return kind, normalize_person(value)
    if kind == "endpoint":
        return kind, value.strip().strip("{}").lower()
    return kind, value.strip().lower()


@lru_cache(maxsize=64)
def _keyed(key: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 object with the key already absorbed; copied for each value."""
    return hmac.new(key, digestmod=hashlib.sha256)


def pseudonym(key: bytes, kind: IdentifierKind, normalized: str) -> str:
    """The keyed pseudonym of a normalised value: HMAC-SHA256, 128 bits, letters a-p.

    ``key`` must already be the key derived for ``kind`` (domain separation).
    """
    h = _keyed(key).copy()
    h.update(normalized.encode("utf-8"))
    digest = h.digest()[:16]
    return f"{PREFIX[kind]}-{digest.hex().translate(_NIBBLE_LETTERS)}"
