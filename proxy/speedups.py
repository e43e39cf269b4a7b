"""Whether the proxy runs its per-command work in C (proxy/_native.c) or in Python.

The C module holds four things the proxy does for nearly every command: splitting the
client's requests (resp/reader.py), the stored name's HMAC (crypto/hashing.py), the
AES-GCM envelope (crypto/envelope.py) and the upstream request's RESP array
(resp/writer.py).  Each of those modules keeps its pure-Python twin as the reference;
tests/test_native.py checks both give the same results.

The C module is built at install time when a C compiler and OpenSSL's headers are there
(setup.py; it is optional).  `CACHECLOAK_NATIVE=0` in the environment runs the Python
twins even when it was built: for comparing, or to rule the C part out when debugging.
"""

from __future__ import annotations

import os
from types import ModuleType


def _load() -> tuple[ModuleType | None, str]:
    if os.environ.get("CACHECLOAK_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None, "turned off by CACHECLOAK_NATIVE=0"
    try:
        from proxy import _native
    except ImportError as exc:
        return None, (f"proxy._native is not built ({exc}); reinstall with a C compiler "
                      "and OpenSSL's headers present (Debian: apt-get install gcc libssl-dev)")
    return _native, f"C (proxy._native, {_native.openssl_version})"


native, description = _load()


def summary() -> str:
    """One line for the startup log."""
    if native is not None:
        return f"per-command crypto and packing: {description}"
    return (f"per-command crypto and packing: pure Python, two to four times the CPU "
            f"per command ({description})")
