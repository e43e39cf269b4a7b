"""Member and field-name encryption: deterministic per key, authenticated, key-bound."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.crypto import DecryptError
from proxy.crypto.members import SIV_BYTES, MemberCipher

CIPHER = MemberCipher(bytes(range(32)))


@given(st.binary(max_size=100))
def test_members_roundtrip_deterministically(member):
    sealed = CIPHER.seal(0, b"stored", member)
    assert sealed == CIPHER.seal(0, b"stored", member)
    assert len(sealed) == len(member) + SIV_BYTES
    assert CIPHER.open(0, b"stored", sealed) == member


def test_equal_members_of_different_keys_or_dbs_differ():
    sealed = CIPHER.seal(0, b"key-a", b"alice@example.com")
    assert sealed != CIPHER.seal(0, b"key-b", b"alice@example.com")
    assert sealed != CIPHER.seal(1, b"key-a", b"alice@example.com")
    assert b"alice" not in sealed


@pytest.mark.parametrize("where", [(0, b"key-b"), (1, b"key-a")])
def test_a_member_moved_to_another_key_does_not_open(where):
    sealed = CIPHER.seal(0, b"key-a", b"m")
    with pytest.raises(DecryptError):
        CIPHER.open(*where, sealed)


def test_tampering_and_other_keys_are_detected():
    sealed = bytearray(CIPHER.seal(0, b"k", b"member"))
    sealed[-1] ^= 1
    with pytest.raises(DecryptError):
        CIPHER.open(0, b"k", bytes(sealed))
    with pytest.raises(DecryptError):
        MemberCipher(bytes(32)).open(0, b"k", CIPHER.seal(0, b"k", b"member"))
    with pytest.raises(DecryptError):
        CIPHER.open(0, b"k", b"short")
