"""Master key parsing, HKDF derivation, key ids, and that keys never leak."""

from __future__ import annotations

import base64
import pickle

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from anonymize.errors import KeyError_
from anonymize.keys import ENV_VAR, KeyRing, generate_key, parse_key

RAW = bytes(range(40))


def test_hex_and_base64_give_the_same_key():
    assert parse_key(RAW.hex()) == RAW
    assert parse_key(base64.b64encode(RAW).decode()) == RAW
    assert parse_key(base64.urlsafe_b64encode(RAW).decode().rstrip("=")) == RAW


def test_short_key_is_refused_without_echoing_it():
    short = "ab" * 8
    with pytest.raises(KeyError_) as exc:
        parse_key(short)
    assert "has 8 bytes" in str(exc.value)
    assert short not in str(exc.value)


def test_no_key_says_how_to_provide_one():
    with pytest.raises(KeyError_) as exc:
        KeyRing.load(environ={})
    msg = str(exc.value)
    assert ENV_VAR in msg
    assert "--dev-key" in msg
    assert "keygen" in msg


def test_env_key_wins_and_secret_loader_is_used_otherwise():
    ring = KeyRing.load(environ={ENV_VAR: RAW.hex()}, secret_name="s", secret_loader=lambda n: "x")
    assert ring.key_id == KeyRing(RAW).key_id
    ring = KeyRing.load(environ={}, secret_name="s", secret_loader=lambda n: generate_key())
    assert not ring.is_development


def test_secret_loader_errors_keep_only_their_type():
    def boom(name: str) -> str:
        raise RuntimeError("secret value 1234 in a message")

    with pytest.raises(KeyError_) as exc:
        KeyRing.load(environ={}, secret_name="s", secret_loader=boom)
    assert "1234" not in str(exc.value)
    assert "RuntimeError" in str(exc.value)


def test_derivation_is_hkdf_sha256_and_domain_separated():
    ring = KeyRing(RAW)
    want = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"cdranon/hkdf/v1",
        info=b"cdranon/v1/pseudonym/x",
    ).derive(RAW)
    assert ring.derive("pseudonym/x") == want
    assert ring.derive("pseudonym/person") != ring.derive("pseudonym/phone")


def test_keyring_cannot_be_pickled_or_printed():
    ring = KeyRing(RAW)
    with pytest.raises(TypeError):
        pickle.dumps(ring)
    assert RAW.hex() not in repr(ring)
    assert ring.key_id.startswith("k-")
    assert len(ring.key_id) == 18


def test_dev_key_is_marked():
    assert KeyRing.load(dev_key=True, environ={ENV_VAR: RAW.hex()}).is_development


def test_generated_keys_are_random_and_valid():
    a, b = generate_key(), generate_key()
    assert a != b
    assert len(parse_key(a)) == 32


@pytest.mark.parametrize(
    "text",
    [
        "windowwindowwindowwindowwindowwindowwindowwindow",  # a word that decodes as base64
        "ab" * 32,  # hex of a repeated byte pair
        base64.b64encode(b"correct horse battery staple 1234").decode(),  # a passphrase
        base64.b64encode(bytes(range(16)) * 3).decode(),  # a repeated block
    ],
)
def test_a_key_that_does_not_look_random_is_refused_without_echoing_it(text):
    with pytest.raises(KeyError_) as exc:
        parse_key(text)
    assert "does not look random" in str(exc.value)
    assert text not in str(exc.value)


def test_base64_is_decoded_strictly():
    good = base64.b64encode(RAW).decode()
    with pytest.raises(KeyError_):
        parse_key(good[:10] + "!" + good[11:])  # not silently dropped
    with pytest.raises(KeyError_):
        parse_key(good.replace("+", "-", 1) + "/")  # url-safe and standard mixed


def test_keygen_key_ids_are_random_and_test_no_guess():
    from anonymize.keys import key_id, parse_key_and_id

    text = generate_key()
    raw, given = parse_key_and_id(text)
    ring = KeyRing.load(environ={ENV_VAR: text})
    assert ring.key_id == given == "k-" + text.split(":")[1]
    assert ring.key_id != key_id(raw)  # not computed from the key: a guess cannot be checked
    assert ring.for_release("a").key_id != ring.for_release("b").key_id
    assert ring.for_release("a").key_id != key_id(ring.derive("release/a"))
    assert generate_key().split(":")[1] != text.split(":")[1]


def test_a_hex_key_with_a_typo_is_refused_not_read_as_base64():
    good = RAW[:32].hex()
    for bad in (good[:10] + "g" + good[11:], good[:-1], good + "0"):
        with pytest.raises(KeyError_) as exc:
            parse_key(bad)
        assert ENV_VAR in str(exc.value)
        assert bad not in str(exc.value)
