"""Encoding replies for a client, in RESP2 or RESP3 (`proto` is 2 or 3).

Everything returns complete reply bytes.  Null and aggregate types differ between the
protocols; the rest is shared.  Hot-path helpers are plain functions over bytes so that
encoding a GET reply costs one formatting operation.
"""

from __future__ import annotations

from collections.abc import Iterable

from hiredis import ReplyError, pack_command

from proxy.speedups import native

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
QUEUED = b"+QUEUED\r\n"
NULL_BULK = (b"", b"", b"$-1\r\n", b"_\r\n")  # indexed by proto
NULL_ARRAY = (b"", b"", b"*-1\r\n", b"_\r\n")
ZERO = b":0\r\n"
ONE = b":1\r\n"


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


def integer(n: int) -> bytes:
    return b":%d\r\n" % n


def status(text: bytes) -> bytes:
    return b"+" + text + b"\r\n"


def error(text: str | bytes) -> bytes:
    """An error reply; CR and LF are replaced as Redis does, so a reply stays one line.

    A str made from Redis's error line (ReplyReader, the local backend) carries bytes
    that are not UTF-8 as surrogate escapes: they go out as the bytes they were."""
    if isinstance(text, str):
        try:
            text = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate of another origin
            text = text.encode("utf-8", "replace")
    return b"-" + text.replace(b"\r", b" ").replace(b"\n", b" ") + b"\r\n"


def array(items: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(items)


def map_(proto: int, pairs: list[tuple[bytes, bytes]]) -> bytes:
    """A map in RESP3; a flat array of key, value, ... in RESP2 (as Redis does)."""
    head = b"%%%d\r\n" % len(pairs) if proto == 3 else b"*%d\r\n" % (2 * len(pairs))
    return head + b"".join(k + v for k, v in pairs)


def verbatim(proto: int, text: bytes) -> bytes:
    """Redis answers INFO, CLIENT LIST and CLIENT INFO as verbatim text in RESP3."""
    if proto == 3:
        return b"=%d\r\ntxt:%b\r\n" % (len(text) + 4, text)
    return bulk(text)


def double(proto: int, value: bytes) -> bytes:
    """A double as Redis formats it: bulk text in RESP2, `,` in RESP3."""
    return b",%b\r\n" % value if proto == 3 else bulk(value)


def value(reply: object, proto: int) -> bytes:
    """Encode a reply as hiredis parsed it from RESP2 (bytes are bulk strings)."""
    if isinstance(reply, bytes):
        return b"$%d\r\n%b\r\n" % (len(reply), reply)
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if reply is None:
        return NULL_BULK[proto]
    if isinstance(reply, list):
        return b"*%d\r\n" % len(reply) + b"".join(value(r, proto) for r in reply)
    if isinstance(reply, ReplyError):
        return error(str(reply))
    raise TypeError(f"cannot encode {type(reply).__name__} as a reply")


def bulks(items: Iterable[bytes]) -> bytes:
    items = list(items)
    return b"*%d\r\n" % len(items) + b"".join(b"$%d\r\n%b\r\n" % (len(i), i) for i in items)


# Requests to Redis.  Most forwarded commands have two or three arguments (GET, SET, DEL,
# HGET...): one bytes formatting packs them for a fraction of hiredis.pack_command's cost,
# which converts its arguments through a tuple and a generic routine.
_COMMAND_2 = b"*2\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
_COMMAND_3 = b"*3\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"


def python_command(args: list[bytes]) -> bytes:
    """`args` as a RESP array of bulk strings: a request as Redis reads it.

    The reference for proxy._native.pack_command, which `command` is when built."""
    n = len(args)
    try:
        if n == 2:
            a, b = args
            return _COMMAND_2 % (len(a), a, len(b), b)
        if n == 3:
            a, b, c = args
            return _COMMAND_3 % (len(a), a, len(b), b, len(c), c)
    except TypeError:  # not bytes (str or int from internal callers): hiredis converts
        pass
    return pack_command(tuple(args))


# The same bytes from one C call when proxy._native is built (see proxy/speedups.py).
command = native.pack_command if native is not None else python_command
