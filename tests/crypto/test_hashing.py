"""Stored names: deterministic, printable, domain-separated, hash tags kept (hashed)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.crypto import KeyHasher
from proxy.crypto.hashing import find_hash_tag

KEY = bytes(range(32))
PRINTABLE = re.compile(rb"^[A-Za-z0-9_\-:{}]+$")


def hasher(name="app", key=KEY, prefix=b"cachecloak:app:", prefix_enabled=True):
    return KeyHasher(name, key, prefix, prefix_enabled, 16)


@given(st.binary(max_size=200))
def test_stored_names_are_deterministic_printable_and_prefixed(key):
    h = hasher()
    stored = h.stored_key(0, key)
    assert stored == h.stored_key(0, key)
    assert stored.startswith(b"cachecloak:app:0:")
    assert PRINTABLE.match(stored)
    if len(key) >= 4:
        assert key not in stored[len(b"cachecloak:app:0:"):]


def test_digest_is_32_characters_after_the_namespace():
    assert len(hasher().stored_key(0, b"user:1")) == len(b"cachecloak:app:0:") + 32


@pytest.mark.parametrize("other", [
    lambda: hasher(name="other").stored_key(0, b"k"),            # another cache
    lambda: hasher().stored_key(1, b"k").replace(b":1:", b":0:"),  # another db
    lambda: hasher(key=bytes(32)).stored_key(0, b"k"),            # another hashing key
])
def test_names_are_separated_by_cache_db_and_key(other):
    assert hasher().stored_key(0, b"k") != other()


@pytest.mark.parametrize("key, tag", [
    (b"{user}:1", b"user"), (b"a{b}c{d}", b"b"), (b"{}x", None), (b"{x", None),
    (b"x}{y}", b"y"), (b"no tag", None), (b"{{a}}", b"{a"),
])
def test_hash_tag_rule_is_redis_clusters(key, tag):
    assert find_hash_tag(key) == tag


def test_keys_sharing_a_tag_share_a_hashed_tag_and_the_tag_text_is_hidden():
    h = hasher()
    a, b = h.stored_key(0, b"{user42}:profile"), h.stored_key(0, b"{user42}:cart")
    tag_a = a[a.index(b"{"):a.index(b"}") + 1]
    assert tag_a == b[b.index(b"{"):b.index(b"}") + 1]
    assert b"user42" not in a and a != b
    other = h.stored_key(0, b"{user43}:cart")
    assert other[other.index(b"{"):other.index(b"}") + 1] != tag_a


def test_hashing_disabled_keeps_the_key_after_the_namespace():
    h = KeyHasher("app", None, b"p:", True, 16)
    assert h.stored_key(2, b"user:1") == b"p:2:user:1"
    assert not h.enabled


def test_prefix_disabled_means_no_namespace():
    h = KeyHasher("app", KEY, b"", False, 1)
    stored = h.stored_key(0, b"k")
    assert len(stored) == 32 and h.namespace(0) == b""
    assert KeyHasher("app", None, b"", False, 1).stored_key(0, b"k") == b"k"


@given(st.binary(min_size=0, max_size=80), st.binary(max_size=40), st.binary(max_size=100))
def test_precomputed_hmac_equals_the_standard_construction(key, domain, message):
    import hashlib
    import hmac

    from proxy.crypto.hashing import _Hmac

    key = key[:64]  # the stored-name HMAC key is always 32 bytes; pads cover up to a block
    expected = hmac.new(key, domain + message, hashlib.sha256).digest()
    assert _Hmac(key, domain).digest(message) == expected
