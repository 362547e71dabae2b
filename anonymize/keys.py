"""Master key loading and per-purpose key derivation.

The master key is at least 32 random bytes. ``cdranon keygen`` writes it as
``cdranon-key-v1:<key id>:<base64url>``: the key id is 16 random hex digits made with the key,
not computed from it, so nobody holding a published file can test a guessed key against it.
Plain hex or base64 (standard or url-safe, decoded strictly) is accepted too; its key id is then
a keyed fingerprint. A key that does not look random (printable text, repeats, few distinct
bytes: a password, a word repeated until it decodes as base64) is refused. Per-purpose keys are
derived with HKDF-SHA256, so a pseudonym key for SIP users never equals the one for phone
numbers (domain separation). Only a key id is ever written or logged.

Examples
--------
>>> ring = KeyRing.development()
>>> ring.is_development
True
>>> len(ring.derive("pseudonym/person"))
32
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import zlib
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from anonymize.errors import KeyError_

ENV_VAR = "CDRANON_MASTER_KEY"
# The key before a rotation (--rekey), to find the people of data-subject requests again.
PREVIOUS_ENV_VAR = "CDRANON_PREVIOUS_MASTER_KEY"
MIN_KEY_BYTES = 32
_HKDF_SALT = b"cdranon/hkdf/v1"
# A fixed, public key for development runs. Its outputs are marked not-for-sharing everywhere.
_DEV_KEY = hashlib.sha256(b"cdranon development key: public, never for shared data").digest()

HOW_TO_PROVIDE = (
    f"set {ENV_VAR} to at least {MIN_KEY_BYTES} random bytes in hex or base64 "
    "(`cdranon keygen` prints one), or name a Prefect Secret block in the policy under "
    "key.prefect_secret, or pass --dev-key for a development run whose outputs are not for sharing"
)


KEY_PREFIX = "cdranon-key-v1"
_HEX = frozenset("0123456789abcdefABCDEF")


def _decode(text: str) -> bytes | None:
    """Hex, or base64 (url-safe when it has ``-`` or ``_``), strictly; None otherwise.

    A text of hex digits but one or two is a hex key with a typo, never taken for base64.
    """
    if set(text) <= _HEX:
        return bytes.fromhex(text) if len(text) % 2 == 0 else None
    if len(text) >= 32 and sum(c not in _HEX for c in text) <= 2:
        return None
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.b64decode(padded, altchars=b"-_", validate=True)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None


def weakness(raw: bytes) -> str | None:
    """Why a key's bytes do not look random (None when they do). Never quotes the bytes.

    >>> weakness(b"password" * 4), weakness(bytes(range(8)) * 4)
    ('it is printable text, not random bytes', 'it has too few distinct bytes')
    >>> weakness(bytes(range(24)) + bytes(range(24)))
    'it compresses: it repeats itself'
    >>> weakness(bytes.fromhex("9c1e5f0a7b3d2c8e46a1f09b5d7e3c2a81f4b6d0e9c7a5b3f1d2e8c4a6b09f7e"))
    """
    if all(32 <= b < 127 for b in raw):
        return "it is printable text, not random bytes"
    if len(set(raw)) < min(len(raw) // 2, 128):
        return "it has too few distinct bytes"
    if len(zlib.compress(raw, 9)) < len(raw) + 4:
        return "it compresses: it repeats itself"
    return None


def parse_key_and_id(text: str) -> tuple[bytes, str | None]:
    """Decode a master key; return it with its key id when the text carries one (keygen's).

    Refuses a key shorter than 32 bytes or that does not look random. The error never repeats
    the text it was given.
    """
    text = text.strip()
    given_id = None
    if text.startswith(KEY_PREFIX + ":"):
        parts = text.split(":")
        if len(parts) != 3 or len(parts[1]) != 16 or not set(parts[1]) <= _HEX:
            raise KeyError_(f"the master key is not in the form keygen writes; {HOW_TO_PROVIDE}")
        given_id, text = "k-" + parts[1].lower(), parts[2]
    raw = _decode(text)
    if raw is None:
        raise KeyError_(f"the master key is neither hex nor base64; {HOW_TO_PROVIDE}")
    if len(raw) < MIN_KEY_BYTES:
        raise KeyError_(
            f"the master key has {len(raw)} bytes, fewer than {MIN_KEY_BYTES}; {HOW_TO_PROVIDE}"
        )
    why = weakness(raw)
    if why:
        raise KeyError_(f"the master key does not look random ({why}); {HOW_TO_PROVIDE}")
    return raw, given_id


def parse_key(text: str) -> bytes:
    """Decode a master key written as keygen writes it, hex or base64 (see the module)."""
    return parse_key_and_id(text)[0]


def generate_key() -> str:
    """Return a new master key with its random key id: ``cdranon-key-v1:<id>:<base64url>``."""
    raw = secrets.token_bytes(MIN_KEY_BYTES)
    while weakness(raw):  # never in practice; keeps keygen's output always accepted
        raw = secrets.token_bytes(MIN_KEY_BYTES)
    body = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return f"{KEY_PREFIX}:{secrets.token_hex(8)}:{body}"


class KeyRing:
    """Holds the master key in memory and hands out derived keys and key ids.

    It refuses to be pickled or printed: the key cannot end in a Prefect result, a cache or a log.
    """

    __slots__ = ("_id", "_master", "is_development")

    def __init__(
        self, master: bytes, *, is_development: bool = False, key_id: str | None = None
    ) -> None:
        if len(master) < MIN_KEY_BYTES:
            raise KeyError_(f"a master key needs at least {MIN_KEY_BYTES} bytes")
        self._master = master
        self._id = key_id
        self.is_development = is_development

    @classmethod
    def from_text(cls, text: str) -> KeyRing:
        """A key ring from a key as written in the environment or a secret block."""
        raw, given_id = parse_key_and_id(text)
        return cls(raw, key_id=given_id)

    @classmethod
    def development(cls) -> KeyRing:
        """The fixed development key: outputs made with it must never be shared."""
        return cls(_DEV_KEY, is_development=True)

    @classmethod
    def load(
        cls,
        *,
        dev_key: bool = False,
        environ: dict[str, str] | None = None,
        secret_name: str | None = None,
        secret_loader: Callable[[str], str] | None = None,
    ) -> KeyRing:
        """Find the master key: the development key, the environment, or a named secret.

        ``secret_loader`` reads a secret by name (the flows pass one that reads a Prefect Secret
        block); the library itself never imports Prefect.
        """
        if dev_key:
            return cls.development()
        env = os.environ if environ is None else environ
        if env.get(ENV_VAR):
            return cls.from_text(env[ENV_VAR])
        if secret_name:
            if secret_loader is None:
                raise KeyError_(
                    f"the policy names the secret block {secret_name!r} but no secret store is "
                    f"available here; {HOW_TO_PROVIDE}"
                )
            try:
                value = secret_loader(secret_name)
            except Exception as exc:  # the loader's own error may be anything; keep only its type
                raise KeyError_(
                    f"the secret block {secret_name!r} could not be read ({type(exc).__name__}); "
                    f"{HOW_TO_PROVIDE}"
                ) from None
            return cls.from_text(value)
        raise KeyError_(f"no master key was provided; {HOW_TO_PROVIDE}")

    def derive(self, purpose: str) -> bytes:
        """Derive the 32-byte key for one purpose (HKDF-SHA256, ``info`` = the purpose)."""
        hkdf = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=_HKDF_SALT,
            info=f"cdranon/v1/{purpose}".encode(),
        )
        return hkdf.derive(self._master)

    @property
    def key_id(self) -> str:
        """The key's id (keygen's random one, else a keyed fingerprint); safe to write anywhere."""
        return self._id or key_id(self._master)

    def for_release(self, recipient: str) -> KeyRing:
        """The key ring of one recipient's release: a master key derived for that recipient.

        Everything derived from it (pseudonym keys per scope, the visitors' daily keys) differs
        between recipients, so two recipients can never join their data on pseudonyms.

        >>> ring = KeyRing.development()
        >>> ring.for_release("a").key_id != ring.for_release("b").key_id
        True
        """
        derived = self.derive(f"release/{recipient}")
        rid = None
        if self._id:  # from the public random id, so it too tests no guess of the key
            rid = "k-" + hashlib.sha256(f"{self._id}/release/{recipient}".encode()).hexdigest()[:16]
        return KeyRing(derived, is_development=self.is_development, key_id=rid)

    def for_account(self, tenant: str) -> KeyRing:
        """The key ring of one account holder's (tenant's) pseudonyms: the key a tenant may be
        handed to map its reports back to its own directory (``account_pseudonym``). It tells
        nothing of another tenant's pseudonyms, or of the provider's.

        >>> ring = KeyRing.development()
        >>> ring.for_account("contoso").key_id != ring.for_account("fabrikam").key_id
        True
        """
        derived = self.derive(f"account/{tenant}")
        return KeyRing(derived, is_development=self.is_development)

    def export(self) -> str:
        """The key as 64 hex digits, to hand over (an account key only: never the master)."""
        return self._master.hex()

    def __repr__(self) -> str:
        return f"KeyRing(key_id={self.key_id!r}, development={self.is_development})"

    def __reduce__(self):
        raise TypeError("a KeyRing holds a secret and cannot be pickled or persisted")


def key_id(key: bytes) -> str:
    """Return a short public fingerprint of a key: ``k-`` and 16 hex digits."""
    return "k-" + hmac.new(key, b"cdranon/key-id", hashlib.sha256).hexdigest()[:16]
