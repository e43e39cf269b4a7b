"""The value envelope: format, authentication, binding to its location, rotation."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.crypto import DecryptError, ValueSealer, derive_key_id
from proxy.crypto.envelope import NONCE_BYTES, OVERHEAD, VERSION
from tests.crypto.nonces import nonces, nonces_in_forked_child

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


def test_envelope_layout_is_version_key_id_nonce_ciphertext_tag():
    sealer = ValueSealer(KEY_A)
    blob = sealer.seal(0, b"stored", b"hello")
    assert len(blob) == len(b"hello") + OVERHEAD == 38
    assert blob[0] == VERSION
    assert blob[1:5] == derive_key_id(KEY_A)
    assert b"hello" not in blob


def test_roundtrip_and_fresh_nonce_per_write():
    sealer = ValueSealer(KEY_A)
    first = sealer.seal(0, b"k", b"same value")
    second = sealer.seal(0, b"k", b"same value")
    assert first != second
    assert first[5:5 + NONCE_BYTES] != second[5:5 + NONCE_BYTES]
    assert sealer.open(0, b"k", first) == sealer.open(0, b"k", second) == b"same value"
    assert sealer.encryptions == 2


@pytest.mark.parametrize("db, key, context", [(1, b"stored", None), (0, b"other", None),
                                              (0, b"stored", b"field")])
def test_value_is_bound_to_db_stored_name_and_context(db, key, context):
    sealer = ValueSealer(KEY_A)
    blob = sealer.seal(0, b"stored", b"v")
    with pytest.raises(DecryptError) as err:
        sealer.open(db, key, blob, context)
    assert err.value.reason == "authentication-failed"


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=64), st.data())
def test_any_single_byte_change_is_detected(value, data):
    sealer = ValueSealer(KEY_A)
    blob = bytearray(sealer.seal(0, b"k", value))
    index = data.draw(st.integers(0, len(blob) - 1))
    blob[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(DecryptError):
        sealer.open(0, b"k", bytes(blob))


@pytest.mark.parametrize("blob, reason", [
    (b"", "not-an-envelope"),
    (b"plain text value that is long enough to be an envelope", "not-an-envelope"),
    (b"\x02" + bytes(40), "not-an-envelope"),
])
def test_values_not_written_by_cachecloak_are_rejected(blob, reason):
    with pytest.raises(DecryptError) as err:
        ValueSealer(KEY_A).open(0, b"k", blob)
    assert err.value.reason == reason


def test_old_keys_decrypt_and_are_chosen_by_key_id():
    old_blob = ValueSealer(KEY_A).seal(0, b"k", b"written under A")
    rotated = ValueSealer(KEY_B, [KEY_A])
    assert rotated.open(0, b"k", old_blob) == b"written under A"
    new_blob = rotated.seal(0, b"k", b"new")
    assert new_blob[1:5] == derive_key_id(KEY_B)
    assert ValueSealer.key_id_of(new_blob) == derive_key_id(KEY_B)
    with pytest.raises(DecryptError) as err:
        ValueSealer(KEY_B).open(0, b"k", old_blob)
    assert err.value.reason == "unknown-key-id"


def test_error_messages_hold_no_key_value_or_key_material():
    sealer = ValueSealer(KEY_A)
    blob = sealer.seal(0, b"secret-name", b"secret-value")
    try:
        sealer.open(0, b"other-name", blob)
    except DecryptError as exc:
        text = str(exc) + repr(exc)
    for secret in (b"secret-name", b"secret-value", KEY_A):
        assert secret.hex() not in text and secret.decode("latin-1") not in text


def test_key_ids_are_derived_not_copied_from_the_key():
    key = os.urandom(32)
    assert derive_key_id(key) not in key
    assert len(derive_key_id(key)) == 4


@pytest.mark.parametrize("db, context", [(0, None), (15, b"sealed-field"), (255, None),
                                         (256, None), (1023, b"f")])
def test_associated_data_is_version_key_id_db_stored_name_and_context(db, context):
    # The layout the module docstring promises, checked with AES-GCM itself: envelopes
    # written by earlier versions must keep opening.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from proxy.crypto.keys import derive_aes_key

    blob = ValueSealer(KEY_A).seal(db, b"stored", b"value", context)
    aad = blob[:5] + db.to_bytes(2, "big") + b"stored"
    if context is not None:
        aad += b"\x00" + context
    assert AESGCM(derive_aes_key(KEY_A)).decrypt(blob[5:17], blob[17:], aad) == b"value"
    assert ValueSealer(KEY_A).open(db, b"stored", blob, context) == b"value"


def test_nonces_read_in_batches_are_never_repeated():
    sealer = ValueSealer(KEY_A)
    nonces = {sealer.seal(0, b"k", b"v")[5:5 + NONCE_BYTES] for _ in range(2000)}
    assert len(nonces) == 2000


def test_a_forked_child_never_uses_the_nonces_its_parent_had_read():
    sealer = ValueSealer(KEY_A)
    sealer.seal(0, b"k", b"v")  # the pool now holds nonces read by this process
    child_nonces = nonces_in_forked_child(lambda: sealer.seal(0, b"k", b"v"), 50)
    parent_nonces = set(nonces(lambda: sealer.seal(0, b"k", b"v"), 50))
    assert len(child_nonces) == 50
    assert not child_nonces & parent_nonces
