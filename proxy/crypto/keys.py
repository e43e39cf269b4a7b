"""Derivation of purpose-specific keys from the 32-byte keys in the configuration.

The configuration holds one hex key per role.  We never use that key directly for two
purposes: HKDF-SHA256 (RFC 5869) derives the AES key, the HMAC key and the public key
identifier from it under distinct `info` labels, so an operator who pastes the same
hex string under `encryption` and `hashing` still gets independent keys, and the key
identifier written next to every ciphertext reveals nothing about either key.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
KEY_ID_BYTES = 4

_LABEL_AES = b"cachecloak/v1 value encryption aes-256-gcm"
_LABEL_HMAC = b"cachecloak/v1 key hashing hmac-sha256"
_LABEL_KEY_ID = b"cachecloak/v1 key identifier"


def _hkdf(master: bytes, info: bytes, length: int) -> bytes:
    if len(master) != KEY_BYTES:
        raise ValueError("configured keys must be 32 bytes")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master)


def derive_aes_key(master: bytes) -> bytes:
    return _hkdf(master, _LABEL_AES, 32)


def derive_hmac_key(master: bytes) -> bytes:
    return _hkdf(master, _LABEL_HMAC, 32)


def derive_key_id(master: bytes) -> bytes:
    """A short public identifier of an encryption key, stored in every envelope.

    Four bytes are enough to tell a handful of configured keys apart (the loader refuses
    a configuration in which two keys collide) and let decryption pick the key directly
    instead of trying each one.
    """
    return _hkdf(master, _LABEL_KEY_ID, KEY_ID_BYTES)
