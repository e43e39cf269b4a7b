"""Key hashing and value encryption for one cache.

Everything that touches key material lives in this package.  Nothing here does I/O,
logs, or puts key material, keys or values into exception messages: callers may log
an exception's text, so it must stay free of secrets.
"""

from proxy.crypto.envelope import DecryptError, ValueSealer
from proxy.crypto.hashing import KeyHasher
from proxy.crypto.keys import derive_key_id

__all__ = ["DecryptError", "KeyHasher", "ValueSealer", "derive_key_id"]
