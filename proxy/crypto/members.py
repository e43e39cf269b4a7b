"""Deterministic encryption of hash field names and set / sorted-set members (AES-SIV).

Redis must compare field names and members for equality inside one key (HGET, SISMEMBER,
ZSCORE), and cachecloak must be able to read them back (HKEYS, SMEMBERS, ZRANGE).  So
they cannot use the randomized value envelope; they use AES-SIV (RFC 5297), which is
deterministic and authenticated: the same member of the same key always encrypts to the
same bytes, and a changed byte fails to open.

The associated data binds a member to its format version, logical db and stored key
name, so equal members of two different keys do not look equal in Redis.

The SIV key is derived (HKDF) from the *hashing* key, not from the encryption keys:
members name things, like keys do, and must keep comparing equal across a rotation of
the encryption keys.  What Redis learns: which members of one key are equal over time
(as it learns it for keys), their lengths (plaintext + 16 bytes) and, for sorted sets,
the scores, which stay plaintext so that Redis can order by them.

Never logs; exceptions carry no member, key or key material.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from proxy.crypto.envelope import DecryptError

SIV_BYTES = 16
_LABEL = b"cachecloak/v1 member encryption aes-siv-256"
_VERSION = b"\x01"


class MemberCipher:
    __slots__ = ("_siv",)

    def __init__(self, hashing_key: bytes):
        key = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=_LABEL).derive(
            hashing_key)
        self._siv = AESSIV(key)

    def seal(self, db: int, stored_key: bytes, member: bytes) -> bytes:
        return self._siv.encrypt(member, [_VERSION, db.to_bytes(2, "big"), stored_key])

    def open(self, db: int, stored_key: bytes, blob: bytes) -> bytes:
        if len(blob) < SIV_BYTES:
            raise DecryptError("not-an-envelope")
        try:
            return self._siv.decrypt(blob, [_VERSION, db.to_bytes(2, "big"), stored_key])
        except InvalidTag:
            raise DecryptError("authentication-failed") from None
