"""Master key loading and per-purpose key derivation.

The master key is at least 32 random bytes, given as hex or base64. Per-purpose keys are derived
from it with HKDF-SHA256, so a pseudonym key for SIP users never equals the one for phone numbers
(domain separation). Only a *key id* (a fingerprint) is ever written or logged.

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
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from anonymize.errors import KeyError_

ENV_VAR = "CDRANON_MASTER_KEY"
MIN_KEY_BYTES = 32
_HKDF_SALT = b"cdranon/hkdf/v1"
# A fixed, public key for development runs. Its outputs are marked not-for-sharing everywhere.
_DEV_KEY = hashlib.sha256(b"cdranon development key: public, never for shared data").digest()

HOW_TO_PROVIDE = (
    f"set {ENV_VAR} to at least {MIN_KEY_BYTES} random bytes in hex or base64 "
    "(`cdranon keygen` prints one), or name a Prefect Secret block in the policy under "
    "key.prefect_secret, or pass --dev-key for a development run whose outputs are not for sharing"
)


def parse_key(text: str) -> bytes:
    """Decode a master key written as hex or base64; refuse one shorter than 32 bytes.

    The error never repeats the text it was given.
    """
    text = text.strip()
    raw: bytes | None = None
    if len(text) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in text):
        raw = bytes.fromhex(text)
    else:
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                raw = decode(text + "=" * (-len(text) % 4))
                break
            except (binascii.Error, ValueError):
                continue
    if raw is None:
        raise KeyError_(f"the master key is neither hex nor base64; {HOW_TO_PROVIDE}")
    if len(raw) < MIN_KEY_BYTES:
        raise KeyError_(
            f"the master key has {len(raw)} bytes, fewer than {MIN_KEY_BYTES}; {HOW_TO_PROVIDE}"
        )
    return raw


def generate_key() -> str:
    """Return a new random master key (32 bytes, hex)."""
    return secrets.token_hex(MIN_KEY_BYTES)


class KeyRing:
    """Holds the master key in memory and hands out derived keys and key ids.

    It refuses to be pickled or printed: the key cannot end in a Prefect result, a cache or a log.
    """

    __slots__ = ("_master", "is_development")

    def __init__(self, master: bytes, *, is_development: bool = False) -> None:
        if len(master) < MIN_KEY_BYTES:
            raise KeyError_(f"a master key needs at least {MIN_KEY_BYTES} bytes")
        self._master = master
        self.is_development = is_development

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
            return cls(parse_key(env[ENV_VAR]))
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
            return cls(parse_key(value))
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
        """Fingerprint of the master key; safe to write anywhere."""
        return key_id(self._master)

    def for_release(self, recipient: str) -> KeyRing:
        """The key ring of one recipient's release: a master key derived for that recipient.

        Everything derived from it (pseudonym keys per scope, the visitors' daily keys) differs
        between recipients, so two recipients can never join their data on pseudonyms.

        >>> ring = KeyRing.development()
        >>> ring.for_release("a").key_id != ring.for_release("b").key_id
        True
        """
        return KeyRing(self.derive(f"release/{recipient}"), is_development=self.is_development)

    def __repr__(self) -> str:
        return f"KeyRing(key_id={self.key_id!r}, development={self.is_development})"

    def __reduce__(self):
        raise TypeError("a KeyRing holds a secret and cannot be pickled or persisted")


def key_id(key: bytes) -> str:
    """Return a short public fingerprint of a key: ``k-`` and 16 hex digits."""
    return "k-" + hmac.new(key, b"cdranon/key-id", hashlib.sha256).hexdigest()[:16]
