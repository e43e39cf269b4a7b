"""Nonce checks shared by the envelope tests (Python twin) and tests/test_native.py (C)."""

from __future__ import annotations

import os
from collections.abc import Callable

from proxy.crypto.envelope import HEADER_BYTES, NONCE_BYTES


def nonces(seal: Callable[[], bytes], count: int) -> list[bytes]:
    """The nonces of `count` envelopes made by `seal()`."""
    return [seal()[HEADER_BYTES:HEADER_BYTES + NONCE_BYTES] for _ in range(count)]


def nonces_in_forked_child(seal: Callable[[], bytes], count: int) -> set[bytes]:
    """The nonces a forked child draws with `seal()`: it reports them through a pipe and
    leaves at once (os._exit, so nothing of the parent's test runs twice)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_fd)
            os.write(write_fd, b"".join(nonces(seal, count)))
        finally:
            os._exit(0)
    os.close(write_fd)
    out = b""
    while chunk := os.read(read_fd, 65536):
        out += chunk
    os.close(read_fd)
    os.waitpid(pid, 0)
    return {out[i:i + NONCE_BYTES] for i in range(0, len(out), NONCE_BYTES)}
