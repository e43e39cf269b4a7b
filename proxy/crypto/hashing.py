"""Turning a client's key into the name it is stored under in Redis.

Stored name layout (all printable ASCII when hashing is on):

    <prefix><db>:<digest>                 key without a hash tag
    <prefix><db>:{<tagdigest>}<digest>    key with a Redis Cluster hash tag {tag}

* `digest` is the first 24 bytes of HMAC-SHA256(hmac_key, domain || key), in unpadded
  base64url (32 characters).  192 bits keep collisions out of reach (birthday bound
  2^96) while storing 11 fewer bytes per key than the full digest.
* `domain` = "cachecloak/v1" NUL "key" NUL cache name NUL db NUL: the same client key in
  another cache, another logical database or a later format version hashes differently.
* A key containing a hash tag (`{...}`, found as Redis finds it) keeps a tag, itself
  hashed, so keys sharing a tag still share a cluster slot while the tag's text never
  reaches Redis.  `tagdigest` is 9 bytes (12 characters): it only has to spread slots.
* With hashing disabled the client's key is kept unchanged after the namespace.
* With the prefix disabled there is no `<prefix><db>:` namespace at all; the cache then
  has exactly one logical database (the configuration enforces it).

The namespace makes it possible to scope a Redis ACL user to `~<prefix>*`, and to find
this cache's keys again with SCAN (FLUSHDB, DBSIZE, re-encryption after rotation).
"""

from __future__ import annotations

import binascii
import hashlib

from proxy.crypto.keys import derive_hmac_key
from proxy.speedups import native

try:  # CPython's own SHA-256 (the module is _sha2 from 3.12, _sha256 before)
    from _sha2 import sha256 as _sha256
except ImportError:
    try:
        from _sha256 import sha256 as _sha256
    except ImportError:  # another Python: OpenSSL's, through hashlib
        _sha256 = hashlib.sha256

_DIGEST_BYTES = 24
_TAG_DIGEST_BYTES = 9
_FORMAT = b"cachecloak/v1"
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64url(data: bytes) -> bytes:
    """Unpadded base64url (the lengths used here are multiples of 3: no padding)."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE)


def find_hash_tag(key: bytes) -> bytes | None:
    """Redis Cluster's rule: the bytes between the first '{' and the next '}', if any."""
    start = key.find(b"{")
    if start < 0:
        return None
    end = key.find(b"}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1:end]


class _Hmac:
    """HMAC-SHA256 with the inner and outer hash states computed once (RFC 2104).

    Copying two prepared SHA-256 states is cheaper than hmac.new() per call, which
    re-derives both pads every time.  The states are CPython's own SHA-256 objects: for
    messages this short, copying and finishing an OpenSSL digest context (allocated,
    copied and wiped for every copy() and digest()) costs more than the hashing, and the
    built-in one takes about half the time per stored name.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, domain: bytes):
        block = 64
        key = key.ljust(block, b"\x00")
        self._inner = _sha256(bytes(b ^ 0x36 for b in key))
        self._inner.update(domain)
        self._outer = _sha256(bytes(b ^ 0x5C for b in key))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class KeyHasher:
    """Maps (logical db, client key) to the stored name, for one cache."""

    def __init__(self, cache_name: str, hashing_key: bytes | None, prefix: bytes,
                 prefix_enabled: bool, databases: int):
        self._enabled = hashing_key is not None
        self._prefix_enabled = prefix_enabled
        self._namespaces = [prefix + b"%d:" % db if prefix_enabled else b""
                            for db in range(databases)]
        self._prefix = prefix if prefix_enabled else b""
        self.native_hasher = None  # proxy._native.Hasher when hashing runs in C
        self._key_macs: list[_Hmac] = []
        self._tag_macs: list[_Hmac] = []
        if hashing_key is not None:
            hmac_key = derive_hmac_key(hashing_key)
            name = cache_name.encode()
            key_domains, tag_domains = [], []
            for db in range(databases):
                tail = b"\x00" + name + b"\x00" + str(db).encode() + b"\x00"
                key_domains.append(_FORMAT + b"\x00key" + tail)
                tag_domains.append(_FORMAT + b"\x00tag" + tail)
            self._key_macs = [_Hmac(hmac_key, domain) for domain in key_domains]
            self._tag_macs = [_Hmac(hmac_key, domain) for domain in tag_domains]
            if native is not None:
                # The same computation in one C call (proxy/_native.c); the method below
                # stays the reference that tests/test_native.py compares it with.
                self.native_hasher = native.Hasher(hmac_key, key_domains, tag_domains,
                                                   self._namespaces)
                self.stored_key = self.native_hasher.stored_key

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def prefix(self) -> bytes:
        """What every stored name of this cache starts with (empty without a prefix)."""
        return self._prefix

    def namespace(self, db: int) -> bytes:
        """What every stored name of logical database `db` starts with."""
        return self._namespaces[db]

    @property
    def namespaces(self) -> list[bytes]:
        return self._namespaces

    def stored_key(self, db: int, key: bytes) -> bytes:
        if not self._enabled:
            return self._namespaces[db] + key
        digest = _b64url(self._key_macs[db].digest(key)[:_DIGEST_BYTES])
        # 0x7B is "{".  Testing for an int is a plain byte search, where `b"{" in key`
        # first tries the int form and raises (and clears) a TypeError each time.
        if 0x7B in key:
            tag = find_hash_tag(key)
            if tag is not None:
                tag_digest = _b64url(self._tag_macs[db].digest(tag)[:_TAG_DIGEST_BYTES])
                return self._namespaces[db] + b"{" + tag_digest + b"}" + digest
        return self._namespaces[db] + digest
