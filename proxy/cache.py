"""A configured cache: how its keys are named and its values sealed, and its backend.

This is the only object the command layer asks for stored names and envelopes.  It
holds the crypto objects built from the configuration; nothing outside proxy/crypto and
this module sees key material.  It never logs a key, a value or key material: decrypt
failures are counted by reason and logged without the key.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from proxy.config.schema import DEFAULT_NONCE_WARNING_SHARE
from proxy.crypto import DecryptError, KeyHasher, ValueSealer
from proxy.crypto.envelope import OVERHEAD
from proxy.crypto.members import MemberCipher
from proxy.speedups import native

if TYPE_CHECKING:
    from proxy.backends import Backend

log = logging.getLogger("cachecloak.cache")

# One warning per reason per interval: a flood of tampered values must not flood the log.
_DECRYPT_LOG_INTERVAL = 10.0
# NIST SP 800-38D, 8.3: with random 96-bit nonces, at most 2^32 encryptions per key.
NONCE_LIMIT = 2**32


class DecryptRefused(Exception):
    """onDecryptError: error — the client gets this text as an error reply."""


class Cache:
    def __init__(self, name: str, *, hasher: KeyHasher, sealer: ValueSealer | None,
                 on_decrypt_error: str, databases: int, backend: Backend,
                 members: MemberCipher | None = None,
                 nonce_warning_share: float = DEFAULT_NONCE_WARNING_SHARE):
        self.name = name
        self.hasher = hasher
        self.sealer = sealer
        # Hash field names and set / sorted-set members: deterministic AES-SIV under a key
        # derived from the hashing key (they name things, like keys); None when hashing
        # is disabled, and then they are stored as they are.
        self.members = members
        self.miss_on_decrypt_error = on_decrypt_error != "error"
        self.databases = databases
        self.backend = backend
        self.decrypt_failures: dict[str, int] = {}
        self._last_decrypt_log: dict[str, float] = {}
        # Nonce-limit warnings (check_nonce_limit): the encryption counts that warn, and
        # per key identifier how many of them were already passed (each warns once).
        self.nonce_warning_share = nonce_warning_share
        self._nonce_thresholds = sorted({nonce_warning_share * NONCE_LIMIT, NONCE_LIMIT})
        self._nonce_warned: dict[bytes, int] = {}
        # Hot-path aliases: one attribute lookup instead of two per command, and no
        # Python frame of ours around the C calls (proxy/speedups.py).
        self.stored_key = hasher.stored_key
        if sealer is not None:
            self.seal = sealer.seal
        # open_bulk(db, stored_key, blob): a GET's reply in one call, or None when the
        # value does not open under the current key (then `open` knows the old keys and
        # the onDecryptError policy).
        self.open_bulk = sealer.open_bulk if sealer is not None else _bulk
        # For a client's batch (proxy.server.client.Batch): whether ReplyReader.take may
        # decode its replies in C (needs the C Gcm of the current key when encrypting),
        # and that Gcm (None: values are stored as they are).
        self.reply_gcm = sealer.native_gcm if sealer is not None else None
        self.replies_in_c = sealer is None or self.reply_gcm is not None
        self.forwarder = _forwarder(hasher, sealer)

    @classmethod
    def from_config(cls, cfg, backend: Backend) -> Cache:
        hasher = KeyHasher(cfg.name, cfg.hashing_current if cfg.hashing_enabled else None,
                           cfg.key_prefix, cfg.prefix_enabled, cfg.databases)
        sealer = (ValueSealer(cfg.encryption_current, list(cfg.encryption_old))
                  if cfg.encryption_enabled else None)
        members = MemberCipher(cfg.hashing_current) if cfg.hashing_enabled else None
        return cls(cfg.name, hasher=hasher, sealer=sealer,
                   on_decrypt_error=cfg.on_decrypt_error, databases=cfg.databases,
                   backend=backend, members=members,
                   nonce_warning_share=cfg.nonce_warning_share)

    @property
    def encrypting(self) -> bool:
        return self.sealer is not None

    def seal(self, db: int, stored_key: bytes, value: bytes,
             context: bytes | None = None) -> bytes:
        """Encrypt a value (or list element, or hash value with its stored field name as
        `context`) for the stored name `stored_key`."""
        sealer = self.sealer
        return value if sealer is None else sealer.seal(db, stored_key, value, context)

    def seal_member(self, db: int, stored_key: bytes, member: bytes) -> bytes:
        """A hash field name or set / sorted-set member, deterministically encrypted."""
        members = self.members
        return member if members is None else members.seal(db, stored_key, member)

    def open_member(self, db: int, stored_key: bytes, blob: bytes) -> bytes | None:
        """The plaintext member, or None (policy as for values) when it does not open."""
        members = self.members
        if members is None:
            return blob
        try:
            return members.open(db, stored_key, blob)
        except DecryptError as exc:
            self._count_failure(exc.reason)
            if self.miss_on_decrypt_error:
                return None
            raise DecryptRefused(
                f"ERR cachecloak could not decrypt a stored member ({exc.reason}): it was "
                "changed in Redis or not written by cachecloak") from None

    def open(self, db: int, stored_key: bytes, blob: bytes,
             context: bytes | None = None) -> bytes | None:
        """The plaintext, or None (a miss) when the envelope does not open.

        Raises DecryptRefused instead of returning None under `onDecryptError: error`.
        A value that does not authenticate is never returned as it is stored.
        """
        sealer = self.sealer
        if sealer is None:
            return blob
        try:
            return sealer.open(db, stored_key, blob, context)
        except DecryptError as exc:
            self._count_failure(exc.reason)
            if self.miss_on_decrypt_error:
                return None
            raise DecryptRefused(
                f"ERR cachecloak could not decrypt the stored value ({exc.reason}): it was "
                "changed in Redis, written under a key missing from encryption.keys, or not "
                "written by cachecloak") from None

    def carry_over(self, previous: Cache) -> None:
        """Continue `previous`'s counters: a configuration reload replaced it by this
        object (proxy.server.reload).  Decrypt failures and the nonce-limit warnings
        already given are shared from now on; the encryption count continues when the
        current encryption key is the same."""
        self.decrypt_failures = previous.decrypt_failures
        self._last_decrypt_log = previous._last_decrypt_log
        self._nonce_warned = previous._nonce_warned
        sealer, before = self.sealer, previous.sealer
        if sealer is not None and before is not None and sealer.key_id == before.key_id:
            sealer.encryptions = before.encryptions

    def open_also_as(self, successor: Cache) -> None:
        """Also open what `successor` (the object a reload put in this one's place) opens.
        Commands and operations still running with this object then read the values the
        new current key writes meanwhile, instead of taking them for misses (a
        read-modify-write would otherwise start again from nothing).  It still encrypts
        under its own current key, which the rotation keeps in `old`."""
        if self.sealer is not None and successor.sealer is not None:
            self.sealer = self.sealer.also_opening(successor.sealer)

    def plaintext_length(self, stored_length: int) -> int:
        """STRLEN without fetching the value: the envelope adds a fixed overhead."""
        if self.sealer is None or stored_length == 0:
            return stored_length
        return max(stored_length - OVERHEAD, 0)

    def check_nonce_limit(self) -> None:
        """Warn once when the encryptions under the current key pass the configured share
        of the 2^32 random-nonce limit, and once more when they reach the limit.

        Called periodically by the server, never per encryption.  The count is what this
        process encrypted since it started (ValueSealer.encryptions): a lower bound of
        the key's use (other processes and earlier runs encrypt under it too), so the
        warning is advisory; `cachecloak_encryptions_total` summed over all instances is
        the better measure.  Tracked per key identifier, so a new key warns afresh and a
        sealer rebuilt for the same key does not warn twice."""
        sealer = self.sealer
        if sealer is None:
            return
        count = sealer.encryptions
        key_id = sealer.key_id
        warned = self._nonce_warned.get(key_id, 0)
        thresholds = self._nonce_thresholds
        passed = warned
        while passed < len(thresholds) and count > thresholds[passed]:
            passed += 1
        if passed == warned:
            return
        self._nonce_warned[key_id] = passed
        fields = {"cache": self.name, "key_id": key_id.hex(), "encryptions": count,
                  "nonce_limit": NONCE_LIMIT, "share": self.nonce_warning_share}
        if thresholds[passed - 1] >= NONCE_LIMIT:
            log.error("cache %s: %d encryptions under key id %s (counted by this process "
                      "since it started) have passed the 2^32 random-nonce limit of NIST SP "
                      "800-38D; the risk of a repeated nonce is now above 2^-32. Rotate the "
                      "encryption key now (see README Key rotation)", self.name, count,
                      key_id.hex(), extra=fields)
        else:
            log.warning("cache %s: %d encryptions under key id %s (counted by this process "
                        "since it started) have passed %s of the 2^32 random-nonce limit of "
                        "NIST SP 800-38D; rotate the encryption key (see README Key rotation)",
                        self.name, count, key_id.hex(), _percent(self.nonce_warning_share),
                        extra=fields)

    def _count_failure(self, reason: str) -> None:
        self.decrypt_failures[reason] = self.decrypt_failures.get(reason, 0) + 1
        now = time.monotonic()
        last = self._last_decrypt_log.get(reason, -_DECRYPT_LOG_INTERVAL)
        if now - last >= _DECRYPT_LOG_INTERVAL:
            self._last_decrypt_log[reason] = now
            log.warning("cache %s: a stored value failed to decrypt (%s); %d such failures so "
                        "far. Values changed in Redis or written under a key that is no longer "
                        "in encryption.keys read as misses.", self.name, reason,
                        self.decrypt_failures[reason])


def _forwarder(hasher: KeyHasher, sealer: ValueSealer | None):
    """proxy._native.Forwarder for this cache's keys (the simplest commands of a batch
    or of a one-command read transformed in C; the latter become proxy.server.client
    Singles), or None when the C part does not do its hashing and sealing."""
    if native is None or (hasher.enabled and hasher.native_hasher is None):
        return None
    if sealer is not None and sealer.native_gcm is None:
        return None
    from proxy.commands import simple_table  # the table is complete once it is imported
    from proxy.server.client import Batch, Single

    return native.Forwarder(simple_table(), hasher.native_hasher, hasher.namespaces,
                            sealer.native_gcm if sealer is not None else None, Single, Batch)


def _bulk(db: int, stored_key: bytes, blob: bytes) -> bytes:
    """open_bulk without encryption: the stored value is the plaintext."""
    return b"$%d\r\n%b\r\n" % (len(blob), blob)


def _percent(share: float) -> str:
    """0.5 -> "50%", 1e-9 -> "1e-07%": readable for the default and tiny test shares."""
    return f"{share * 100:g}%"
