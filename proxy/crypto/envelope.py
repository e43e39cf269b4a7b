"""The value envelope: AES-256-GCM with a random nonce, bound to where the value lives.

Wire format, version 1 (in the spirit of Google Tink's output prefix):

    offset  size  field
    0       1     version, 0x01
    1       4     key identifier (HKDF of the configured key, see keys.py)
    5       12    nonce, fresh for every write (read in batches: os.urandom here,
                  OpenSSL's RAND_bytes in proxy._native.Gcm)
    17      n     ciphertext (same length as the plaintext)
    17+n    16    GCM tag

Associated data = version || key identifier || logical db (2 bytes, big endian) ||
stored name (the hashed key as Redis holds it) [|| NUL || context].  A ciphertext copied
to another key, another database or (with `context`) another hash field fails
authentication; a future re-encryption sweep can rebuild the associated data from what
Redis holds, without the application's key names.

Old keys are decrypt-only and are found by key identifier, never by trial decryption.

Limits: random 96-bit nonces allow 2^32 encryptions per key (NIST SP 800-38D, 8.3)
before the collision risk passes 2^-32; `encryptions` counts them so operators can be
warned to rotate.

This module never logs and never puts keys, values or key material in exceptions.
"""

from __future__ import annotations

import os
from collections import deque

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from proxy.crypto.keys import derive_aes_key, derive_key_id
from proxy.speedups import native

VERSION = 1
_VERSION_BYTE = bytes([VERSION])
HEADER_BYTES = 1 + 4
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = HEADER_BYTES + NONCE_BYTES + TAG_BYTES  # 33 bytes per stored value
_CIPHERTEXT_AT = HEADER_BYTES + NONCE_BYTES
# The logical db as the associated data holds it, for the usual dbs (per value: cheaper
# than int.to_bytes).
_DB_TABLE = 256
_DB_BYTES = tuple(db.to_bytes(2, "big") for db in range(_DB_TABLE))

# Nonces are read from the OS 256 at a time: one getrandom() call costs about as much as
# a 100-byte encryption, and the bytes are the same whether read 12 or 3072 at a time.
# deque.popleft() hands each one out exactly once, even across threads, and a forked
# child starts empty: a nonce the parent had read must never be used by both processes.
_NONCES_PER_READ = 256
_nonces: deque[bytes] = deque()
os.register_at_fork(after_in_child=_nonces.clear)


def _read_nonces() -> bytes:
    """Refill the pool; returns one fresh nonce."""
    batch = os.urandom(NONCE_BYTES * _NONCES_PER_READ)
    _nonces.extend([batch[i:i + NONCE_BYTES] for i in range(NONCE_BYTES, len(batch), NONCE_BYTES)])
    return batch[:NONCE_BYTES]


class DecryptError(Exception):
    """A stored value could not be opened.  `reason` is a short metric label."""

    def __init__(self, reason: str):
        super().__init__(f"stored value could not be decrypted ({reason})")
        self.reason = reason


class PythonGcm:
    """One AES-256-GCM key writing and opening envelopes under its header.

    The reference for proxy._native.Gcm, which takes its place when built: same
    arguments, same bytes (tests/test_native.py).  `open` returns None, never raises, for
    an envelope that is not this key's or does not authenticate; ValueSealer tells which.
    """

    __slots__ = ("_aead", "_header", "encryptions")

    def __init__(self, aes_key: bytes, header: bytes):
        self._aead = AESGCM(aes_key)
        self._header = header
        self.encryptions = 0

    def seal(self, db: int, stored_key: bytes, value: bytes, context: bytes | None = None) -> bytes:
        try:
            nonce = _nonces.popleft()
        except IndexError:
            nonce = _read_nonces()
        aad = (_DB_BYTES[db] if db < _DB_TABLE else db.to_bytes(2, "big")) + stored_key
        if context is not None:
            aad += b"\x00" + context
        self.encryptions += 1
        header = self._header
        return header + nonce + self._aead.encrypt(nonce, value, header + aad)

    def open(self, db: int, stored_key: bytes, blob: bytes,
             context: bytes | None = None) -> bytes | None:
        header = self._header
        if len(blob) < OVERHEAD or not blob.startswith(header):
            return None
        aad = header + (_DB_BYTES[db] if db < _DB_TABLE else db.to_bytes(2, "big")) + stored_key
        if context is not None:
            aad += b"\x00" + context
        try:
            return self._aead.decrypt(blob[HEADER_BYTES:_CIPHERTEXT_AT], blob[_CIPHERTEXT_AT:],
                                      aad)
        except InvalidTag:
            return None

    def open_bulk(self, db: int, stored_key: bytes, blob: bytes) -> bytes | None:
        """The plaintext as a RESP bulk string reply (a GET's whole reply), or None."""
        plaintext = self.open(db, stored_key, blob)
        return None if plaintext is None else b"$%d\r\n%b\r\n" % (len(plaintext), plaintext)


# C when built (proxy/speedups.py), else the Python twin above.
Gcm = native.Gcm if native is not None else PythonGcm


class ValueSealer:
    """Encrypts under the current key; decrypts under the current or any old key.

    `seal(db, stored_key, value, context=None)` and `open_bulk(db, stored_key, blob)`
    (a GET's reply, or None: then `open` tells why) are the current key's own methods,
    one C call each when proxy._native is built; the key object counts its encryptions.
    """

    __slots__ = ("_header", "_current", "_by_id", "key_id", "seal", "open_bulk", "native_gcm")

    def __init__(self, current: bytes, old: list[bytes] | tuple[bytes, ...] = ()):
        self.key_id = derive_key_id(current)
        self._header = _VERSION_BYTE + self.key_id
        self._current = Gcm(derive_aes_key(current), self._header)
        self.seal = self._current.seal
        # The current key for proxy._native.ReplyReader.take (a batch's GET replies opened
        # in C), or None when the C part is not used.
        self.native_gcm = self._current if native is not None and Gcm is native.Gcm else None
        self.open_bulk = self._current.open_bulk
        self._by_id: dict[bytes, Gcm] = {self.key_id: self._current}
        for key in old:
            key_id = derive_key_id(key)
            if key_id in self._by_id:
                raise ValueError("two configured encryption keys share a key identifier")
            self._by_id[key_id] = Gcm(derive_aes_key(key), _VERSION_BYTE + key_id)

    @property
    def key_ids(self) -> list[bytes]:
        return list(self._by_id)

    @property
    def encryptions(self) -> int:
        """Values sealed under the current key by this process (the nonce-limit count)."""
        return self._current.encryptions

    @encryptions.setter
    def encryptions(self, count: int) -> None:
        self._current.encryptions = count

    def open(self, db: int, stored_key: bytes, blob: bytes, context: bytes | None = None) -> bytes:
        plaintext = self._current.open(db, stored_key, blob, context)
        if plaintext is not None:  # the current key: most values
            return plaintext
        if len(blob) < OVERHEAD or blob[0] != VERSION:
            raise DecryptError("not-an-envelope")
        aead = self._by_id.get(blob[1:HEADER_BYTES])
        if aead is None:
            raise DecryptError("unknown-key-id")
        if aead is not self._current:
            plaintext = aead.open(db, stored_key, blob, context)
            if plaintext is not None:
                return plaintext
        raise DecryptError("authentication-failed")

    def also_opening(self, other: ValueSealer) -> ValueSealer:
        """A sealer that encrypts exactly like this one and also opens whatever `other`
        opens.  For a configuration reload: commands still running with the previous
        keys must read the values the new current key writes meanwhile."""
        merged = object.__new__(ValueSealer)
        merged.key_id = self.key_id
        merged._header = self._header
        merged._current = self._current
        merged.seal = self.seal
        merged.open_bulk = self.open_bulk
        merged.native_gcm = self.native_gcm
        merged._by_id = {**other._by_id, **self._by_id}
        return merged

    @staticmethod
    def key_id_of(blob: bytes) -> bytes | None:
        """The key identifier an envelope was written under, or None if it is not one."""
        if len(blob) < OVERHEAD or blob[0] != VERSION:
            return None
        return blob[1:HEADER_BYTES]
