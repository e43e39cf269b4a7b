"""The request reader against Redis itself: the same raw bytes, byte-for-byte replies.

Each input goes to a real redis-server and to cachecloak (Redis and local backends) on
fresh connections; both get the same time to answer, and what came back (replies, then
the close after a protocol error, or silence while a line is unfinished) must be
identical.  The commands inside are ones the proxy answers like Redis (PING, ECHO), so
any difference is the framing: where a command ends, what is skipped, which error.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.fuzz.properties import pieces

# Each found by hand against redis-server 7 or taken from the reader's fuzz corpus.
INPUTS = [
    b"*1\r\n$4\r\nPING\r\n",
    b"*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\n",
    b"*2\r\n$3\r\nGET\r\nXYZ",  # a header without its CR: Redis waits
    b"*1\r\n:1\r\n",
    b"*1\r\n\r\n",  # "got ' '": CR shown as a space
    b"*1\r\n\x00\r\n",  # a NUL before the CR: Redis's strchr stops, it waits
    b"PING\x00\r\n",
    b"*1\r\n$4\r\nPING\r\nPING\n",  # an inline line after an array, bare LF
    b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n",  # an element's tail is not checked
    b"*1\x00\r\n",
    b"*-1\r\nPING\r\n",
    b"*0\r\n*1\r\n$4\r\nPING\r\n",
    b"*01\r\n$4\r\nPING\r\n",
    b"*1\r\n$04\r\nPING\r\n",
    b"*1\r\n$-1\r\n",
    b"*1\r\n$4\r\nPING\r\n*1048576\r\n*1048576\r\n",
    b"*3000000000\r\n",
    b"*1\r\n$600000000\r\n",
    b"*1\r\n$4\r\nPING\r\n*1\r\n+OK\r\n",
    b'PING "a\r\n',
    b"ECHO 'it''s'\r\n",
    b'ECHO "\\x41\\n"\r\n',
    b"\r\n\r\nPING\r\n",
    b"   \r\n",
    b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n",
]


def exchange(port: int, data: bytes, cuts=(), settle: float = 0.4) -> bytes:
    """Send `data` (in pieces at `cuts`), then read until closed or `settle` s of quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for piece in pieces(data, cuts):
            sock.sendall(piece)
            time.sleep(0.01)
        sock.settimeout(settle)
        out = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return out + b"<silent>"
            if not chunk:
                return out + b"<closed>"
            out += chunk
        return out + b"<still sending>"


@pytest.mark.parametrize("data", INPUTS, ids=lambda d: repr(d)[2:40])
def test_same_bytes_same_replies_as_redis(data, direct_redis, proxies, backend):
    expected = exchange(direct_redis.port, data)
    assert exchange(proxies[backend].port, data) == expected


@pytest.mark.parametrize("data", [INPUTS[1], INPUTS[7], INPUTS[8], INPUTS[15]],
                         ids=lambda d: repr(d)[2:40])
def test_same_replies_when_the_bytes_arrive_one_at_a_time(data, direct_redis, proxies):
    cuts = range(1, len(data))
    expected = exchange(direct_redis.port, data, cuts)
    assert exchange(proxies["redis"].port, data, cuts) == expected
