"""Canaries: what the privacy gate looks for, as keyed hashes of the forms a value takes.

Every raw Personal Data value the pipeline reads is turned into its *forms*, each matched the way
that kind of identifier appears in an output:

- ``ip:``  an address, canonical (``192.0.2.7``): matched against whole addresses only. A network
  (``192.0.2.0/24``) that covers an address at the policy's prefix is no leak; a full address is.
- ``tel:`` a phone number's digits, in E.164 and national form: matched against digit runs (with
  the separators people write: spaces, dashes, dots, brackets) as a whole, never inside a longer
  number.
- ``email:`` an email or SIP address, normalised: matched against the addresses in an output
  after percent-decoding it as often as it was encoded (``%2540`` is ``@``).
- ``guid:`` 32 hex digits, whatever the dashes and braces.
- ``w:`` a sequence of words (``jane doe``, and ``janedoe``): the local part of an address, a
  name, an alias, a meeting id, a path segment outside the vocabulary, a bot's product name.
  Matched on word boundaries: an output's words (split at anything but letters and digits, and
  at camelCase) contain the sequence. A single word is a canary only when it has at least
  ``MIN_WORD`` characters and is not a vocabulary word (``anonymize.vocabulary``): a role
  address ``support@`` is no person, and ordinary words would match ordinary categories.
- ``x:`` one unknown word of free text (an alias in ``/meet/kmyer/...``, ``?view=jsmith``, a
  query key): matched only in the free-text outputs of web logs (path templates, queries,
  referer sites, browser families), where an unknown word can only be there because a policy let
  it through; anywhere else ordinary words (a site's name in its own paths) would match.
- ``v:`` the whole value, lower case.

Only chains (X-Forwarded-For) are split at commas. Forms are kept as keyed BLAKE2b hashes (64
bits) under a key derived for the run: the canary files in the staging area hold no raw value,
and matching is a set lookup over the unique values of the outputs.

Examples
--------
>>> sorted(canary_forms("sip:Jane.Doe@contoso.com;gruu", "plain"))[:3]
['email:jane.doe@contoso.com', 'v:sip:jane.doe@contoso.com;gruu', 'w:jane doe']
>>> "ip:5.39.50.0" in output_forms("15.39.50.0/24")
False
>>> "w:jane doe" in output_forms("/personal/jane_doe_contoso_com/")
True
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import polars as pl

from anonymize.identifiers import normalize_identifier, normalize_phone, parsed_phone
from anonymize.vocabulary import BROWSER_FAMILIES, OS_FAMILIES, is_vocabulary_word
from anonymize.web import (
    DEFAULT_WEB,
    WebVocabulary,
    _is_vocabulary_text,
    _route_for,
    decode_fully,
    parse_ip,
    url_host,
    words_of,
)

Hint = Literal["plain", "chain", "url", "referer", "user_agent"]
MIN_WORD = 4  # a single-word canary: "kmyer" yes, "al" no
MIN_WEAK_WORD = 3  # in free-text outputs only: "?lang=Kim"
MAX_NGRAM = 6  # the longest word sequence matched
MAX_WORDS = 400  # words of one output value looked at (a URL can be very long)
SCHEMA = {"h": pl.UInt64, "kind": pl.String}

# Bounded quantifiers: a 3,000-character junk URL must not cost a quadratic scan.
_EMAIL = re.compile(r"[a-z0-9._%+\-]{1,64}@[a-z0-9.\-]{1,253}\.[a-z]{2,24}", re.IGNORECASE)
_GUID = re.compile(r"\b[0-9a-f]{8}-?(?:[0-9a-f]{4}-?){3}[0-9a-f]{12}\b", re.IGNORECASE)
_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])(?:/\d{1,2})?")
_IPV6 = re.compile(
    r"(?i)(?<![0-9a-f:])(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?![0-9a-f:])(?:/\d{1,3})?"
)
_PHONE_RUN = re.compile(r"\+?\(?\d[\d \-().\/]{5,24}\d")
# A calendar date as outputs write it (2026-11-30, 2026-11-30T09:00): no phone number is written
# so (an 8-digit number grouped 4-2-2), and a run of it must not match one (a Hong Kong number
# 2026 1130 is the date's digits).
_ISO_DATE = re.compile(r"(?<!\d)(?:19|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])(?!\d)")
_CONF_ID = re.compile(r"(?:^|[:;=])id:([A-Za-z0-9]{4,})", re.IGNORECASE)
_OUTPUT_WORDS = frozenset(
    # placeholders and the categories closed operators write: never canaries
    [
        "segment",
        "text",
        "id",
        "phone",
        "number",
        "guid",
        "email",
        "user",
        "file",
        "site",
        "alias",
        "value",
        "conference",
        "app",
        "success",
        "failure",
        "not",
        "answered",
        "unknown",
        "internal",
        "federated",
        "pstn",
        "dial",
        "voip",
        "focus",
        "audio",
        "video",
        "im",
        "sharing",
        "transfer",
        "remote",
        "assistance",
        "invite",
        "desktop",
        "windows",
        "mac",
        "legacy",
        "mobile",
        "ios",
        "android",
        "web",
        "desk",
        "room",
        "system",
        "teams",
        "gateway",
        "mediation",
        "server",
        "conferencing",
        "other",
        "bot",
        "tablet",
    ]
)


# --- forms of a raw value --------------------------------------------------------------------


def _canonical_ip(text: str) -> str | None:
    ip = parse_ip(text)
    return None if ip is None else str(ip)


def _word_ok(word: str, vocab: WebVocabulary, weak: bool = False) -> bool:
    return (
        len(word) >= (MIN_WEAK_WORD if weak else MIN_WORD)
        and not word.isdigit()
        and word not in _OUTPUT_WORDS
        and not is_vocabulary_word(word, vocab.words)
    )


def _words_forms(
    words: Sequence[str], vocab: WebVocabulary, out: set[str], weak: bool = False
) -> None:
    """The ``w:`` forms of one word sequence: itself (and joined up), or one word alone
    (``x:`` when ``weak``: an unknown word, not an identifier by its shape)."""
    words = [w for w in words if w]
    if not words:
        return
    if len(words) == 1:
        if _word_ok(words[0], vocab, weak):
            out.add(("x:" if weak else "w:") + words[0])
        return
    if all(not _word_ok(w, vocab) for w in words):
        return  # ordinary words only ("not answered"): no person in them
    if len(words) <= MAX_NGRAM:
        out.add("w:" + " ".join(words))
    joined = "".join(words)
    if _word_ok(joined, vocab):
        out.add("w:" + joined)


def _phone_forms(text: str, out: set[str], region: str = "US") -> None:
    digits = re.sub(r"\D", "", text)
    if not 7 <= len(digits) <= 15:
        return
    out.add("tel:" + digits)
    e164 = normalize_phone(text, region).split(";", 1)[0]
    if e164.startswith("+"):
        out.add("tel:" + e164[1:])
        num = parsed_phone(e164, region)
        if num is not None:
            national = str(num.national_number)
            if len(national) >= 7:
                out.add("tel:" + national)
                if num.country_code != 1:  # written with the trunk prefix: 020 7946 0000
                    out.add("tel:0" + national)


def _embedded_forms(text: str, vocab: WebVocabulary, out: set[str]) -> None:
    """Addresses, GUIDs and phone numbers inside a longer text (a URL, a cookie)."""
    for e in _EMAIL.findall(text) if "@" in text else ():
        _person_forms(e, vocab, out)
    for g in _GUID.findall(text):
        out.add("guid:" + re.sub(r"[^0-9a-f]", "", g.lower()))
    masked = _IPV4.sub(" ", text)
    for run in _PHONE_RUN.findall(masked):
        _phone_forms(run, out)


def _person_forms(value: str, vocab: WebVocabulary, out: set[str]) -> None:
    kind, norm = normalize_identifier(value, "auto")
    if kind == "phone":
        _phone_forms(norm.split(";", 1)[0], out)
        return
    out.add("email:" + norm)
    local, _, domain = norm.partition("@")
    _words_forms(words_of(local), vocab, out)
    if domain:
        _words_forms(words_of(norm), vocab, out)
    for conf in _CONF_ID.findall(value):
        _words_forms([conf.lower()], vocab, out)


def _url_forms(value: str, vocab: WebVocabulary, out: set[str]) -> None:
    """Forms of a request path or URL: what the templater would not publish as it is."""
    from urllib.parse import parse_qsl, urlsplit

    text = decode_fully(value)
    _embedded_forms(text, vocab, out)
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return
    segments = parts.path.split("/")[1:]
    route = _route_for(segments, vocab) if segments else None
    for i, seg in enumerate(segments):
        s = decode_fully(seg)
        in_route = route is not None and i < len(route) and route[i].startswith("{")
        if s and (in_route or not _is_vocabulary_text(s, vocab)):
            _free_text_forms(s, vocab, out, single=in_route or _identifier_shaped(s))
    for key, val in parse_qsl(parts.query, keep_blank_values=True):
        for s in (decode_fully(key), decode_fully(val)):
            if s and not _is_vocabulary_text(s, vocab):
                _free_text_forms(s, vocab, out, single=_identifier_shaped(s))


def _identifier_shaped(text: str) -> bool:
    """One word that is an id rather than a word: letters and digits mixed, capitals only
    (``KQXZBMNP``), or a ``~user``."""
    t = text.strip()
    letters = any(c.isalpha() for c in t)
    return (
        t.startswith("~")
        or (any(c.isdigit() for c in t) and letters and len(t) >= 5)
        or (t.isalpha() and t.isupper() and len(t) >= 6)
    )


def _free_text_forms(text: str, vocab: WebVocabulary, out: set[str], single: bool) -> None:
    """A name, an alias, a title: its word sequence; one word only when ``single``."""
    if "@" in text or text.lower().startswith(("sip:", "sips:", "tel:")):
        _person_forms(text, vocab, out)
        return
    words = words_of(text)
    if len(words) > MAX_NGRAM:
        return
    _words_forms(words, vocab, out, weak=len(words) == 1 and not single)


@lru_cache(maxsize=1 << 18)
def canary_forms(value: str, hint: Hint = "plain", vocab: WebVocabulary = DEFAULT_WEB) -> frozenset:
    """Every form of one raw value, by the kind of column it came from (see the module)."""
    v = value.strip()
    if not v or v == "-":
        return frozenset()
    # The whole value, but for a request path: its template is the path itself when nothing in
    # it is free text.
    out: set[str] = set() if hint == "url" else {"v:" + decode_fully(v).lower()}
    if hint == "chain" or (hint == "plain" and "," in v and _canonical_ip(v.split(",")[0])):
        for part in v.split(","):
            ip = _canonical_ip(part)
            if ip:
                out.add("ip:" + ip)
            elif part.strip() and part.strip() != "-":
                _words_forms(words_of(part), vocab, out)  # a host name
        return frozenset(out)
    ip = _canonical_ip(v)
    if ip:
        out.add("ip:" + ip)
        return frozenset(out)
    if hint == "user_agent":
        _user_agent_forms(v, vocab, out)
    elif hint == "url":
        _url_forms(v, vocab, out)
    elif hint == "referer":
        host = url_host(v)
        if host and not any(host == s or host.endswith("." + s) for s in vocab.known_sites):
            _words_forms(words_of(host), vocab, out)
        _url_forms(v, vocab, out)
    else:
        _plain_forms(v, vocab, out)
    return frozenset(out)


def _plain_forms(v: str, vocab: WebVocabulary, out: set[str]) -> None:
    low = v.lower()
    if "@" in v or low.startswith(("sip:", "sips:", "tel:", "mailto:")):
        _person_forms(v, vocab, out)
        return
    if "\\" in v:  # DOMAIN\user
        _words_forms(words_of(v.rsplit("\\", 1)[1]), vocab, out)
        return
    if _GUID.fullmatch(v.strip("{}")):
        out.add("guid:" + re.sub(r"[^0-9a-f]", "", low))
        return
    if re.fullmatch(r"[\s+\d().\-/;=a-z:]*", low) and sum(c.isdigit() for c in v) >= 7:
        _phone_forms(v.split(";", 1)[0], out)
        return
    _embedded_forms(v, vocab, out)
    _free_text_forms(v, vocab, out, single=True)


def _user_agent_forms(ua: str, vocab: WebVocabulary, out: set[str]) -> None:
    """The product names a parser could publish that are not in the closed family lists."""
    from ua_parser import parse

    r = parse(ua.replace("+", " "))
    names = []
    if r.user_agent and r.user_agent.family not in BROWSER_FAMILIES:
        names.append(r.user_agent.family)
    if r.os and r.os.family not in OS_FAMILIES:
        names.append(r.os.family)
    if r.device and r.device.family not in ("Other", "Spider"):
        names.append(r.device.family)
    for name in names:
        _words_forms(words_of(name), vocab, out)
    _embedded_forms(ua, vocab, out)


# --- forms of an output value ----------------------------------------------------------------


_NUMERIC = re.compile(r"[\d./, \-]+")


def output_forms(value: str, free_text: bool = False) -> set[str]:
    """Every form under which an output value could hold a canary (``x:`` forms too for a
    free-text output of the web, see the module)."""
    whole = value.strip().lower()
    # A number of one to three digits (a k, a count, a status code written as text) is no
    # identifier, whatever surrogate key (a Connect principal-id 5) has the same digits.
    out = set() if whole.isdigit() and len(whole) < 4 else {"v:" + whole}
    if _NUMERIC.fullmatch(value):  # networks, numbers, dates: no word, no email
        for m in _IPV4.findall(value):
            if "/" not in m or m.endswith("/32"):
                ip = _canonical_ip(m.split("/", 1)[0])
                if ip:
                    out.add("ip:" + ip)
        for run in _PHONE_RUN.findall(_ISO_DATE.sub(" ", _IPV4.sub(" ", value))):
            digits = re.sub(r"\D", "", run)
            if 7 <= len(digits) <= 15:
                out.add("tel:" + digits)
        return out
    texts = {value}
    decoded = decode_fully(value)
    if decoded != value:
        texts.add(decoded)
        out.add("v:" + decoded.strip().lower())
    for text in texts:
        for e in _EMAIL.findall(text) if "@" in text else ():
            out.add("email:" + e.lower())
        for g in _GUID.findall(text):
            out.add("guid:" + re.sub(r"[^0-9a-f]", "", g.lower()))
        for m in _IPV4.findall(text):
            if "/" not in m or m.endswith("/32"):
                ip = _canonical_ip(m.split("/", 1)[0])
                if ip:
                    out.add("ip:" + ip)
        for m in _IPV6.findall(text) if ":" in text else ():
            if ("/" not in m or m.endswith("/128")) and m.count(":") >= 2:
                ip = _canonical_ip(m.split("/", 1)[0])
                if ip:
                    out.add("ip:" + ip)
        masked = _ISO_DATE.sub(" ", _IPV6.sub(" ", _IPV4.sub(" ", text)))
        for run in _PHONE_RUN.findall(masked):
            digits = re.sub(r"\D", "", run)
            if 7 <= len(digits) <= 15:
                out.add("tel:" + digits)
        words = words_of(text)[:MAX_WORDS]
        for n in range(1, MAX_NGRAM + 1):
            for i in range(len(words) - n + 1):
                gram = words[i : i + n]
                if all(w.isdigit() for w in gram) or (n == 1 and len(gram[0]) < 3):
                    continue  # no word canary is digits alone (see _words_forms)
                out.add("w:" + " ".join(gram))
                if n == 1 and free_text:
                    out.add("x:" + gram[0])
    return out


# --- keyed hashes ----------------------------------------------------------------------------


def _digest(key: bytes, form: str) -> int:
    return int.from_bytes(hashlib.blake2b(form.encode(), key=key, digest_size=8).digest(), "big")


def canary_key(keyring) -> bytes:
    """The key of a run's canary hashes (the same on every worker of the run)."""
    return keyring.derive("gate/canaries")


@dataclass
class Canaries:
    """A run's canaries: keyed hashes of their forms, and the kind of each (for the report)."""

    key: bytes
    table: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=SCHEMA))
    _index: dict[int, str] | None = field(default=None, repr=False)

    @property
    def height(self) -> int:
        return self.table.height

    def hash_forms(self, forms: Iterable[str]) -> pl.DataFrame:
        forms = list(forms)
        key = self.key
        return (
            pl.DataFrame(
                {"h": [_digest(key, f) for f in forms], "kind": [f[: f.find(":")] for f in forms]},
                schema=SCHEMA,
            )
            .unique()
            .sort("h", "kind")
        )

    def matches(self, values: Sequence[str], free_text: bool = False) -> list[str | None]:
        """For each output value, the kind of the first canary form it holds, or None."""
        if self._index is None:
            self._index = dict(zip(self.table["h"].to_list(), self.table["kind"].to_list(),
                                   strict=True))  # fmt: skip
        index, key = self._index, self.key
        if not index:
            return [None] * len(values)
        found: list[str | None] = []
        for v in values:
            hit = None
            for f in output_forms(v, free_text):
                kind = index.get(_digest(key, f))
                if kind is not None:
                    hit = kind
                    break
            found.append(hit)
        return found


class Collector:
    """Collects the hashed canary forms of one file's raw columns, batch by batch.

    A value is turned into forms once per file and a form is hashed once: each call returns the
    forms of the values the earlier batches did not hold (the union over the calls is what
    ``collect`` of the whole file would give).
    """

    def __init__(self, columns: dict[str, Hint], canaries: Canaries, vocab: WebVocabulary) -> None:
        self.columns, self.canaries, self.vocab = columns, canaries, vocab
        self._seen: dict[str, pl.Series] = {}
        self._hashed: set[str] = set()

    def __call__(self, frame: pl.DataFrame) -> pl.DataFrame:
        forms: set[str] = set()
        for col, hint in self.columns.items():
            if col not in frame.columns or frame.schema[col] != pl.String:
                continue
            values = frame.get_column(col).drop_nulls().unique()
            seen = self._seen.get(col)
            if seen is not None:
                values = values.filter(~values.is_in(seen.implode()))
                self._seen[col] = pl.concat([seen, values])
            else:
                self._seen[col] = values
            for v in values.to_list():
                forms.update(canary_forms(v, hint, self.vocab))
        forms -= self._hashed
        self._hashed |= forms
        return self.canaries.hash_forms(forms)


def collect(
    frame: pl.DataFrame, columns: dict[str, Hint], canaries: Canaries, vocab: WebVocabulary
) -> pl.DataFrame:
    """The hashed forms (``h``, ``kind``) of the distinct values of the given raw columns."""
    return Collector(columns, canaries, vocab)(frame)
