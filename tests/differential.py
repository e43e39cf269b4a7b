"""Helpers for differential tests: one command sequence, sent to Redis and to cachecloak.

A `Pair` holds one raw connection to a redis-server and one to a cachecloak; `check`
sends the same command to both and asserts the two replies are the same bytes.  Only a
few replies depend on time or on the server's identity; they have their own helpers
(`mask_hello`, `Near`) so that everything else is compared byte for byte.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from tests.secrets_registry import register_secret
from tests.servers import RawClient, encode_command

_HELLO_ID = re.compile(rb"(\$2\r\nid\r\n):\d+\r\n")
_HELLO_VERSION = re.compile(rb"(\$7\r\nversion\r\n)\$\d+\r\n[^\r]*\r\n")
_INTEGER = re.compile(rb":(-?\d+)\r\n")


def proxy_config(kind: str, upstream: str | None = None) -> str:
    """A one-cache configuration with hashing and encryption on and fresh random keys."""
    enc, hashing = secrets.token_hex(32), secrets.token_hex(32)
    register_secret(enc, "encryption key")  # never in any log (checked at session end)
    register_secret(hashing, "hashing key")
    backend = ""
    if kind == "redis":
        backend = (f"    redis:\n      addresses: [\"{upstream}\"]\n      disableTLS: true\n")
    return (
        "listeners:\n"
        "  - address: 127.0.0.1:0\n"
        "    cache: diff\n"
        "caches:\n"
        "  - name: diff\n"
        f"    type: {kind}\n"
        f"{backend}"
        "    encryption:\n"
        "      keys:\n"
        f"        current: {enc}\n"
        "    hashing:\n"
        "      keys:\n"
        f"        current: {hashing}\n"
    )


def flush_both(redis_port: int, proxy_port: int) -> None:
    """Empty the reference Redis and the cache behind a cachecloak before a test."""
    with RawClient(redis_port) as r, RawClient(proxy_port) as p:
        assert r.call("FLUSHALL") == b"+OK\r\n"
        assert p.call("FLUSHALL") == b"+OK\r\n"


def mask_hello(reply: bytes) -> bytes:
    """HELLO's reply with the connection id and the server version blanked out.

    Fails (by returning the reply unchanged, which then differs) if either field is
    missing, so a HELLO reply without them cannot pass as equal.
    """
    masked, n_id = _HELLO_ID.subn(rb"\1:<id>\r\n", reply)
    masked, n_version = _HELLO_VERSION.subn(rb"\1$<n>\r\n<version>\r\n", masked)
    if n_id != 1 or n_version != 1:
        return reply
    return masked


def integer_of(reply: bytes) -> int:
    m = _INTEGER.fullmatch(reply)
    assert m is not None, f"not an integer reply: {reply!r}"
    return int(m.group(1))


@dataclass(frozen=True)
class Near:
    """A command whose integer reply depends on the clock (PTTL, EXPIRETIME after a
    relative expiry): both replies must be integers, both negative codes alike (-1, -2),
    and positive values within `tolerance` of each other."""

    args: tuple
    tolerance: int

    def __init__(self, *args, tolerance: int):
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "tolerance", tolerance)


def compare_near(expected: bytes, got: bytes, tolerance: int, context: str) -> None:
    a, b = integer_of(expected), integer_of(got)
    if a < 0 or b < 0:
        assert a == b, f"{context}: redis {expected!r} != cachecloak {got!r}"
    else:
        assert abs(a - b) <= tolerance, f"{context}: redis {a} vs cachecloak {b}"


class Pair:
    """A connection to Redis and one to cachecloak, driven in lockstep."""

    def __init__(self, redis_port: int, proxy_port: int, proto: int = 2):
        self.redis_port, self.proxy_port = redis_port, proxy_port
        self.redis = RawClient(redis_port)
        self.proxy = RawClient(proxy_port)
        self.proto = proto
        if proto == 3:
            self.hello(3)

    def close(self) -> None:
        self.redis.close()
        self.proxy.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def both(self, *args) -> tuple[bytes, bytes]:
        return self.redis.call(*args), self.proxy.call(*args)

    def check(self, *args) -> bytes:
        """Send to both; the replies must be the same bytes.  Returns the reply."""
        expected, got = self.both(*args)
        assert got == expected, (f"{_show(args)} (RESP{self.proto}): redis {expected!r} != "
                                 f"cachecloak {got!r}")
        return got

    def hello(self, *args) -> bytes:
        """HELLO on both; equal once id and version are masked.  Returns the masked reply."""
        expected, got = self.both("HELLO", *args)
        assert mask_hello(got) == mask_hello(expected), (
            f"{_show(('HELLO', *args))}: redis {expected!r} != cachecloak {got!r}")
        return mask_hello(got)

    def run(self, steps) -> None:
        """Run a table of steps: an args tuple (exact), a Near (tolerant), or a HELLO."""
        for index, step in enumerate(steps):
            if isinstance(step, Near):
                expected, got = self.both(*step.args)
                compare_near(expected, got, step.tolerance,
                             f"step {index} {_show(step.args)} (RESP{self.proto})")
            elif step and _name(step[0]) == b"HELLO":
                self.hello(*step[1:])
            else:
                self.check(*step)

    def pipeline(self, commands: list[tuple]) -> tuple[list[bytes], list[bytes]]:
        """Send all commands in one write to each side, then read every reply."""
        payload = b"".join(encode_command(c) for c in commands)
        self.redis.send_raw(payload)
        self.proxy.send_raw(payload)
        expected = [self.redis.read_reply() for _ in commands]
        got = [self.proxy.read_reply() for _ in commands]
        return expected, got


def _name(arg) -> bytes:
    return (arg.encode() if isinstance(arg, str) else bytes(arg) if isinstance(arg, bytes)
            else str(arg).encode()).upper()


def _show(args) -> str:
    shown = []
    for a in args:
        text = repr(a)
        shown.append(text if len(text) <= 40 else text[:37] + "...")
    return " ".join(shown)
